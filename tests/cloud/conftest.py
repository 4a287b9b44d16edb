"""Fixtures for the cloud tests: the GCS API emulator on loopback, and the least-privilege gate."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import require


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within {seconds:.0f} s")


@pytest.fixture(scope="session")
def gcs_emulator():
    """gcp-storage-emulator (a real GCS JSON API server, in memory) on a free loopback port: its URL."""
    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    require(exe.exists(), "gcp-storage-emulator is not installed: run `make setup`")
    port = free_port()
    proc = subprocess.Popen(
        [str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 30, "gcp-storage-emulator")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def emulator_client(url: str):
    """A google-cloud-storage client of the GCS API at `url` (the emulator: the project's owner's view;
    the gate: the VM's account's view)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": url}
    )


# The stand-in google provider for real Terraform, the same session fixture the infra tests use.
from tests.infra.conftest import stand_in_google  # noqa: E402, F401
