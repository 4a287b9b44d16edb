"""train.report_to through HF's own integrations, with real trackers: a real MLflow tracking server on
loopback (`mlflow server`, sqlite, from .tools/), W&B in offline mode, TensorBoard's event files. What a
user sees: the tracker's run read back through its own client, the manifest's `tracking`, the warnings,
the exit status, and no secret in any file the run wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, MlflowServer, free_port, require, wait_for
from trainer import tracking
from trainer.cli import main
from trainer.config import TRACKERS, load_config
from trainer.errors import ConfigError
from trainer.precision import DeviceInfo

CPU = DeviceInfo("cpu", None, None, 0)
PLANTED = {
    "MLFLOW_TRACKING_PASSWORD": "planted-mlflow-password-5f3a9c",
    "MLFLOW_TRACKING_TOKEN": "planted-mlflow-token-77e1d0",
    "WANDB_API_KEY": "planted0wandb0key0b5c0e91f0a2d4c6e8f0a1b3c5d7e9f1a3b5c7d9",
}
TRACKER_VARIABLES = ("MLFLOW_", "WANDB_", "TENSORBOARD_LOGGING_DIR", "DISABLE_MLFLOW_INTEGRATION")


@pytest.fixture(autouse=True)
def _no_tracker_settings_from_the_outer_shell(monkeypatch):
    """The trackers read their settings from the environment: the shell running the tests must not leak in."""
    for name in list(os.environ):
        if name.startswith(TRACKER_VARIABLES):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


def tiny_flags(tiny_config_file: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", str(tiny_config_file), "--output-dir", str(out), *extra]


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def eval_history(run_dir: Path) -> dict[int, dict[str, float]]:
    """Every evaluation of the run, from the last checkpoint's trainer_state.json: step -> eval metrics."""
    last = max((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((last / "trainer_state.json").read_text())
    return {
        h["step"]: {k: v for k, v in h.items() if k.startswith("eval_")}
        for h in state["log_history"]
        if "eval_loss" in h
    }


def files_holding(folder: Path, secrets) -> list[tuple[str, str]]:
    """(file, secret name) for every file under `folder` whose bytes hold a secret's value."""
    hits = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits += [(str(path), name) for name, value in secrets.items() if value.encode() in data]
    return hits


# ---------------------------------------------------------------------------------------------- config


def test_report_to_is_validated_like_the_rest_of_the_config():
    assert load_config(None, "local").train.report_to == ["tensorboard"]
    assert load_config(None, "local").train.report_required is False
    assert load_config(None, "local", {"train.report_to": []}).train.report_to == []
    assert load_config(None, "local", {"train.report_to": "mlflow,tensorboard"}).train.report_to == [
        "mlflow",
        "tensorboard",
    ]
    assert load_config(None, "local", {"train.report_to": "none"}).train.report_to == []
    with pytest.raises(ConfigError) as bad:
        load_config(None, "local", {"train.report_to": ["mlfow", "comet", "tensorboard"]})
    assert len(bad.value.problems) == 1
    (problem,) = bad.value.problems
    assert "'mlfow' (did you mean mlflow?)" in problem and "'comet'" in problem
    assert f"allowed: {', '.join(TRACKERS)}" in problem
    with pytest.raises(ConfigError, match=r"train\.report_to must be a list of strings"):
        load_config(None, "local", {"train.report_to": 3})


def test_report_to_from_an_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  report_to: ${TRACKERS:-tensorboard}\n")
    assert load_config(path, "local").train.report_to == ["tensorboard"]
    monkeypatch.setenv("TRACKERS", "[mlflow, wandb]")
    assert load_config(path, "local").train.report_to == ["mlflow", "wandb"]
    monkeypatch.setenv("TRACKERS", "wandb")
    assert load_config(path, "local").train.report_to == ["wandb"]


def test_credentials_leave_uris_and_messages():
    assert tracking.without_credentials("https://u:p@host:5000/x") == "https://host:5000/x"
    assert tracking.without_credentials("sqlite:///a.db") == "sqlite:///a.db"
    environ = {"WANDB_API_KEY": "k3y-value-long"}
    said = tracking.scrubbed("to http://u:pw@h/api failed\nkey k3y-value-long", environ)
    assert said == "to http://h/api failed key ***"


# ---------------------------------------------------------------------------------------------- TensorBoard


def test_tensorboard_by_default_writes_events_under_the_run_folder(tiny_config_file, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(tiny_flags(tiny_config_file, out), device=CPU) == 0
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(out / "tensorboard"))
    accumulator.Reload()
    logged = {e.step: e.value for e in accumulator.Scalars("eval/f1_macro")}
    history = eval_history(out)
    assert logged == pytest.approx({step: h["eval_f1_macro"] for step, h in history.items()})
    assert not list(tmp_path.rglob("runs")), "HF's default log dir (<output_dir>/runs/...) is not used"
    assert manifest(out)["tracking"] == {
        "tensorboard": {"log_dir": "tensorboard", "relative_to": "the run folder"}
    }
    assert manifest(out)["tracking_skipped"] == {}


def test_report_to_nothing_writes_no_events(tiny_config_file, tmp_path):
    out = tmp_path / "run"
    assert main(tiny_flags(tiny_config_file, out, "--set", "train.report_to=[]"), device=CPU) == 0
    assert not (out / "tensorboard").exists()
    assert manifest(out)["tracking"] == {}


# ---------------------------------------------------------------------------------------------- MLflow


def test_mlflow_run_read_back_from_a_real_tracking_server(
    mlflow_server, tiny_config_file, tmp_path, monkeypatch
):
    """A tiny run reports to the server; its own client reads back the run (named as the run folder), the
    params, and every evaluation's metrics, equal to the run's trainer_state and metrics.json. The URI's
    user:password and the planted password are nowhere in the run folder; the manifest has the run id."""
    host = mlflow_server.url.removeprefix("http://")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{PLANTED['MLFLOW_TRACKING_PASSWORD']}@{host}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tracking-readback")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PLANTED["MLFLOW_TRACKING_PASSWORD"])
    out = tmp_path / "tiny-mlflow-run"
    flags = tiny_flags(
        tiny_config_file, out, "--set", "train.report_to=[mlflow,tensorboard]",
        "--set", "train.report_required=true", "--set", "train.eval_strategy=steps",
        "--set", "train.eval_steps=5", "--no-early-stopping",
    )  # fmt: skip
    assert main(flags, device=CPU) == 0

    record = manifest(out)["tracking"]["mlflow"]
    client = mlflow_server.client()
    run = client.get_run(record["run_id"])
    assert run.info.run_name == record["run_name"] == out.name
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == record["experiment_id"]
    assert client.get_experiment(record["experiment_id"]).name == "tracking-readback"
    assert record["tracking_uri"] == mlflow_server.url  # without alice's password
    params = run.data.params
    assert float(params["learning_rate"]) == 5.0e-3 and params["run_name"] == out.name
    assert (
        int(params["per_device_train_batch_size"]) == 16
        and params["report_to"] == "['mlflow', 'tensorboard']"
    )

    history = eval_history(out)
    assert sorted(history) == [5, 10, 15, 20, 25, 30]  # 2 epochs of 15 steps, every 5 steps
    for key in history[5]:
        logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        assert logged == {step: h[key] for step, h in history.items()}, key
    losses = {m.step for m in client.get_metric_history(run.info.run_id, "loss")}
    assert losses == {1, *range(5, 31, 5)}  # logging_steps 5, and the first step
    best_step = int(Path(manifest(out)["training"]["best_checkpoint"]).name.split("-")[1])
    validation = json.loads((out / "metrics.json").read_text())["validation"]
    assert validation["f1_macro"] == pytest.approx(history[best_step]["eval_f1_macro"], abs=1e-6)

    assert files_holding(out, {"MLFLOW_TRACKING_PASSWORD": PLANTED["MLFLOW_TRACKING_PASSWORD"]}) == []
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["train"]["report_to"] == ["mlflow", "tensorboard"]


def test_unreachable_mlflow_is_one_warning_and_training_goes_on(
    tiny_config_file, tmp_path, monkeypatch, capsys
):
    closed = free_port()  # bound and closed again: nothing listens there
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", f"http://bob:{PLANTED['MLFLOW_TRACKING_PASSWORD']}@127.0.0.1:{closed}"
    )
    out = tmp_path / "run"
    started = time.monotonic()
    assert (
        main(tiny_flags(tiny_config_file, out, "--set", "train.report_to=mlflow,tensorboard"), device=CPU)
        == 0
    )
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "WARNING" in line and "mlflow" in line]
    assert len(warnings) == 1, err
    assert f"MLFLOW_TRACKING_URI http://127.0.0.1:{closed} does not answer" in warnings[0]
    assert "train.report_required=true" in warnings[0]
    found = manifest(out)
    assert "mlflow" not in found["tracking"] and "tensorboard" in found["tracking"]
    assert "does not answer" in found["tracking_skipped"]["mlflow"]
    assert files_holding(out, PLANTED) == []
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert time.monotonic() - started < 120


