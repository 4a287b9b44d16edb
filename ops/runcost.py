"""What the run about to start would cost on each offer: the figure `offer_order = "cheapest"` orders by.

    hours = training FLOPs / (GPUs x the GPU's dense peak for the precision it trains in x MFU)
    cost  = hours x the offer's hourly price (ops/prices.py: the table, or the Billing Catalog)

Training FLOPs are the manifest's own formula (trainer/flops.py): FLOPs per real token at the training
split's mean length x the split's real tokens x epochs, from the run's config (config/cloud.yaml, the
laptop's DATA or the demo tweets, MODEL or the config's model), tokenized here with the model's tokenizer.
Epochs are the config's: early stopping may end sooner, so the figure is an upper bound of the training
itself (set-up, evaluation and a preemption's lost steps are not in it).

MFU (the fraction of the peak a run reaches) is ASSUMED_MFU unless a manifest in the bucket measured it
on that GPU kind (its hardware_use.fraction_of_peak): then the newest such run's figure, named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.flops import PEAK_TFLOPS, gpu_model

# A small encoder fine-tuned on short texts keeps a GPU's tensor cores far from busy: kernel launches,
# the optimizer step and padding-free but short batches dominate. 15% is a deliberately modest guess
# (well below the 30-50% large language-model training reports); a measured figure replaces it.
ASSUMED_MFU = 0.15

# The precision the trainer's policy picks on each GPU (trainer/precision.py: bf16 from compute
# capability 8, fp16 on 7.x, fp32 below) and the name trainer/flops.py knows it by.
GPU_PRECISION: dict[str, tuple[str, str]] = {
    "nvidia-tesla-t4": ("T4", "fp16"),
    "nvidia-tesla-v100": ("V100", "fp16"),
    "nvidia-tesla-p100": ("P100", "fp32"),
    "nvidia-tesla-p4": ("P4", "fp32"),
    "nvidia-l4": ("L4", "bf16"),
    "nvidia-tesla-a100": ("A100", "bf16"),
    "nvidia-a100-80gb": ("A100", "bf16"),
}


class Unestimable(Exception):
    """The run's work cannot be counted here (no local data, a model this machine cannot read)."""


@dataclass(frozen=True)
class RunWork:
    flops: float
    tokens: int  # real tokens of one epoch of the training split
    epochs: float
    model: str
    data: str

    def describe(self) -> str:
        return (
            f"{self.flops:.3g} training FLOPs ({self.model}, {self.tokens:,} real tokens x {self.epochs:g} "
            f"epochs of {self.data})"
        )


def run_work(config: Path, data: str = "", model: str = "", demo: Path | None = None) -> RunWork:
    """The training FLOPs of the cloud run `config` would make with these inputs (see the docstring)."""
    from trainer.config import ConfigError, load_config

    if data.startswith("gs://"):
        raise Unestimable(f"DATA={data} is in a bucket: the estimate counts the tokens of a local file")
    path = data or (str(demo) if demo else "")
    if not path or not Path(path).exists():
        raise Unestimable(f"no local data to count ({path or 'DATA unset'}): pass DATA=file or run make data")
    # The laptop's data and model in place of the VM's; no bucket sync is asked of a count.
    overrides: dict[str, Any] = {"data.path": path, "runtime.bucket": None}
    if model:
        overrides["model.name"] = model
    try:
        cfg = load_config(config, mode="cloud", overrides=overrides)
    except ConfigError as exc:
        raise Unestimable(f"{config}: {exc}") from None
    try:
        from transformers import AutoConfig, AutoTokenizer

        from trainer.data import load_splits
        from trainer.flops import training_flops_per_token

        model_config = _load(AutoConfig, cfg.model.name)
        tokenizer = _load(AutoTokenizer, cfg.model.name)
        splits = load_splits(cfg.data, cfg.train.seed)
        lengths = [
            len(ids)
            for ids in tokenizer(
                splits.train["text"].tolist(), truncation=True, max_length=cfg.model.max_length
            )["input_ids"]
        ]
        tokens = sum(lengths)
        per_token = training_flops_per_token(model_config, tokens / max(1, len(lengths)))
    except Unestimable:
        raise
    except Exception as exc:  # a model or file this machine cannot read: said, not raised
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unestimable(f"{cfg.model.name}: {first}") from None
    return RunWork(per_token * tokens * cfg.train.epochs, tokens, cfg.train.epochs, cfg.model.name, path)


def _load(cls, name: str):
    """From a folder or the Hub's cache first; the Hub itself only when it answers (an offline laptop
    would otherwise wait through huggingface_hub's retries, twice)."""
    import os
    import socket
    from urllib.parse import urlsplit

    try:
        return cls.from_pretrained(name, local_files_only=True)
    except OSError as exc:
        if Path(name).exists():  # a folder (or file) that holds no such model: the Hub has nothing to add
            raise Unestimable(f"{name}: {str(exc).strip().splitlines()[0]}") from None
    hub = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((hub.hostname or "", hub.port or 443), timeout=3).close()
    except OSError:
        raise Unestimable(
            f"{name} is not cached here and {hub.hostname} cannot be reached: pass MODEL=<a model folder>"
        ) from None
    return cls.from_pretrained(name)


def peak(gpu_type: str) -> tuple[float, str] | None:
    """(dense peak TFLOP/s, precision) of one GPU of this type, or None when trainer/flops.py has none."""
    known = GPU_PRECISION.get(gpu_type)
    if known is None:
        return None
    name, precision = known
    value = PEAK_TFLOPS.get(name, {}).get(precision)
    return (value, precision) if value else None


def measured_mfu(manifests: dict[str, dict[str, Any]]) -> dict[str, tuple[float, str]]:
    """{gpu_type: (fraction of peak, run)} from finished runs' manifests ({run: manifest}): the newest
    run per GPU kind (run names sort by time as make train names them) whose hardware_use measured one."""
    found: dict[str, tuple[float, str]] = {}
    for run in sorted(manifests):
        use = (manifests[run] or {}).get("hardware_use") or {}
        fraction, device = use.get("fraction_of_peak"), str(use.get("peak_for") or "")
        if not fraction or fraction <= 0:
            continue
        model = gpu_model(device.split(",")[0])
        for gpu_type, (name, _) in GPU_PRECISION.items():
            if model == name:
                found[gpu_type] = (float(fraction), run)
    return found


@dataclass(frozen=True)
class Estimate:
    hours: float
    cost: float
    mfu: float
    mfu_source: str


Measured = dict[str, tuple[float, str]]


def estimate(
    work: RunWork, gpu_type: str, gpus: int, hourly: float, measured: Measured | None = None
) -> Estimate | None:
    """Hours and cost of `work` on `gpus` GPUs of this type (all nodes) at `hourly` USD (all nodes)."""
    top = peak(gpu_type)
    if top is None or gpus < 1:
        return None
    mfu, source = ASSUMED_MFU, f"assumed {ASSUMED_MFU:.0%}"
    if measured and gpu_type in measured:
        mfu, run = measured[gpu_type]
        source = f"{mfu:.1%} measured by run {run}"
    seconds = work.flops / (gpus * top[0] * 1e12 * mfu)
    hours = seconds / 3600
    return Estimate(hours, hours * hourly, mfu, source)
