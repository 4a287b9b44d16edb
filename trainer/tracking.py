"""Experiment trackers through HF's own integrations (`TrainingArguments.report_to`): which trackers of
`train.report_to` a run reports to (checked before training), what each tracker's run is (for the
manifest), and a guard so that a tracker failing mid-run costs one warning, never the run.

Each tracker's settings come from the environment, as its library documents them: MLFLOW_TRACKING_URI,
MLFLOW_EXPERIMENT_NAME, MLFLOW_TRACKING_USERNAME / _PASSWORD / _TOKEN, ...; WANDB_PROJECT, WANDB_MODE,
WANDB_API_KEY, WANDB_DIR, WANDB_BASE_URL, .... The trainer reads them only to check that a tracker can be
reached, and writes none of them anywhere: a URI it logs or records in the manifest loses its
user:password first, and a message from a tracker loses the values of the secret variables.

In a multi-process run only the main process reports: HF's callbacks start their runs and log on the
world's process zero alone (`state.is_world_process_zero`), and so does the recorder here.
"""

from __future__ import annotations

import logging
import netrc
import os
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from transformers import TrainerCallback

from trainer.config import TrainConfig
from trainer.errors import UserError

log = logging.getLogger(__name__)

CLIENTS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow-skinny"),
    "wandb": ("wandb", "wandb"),
}
"tracker -> (module it imports, the package that brings it)"
PROBE_SECONDS = 5.0
"how long a tracking server has to answer before the run starts"
SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "WANDB_API_KEY", "DATABRICKS_TOKEN")
"their values never appear in a message the trainer logs"
_USERINFO = re.compile(r"(?<=//)[^/@\s]+@")
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
"""MLflow's HTTP retry budget while the trainer reports to it, where the environment does not set one.
MLflow's own (7 retries with backoff, 120 s timeout: about 4 minutes a call, up to 16 for a server that
does not answer at all) would hold training that long once when the server goes away; these: seconds for
a server that refuses connections (6 s measured), under a minute for one that does not answer."""


@dataclass(frozen=True)
class Trackers:
    """`train.report_to` after the check: the trackers the run reports to, and those left out, with why."""

    reporting: tuple[str, ...]
    "what `TrainingArguments.report_to` gets"
    skipped: dict[str, str] = field(default_factory=dict)
    "tracker -> why it was left out (one line, no credentials)"


def check(train: TrainConfig, environ: Mapping[str, str] = os.environ, probe: bool = True) -> Trackers:
    """Before training: each tracker's client is installed (else a UserError naming the pip install), and,
    where `probe` (the main process: the only one that reports), each one can report: its server answers,
    its store opens. One that cannot is left out (the caller warns), or, with `train.report_required`, a
    UserError: the run does not start (under a launcher, the other processes are stopped with it)."""
    missing = [name for name in train.report_to if find_spec(CLIENTS[name][0]) is None]
    if missing:
        packages = " ".join(CLIENTS[name][1] for name in missing)
        raise UserError(
            f"train.report_to names {', '.join(missing)}, but its client is not installed here: "
            f"pip install {packages} (or pip install '.[tracking]', which make setup does; the trainer image "
            "carries no tracker client), or drop it from train.report_to"
        )
    skipped = {name: why for name in train.report_to if probe and (why := PROBES[name](environ))}
    if skipped and train.report_required:
        raise UserError(
            "train.report_required is true, and "
            + "; ".join(f"{name} {why}" for name, why in skipped.items())
            + ": fix that, or set train.report_required=false to train without it"
        )
    return Trackers(tuple(name for name in train.report_to if name not in skipped), skipped)


def skipped_warning(name: str, why: str) -> str:
    return (
        f"train.report_to: {name} {why}; training goes on without it "
        "(with train.report_required=true the run would not start)"
    )


# ---------------------------------------------------------------------------------------------
# Reachability, per tracker: None when it can report, else why not


def _tensorboard_problem(environ: Mapping[str, str]) -> str | None:
    return None  # event files in the run folder


