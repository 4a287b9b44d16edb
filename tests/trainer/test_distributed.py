"""Several processes, one run: `accelerate launch` with the shipped multi-GPU config on the tiny model.

CPU processes on the gloo backend stand in for GPUs (the trainer picks the CPU and gloo when there is no
CUDA device); everything else is real: accelerate's launcher (torchrun underneath), the rendezvous on
loopback, DDP, the Trainer's sharded batches. What only GPUs can show (NCCL, fp16, the speed-up) is left
to a real multi-GPU VM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.support import ROOT, write_run_config
from trainer import checkpoints

MULTI_GPU = ROOT / "config" / "accelerate" / "multi_gpu.yaml"
TRAIN_ROWS = 240  # 80% of the 300-row tiny data set
EFFECTIVE_BATCH = 16
EPOCHS = 6

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, model_dir: Path, csv: Path, batch_size: int) -> Path:
    extra = "  warmup_ratio: 0.1\n  early_stopping: {enabled: false}\n"
    return write_run_config(path, model_dir, csv, epochs=EPOCHS, batch_size=batch_size, train_extra=extra)


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def launch_command(config: Path, out: Path, processes: int, *extra: str, launcher: tuple[str, ...] = ()):
    """`accelerate launch` as the image's entrypoint runs it: the multi-GPU config, --num_processes."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--quiet",
        "--config_file",
        str(MULTI_GPU),
        "--num_processes",
        str(processes),
        *(launcher or ("--main_process_port", str(free_port()))),
        "-m",
        "trainer",
        "--mode",
        "local",
        "--config",
        str(config),
        "--output-dir",
        str(out),
        *extra,
    ]


def machine_flags(rank: int, port: str) -> tuple[str, ...]:
    """accelerate launch's flags for machine `rank` of two, meeting at 127.0.0.1:`port`."""
    return ("--num_machines", "2", "--machine_rank", str(rank),
            "--main_process_ip", "127.0.0.1", "--main_process_port", port)  # fmt: skip