def test_unreachable_mlflow_with_report_required_refuses_to_start(
    tiny_config_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    out = tmp_path / "run"
    flags = tiny_flags(
        tiny_config_file, out, "--set", "train.report_to=[mlflow]", "--set", "train.report_required=true"
    )
    assert main(flags, device=CPU) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("trainer: error: train.report_required is true, and mlflow cannot be reached")
    assert not out.exists()  # nothing trained, nothing written


def test_a_missing_client_is_one_line_naming_the_install(tiny_config_file, tmp_path, monkeypatch, capsys):
    """As on a machine without the `tracking` extra (the container image): the client is not found."""
    monkeypatch.setattr(tracking, "find_spec", lambda name: None if name == "mlflow" else find_spec(name))
    out = tmp_path / "run"
    assert (
        main(tiny_flags(tiny_config_file, out, "--set", "train.report_to=[mlflow,tensorboard]"), device=CPU)
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "pip install mlflow-skinny" in err and ".[tracking]" in err
    assert not out.exists()


def test_mlflow_without_a_server_uri_needs_a_store_the_client_opens(tmp_path, monkeypatch):
    """mlflow-skinny opens no local store (sqlite needs the full package, a folder MLFLOW_ALLOW_FILE_STORE):
    said before training, not as a failure at the first step."""
    require(find_spec("mlflow"), "the MLflow client is not installed in .venv: run `make setup`")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, "local", {"train.report_to": ["mlflow"]}).train
    if find_spec("sqlalchemy") is None:
        skipped = tracking.check(cfg, environ={}).skipped
        assert skipped["mlflow"].startswith("cannot open MLflow's default store")
        assert "set MLFLOW_TRACKING_URI to a tracking server" in skipped["mlflow"]
    environ = {"MLFLOW_TRACKING_URI": f"file://{tmp_path}/mlruns", "MLFLOW_ALLOW_FILE_STORE": "true"}
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert tracking.check(cfg, environ=environ).skipped == {}


@pytest.mark.slow
def test_an_mlflow_server_that_dies_mid_run_costs_a_warning_not_the_run(tiny_model_dir, tiny_csv, tmp_path):
    """The server is killed at step 3 of 30: the next log call fails within MLflow's (bounded) retries, one
    warning, training and evaluation finish, exit 0, and the manifest says where reporting stopped."""
    from tests.support import write_run_config

    server = MlflowServer(tmp_path / "server")
    config = write_run_config(tmp_path / "c.yaml", tiny_model_dir, tiny_csv, epochs=2, batch_size=16,
                              train_extra="  report_to: [mlflow]\n")  # fmt: skip
    out = tmp_path / "run"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(TRACKER_VARIABLES)},
        "MLFLOW_TRACKING_URI": server.url,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "trainer", "--config", str(config), "--output-dir", str(out)]
    try:
        trainer = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        from tests.support import logged_step

        wait_for(lambda: logged_step(out, 3) or trainer.poll() is not None, "step 3", timeout=240)
        server.stop()
        killed = time.monotonic()
        _, stderr = trainer.communicate(timeout=300)
    finally:
        server.stop()
    assert trainer.returncode == 0, stderr[-3000:]
    assert time.monotonic() - killed < 150  # MLflow's own budget would be minutes per failed call
    warnings = [line for line in stderr.splitlines() if "mlflow stopped reporting" in line]
    assert len(warnings) == 1, stderr[-3000:]
    record = manifest(out)["tracking"]["mlflow"]
    assert record["run_id"] and "Connection refused" in record["failed"]
    assert json.loads((out / "metrics.json").read_text())["test"]["num_examples"] == 30


