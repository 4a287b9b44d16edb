"""A laptop without GNU tools: the PATH the laptop verbs' tests run with.

Most users' laptops are Macs: bash 3.2, BSD tar/sed/date/find/xargs. The laptop side (ops/, the make
recipes) must need none of them, so in these tests `tar`, `sed`, `date`, `find`, `xargs` and `bash` come
first on PATH as wrappers that fail on any use and write down who called them; the cloud tests' autouse
check (tests/cloud/conftest.py) fails the test during which one was called.
"""

from __future__ import annotations

import os
from pathlib import Path

FORBIDDEN = ("tar", "sed", "date", "find", "xargs", "bash")
SCRIPT = """#!/bin/sh
echo "$(basename "$0") $*" >> {log}
echo "laptop-portability: '$(basename "$0")' is not allowed on the laptop side (macOS has no GNU tools)" >&2
exit 97
"""


def make_wrappers(folder: Path) -> tuple[Path, Path]:
    """(the folder of failing wrappers, the log they write) under `folder`."""
    bin_dir, log = folder / "no-gnu-bin", folder / "no-gnu-calls.log"
    bin_dir.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    for name in FORBIDDEN:
        path = bin_dir / name
        path.write_text(SCRIPT.format(log=log))
        path.chmod(0o755)
    return bin_dir, log


def laptop_path(bin_dir: Path, path: str | None = None) -> str:
    return f"{bin_dir}{os.pathsep}{path if path is not None else os.environ.get('PATH', '')}"


def calls(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
