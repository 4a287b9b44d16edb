"""The VM's run manager as the trainer_host role installs it: the systemd units checked by systemd's own
`systemd-analyze verify` (the stand-in VM has no systemd to run them: tests/cloud/test_detached_runs.py
runs their ExecStart/ExecStop commands there), the stop timeouts against GCE's 30 s soft-off, the
settings file as the script reads it, and the shell scripts through shellcheck."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.standins.vm import ROLE, RUN_MANAGER, render_role_template
from tests.support import ROOT, require

SPOT_SOFT_OFF_S = 30  # DESIGN.md: 30 s between a spot VM's ACPI soft-off and its power-off
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def unit_files(folder: Path, script: Path, **changes: str) -> list[Path]:
    """The role's units as it installs them, with the run manager at `script` (systemd-analyze checks
    that ExecStart names an executable) and `changes` as `Key=value` replacements."""
    folder.mkdir()
    texts = {
        "trainer-run@.service": render_role_template(
            "trainer-run@.service.j2",
            trainer_host_data_mount="/mnt/trainer-data",
            trainer_host_project_dir="/opt/trainer",
            trainer_host_run_stop_timeout=DEFAULTS["trainer_host_run_stop_timeout"],
        ),
        **{name: (ROLE / "files" / name).read_text() for name in ("trainer-idle-stop.service",
                                                                   "trainer-idle-stop.timer")},
    }  # fmt: skip
    for name, text in texts.items():
        text = text.replace(RUN_MANAGER, str(script))
        for key, value in changes.items():
            text = re.sub(rf"^{key}=.*$", f"{key}={value}", text, flags=re.M)
        (folder / name).write_text(text)
    return [folder / "trainer-run@demo-1.service", folder / "trainer-idle-stop.service",
            folder / "trainer-idle-stop.timer"]  # fmt: skip


def verify(units: list[Path]) -> subprocess.CompletedProcess:
    analyze = shutil.which("systemd-analyze")
    require(analyze, "systemd-analyze is not installed (Debian's systemd, .ci/apt-packages.txt)")
    return subprocess.run([analyze, "verify", *map(str, units)], capture_output=True, text=True)


@pytest.fixture
def script(tmp_path) -> Path:
    copy = tmp_path / "trainer-run"
    shutil.copy2(ROLE / "files" / "trainer-run", copy)
    return copy


def test_the_units_pass_systemd_analyze_verify(tmp_path, script):
    done = verify(unit_files(tmp_path / "units", script))
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def test_systemd_analyze_catches_a_broken_unit(tmp_path, script):
    done = verify(unit_files(tmp_path / "units", script, KillMode="sometimes"))
    assert "Failed to parse kill mode specification" in done.stdout + done.stderr


def test_a_run_stops_within_the_spot_soft_off():
    """docker stop waits the compose stop grace period, then kills; systemd's stop timeout is above it (it
    must not cut the checkpoint short) and within GCE's 30 s."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grace = compose["services"]["trainer"]["stop_grace_period"]
    assert grace.endswith("s")
    timeout = DEFAULTS["trainer_host_run_stop_timeout"]
    assert int(grace[:-1]) < timeout <= SPOT_SOFT_OFF_S


def test_the_settings_file_reads_back_as_written(tmp_path):
    command = """logger -t idle "stopping now"; echo 'done' >/tmp/x"""
    conf = tmp_path / "trainer-run"
    conf.write_text(render_role_template(
        "trainer-run.conf.j2", trainer_host_project_dir="/opt/trainer",
        trainer_host_data_mount="/mnt/trainer data", trainer_host_idle_stop_minutes=7,
        trainer_host_idle_stop_command=command,
    ))  # fmt: skip
    show = 'source "$1"; printf "%s\\n" "$TRAINER_RUNS_DIR" "$TRAINER_IDLE_STOP_MINUTES" '
    show += '"$TRAINER_IDLE_STOP_COMMAND"'
    done = subprocess.run(["bash", "-c", show, "bash", str(conf)], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["/mnt/trainer data/runs", "7", command]


def test_idle_stop_off_never_runs_the_command(tmp_path, script):
    """TRAINER_IDLE_STOP_MINUTES=0 (trainer_host_idle_stop_minutes: 0): the check returns at once, before
    it asks Docker anything."""
    conf = tmp_path / "conf"
    mark = tmp_path / "stopped"
    conf.write_text(f"TRAINER_IDLE_STOP_MINUTES=0\nTRAINER_IDLE_STOP_COMMAND='touch {mark}'\n"
                    f"TRAINER_RUN_STATE_DIR={tmp_path / 'state'}\n")  # fmt: skip
    env = {"TRAINER_RUN_CONF": str(conf), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([str(script), "idle-check"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not mark.exists() and not (tmp_path / "state").exists()


def test_the_run_manager_refuses_bad_names_in_one_line(script):
    done = subprocess.run([str(script), "state", "x;id"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "trainer-run: error: run name 'x;id': letters, digits, '.', '_' and '-' only, a letter or digit first"
    ]


@pytest.mark.parametrize(
    "path", ["scripts/tf_cloud.sh", "ansible/roles/trainer_host/files/trainer-run", "docker/entrypoint.sh"]
)
def test_shell_scripts_are_shellcheck_clean(path):
    found = shutil.which("shellcheck")
    require(found, "shellcheck is not installed (.ci/apt-packages.txt)")
    done = subprocess.run([found, str(ROOT / path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