@pytest.mark.slow
def test_only_the_main_process_reports(mlflow_server, tiny_model_dir, tiny_csv, tmp_path):
    """Two processes under `accelerate launch`: one MLflow run, one TensorBoard event file."""
    from tests.support import write_run_config
    from tests.trainer.test_distributed import env as launch_env
    from tests.trainer.test_distributed import launch_command

    extra = "  report_to: [mlflow, tensorboard]\n  report_required: true\n"
    config = write_run_config(
        tmp_path / "c.yaml", tiny_model_dir, tiny_csv, epochs=1, batch_size=8, train_extra=extra
    )
    out = tmp_path / "two-processes"
    env = {
        **launch_env(),
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "MLFLOW_EXPERIMENT_NAME": "two-processes",
    }
    done = subprocess.run(
        launch_command(config, out, 2), capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow_server.client()
    experiment = client.get_experiment_by_name("two-processes")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [manifest(out)["tracking"]["mlflow"]["run_id"]]
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert manifest(out)["distributed"]["world_size"] == 2


# ---------------------------------------------------------------------------------------------- W&B


def test_wandb_offline_writes_its_run_and_no_secret_anywhere(tiny_config_file, tmp_path, monkeypatch):
    """W&B offline (an API key planted, as a user with a key would have it): the offline run's files are
    written under WANDB_DIR, the manifest has the run id, and no planted secret is in any file written."""
    require(find_spec("wandb"), "the W&B client is not installed in .venv: run `make setup`")
    wandb_dir = tmp_path / "wandb-dir"
    wandb_dir.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.setenv("WANDB_PROJECT", "tiny-tracking")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "tiny-wandb-run"
    flags = tiny_flags(
        tiny_config_file,
        out,
        "--set",
        "train.report_to=[wandb,tensorboard]",
        "--set",
        "train.report_required=true",
    )
    assert main(flags, device=CPU) == 0

    record = manifest(out)["tracking"]["wandb"]
    assert (
        record["mode"] == "offline"
        and record["project"] == "tiny-tracking"
        and record["run_name"] == out.name
    )
    run_dir = Path(record["dir"])
    assert run_dir.parent == wandb_dir / "wandb" and run_dir.name.endswith(f"-{record['run_id']}")
    history = run_dir / f"run-{record['run_id']}.wandb"
    assert history.stat().st_size > 1000  # the offline run's records, complete once the run finished
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert files_holding(out, PLANTED) == []
    assert files_holding(wandb_dir, PLANTED) == []
