"""Cloud runs that survive a dropped connection, listed and stopped by hand.

The booted stand-in VM (tests/standins/vm.py: systemd as PID 1, the run units and the idle timer the real
playbook installed over SSH, the Docker engine the CI's, the GCS emulator behind the least-privilege
gate). Soft-offs, boots and the idle power-off are test_booted_vm.py's.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests import support
from tests.cloud.conftest import emulator_client
from tests.standins.deployment import LONG_RUN, STEPS_PER_EPOCH
from tests.standins.vm import docker
from tests.support import ROOT, logged_step

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.gcs]


@pytest.fixture(scope="module")
def stand_in(cloud):
    """The session's stand-in deployment (tests/cloud/conftest.py)."""
    return cloud


@pytest.fixture(scope="module", autouse=True)
def no_run_left_behind(stand_in):
    """A failed test leaves no trainer container running on the shared engine (runs are detached)."""
    yield
    label = f"label=com.docker.compose.project={stand_in.compose_project}"
    ids = docker("ps", "-aq", "--filter", label).stdout.split()
    if ids:
        docker("rm", "-f", *ids, check=False)


def wait_for(predicate, what: str, timeout: float = 300) -> None:
    support.wait_for(predicate, what, timeout, poll=0.05)


def ssh_clients(session: int) -> list[int]:
    """PIDs of the `ssh` processes in a session this test started (the laptop's connection)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            sid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3])
        except (OSError, ValueError, IndexError):
            continue
        if comm == "ssh" and sid == session:
            pids.append(int(entry.name))
    return pids


def test_a_dropped_connection_leaves_the_run_going_and_make_logs_shows_it_all(
    stand_in, tiny_csv, tiny_model_dir
):
    cloud = stand_in
    run = "detached-1"
    make = subprocess.Popen(
        ["make", "--no-print-directory", f"VENV={ROOT / '.venv'}", f"SSH_KEY={cloud.laptop.key}",
         f"INVENTORY={cloud.inventory}", "train", "MODE=cloud", f"RUN={run}", f"DATA={tiny_csv}",
         f"MODEL={tiny_model_dir}", f"ARGS={LONG_RUN}"],
        cwd=cloud.repo, env=cloud.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(
            lambda: logged_step(cloud.run_folder(run), 20) or make.poll() is not None, "step 20 of the run"
        )
        assert make.poll() is None, make.communicate()[1][-3000:]
        followers = ssh_clients(make.pid)
        assert followers, "no ssh client following the run"
        for pid in followers:  # the laptop loses its connection: its ssh client dies
            os.kill(pid, signal.SIGKILL)
        out, err = make.communicate(timeout=60)
    finally:
        if make.poll() is None:
            make.kill()
            make.wait()
    assert make.returncode != 0
    assert f"run {run} goes on there: make logs RUN={run} reattaches" in err, out[-2000:] + err[-2000:]
    assert cloud.state(run) == "running"

    done = cloud.make("logs", f"RUN={run}", timeout=600)  # reattach: follows until the run ends
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    lines = done.stdout.splitlines()
    starts = [
        i for i, line in enumerate(lines) if line.startswith(f"== trainer-run: run {run}, attempt started")
    ]
    assert len(starts) == 1 and starts[0] < 3, lines[:5]  # the whole log: from the very start
    assert any("test: macro-F1" in line for line in lines)
    assert any(line.startswith(f"== trainer-run: run {run} finished") for line in lines)
    assert lines[-1] == f"trainer-run: run {run} is finished"
    manifest = cloud.manifest(run)
    assert manifest["training"]["global_steps"] == 3 * STEPS_PER_EPOCH
    assert manifest["timing"]["attempts"] == 1
    assert cloud.state(run) == "finished"


def test_stop_checkpoints_and_runs_lists_the_vm_and_the_bucket(stand_in, tiny_csv, tiny_model_dir):
    cloud = stand_in
    run = "stopped-1"
    files = {"DATA": str(tiny_csv), "MODEL": str(tiny_model_dir)}
    done = cloud.ops("start", run, *LONG_RUN.split(), timeout=900, **files)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    again = cloud.ops("start", run, *LONG_RUN.split(), **files)
    assert "nothing shipped" in again.stdout  # a running run is never shipped over or started twice
    wait_for(lambda: logged_step(cloud.run_folder(run), 10), "step 10")
    done = cloud.make("stop", f"RUN={run}", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == f"trainer-run: run {run} is interrupted"
    assert cloud.markers(run), "no checkpoint in the bucket after make stop"

    done = cloud.make("runs")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = runs_table(done.stdout)
    assert rows[run]["STATE"] == "interrupted" and rows[run]["WHERE"] == "vm,bucket"
    assert rows[run]["TEST_F1"] == rows[run]["COMMIT"] == "-"  # no manifest yet: no figures
    # The other tests' runs on the session's VM (a study of test_cloud_tune.py too: its row is a study's,
    # checked there).
    finished = [name for name, row in rows.items()
                if row["STATE"] == "finished" and not cloud.in_bucket(f"runs/{name}/study.json")]  # fmt: skip
    assert finished, done.stdout
    for name in finished:
        manifest, row = cloud.manifest(name), rows[name]
        training, commit = manifest["training"], manifest["git_commit"]
        assert float(row["COST_USD"]) == pytest.approx(manifest["estimated_cost_usd"], abs=1e-4)
        assert row["TEST_F1"] == f"{manifest['test_f1_macro']:.4f}"
        assert row["BEST_VAL"].startswith(next(iter(training["best_metric"])) + "=")
        assert row["EPOCHS"] == f"{training['epochs_completed']:.3g}/{training['epochs_planned']:.3g}"
        assert row["GPU"] == "cpu"  # the stand-in VM has no GPU: compose's CPU override
        assert row["COMMIT"] == commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")
        assert row["STARTED"] == manifest["started_at"] and row["WALL"] != "-" and "bucket" in row["WHERE"]

    # A run only in the bucket (a VM gone): its checkpoints say it is unfinished.
    client = emulator_client(cloud.emulator)
    client.bucket(cloud.bucket).blob("checkpoints/elsewhere-1/checkpoint-5/x").upload_from_string(b"")
    done = cloud.make("runs", "SORT=f1", "FORMAT=csv")
    assert done.returncode == 0, done.stdout + done.stderr
    table = list(csv.DictReader(io.StringIO(done.stdout)))  # standard output: the CSV alone
    f1 = {name: float(f"{cloud.manifest(name)['test_f1_macro']:.4f}") for name in finished}
    best_first = sorted(finished, key=lambda name: (-f1[name], name))
    assert [r["RUN"] for r in table[: len(finished)]] == best_first  # then the runs without a test F1
    (row,) = [r for r in table if r["RUN"] == "elsewhere-1"]
    assert row == {**dict.fromkeys(row, "-"), "RUN": "elsewhere-1", "STATE": "interrupted", "WHERE": "bucket"}


def runs_table(stdout: str) -> dict[str, dict[str, str]]:
    """`make runs`'s text table: {run: {column: cell}} (the lines between its header and its footnote)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("RUN "))
    header = lines[start].split()
    body = [line for line in lines[start + 1 :] if not line.startswith("(")]
    return {line.split()[0]: dict(zip(header, line.split(), strict=True)) for line in body}


def test_bad_run_names_for_the_run_verbs_are_one_line(stand_in):
    cloud = stand_in
    before = cloud.vm.sessions()
    for verb in ("logs", "stop"):
        done = cloud.make(verb, "RUN=x;id")
        assert done.returncode != 0
        assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
            "error: RUN='x;id': a run name has letters, digits, '.', '_' and '-' only, a letter or digit "
            "first"
        ]
        done = cloud.make(verb)
        assert f"error: which run? make {verb} RUN=<run name>" in done.stderr
    assert cloud.vm.sessions() == before
