"""Shared helpers for tests that need a real outside part (Docker engine, Debian root, tools).

Outside CI such a test skips with the reason. `.ci/run` sets TRAINER_TESTS_STRICT=1, and there a
missing part is a failure, never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS_BIN = ROOT / ".tools" / "bin"
STRICT = os.environ.get("TRAINER_TESTS_STRICT") == "1"


def require(condition: object, reason: str) -> None:
    """Skip (or, under TRAINER_TESTS_STRICT=1, fail) the calling test when `condition` is false."""
    if condition:
        return
    if STRICT:
        pytest.fail(f"required for this CI run but missing: {reason}", pytrace=False)
    pytest.skip(reason)


def tool(name: str) -> str:
    """Path of an infra tool: .tools/bin first (made by `make setup-tools`), then PATH; skip if absent."""
    candidate = TOOLS_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    require(found, f"`{name}` is not installed: run `make setup-tools`")
    return str(found)


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 120, poll: float = 0.01) -> None:
    """Poll `predicate` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def logged_step(run_dir: Path, step: int) -> bool:
    """Whether the run's training.log has the line of optimizer step `step` (logging_steps: 1)."""
    log = run_dir / "training.log"
    return log.is_file() and f"step {step}: " in log.read_text(encoding="utf-8", errors="replace")


def write_run_config(
    path: Path, model_dir: Path, csv: Path, *, epochs: int, batch_size: int = 4,
    learning_rate: float = 5e-3, train_extra: str = "",
) -> Path:  # fmt: skip
    """The tests' tiny run as a YAML config: texts cut at 32 tokens, evaluation batches of 64, a log line
    every step; `train_extra` adds lines (indented two spaces) to its train section."""
    path.write_text(
        f"""
model: {{name: {model_dir}, max_length: 32}}
data: {{path: {csv}}}
train:
  epochs: {epochs}
  batch_size: {batch_size}
  eval_batch_size: 64
  learning_rate: {learning_rate}
  logging_steps: 1
{train_extra}""",
        encoding="utf-8",
    )
    return path


def extra_ca_certs() -> str:
    """Locally added CAs (Debian keeps them here), e.g. a TLS-intercepting proxy's, for pip in the build."""
    files = sorted(Path("/usr/local/share/ca-certificates").rglob("*.crt"))
    return "".join(f.read_text() for f in files)


# ---- a real MLflow tracking server (train.report_to's tests, locally and from the stand-in VM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class MlflowServer:
    """`mlflow server` on a free loopback port with a sqlite backend, in its own session; stopped by its PID
    (the process group it leads: uvicorn's workers with it)."""

    def __init__(self, folder: Path):
        require(find_spec("mlflow"), "the MLflow client is not installed in .venv: run `make setup`")
        folder.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = folder / "server.log"
        cmd = [
            tool("mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
            "--port", self.url.rsplit(":", 1)[1], "--workers", "1",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "WANDB_"))}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True
            )
        try:
            wait_for(
                lambda: answers(f"{self.url}/health") or self.process.poll() is not None, "mlflow server"
            )
        except AssertionError:
            self.stop()
            raise
        assert self.process.poll() is None, self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        stop_group(self.process)

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url)


def stop_group(process: subprocess.Popen) -> None:
    """Stop a server the test started in a session of its own: SIGTERM to its group, SIGKILL after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
