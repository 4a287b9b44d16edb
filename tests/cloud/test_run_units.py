"""The VM's run manager as the trainer_host role installs it: the systemd units checked by systemd's own
`systemd-analyze verify` (tests/cloud/test_booted_vm.py runs them on the booted stand-in VM), each VM kind's
stop budget (the container's stop grace period and the unit's stop timeout, rendered by Ansible from
the role's defaults for a spot and a standard VM) against GCE's soft-off window, the settings file as
the script reads it, and the shell scripts through shellcheck."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

from tests.standins.vm import RUN_MANAGER
from tests.support import ROOT, require, tool

ROLE = ROOT / "ansible" / "roles" / "trainer_host"
# DESIGN.md: GCE powers a VM off this many seconds after its ACPI soft-off.
SOFT_OFF_S = {"spot": 30, "standard": 120}


def render_role_template(name: str, **variables) -> str:
    """One of the trainer_host role's templates rendered with plain Jinja2 (StrictUndefined, as Ansible
    renders; Ansible's `quote` filter is shlex.quote)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["quote"] = shlex.quote
    return env.from_string((ROLE / "templates" / name).read_text()).render(**variables)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, dict[str, str]]:
    """What the role writes on a spot and on a standard VM, rendered by Ansible itself: an inventory of two
    local hosts that differ only in `trainer_host_spot` (as `make inventory` writes it), and a
    role named trainer_host made of the real one's defaults, argument specs and templates (so Ansible
    resolves the derived defaults and checks them against the specs) whose tasks only write the compose
    .env and the run's unit into a folder per host. VM kind -> {file name: text}."""
    work = tmp_path_factory.mktemp("stop-budget")
    role = work / "roles" / "trainer_host"
    (role / "tasks").mkdir(parents=True)
    for part in ("defaults", "meta", "templates"):
        (role / part).symlink_to(ROLE / part)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    tasks = [
        {"name": "Read the owner's ids", "ansible.builtin.getent": {"database": "passwd", "key": user}},
        {
            "name": "Write the compose .env and the run's unit",
            "ansible.builtin.template": {"src": "{{ item }}.j2", "mode": "0644",
                                         "dest": f"{work}/" + "{{ inventory_hostname }}-{{ item }}"},
            "loop": ["env", "trainer-run@.service"],
        },
    ]  # fmt: skip
    (role / "tasks" / "main.yml").write_text(yaml.safe_dump(tasks, sort_keys=False))
    (work / "play.yml").write_text(
        yaml.safe_dump([{"name": "Render", "hosts": "all", "gather_facts": False, "roles": ["trainer_host"]}])
    )
    python = Path(tool("ansible-playbook")).parent / "python"
    common = {"ansible_connection": "local", "ansible_python_interpreter": str(python),
              "trainer_host_owner": user}  # fmt: skip
    hosts = {kind: {**common, "trainer_host_spot": kind == "spot"} for kind in SOFT_OFF_S}
    (work / "hosts.yml").write_text(json.dumps({"all": {"hosts": hosts}}))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(work / "roles"), "ANSIBLE_NOCOLOR": "1"}
    done = subprocess.run(
        [tool("ansible-playbook"), "-i", "hosts.yml", "play.yml"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return {
        kind: {name: (work / f"{kind}-{name}").read_text() for name in ("env", "trainer-run@.service")}
        for kind in SOFT_OFF_S
    }


def setting(text: str, key: str) -> str:
    (value,) = re.findall(rf"^{key}=(.*)$", text, flags=re.M)
    return value


def unit_files(folder: Path, script: Path, unit: str, **changes: str) -> list[Path]:
    """The role's units as it installs them (`unit`: the run's, as rendered for a VM), with the run
    manager at `script` (systemd-analyze checks that ExecStart names an executable) and `changes` as
    `Key=value` replacements."""
    folder.mkdir()
    texts = {
        "trainer-run@.service": unit,
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


@pytest.mark.ansible
@pytest.mark.parametrize("kind", list(SOFT_OFF_S))
def test_the_units_pass_systemd_analyze_verify(tmp_path, script, rendered, kind):
    done = verify(unit_files(tmp_path / "units", script, rendered[kind]["trainer-run@.service"]))
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


@pytest.mark.ansible
def test_systemd_analyze_catches_a_broken_unit(tmp_path, script, rendered):
    unit = rendered["spot"]["trainer-run@.service"]
    done = verify(unit_files(tmp_path / "units", script, unit, KillMode="sometimes"))
    assert "Failed to parse kill mode specification" in done.stdout + done.stderr


@pytest.mark.ansible
@pytest.mark.parametrize(("kind", "grace", "timeout"), [("spot", 25, 27), ("standard", 110, 115)])
def test_a_run_stops_within_its_vms_soft_off(rendered, kind, grace, timeout):
    """docker stop waits the container's stop grace period (the .env's, for compose), then kills; systemd's
    stop timeout is above it (it must not cut the checkpoint short) and within GCE's soft-off window for
    the VM's provisioning model (30 s spot, 120 s standard), the rest left to the VM's own shutdown."""
    env, unit = rendered[kind]["env"], rendered[kind]["trainer-run@.service"]
    assert setting(env, "TRAINER_STOP_GRACE_PERIOD") == f"{grace}s"
    assert setting(unit, "TimeoutStopSec") == str(timeout)
    assert grace < timeout <= SOFT_OFF_S[kind]


def test_compose_takes_the_grace_from_the_env_and_falls_back_to_the_spot_one():
    """docker-compose.yml's stop_grace_period is the .env's TRAINER_STOP_GRACE_PERIOD; without a .env
    (compose run on a laptop) the spot VM's grace, the shorter one."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grace = compose["services"]["trainer"]["stop_grace_period"]
    assert grace == "${TRAINER_STOP_GRACE_PERIOD:-25s}"


def test_the_settings_file_reads_back_as_written(tmp_path):
    command = """logger -t idle "stopping now"; echo 'done' >/tmp/x"""
    conf = tmp_path / "trainer-run"
    conf.write_text(render_role_template(
        "trainer-run.conf.j2", trainer_host_project_dir="/opt/trainer",
        trainer_host_data_mount="/mnt/trainer data", trainer_host_idle_stop_minutes=7,
        trainer_host_idle_stop_command=command, trainer_host_node_count=2, trainer_host_node_rank=1,
        trainer_host_run_container_prefix="trainer-run-n1-",
    ))  # fmt: skip
    show = 'source "$1"; printf "%s\\n" "$TRAINER_RUNS_DIR" "$TRAINER_IDLE_STOP_MINUTES" '
    show += '"$TRAINER_IDLE_STOP_COMMAND" "$TRAINER_RUN_MACHINES" "$TRAINER_RUN_MACHINE_RANK" '
    show += '"$TRAINER_RUN_CONTAINER_PREFIX"'
    done = subprocess.run(["bash", "-c", show, "bash", str(conf)], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["/mnt/trainer data/runs", "7", command, "2", "1", "trainer-run-n1-"]


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
    """The rule is trainer/run_state.py's, which the run manager runs from the project on the VM."""
    env = {**os.environ, "TRAINER_RUN_CONF": "/nonexistent", "TRAINER_PROJECT_DIR": str(ROOT)}
    done = subprocess.run([str(script), "state", "x;id"], capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "trainer-run: error: run name 'x;id': letters, digits, '.', '_' and '-' only, a letter or digit first"
    ]


@pytest.mark.parametrize("path", ["ansible/roles/trainer_host/files/trainer-run", "docker/entrypoint.sh"])
def test_shell_scripts_are_shellcheck_clean(path):
    found = shutil.which("shellcheck")
    require(found, "shellcheck is not installed (.ci/apt-packages.txt)")
    done = subprocess.run([found, str(ROOT / path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
