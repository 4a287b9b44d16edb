"""The README stays true: every config key, flag and make target it must document is there."""

from __future__ import annotations

import re
import subprocess

from tests.support import ROOT
from trainer.config import all_keys

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_config_key_is_in_the_reference():
    missing = [key for key, _, _ in all_keys() if f"`{key}`" not in README]
    assert not missing, missing


def test_every_make_target_is_in_the_reference():
    out = subprocess.run(
        ["make", "--no-print-directory", "help"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    targets = [line.split()[0] for line in re.sub(r"\x1b\[[0-9;]*m", "", out).strip().splitlines()]
    assert len(targets) > 15
    missing = [t for t in targets if f"`make {t}`" not in README]
    assert not missing, missing


def test_first_screen_has_the_two_commands():
    first_screen = "\n".join(README.splitlines()[:25])
    assert "make setup && make train" in first_screen and "make test" in first_screen
