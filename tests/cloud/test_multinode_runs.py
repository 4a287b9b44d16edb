"""Several VMs, one run, through the verbs: two booted stand-in VMs (tests/standins/vm.py: systemd, sshd,
the real playbook and run units), node_count = 2 in the tfvars, each VM at a loopback address of its own.

What is real: Terraform (the stand-in provider gives each instance its VM's address, node 0's also its
internal one), the inventory of two hosts, the playbook on both over SSH (each .env with its rank and node
0's address), `make train MODE=cloud` / `stop` / `runs` / `logs NODE=1` / `watch`, the run units on both
nodes, the trainer image, accelerate's multi-machine launch and torch's rendezvous at node 0's address
(gloo: CPU processes for GPUs). What stands in: both VMs and their trainer containers share the CI's one
Docker engine and the host's network (node 1's containers get names of their own: the role's
trainer_host_run_container_prefix), a preemption is `docker stop` of node 1's VM (its soft-off), and GCE
starting it again is the provider marking it RUNNING while the test boots it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import support
from tests.cloud.conftest import deploy
from tests.infra.conftest import stand_in_google  # noqa: F401 (a fixture)
from tests.standins.deployment import INSTANCE, LONG_RUN, Deployment
from tests.standins.google_provider.cloud import CLOUD_ENV, StandInCloud
from tests.standins.vm import SPOT_GRACE_S
from tests.support import logged_step

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.gcs]

STEPS_PER_EPOCH = 240 // (4 * 2)  # the tiny CSV's 240 training rows, batches of 4 on each of 2 machines
VM = "google_compute_instance"


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, gcs_emulator, stand_in_google, no_gnu):  # noqa: F811
    with deploy(
        tmp_path_factory.mktemp("multinode"), gcs_emulator, stand_in_google, no_gnu, nodes=2
    ) as cloud:
        yield cloud


def wait_for(predicate, what: str, timeout: float = 300) -> None:
    support.wait_for(predicate, what, timeout, poll=0.1)


def train(cloud: Deployment, run: str, tiny_csv, tiny_model_dir, *extra: str):
    return cloud.make("train", "MODE=cloud", f"RUN={run}", f"DATA={tiny_csv}", f"MODEL={tiny_model_dir}",
                      f"ARGS={LONG_RUN}", *extra, timeout=1500)  # fmt: skip


def start(cloud: Deployment, run: str, tiny_csv, tiny_model_dir, step: int) -> None:
    """Start `run` detached on both nodes and wait until node 0 logged optimizer step `step`."""
    done = cloud.ops("start", run, *LONG_RUN.split(), timeout=900, DATA=str(tiny_csv),
                     MODEL=str(tiny_model_dir))  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    wait_for(lambda: logged_step(cloud.run_folder(run), step), f"step {step}", timeout=600)


def node_folder(cloud: Deployment, rank: int, run: str):
    return cloud.vms[rank].data_mount / "runs" / run


@pytest.fixture(scope="module")
def reference(nodes: Deployment, tiny_csv, tiny_model_dir) -> dict:
    """One uninterrupted two-node run: the steps a stopped or preempted one must end with."""
    done = train(nodes, "mn-ref", tiny_csv, tiny_model_dir)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    nodes.reference_output = done.stdout  # type: ignore[attr-defined]
    return nodes.manifest("mn-ref")


def test_make_train_runs_one_run_on_both_nodes(nodes: Deployment, reference, tiny_csv):
    out = nodes.reference_output  # type: ignore[attr-defined]
    for rank in (0, 1):
        assert f"(node {rank})" in out and f"building the image on node {rank}" in out, out[-3000:]
    assert reference["distributed"] == {"world_size": 2, "processes_per_machine": 1, "machines": 2}
    assert reference["training"]["global_steps"] == 3 * STEPS_PER_EPOCH
    # Node 0 alone writes the run's records and the bucket copy; node 1 holds its checkpoints only.
    assert (node_folder(nodes, 0, "mn-ref") / "manifest.json").is_file()
    other = node_folder(nodes, 1, "mn-ref")
    assert other.is_dir() and not any(
        (other / name).exists() for name in ("manifest.json", "training.log", "metrics.json", "attempts.json")
    )
    assert (other / "checkpoints").is_dir()
    # make runs: one row, node 0's state; make logs NODE=1: node 1's own console.
    runs = nodes.make("runs", "FORMAT=csv")
    assert runs.returncode == 0, runs.stderr
    rows = [line.split(",") for line in runs.stdout.splitlines()[1:]]
    assert [(row[0], row[1]) for row in rows if row[0] == "mn-ref"] == [("mn-ref", "finished")]
    logs = nodes.make("logs", "RUN=mn-ref", "NODE=1")
    assert logs.returncode == 0 and "trainer-run: run mn-ref, attempt started" in logs.stdout, logs.stderr
    assert "node 1's log of run mn-ref ends here" in logs.stdout
    # A node provisioned for another node count: refused in one line, before anything is shipped.
    env_file = nodes.vms[1].project_dir / ".env"
    provisioned = env_file.read_text()
    env_file.write_text(provisioned.replace("TRAINER_NUM_MACHINES=2", "TRAINER_NUM_MACHINES=1"))
    try:
        refused = nodes.make("train", "MODE=cloud", "RUN=mn-never", f"DATA={tiny_csv}")
    finally:
        env_file.write_text(provisioned)
    assert refused.returncode == 2 and "train-cloud: shipping" not in refused.stdout
    assert refused.stderr.strip().splitlines()[0].startswith("error: node 1 at "), refused.stderr
    said = "was provisioned for another node count or rank than the inventory's 2 node(s): run make provision"
    assert said in refused.stderr
    bad = nodes.make("logs", "RUN=mn-ref", "NODE=2")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[0] == "error: NODE='2': the deployment has 2 node(s), NODE=0 to 1"


def test_stop_stops_both_nodes_at_one_checkpoint_and_train_resumes_on_both(
    nodes: Deployment, reference, tiny_csv, tiny_model_dir
):
    run = "mn-stop"
    start(nodes, run, tiny_csv, tiny_model_dir, STEPS_PER_EPOCH + 10)
    done = nodes.make("stop", f"RUN={run}", timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert f"stopping run {run} on 2 nodes" in done.stdout
    assert nodes.state(run) == "interrupted"
    step = max(nodes.markers(run))
    assert STEPS_PER_EPOCH + 10 <= step < 3 * STEPS_PER_EPOCH
    # The same checkpoint, whole, on each node's disk (each resumes from its own copy).
    for rank in (0, 1):
        checkpoint = node_folder(nodes, rank, run) / "checkpoints" / f"checkpoint-{step}"
        marker = checkpoint / "checkpoint-complete.json"
        assert "model.safetensors" in json.loads(marker.read_text())["files"], rank
    done = train(nodes, run, tiny_csv, tiny_model_dir)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    resumed = nodes.manifest(run)
    assert resumed["training"]["resumed_from"].endswith(f"checkpoint-{step}")
    assert resumed["training"]["global_steps"] == reference["training"]["global_steps"]
    assert resumed["timing"]["attempts"] == 2


def test_a_preempted_node_stops_the_run_on_both_and_watch_restarts_it(
    nodes: Deployment, reference, tiny_csv, tiny_model_dir
):
    run = "mn-preempt"
    start(nodes, run, tiny_csv, tiny_model_dir, STEPS_PER_EPOCH + 10)
    before = set(nodes.markers(run))
    _, exit_code = nodes.vms[1].soft_off(SPOT_GRACE_S)
    assert exit_code == 130, f"node 1 did not power off cleanly within {SPOT_GRACE_S} s (exit {exit_code})"
    # Node 0 stops too, at the step node 1's processes agreed, with the checkpoint in the bucket.
    wait_for(lambda: nodes.state(run).startswith("interrupted"), "node 0's run to stop", timeout=120)
    step = max(set(nodes.markers(run)) - before)
    assert STEPS_PER_EPOCH + 10 <= step < 3 * STEPS_PER_EPOCH
    assert nodes.state(run) == "interrupted (node 1 down)"

    # A node down: a run is refused in one line before anything starts.
    sessions = nodes.vm.sessions()
    refused = train(nodes, "mn-never", tiny_csv, tiny_model_dir)
    assert refused.returncode == 2
    line = refused.stderr.strip().splitlines()[0]  # then make's own "Error 2"
    assert line.startswith("error: cannot reach node 1 over SSH at "), line
    assert not (nodes.vm.data_mount / "jobs" / "mn-never").exists()
    assert nodes.vm.sessions() - sessions <= 3  # the probe's and state's logins only; nothing started

    # GCE starts the VM again (make watch's apply): here the provider marks it RUNNING, the test boots it.
    cloud = StandInCloud(Path(nodes.env[CLOUD_ENV]))
    cloud.set_attributes(VM, f"{INSTANCE}-multi-1", current_status="TERMINATED")
    nodes.vms[1].boot()
    # A node does not resume a run alone at boot: watch restarts it on every node.
    enabled = nodes.vms[1].console("systemctl", "is-enabled", f"trainer-run@{run}.service", check=False)
    assert enabled.strip() == "disabled"
    done = nodes.make("watch", f"RUN={run}", f"DATA={tiny_csv}", f"MODEL={tiny_model_dir}",
                      f"ARGS={LONG_RUN}", "WATCH_ATTEMPTS=3", "WATCH_SLEEP=1", "QUOTA_CHECK=0",
                      timeout=1500)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert f"watch: run {run} is finished" in done.stdout
    resumed = nodes.manifest(run)
    assert resumed["training"]["resumed_from"].endswith(f"checkpoint-{step}")
    assert resumed["training"]["global_steps"] == reference["training"]["global_steps"]
    assert resumed["distributed"]["machines"] == 2
