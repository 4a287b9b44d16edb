"""Precision policy: a pure function of a device description, so every GPU case is testable on a CPU.

auto -> bf16 on compute capability >= 8 (A100, L4, H100), fp16 on 7.x (T4, V100); on a CPU, bf16
autocast where the CPU has bf16 matrix units (Intel AMX), else fp32 (README "Speed" has the figures).
fp16 asked on a CPU, or bf16 on a CPU without AMX -> warning, fp32 (and the manifest says fp32).
bf16 asked on a GPU without bf16 (compute capability < 8, e.g. the T4) -> refused: use fp16.
runtime.require_gpu with no GPU -> refused before the run starts (`check_gpu`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from trainer.errors import UserError


@dataclass(frozen=True)
class DeviceInfo:
    kind: str
    "cpu or cuda"
    name: str = "cpu"
    "GPU model name, e.g. Tesla T4"
    compute_capability: tuple[int, int] | None = None
    "CUDA compute capability, e.g. (7, 5) for a T4"
    count: int = 0
    "number of visible GPUs"
    bf16_matrix_units: bool = False
    "a CPU with bf16 matrix units (Intel AMX: amx_bf16 among the CPU flags), where bf16 autocast pays"

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"


@dataclass(frozen=True)
class PrecisionDecision:
    precision: str
    "what training really uses: fp32, fp16 or bf16"
    reason: str
    "one line for the log and the manifest"
    warning: str | None = None
    "set when the request could not be honoured"

    @property
    def fp16(self) -> bool:
        return self.precision == "fp16"

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"


def detect_device() -> DeviceInfo:
    import torch

    if torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true"):
        return DeviceInfo(
            kind="cuda",
            name=torch.cuda.get_device_name(0),
            compute_capability=tuple(torch.cuda.get_device_capability(0)),  # type: ignore[arg-type]
            count=torch.cuda.device_count(),
        )
    return DeviceInfo(kind="cpu", bf16_matrix_units="amx_bf16" in cpu_flags())


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where that cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            lines = [line for line in info if line.startswith("flags")]
    except OSError:  # not Linux: no flags known, so no AMX assumed
        lines = []
    return set(lines[0].partition(":")[2].split()) if lines else set()


def decide_precision(requested: str, device: DeviceInfo) -> PrecisionDecision:
    if requested == "fp32":
        return PrecisionDecision("fp32", "fp32 requested")
    if not device.is_cuda:
        if device.bf16_matrix_units and requested in ("auto", "bf16"):
            return PrecisionDecision(
                "bf16", f"{requested} on a CPU with bf16 matrix units (AMX): bf16 autocast"
            )
        if requested == "auto":
            return PrecisionDecision("fp32", "auto on CPU: fp32 (no bf16 matrix units)")
        without = " without bf16 matrix units (AMX)" if requested == "bf16" else ""
        return PrecisionDecision(
            "fp32",
            f"{requested} requested on CPU: fp32",
            warning=f"{requested} was requested but this run is on a CPU{without}: training in fp32 instead",
        )
    cc = device.compute_capability or (0, 0)
    cc_text = f"{device.name} (compute capability {cc[0]}.{cc[1]})"
    if requested == "bf16":
        if cc >= (8, 0):
            return PrecisionDecision("bf16", f"bf16 requested on {cc_text}")
        raise UserError(
            f"bf16 is not supported on {cc_text}: use --set train.precision=fp16 (or auto) on this GPU"
        )
    if requested == "fp16":
        return PrecisionDecision("fp16", f"fp16 requested on {cc_text}")
    # auto
    if cc >= (8, 0):
        return PrecisionDecision("bf16", f"auto on {cc_text}: bf16")
    if cc >= (7, 0):
        return PrecisionDecision("fp16", f"auto on {cc_text}: fp16 (tensor cores, no bf16)")
    return PrecisionDecision("fp32", f"auto on {cc_text}: fp32 (no tensor cores)")


def check_gpu(required: bool, device: DeviceInfo) -> None:
    """`runtime.require_gpu`: a run that asks for a GPU and sees none stops before it starts."""
    if required and not device.is_cuda:
        raise UserError(
            "runtime.require_gpu is true but no CUDA GPU is visible to this run (torch.cuda.is_available() "
            "is false): check the driver with `nvidia-smi` and the container's access with `docker run --rm "
            "--gpus all --entrypoint python <image> -c 'import torch; print(torch.cuda.is_available())'`, "
            "or set runtime.require_gpu=false to train on the CPU"
        )
