"""`make serve` (python -m trainer.serve) for real: the server started on a free loopback port in a process
of its own, real HTTP requests (good and bad), requests batched together under load, and a bounded load
test (8 clients x 200 requests, loopback only) with zero errors."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, stop_group, wait_for
from trainer.predict import Predictor

LIMITS = ["--max-texts", "8", "--max-chars", "200", "--max-batch", "32", "--wait-ms", "20"]
TEXTS = [
    "i love this great day",
    "",
    "awful terrible worst",
    "the table report",
    "x",
    "café naïve \u201cok\u201d",
]
# What a bad request is answered with: (body, status, words the one error line has)
BAD = {
    "not-json": (b"text=hello", 400, "the body is not JSON"),
    "not-utf8": ('{"text": "caf\xe9"}'.encode("latin-1"), 400, "the body is not UTF-8"),
    "empty-body": (b"", 400, "the body is not JSON"),
    "missing-field": (b'{"txt": "hello"}', 422, 'give exactly one of the fields "text" and "texts"'),
    "both-fields": (
        b'{"text": "a", "texts": ["b"]}',
        422,
        'give exactly one of the fields "text" and "texts"',
    ),
    "not-an-object": (b'["hello"]', 422, 'give exactly one of the fields "text" and "texts"'),
    "unknown-field": (b'{"text": "a", "lang": "en"}', 422, 'unknown field "lang"'),
    "non-string-text": (b'{"text": 42}', 422, '"text" must be a string, got a number'),
    "non-string-item": (b'{"texts": ["a", null]}', 422, '"texts"[1] must be a string, got null'),
    "texts-not-a-list": (b'{"texts": "a"}', 422, '"texts" must be a list of strings, got str'),
    "list-too-long": (json.dumps({"texts": ["a"] * 9}).encode(), 413, '"texts" has 9 items, at most 8'),
    "text-too-long": (json.dumps({"texts": ["a", "b" * 201]}).encode(), 413, '"texts"[1] has 201 characters'),
}


class Server:
    """`python -m trainer.serve` on 127.0.0.1:<free port>, in its own session; stopped by its PID."""

    def __init__(self, run: Path, log: Path, *flags: str):
        self.port = free_port()
        self.log = log
        cmd = [sys.executable, "-m", "trainer.serve", "--run", str(run), "--port", str(self.port), *flags]
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        try:
            wait_for(lambda: self.healthy() or self.process.poll() is not None, "the server", timeout=180)
        except AssertionError:
            self.stop()
            raise
        assert self.process.poll() is None, log.read_text(errors="replace")[-3000:]

    def request(self, method: str, path: str, body: bytes | None = None, conn=None) -> tuple[int, bytes]:
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(
                method, path, body=body, headers={"Content-Type": "application/json"} if body else {}
            )
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            if own:
                conn.close()

    def json(self, method: str, path: str, body: object = None) -> tuple[int, dict]:
        status, data = self.request(method, path, None if body is None else json.dumps(body).encode())
        return status, json.loads(data)

    def healthy(self) -> bool:
        try:
            return self.request("GET", "/healthz")[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        stop_group(self.process)


@pytest.fixture(scope="module")
def server(onnx_run, tmp_path_factory):
    srv = Server(onnx_run, tmp_path_factory.mktemp("serve") / "server.log", *LIMITS)
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log.read_text(errors="replace"), srv.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def reference(onnx_run):
    """What `predict` answers in-process with the same format, text by text."""
    predictor = Predictor.load(onnx_run)
    return {row["text"]: row for row in predictor.predict(TEXTS)}


def test_one_text_and_a_list_come_back_labelled_in_input_order(server, reference):
    status, one = server.json("POST", "/predict", {"text": TEXTS[0]})
    assert status == 200 and one["format"] == "onnx" and len(one["predictions"]) == 1
    assert one["predictions"][0]["label"] == reference[TEXTS[0]]["label"]
    status, many = server.json("POST", "/predict", {"texts": TEXTS})
    assert status == 200
    rows = many["predictions"]
    assert [r["text"] for r in rows] == TEXTS
    assert rows[1] == {
        "text": "",
        "label": None,
        "scores": None,
        "skipped": "blank text: nothing to classify",
    }
    for row in rows:
        want = reference[row["text"]]
        assert row["label"] == want["label"]
        if want["scores"]:
            assert row["scores"] == pytest.approx(want["scores"], abs=1e-5)
            assert sum(row["scores"].values()) == pytest.approx(1.0, abs=1e-4)


def test_health_and_metadata_say_what_is_served(server, onnx_run):
    status, health = server.json("GET", "/healthz")
    assert status == 200 and health["status"] == "ok" and health["format"] == "onnx"
    status, meta = server.json("GET", "/metadata")
    assert status == 200
    assert meta["run"] == str(onnx_run) and meta["labels"] == ["negative", "neutral", "positive"]
    assert meta["format"] == "onnx" and meta["runtime"].startswith("onnxruntime ")
    assert meta["source"] == str(onnx_run / "export/onnx/model.onnx") and meta["max_length"] == 32
    assert meta["model"] == json.loads((onnx_run / "manifest.json").read_text())["model"]
    assert meta["limits"] == {"max_batch": 32, "max_texts": 8, "max_chars": 200, "wait_ms": 20.0}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_request_gets_a_4xx_with_one_json_error_line(server, case):
    body, want_status, words = BAD[case]
    status, data = server.request("POST", "/predict", body)
    assert status == want_status, data
    text = data.decode()
    assert "\n" not in text.strip() and "Traceback" not in text
    assert list(json.loads(text)) == ["error"] and words in json.loads(text)["error"]
    assert server.healthy()  # and it goes on serving
    assert server.json("POST", "/predict", {"text": "lovely"})[0] == 200


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/nowhere", 404), ("GET", "/predict", 405)])
def test_a_wrong_route_or_method_is_one_json_line_too(server, method, path, status):
    got, data = server.request(method, path)
    assert got == status and list(json.loads(data)) == ["error"]


def concurrently(clients: int, work) -> list:
    """Run work(i) in `clients` threads released together; their results (or exceptions) in order."""
    barrier = threading.Barrier(clients)
    results: list = [None] * clients

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # reported by the caller's assertion with the rest
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


def test_requests_that_arrive_together_share_a_forward_pass(server, reference):
    before = server.json("GET", "/healthz")[1]
    texts = [t for t in TEXTS if t]
    results = concurrently(16, lambda i: server.json("POST", "/predict", {"text": texts[i % len(texts)]}))
    for i, (status, data) in enumerate(results):
        assert status == 200 and data["predictions"][0]["text"] == texts[i % len(texts)]
        assert data["predictions"][0]["label"] == reference[texts[i % len(texts)]]["label"]
    after = server.json("GET", "/healthz")[1]
    requests, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
    assert requests == 16 and batches < requests and after["largest_batch"] > 1


def test_a_run_that_cannot_be_served_is_one_line_before_listening(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "trainer.serve", "--run", str(tmp_path / "nope"), "--port", str(free_port())],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"trainer: error: run folder {tmp_path / 'nope'} does not exist: train first, or fetch the run"
    )


@pytest.mark.slow
def test_load_eight_clients_two_hundred_requests_each_without_an_error(server, reference):
    """8 clients, each on its own keep-alive connection, 200 requests one after another (one or a few
    texts each): every answer 200 and right; p50/p95 latency and throughput are printed and kept in
    .ci-cache/serve-load.json (figures, not a bar: the machine is shared)."""
    clients, per_client = 8, 200
    texts = [t for t in TEXTS if t]

    def client(i: int) -> list[float]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        latencies = []
        try:
            for k in range(per_client):
                batch = [texts[(i + k + j) % len(texts)] for j in range(1 + k % 3)]
                start = time.perf_counter()
                status, data = server.request("POST", "/predict", json.dumps({"texts": batch}).encode(), conn)
                latencies.append(time.perf_counter() - start)
                rows = json.loads(data)["predictions"] if status == 200 else None
                if status != 200 or [r["label"] for r in rows] != [reference[t]["label"] for t in batch]:
                    raise AssertionError(f"client {i} request {k}: {status} {data[:300]!r}")
        finally:
            conn.close()
        return latencies

    before = server.json("GET", "/healthz")[1]
    started = time.perf_counter()
    results = concurrently(clients, client)
    wall = time.perf_counter() - started
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    latencies = sorted(x for r in results for x in r)
    after = server.json("GET", "/healthz")[1]
    figures = {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "p95_ms": round(latencies[int(len(latencies) * 0.95)] * 1000, 1),
        "requests_per_s": round(len(latencies) / wall, 1),
        "forward_passes": after["batches"] - before["batches"],
        "largest_batch": after["largest_batch"],
        "format": "onnx",
        "cpus": os.cpu_count(),
    }
    (ROOT / ".ci-cache").mkdir(exist_ok=True)
    (ROOT / ".ci-cache/serve-load.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nload test: {figures}")
    assert len(latencies) == clients * per_client and figures["forward_passes"] < len(latencies)