def _mlflow_problem(environ: Mapping[str, str]) -> str | None:
    """An http(s) tracking URI must answer `GET <uri>/health`; a Databricks one is MLflow's business; any
    other store (a database, a folder, MLflow's default sqlite:///mlflow.db when MLFLOW_TRACKING_URI is
    unset) must open with MLflow's own client: mlflow-skinny opens none of them without the full mlflow
    package (SQLAlchemy) or MLFLOW_ALLOW_FILE_STORE=true."""
    uri = environ.get("MLFLOW_TRACKING_URI", "").strip()
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        return _answers(uri.rstrip("/") + "/health", f"MLFLOW_TRACKING_URI {without_credentials(uri)}")
    if scheme.startswith("databricks"):
        return None
    import mlflow

    try:
        mlflow.MlflowClient(tracking_uri=uri or None).search_experiments(max_results=1)
    except Exception as exc:
        store = f"MLFLOW_TRACKING_URI {without_credentials(uri)}" if uri else "MLflow's default store"
        first = scrubbed(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return (
            f"cannot open {store} ({first[:300]}); set MLFLOW_TRACKING_URI to a tracking server "
            "(http://host:5000)"
        )
    return None


def _wandb_problem(environ: Mapping[str, str]) -> str | None:
    """Offline and disabled modes need nothing; online needs an API key and the W&B server answering."""
    if environ.get("WANDB_MODE", "").strip().lower() in ("offline", "dryrun", "disabled"):
        return None
    base = environ.get("WANDB_BASE_URL", "").strip() or "https://api.wandb.ai"
    if not _wandb_key(environ, base):
        return (
            f"has no API key for {without_credentials(base)}: set WANDB_API_KEY (or run `wandb login`), "
            "or WANDB_MODE=offline"
        )
    return _answers(base, f"the W&B server {without_credentials(base)}")


PROBES: dict[str, Callable[[Mapping[str, str]], str | None]] = {
    "tensorboard": _tensorboard_problem,
    "mlflow": _mlflow_problem,
    "wandb": _wandb_problem,
}


def _wandb_key(environ: Mapping[str, str], base: str) -> bool:
    if environ.get("WANDB_API_KEY", "").strip() or environ.get("WANDB_IDENTITY_TOKEN_FILE", "").strip():
        return True
    path = environ.get("NETRC") or os.path.expanduser("~/.netrc")  # where `wandb login` keeps the key
    try:
        return netrc.netrc(path).authenticators(urlsplit(base).hostname or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _answers(url: str, what: str) -> str | None:
    """None when a server answers `url` (any HTTP status below 500, or a TLS handshake the tracker's own
    settings may accept) within PROBE_SECONDS; else why not."""
    request = urllib.request.Request(without_credentials(url), method="GET")
    try:
        with urllib.request.urlopen(request, timeout=PROBE_SECONDS):
            return None
    except urllib.error.HTTPError as exc:
        return None if exc.code < 500 else f"cannot be reached: {what} answered HTTP {exc.code}"
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            return None
        return f"cannot be reached: {what} does not answer ({exc.reason})"
    except (OSError, ValueError) as exc:  # a timeout while reading, a malformed URL
        return f"cannot be reached: {what} does not answer ({exc})"


def without_credentials(uri: str) -> str:
    """`https://user:secret@host/x` -> `https://host/x`; anything else unchanged."""
    parts = urlsplit(uri)
    if not parts.netloc or "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def scrubbed(text: str, environ: Mapping[str, str] = os.environ) -> str:
    """A message without URI credentials or the value of any secret variable, on one line."""
    text = _USERINFO.sub("", text)
    for name in SECRET_VARIABLES:
        value = environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, "***")
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# During the run


class Reporting(TrainerCallback):
    """The run's side of HF's tracker callbacks. `attach` points HF's TensorBoard callback at the run
    folder and guards the others; as a callback after them, at train begin it records each tracker's run
    (id, experiment or project, where it lives) for the manifest."""

    def __init__(self, trackers: Trackers, tensorboard_dir: Path):
        self.trackers = trackers
        self.tensorboard_dir = tensorboard_dir
        self.records: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, str] = {}
        "tracker -> the error that stopped its reporting mid-run (scrubbed)"

    def attach(self, trainer) -> None:
        from transformers.integrations import MLflowCallback, TensorBoardCallback, WandbCallback

        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback):
                # transformers 5 has no TrainingArguments.logging_dir: the callback writes to
                # $TENSORBOARD_LOGGING_DIR or <output_dir>/runs/<date_host>, and output_dir is the checkpoints
                # folder. Its `logging_dir`, read at train begin, keeps the events at <run>/tensorboard.
                callback.logging_dir = str(self.tensorboard_dir)
            elif isinstance(callback, MLflowCallback):
                for variable, value in MLFLOW_HTTP_DEFAULTS.items():
                    os.environ.setdefault(variable, value)
                _synchronous_metrics(callback)
                self._guard("mlflow", callback)
            elif isinstance(callback, WandbCallback):
                self._guard("wandb", callback)

    def _guard(self, name: str, callback: TrainerCallback) -> None:
        """Every event of the callback: an exception becomes one warning, and the callback is silent from
        then on (the run goes on, the manifest records the error)."""
        for event in [e for e in vars(TrainerCallback) if e.startswith("on_")]:
            setattr(callback, event, self._guarded(name, getattr(callback, event)))

    def _guarded(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(args, state, control, **kwargs):
            if name in self.failed:
                return None
            try:
                return method(args, state, control, **kwargs)
            except Exception as exc:
                self.failed[name] = scrubbed(f"{type(exc).__name__}: {exc}")[:500]
                log.warning(
                    "%s stopped reporting at step %d: %s; training goes on without it",
                    name,
                    state.global_step,
                    self.failed[name],
                )
                return None

        return call

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        for name in self.trackers.reporting:
            if name not in self.failed:
                self.records[name] = RECORDERS[name](self)

    def manifest(self) -> dict[str, Any]:
        """The manifest's `tracking`: per tracker reported to, its run; `skipped`: those left out and why."""
        reported = {}
        for name in self.trackers.reporting:
            record = dict(self.records.get(name, {}))
            if name in self.failed:
                record["failed"] = self.failed[name]
            reported[name] = record
        return {"tracking": reported, "tracking_skipped": dict(self.trackers.skipped)}

    def close(self, status: str = "FINISHED") -> None:
        """End the trackers' runs the integrations leave open: HF ends MLflow's run at train end only (not
        on a crash, nor after its callback failed), and never W&B's (its offline files are complete once
        finished). Never raises; a tracker that failed before is not warned about twice."""
        for name, end in (("mlflow", _end_mlflow), ("wandb", _end_wandb)):
            if name not in self.trackers.reporting:
                continue
            try:
                end("FAILED" if name in self.failed else status)
            except Exception as exc:
                level = logging.DEBUG if name in self.failed else logging.WARNING
                log.log(level, "%s: ending its run failed: %s", name, scrubbed(str(exc))[:500])


def _synchronous_metrics(callback) -> None:
    """HF's MLflow callback logs metrics asynchronously (mlflow >= 2.8): a batch that fails is retried in
    MLflow's background threads, and the run's end and the interpreter's exit wait for every one of them.
    A server killed at step 5 of 60 held the finished run for over ten minutes (2026-12, mlflow-skinny
    3.18). Made synchronous after HF's setup (which sets the flag), a failed call raises in the guarded
    callback: one warning, then no more calls. Each log call then waits for the server: milliseconds on
    a nearby server, at most a few a logging step for a far one."""
    setup = callback.setup

    def synchronous_setup(*args, **kwargs):
        setup(*args, **kwargs)
        callback._async_log = False

    callback.setup = synchronous_setup


def _tensorboard_record(reporting: Reporting) -> dict[str, Any]:
    return {"log_dir": reporting.tensorboard_dir.name, "relative_to": "the run folder"}


def _mlflow_record(reporting: Reporting) -> dict[str, Any]:
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return {"run_id": None}
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "experiment_id": run.info.experiment_id,
        "tracking_uri": without_credentials(mlflow.get_tracking_uri()),
    }


def _wandb_record(reporting: Reporting) -> dict[str, Any]:
    import wandb

    run = wandb.run
    if run is None:
        return {"run_id": None}
    mode = "disabled" if run.disabled else "offline" if run.offline else "online"
    return {
        "run_id": run.id,
        "run_name": run.name,
        "project": run.project,
        "mode": mode,
        "dir": None if run.disabled else run.settings.sync_dir,
        "url": None if mode != "online" else run.url,
    }


RECORDERS: dict[str, Callable[[Reporting], dict[str, Any]]] = {
    "tensorboard": _tensorboard_record,
    "mlflow": _mlflow_record,
    "wandb": _wandb_record,
}


def _end_mlflow(status: str) -> None:
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.end_run(status=status)


def _end_wandb(status: str) -> None:
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=0 if status == "FINISHED" else 1)


def unchecked(report_to: Sequence[str]) -> Trackers:
    """Trackers as asked, without the check (pipelines other than a run: the benchmarks, tests)."""
    return Trackers(tuple(report_to))