def run_trainer(cmd: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def one_process(config: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "trainer",
        "--mode",
        "local",
        "--config",
        str(config),
        "--output-dir",
        str(out),
    ]
    return run_trainer(cmd)


def log_lines(out: Path) -> list[str]:
    return (out / "training.log").read_text(encoding="utf-8").splitlines()


def step_records(out: Path) -> list[str]:
    """'step N: {kind of record}' for each per-step line of training.log, in order."""
    records = []
    for line in log_lines(out):
        if "trainer.steps: step " in line:
            step, _, payload = line.split("trainer.steps: ", 1)[1].partition(": ")
            records.append(f"{step}: {sorted(json.loads(payload))[0]}")
    return records


def eval_losses(out: Path) -> list[float]:
    return [
        json.loads(line.split(": ", 2)[2])["eval_loss"]
        for line in log_lines(out)
        if "trainer.steps: step " in line and '"eval_loss"' in line
    ]


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_model_dir, tiny_csv) -> dict[str, Path]:
    """The same run twice at one effective batch size: 1 process x 16, 2 processes x 8."""
    base = tmp_path_factory.mktemp("distributed")
    one = write_config(base / "one.yaml", tiny_model_dir, tiny_csv, EFFECTIVE_BATCH)
    two = write_config(base / "two.yaml", tiny_model_dir, tiny_csv, EFFECTIVE_BATCH // 2)
    one_process(one, base / "run-1")
    run_trainer(launch_command(two, base / "run-2", 2))
    return {"one": base / "run-1", "two": base / "run-2", "two_config": two}


def test_two_processes_leave_one_run_folder_with_a_whole_log(pair):
    one, two = pair["one"], pair["two"]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    # Every per-step record once, as in the one-process run; no line from a second process.
    assert step_records(two) == step_records(one)
    lines = log_lines(two)
    assert len(lines) == len(set(lines))
    assert sum("test: macro-F1" in line for line in lines) == 1
    # Each checkpoint holds both processes' RNG states, and its marker lists them (written after both).
    for folder in (two / "checkpoints").iterdir():
        listed = checkpoints.read_marker(folder)
        assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(listed), folder
    attempts = json.loads((two / "attempts.json").read_text())["attempts"]
    assert [a["outcome"] for a in attempts] == ["finished"]


def test_two_processes_take_the_steps_the_arithmetic_says(pair):
    steps = -(-TRAIN_ROWS // EFFECTIVE_BATCH) * EPOCHS
    one, two = manifest(pair["one"]), manifest(pair["two"])
    assert one["training"]["global_steps"] == two["training"]["global_steps"] == steps
    assert two["distributed"] == {"world_size": 2, "processes_per_machine": 2, "machines": 1}
    assert one["distributed"] == {"world_size": 1, "processes_per_machine": 1, "machines": 1}
    assert one["training"]["effective_batch_size"] == two["training"]["effective_batch_size"] == 16


def test_two_processes_learn_as_one_at_the_same_effective_batch(pair):
    """Same data, steps and learning rate schedule; the batches differ (two shards of 8 against one
    batch of 16), so equal within noise, not bit for bit: the validation loss after each epoch and the
    test macro-F1 (30 rows: one text is 0.03 of accuracy)."""
    f1 = {name: manifest(pair[name])["test_f1_macro"] for name in ("one", "two")}
    assert f1["one"] >= 0.9 and abs(f1["one"] - f1["two"]) <= 0.1, f1
    curves = {name: eval_losses(pair[name]) for name in ("one", "two")}
    assert len(curves["one"]) == len(curves["two"]) == EPOCHS
    assert all(abs(a - b) <= 0.15 for a, b in zip(curves["one"], curves["two"], strict=True)), curves


def test_overwrite_with_two_processes_replaces_the_run_once(pair, tmp_path):
    out = tmp_path / "run"
    cmd = launch_command(pair["two_config"], out, 2, "--epochs", "1")
    run_trainer(cmd)
    first = step_records(out)
    done = run_trainer([*cmd, "--overwrite"])
    assert "run finished" in done.stdout + done.stderr
    assert step_records(out) == first  # the new run's log alone, whole
    assert len(json.loads((out / "attempts.json").read_text())["attempts"]) == 1
    assert manifest(out)["training"]["global_steps"] == -(-TRAIN_ROWS // EFFECTIVE_BATCH)


def test_sigterm_stops_both_processes_at_one_step_and_the_run_resumes(pair, tmp_path):
    """SIGTERM to every process of the run, the launcher kept out of it (trap '' TERM, torchrun's agent
    told not to handle it): what docker/entrypoint.sh does when `docker stop` reaches it."""
    out = tmp_path / "run"
    cmd = launch_command(pair["two_config"], out, 2)
    script = "trap '' TERM; export TORCHELASTIC_SIGNALS_TO_HANDLE=SIGINT,SIGHUP,SIGQUIT; exec \"$@\""
    proc = subprocess.Popen(
        ["bash", "-c", script, "bash", *cmd],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not any(r.startswith("step 20: ") for r in _records_or_none(out)):
        assert proc.poll() is None and time.monotonic() < deadline, "the run did not reach step 20"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=120)
    found = checkpoints.scan(out / "checkpoints")
    assert found.newest is not None and not found.skipped
    stopped_at = checkpoints.step_of(found.newest)
    assert 20 <= stopped_at < 15 * EPOCHS
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(checkpoints.read_marker(found.newest))

    run_trainer(cmd)
    done = manifest(out)
    assert done["training"]["global_steps"] == manifest(pair["two"])["training"]["global_steps"]
    attempts = json.loads((out / "attempts.json").read_text())["attempts"]
    assert [a["outcome"] for a in attempts][-1] == "finished" and len(attempts) == 2
    assert attempts[1]["resumed_at_step"] == stopped_at


def _records_or_none(out: Path) -> list[str]:
    try:
        return step_records(out)
    except (OSError, ValueError):
        return []


def test_two_machines_rendezvous_on_loopback_and_finish_one_run(pair, tmp_path):
    """Two "nodes" as two launchers on this host: machine rank 0 and 1, one process each, meeting at
    127.0.0.1 as the VMs meet at node 0's internal address. Each machine has its own disk (here its own
    folder); the run's records are written once, on machine 0."""
    port = str(free_port())
    nodes = []
    for rank in (0, 1):
        launcher = machine_flags(rank, port)
        cmd = launch_command(
            pair["two_config"], tmp_path / f"node-{rank}", 2, "--epochs", "1", launcher=launcher
        )
        nodes.append(
            subprocess.Popen(
                cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    for node in nodes:
        _, stderr = node.communicate(timeout=240)
        assert node.returncode == 0, stderr[-3000:]
    main = tmp_path / "node-0"
    assert manifest(main)["distributed"] == {"world_size": 2, "processes_per_machine": 1, "machines": 2}
    assert manifest(main)["training"]["global_steps"] == -(-TRAIN_ROWS // EFFECTIVE_BATCH)
    other = tmp_path / "node-1"
    assert not (other / "manifest.json").exists() and not (other / "training.log").exists()


def test_sigterm_to_one_machine_stops_both_with_a_checkpoint_on_each_and_both_resume(pair, tmp_path):
    """Two machines; SIGTERM reaches machine 1's process only (its VM's soft-off, a `docker stop` there):
    the stop is agreed, both stop after one step, each machine's disk holds that checkpoint whole
    (save_on_each_node: each resumes from its own copy and loads the best model from it), and both
    launchers run again resume from it to the steps of an uninterrupted run."""
    port = str(free_port())
    script = "trap '' TERM; export TORCHELASTIC_SIGNALS_TO_HANDLE=SIGINT,SIGHUP,SIGQUIT; exec \"$@\""
    folders = [tmp_path / f"node-{rank}" for rank in (0, 1)]
    commands = [
        launch_command(
            pair["two_config"], folders[rank], 2,
            launcher=machine_flags(rank, port),
        )
        for rank in (0, 1)
    ]  # fmt: skip
    nodes = [
        subprocess.Popen(["bash", "-c", script, "bash", *cmd], cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
        for cmd in commands
    ]  # fmt: skip
    deadline = time.monotonic() + 180
    while not any(r.startswith("step 20: ") for r in _records_or_none(folders[0])):
        assert all(n.poll() is None for n in nodes) and time.monotonic() < deadline, "no step 20"
        time.sleep(0.05)
    os.killpg(nodes[1].pid, signal.SIGTERM)
    for node in nodes:
        node.communicate(timeout=180)
    steps = []
    for folder in folders:
        found = checkpoints.scan(folder / "checkpoints")
        assert found.newest is not None and not found.skipped, folder
        assert {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= set(
            checkpoints.read_marker(found.newest)
        )
        steps.append(checkpoints.step_of(found.newest))
    assert steps[0] == steps[1] and 20 <= steps[0] < 15 * EPOCHS
    attempts = json.loads((folders[0] / "attempts.json").read_text())["attempts"]
    assert [a["outcome"] for a in attempts] == ["interrupted"]

    again = [subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for cmd in commands]  # fmt: skip
    for node in again:
        _, stderr = node.communicate(timeout=300)
        assert node.returncode == 0, stderr[-3000:]
    done = manifest(folders[0])
    assert done["training"]["global_steps"] == manifest(pair["two"])["training"]["global_steps"]
    attempts = json.loads((folders[0] / "attempts.json").read_text())["attempts"]
    assert [a["outcome"] for a in attempts] == ["interrupted", "finished"]
    assert attempts[1]["resumed_at_step"] == steps[0]
    assert not (folders[1] / "attempts.json").exists() and not (folders[1] / "manifest.json").exists()


def test_a_machine_that_stops_answering_fails_the_other_after_the_collective_timeout(pair, tmp_path):
    """A machine gone without a soft-off (frozen here: SIGSTOP, its connections left open, as a VM cut
    off mid-collective leaves them) cannot agree on a stop: the other waits in its next collective only
    runtime.collective_timeout_s, then fails (its attempt recorded failed), instead of hanging."""
    port = str(free_port())
    nodes = []
    for rank in (0, 1):
        launcher = machine_flags(rank, port)
        cmd = launch_command(
            pair["two_config"], tmp_path / f"node-{rank}", 2, "--set", "runtime.collective_timeout_s=60",
            "--epochs", "200", launcher=launcher,  # long enough to be cut off mid-training
        )  # fmt: skip
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        nodes.append(subprocess.Popen(cmd, cwd=ROOT, env=env(), start_new_session=True, **pipes))
    try:
        deadline = time.monotonic() + 180
        while not any(r.startswith("step 20: ") for r in _records_or_none(tmp_path / "node-0")):
            assert all(n.poll() is None for n in nodes) and time.monotonic() < deadline, "no step 20"
            time.sleep(0.05)
        # Every process of machine 1: the launcher and its workers (torchrun starts them in sessions of
        # their own).
        machine = psutil.Process(nodes[1].pid)
        for process in [machine, *machine.children(recursive=True)]:
            process.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        _, stderr = nodes[0].communicate(timeout=300)
        waited = time.monotonic() - frozen
    finally:
        for node in nodes:
            if node.poll() is None:
                for process in [*psutil.Process(node.pid).children(recursive=True), psutil.Process(node.pid)]:
                    process.kill()
            node.communicate()
    assert nodes[0].returncode != 0
    assert 55 <= waited < 240, f"node 0 failed {waited:.0f} s after node 1 froze: {stderr[-2000:]}"
    attempts = json.loads((tmp_path / "node-0" / "attempts.json").read_text())["attempts"]
    assert [a["outcome"] for a in attempts] == ["failed"]
