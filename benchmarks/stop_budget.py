#!/usr/bin/env python3
"""How long the SIGTERM stop's checkpoint takes: saved, marked complete and uploaded to the bucket.

    .venv/bin/python -m benchmarks.stop_budget                    # DistilBERT-sized, 3 repeats
    .venv/bin/python -m benchmarks.stop_budget --model tiny --repeats 5

A spot VM's soft-off gives the run's container a stop grace period (docker-compose.yml, set per VM kind by
the trainer_host role) to save a checkpoint and copy it to the bucket; this prints what that takes here,
and the verdict against the grace of each VM kind. The model is randomly initialised from its config
(no hub access): `DistilBertForSequenceClassification(DistilBertConfig())`, the default config being
distilbert-base's 66M parameters, or the tests' tiny DistilBERT (`--model tiny`). One real training step
gives AdamW its two moments, so the checkpoint holds what the trainer's does: weights (safetensors),
optimizer and scheduler state, RNG state, trainer state, training arguments, the tokenizer.

Each repeat goes the trainer's own way:
  save    `Trainer._save_checkpoint` (what HF's Trainer calls before `on_save`), then
          `trainer.checkpoints.mark_complete` (fsync of every file, the completion marker: what
          CompletionMarkerCallback does in `on_save`);
  upload  `trainer.storage.BucketSync.upload_checkpoint` (CheckpointSyncCallback's call: every file,
          the marker last), through the least-privilege gate (tests/standins/gcs_gate.py, the VM
          account's roles read from infra/iam.tf) to gcp-storage-emulator on loopback.
It imports the emulator's client and the gate from tests/ (the dev install has them), and starts the
emulator itself as tests/cloud/conftest.py does. Loopback has no network: the upload figure is the
client's, the gate's and the emulator's work on this machine's CPUs (all three Python), not GCS's
throughput. A figure, not a timed test: two shared cores make it vary by tens of percent.

Measured 2026-12 on the 2-core test machine (shared with other test runs), 5 repeats, two runs: the
DistilBERT-sized checkpoint is 803.6 MB, saved in 1.2-1.4 s and uploaded in 19.7 s (median), 21 s in all
(the slowest of the 10 repeats: 30.6 s); the tiny model's is 0.4 MB, 0.6 s in all. The DistilBERT run
takes about 2 minutes, the tiny one 15 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The VM kinds' stop grace periods (ansible/roles/trainer_host/defaults/main.yml derives them from the
# soft-off window: 30 s spot, 120 s standard).
GRACE_S = {"spot": 25, "standard": 110}
BUCKET = "stop-budget"
ACCOUNT = "tweet-trainer-vm@demo-project.iam.gserviceaccount.com"


def build_trainer(kind: str, work: Path):
    """A Trainer of the model that has taken one AdamW step on a few short texts (CPU)."""
    import torch
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        PreTrainedTokenizerFast,
        Trainer,
        TrainingArguments,
    )

    from tests.conftest import build_tiny_model

    tiny = build_tiny_model(work / "tiny-distilbert")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny)
    torch.manual_seed(0)
    if kind == "tiny":
        model = DistilBertForSequenceClassification.from_pretrained(tiny, num_labels=2)
    else:
        model = DistilBertForSequenceClassification(DistilBertConfig(num_labels=2))
    texts = ["a short text", "another short text about nothing"] * 2
    rows = [{**tokenizer(t, truncation=True, max_length=32), "labels": i % 2} for i, t in enumerate(texts)]
    args = TrainingArguments(
        output_dir=str(work / "checkpoints"),
        max_steps=1,
        per_device_train_batch_size=4,
        use_cpu=True,
        save_strategy="no",  # the benchmark saves by hand, timed
        report_to="none",
        disable_tqdm=True,
        save_only_model=False,  # as trainer/training.py: optimizer, scheduler and RNG state too
    )
    from transformers import DataCollatorWithPadding, PrinterCallback

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    trainer.remove_callback(PrinterCallback)  # its dict of the step's metrics: not a figure of this benchmark
    trainer.train()
    return trainer


def start_emulator() -> tuple[subprocess.Popen, int]:
    """gcp-storage-emulator on a free loopback port, with its files on disk (checkpoints of hundreds of MB
    would otherwise stay in its memory), as tests/cloud/conftest.py starts it."""
    from tests.cloud.conftest import free_port

    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    if not exe.exists():
        raise SystemExit("gcp-storage-emulator is not installed: run `make setup`")
    port = free_port()
    data = tempfile.mkdtemp(prefix="stop-budget-gcs-")
    proc = subprocess.Popen(
        [str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        env={**os.environ, "STORAGE_BASE": data},  # its files' folder (it has no option for it)
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import socket

    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.terminate()
                raise SystemExit(f"gcp-storage-emulator did not listen on 127.0.0.1:{port}") from None
            time.sleep(0.2)
    proc.data_dir = data  # type: ignore[attr-defined]
    return proc, port


def measure(trainer, sync, repeats: int) -> list[tuple[int, float, float]]:
    """(bytes on disk, save s, upload s) for each repeat, each a new checkpoint-<n> folder."""
    from trainer import checkpoints

    out = Path(trainer.args.output_dir)
    rows = []
    for n in range(1, repeats + 1):
        trainer.state.global_step = n
        folder = out / f"checkpoint-{n}"
        started = time.monotonic()
        trainer._save_checkpoint(trainer.model, trial=None)
        checkpoints.mark_complete(folder)
        saved = time.monotonic()
        if sync.upload_checkpoint(folder) == 0:
            raise SystemExit(f"{folder.name} was not uploaded: {checkpoints.problem(folder)}")
        uploaded = time.monotonic()
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        rows.append((size, saved - started, uploaded - saved))
        shutil.rmtree(folder)  # the next repeat writes to a cold folder, as the stop does
        for blob in sync.client.list_blobs(sync.bucket, prefix=f"{sync.checkpoint_prefix}/{folder.name}/"):
            blob.delete()
    return rows


def report(kind: str, rows: list[tuple[int, float, float]]) -> None:
    size = rows[0][0]
    print(f"model: {kind}; checkpoint on disk: {size / 1e6:.1f} MB; {len(rows)} repeats")
    print("repeat  save_s  upload_s  total_s")
    for i, (_, save, upload) in enumerate(rows, 1):
        print(f"{i:>6}  {save:6.2f}  {upload:8.2f}  {save + upload:7.2f}")
    save = statistics.median(r[1] for r in rows)
    upload = statistics.median(r[2] for r in rows)
    total = statistics.median(r[1] + r[2] for r in rows)
    print(f"median  {save:6.2f}  {upload:8.2f}  {total:7.2f}")
    for vm, grace in GRACE_S.items():
        verdict = "fits" if total <= grace else "does NOT fit"
        print(
            f"{vm}: grace {grace} s, median total {total:.1f} s: {verdict} ({grace - total:+.1f} s to spare)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["distilbert", "tiny"], default="distilbert")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import logging

    from transformers.utils import logging as hf_logging

    logging.disable(logging.WARNING)  # the Trainer's and the sync's info lines; the figures follow
    hf_logging.disable_progress_bar()

    from tests.cloud.conftest import emulator_client
    from tests.standins.gcs_gate import Gate, Policy
    from trainer.storage import BucketSync

    emulator, port = start_emulator()
    try:
        emulator_client(f"http://127.0.0.1:{port}").create_bucket(BUCKET)
        with tempfile.TemporaryDirectory(prefix="stop-budget-") as work:
            trainer = build_trainer(args.model, Path(work))
            with Gate(port, Policy.from_iam_tf(ROOT / "infra" / "iam.tf", ACCOUNT, BUCKET)) as gate:
                os.environ["STORAGE_EMULATOR_HOST"] = gate.url  # the trainer's client: the VM's account
                sync = BucketSync(f"gs://{BUCKET}", "stop-budget")
                rows = measure(trainer, sync, args.repeats)
                denied = gate.denials()
            # google-cloud-storage 3.x fetches the bucket's metadata in a background thread (its
            # observability cache) and shrugs off the 403 objectAdmin gets; the upload does not need it.
            background = [d for d in denied if d[0] == "GET" and d[1].startswith(f"/storage/v1/b/{BUCKET}?")]
            if len(denied) > len(background):
                raise SystemExit(f"the gate refused calls the upload needs: {denied}")
        report(args.model, rows)
        if background:
            print(
                f"(the gate refused {len(background)} background bucket-metadata fetch: storage.buckets.get)"
            )
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)
        shutil.rmtree(emulator.data_dir, ignore_errors=True)  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
