"""Two "nodes" of a multi-node run: two containers of the trainer image on the real Docker engine, machine
rank 0 and 1, meeting over loopback (host networking, as the VMs meet at node 0's internal address).

Real: the image, compose with its CPU override, docker/entrypoint.sh deriving the launch from the
counts the VM's .env holds, accelerate's multi-node launch and torch's rendezvous. What stands in: the
two VMs are two containers on one host (127.0.0.1 for node 0's address, a free port for the rendezvous
port), each with its own runs folder as each VM has its own data disk; CPU processes over gloo for GPUs.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess

import pytest

from tests.container.test_container import (  # noqa: F401 (fixtures: pytest finds them here)
    COMPOSE,
    CPU_OVERRIDE,
    built_image,
    compose_cmd,
    engine,
)
from tests.support import ROOT

pytestmark = pytest.mark.container
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRAINER_GPU_COUNT": "0"}, "TRAINER_GPU_COUNT must be a whole number from 1, got '0'"),
        ({"TRAINER_NUM_MACHINES": "two"}, "TRAINER_NUM_MACHINES must be a whole number from 1, got 'two'"),
        (
            {"TRAINER_NUM_MACHINES": "3", "TRAINER_MACHINE_RANK": "3"},
            "TRAINER_MACHINE_RANK must be a whole number from 0 to 2 (TRAINER_NUM_MACHINES - 1), got '3'",
        ),
        (
            {"TRAINER_NUM_MACHINES": "2", "TRAINER_MAIN_PROCESS_IP": "10.0.0.1; reboot"},
            "TRAINER_MAIN_PROCESS_IP must be the main node's IPv4 address with TRAINER_NUM_MACHINES=2, "
            "got '10.0.0.1; reboot'",
        ),
        ({"TRAINER_MAIN_PROCESS_PORT": "70000"}, "TRAINER_MAIN_PROCESS_PORT must be a port number"),
    ],
)
def test_entrypoint_refuses_bad_counts_in_one_line(env, message):
    """The entrypoint checks the .env's counts before anything starts (run here with bash: the checks
    come before it looks at the image's /config)."""
    env = {"PATH": "/usr/bin:/bin", **env}
    done = subprocess.run(["bash", str(ENTRYPOINT)], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"trainer-entrypoint: {message}")


@pytest.mark.slow
def test_two_containers_rendezvous_and_finish_one_run(engine, built_image, tiny_model_dir, tiny_csv):  # noqa: F811
    shutil.copytree(tiny_model_dir, engine.dirs["models"] / "tiny")
    shutil.copy(tiny_csv, engine.dirs["data"] / "tiny.csv")
    node_runs = [engine.dirs["runs"].parent / f"runs-node-{rank}" for rank in (0, 1)]
    for folder in node_runs:
        folder.mkdir()
    engine.dirs.update({f"node{rank}": folder for rank, folder in enumerate(node_runs)})
    engine.give_to_container_user()
    port = str(free_port())
    files = ["-f", str(COMPOSE), "-f", str(CPU_OVERRIDE), "-f", str(engine.override)]
    args = [
        "--mode", "local", "--epochs", "1", "--batch-size", "8", "--output-dir", "/runs/two-nodes",
        "--set", "model.name=/models/tiny", "--set", "data.path=/data/tiny.csv",
        "--set", "data.max_rows=null", "--set", "model.max_length=32",
    ]  # fmt: skip
    nodes = []
    for rank, runs in enumerate(node_runs):
        # What each VM's .env says (ansible/roles/trainer_host/templates/env.j2), nothing else.
        env = {
            **engine.env,
            "TRAINER_RUNS_DIR": str(runs),
            "GPU_COUNT": "1",
            "TRAINER_NUM_MACHINES": "2",
            "TRAINER_MACHINE_RANK": str(rank),
            "TRAINER_MAIN_PROCESS_IP": "127.0.0.1",
            "TRAINER_MAIN_PROCESS_PORT": port,
        }
        cmd = [*compose_cmd(), "-p", engine.project, *files, "run", "--rm", "trainer", *args]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        nodes.append(subprocess.Popen(cmd, env=env, **pipes))
    outputs = []
    for node in nodes:
        try:
            out, err = node.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            node.kill()
            out, err = node.communicate()
        outputs.append((node.returncode, out, err))
    for rank, (code, out, err) in enumerate(outputs):
        assert code == 0, f"node {rank}: {(out + err)[-3000:]}"
    main, other = (runs / "two-nodes" for runs in node_runs)
    manifest = json.loads((main / "manifest.json").read_text())
    assert manifest["distributed"] == {"world_size": 2, "processes_per_machine": 1, "machines": 2}
    assert manifest["training"]["effective_batch_size"] == 16
    assert manifest["training"]["global_steps"] == -(-240 // 16)
    assert "run finished: /runs/two-nodes" in outputs[0][1]
    # Node 1 wrote no records of the run (its folder holds at most its own checkpoint shards).
    assert not any((other / name).exists() for name in ("manifest.json", "training.log", "metrics.json"))
