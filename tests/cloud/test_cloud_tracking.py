"""A cloud run reports to the user's tracker: `make train MODE=cloud` takes the trackers' settings from the
laptop's environment (MLFLOW_*, WANDB_*) to the run on the VM, and no secret among them lands anywhere a run
writes, nor on a command line.

Real: the booted stand-in VM (tests/standins/vm.py) with the playbook's run manager and units, the image
built there (with the `tracking` extra), an MLflow tracking server (`mlflow server`, sqlite) on this
machine's loopback, which the trainer's container reaches over the host network as a VM reaches a tracking
server; the bucket is the GCS emulator behind the least-privilege gate.
"""

from __future__ import annotations

import json

import pytest

from tests.cloud.test_cloud_verbs import bucket_files, run_args
from tests.support import MlflowServer

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.gcs]

SECRET = "planted-cloud-secret-9c2e4b71"


def test_a_cloud_run_reports_to_the_laptops_mlflow_and_its_secret_lands_nowhere(
    cloud, tiny_csv, tiny_model_dir, tmp_path
):
    server = MlflowServer(tmp_path / "mlflow")
    try:
        done = cloud.make(
            "train", "MODE=cloud", "RUN=tracked-1", f"DATA={tiny_csv}", f"MODEL={tiny_model_dir}",
            f"ARGS={run_args()} --set train.report_to=mlflow,tensorboard",
            env={"MLFLOW_TRACKING_URI": server.url, "MLFLOW_EXPERIMENT_NAME": "cloud-runs",
                 "MLFLOW_TRACKING_USERNAME": "bob", "MLFLOW_TRACKING_PASSWORD": SECRET,
                 "WANDB_DIR": "/a/laptop/folder"},
        )  # fmt: skip
        assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
        # Named, never shown; a laptop folder stays on the laptop.
        assert (
            "train-cloud: passing MLFLOW_EXPERIMENT_NAME, MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_URI, "
            "MLFLOW_TRACKING_USERNAME to the run (values not shown)"
        ) in done.stdout
        on_vm = cloud.vm.data_mount / "runs" / "tracked-1"
        manifest = json.loads((on_vm / "manifest.json").read_text())
        tracked = manifest["tracking"]["mlflow"]
        assert tracked["tracking_uri"] == server.url and manifest["tracking_skipped"] == {}

        # The tracker has the run, by its name, with the run's own evaluations.
        client = server.client()
        run = client.get_run(tracked["run_id"])
        assert run.info.run_name == "tracked-1" and run.info.status == "FINISHED"
        experiment = client.get_experiment(run.info.experiment_id)
        assert experiment.name == "cloud-runs"
        history = client.get_metric_history(run.info.run_id, "eval_f1_macro")
        best = manifest["training"]["best_metric"]["eval_f1_macro"]
        assert history and max(h.value for h in history) == pytest.approx(best)
    finally:
        server.stop()

    # The secret is in no file the run wrote (its folder on the VM's disk, the bucket's copy and
    # checkpoints), nor in the run manager's own files but the root-only one that holds it for a resume,
    # nor on the command line of any process the VM ran it with (the unit's journal records them).
    written = [p for p in on_vm.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert written == []
    for prefix in ("runs/tracked-1/", "checkpoints/tracked-1/"):
        holding = [name for name, data in bucket_files(cloud, prefix).items() if SECRET.encode() in data]
        assert holding == [], prefix
    jobs = cloud.vm.data_mount / "jobs" / "tracked-1"
    holding = sorted(p.name for p in jobs.iterdir() if p.is_file() and SECRET.encode() in p.read_bytes())
    assert holding == ["private-env"]
    assert (jobs / "private-env").stat().st_mode & 0o077 == 0
    journal = cloud.vm.journal("-u", "trainer-run@tracked-1.service")
    assert "tracked-1" in journal and SECRET not in journal
