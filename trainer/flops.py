"""How much of the hardware a run used: model FLOPs per token from the model's configuration, achieved
training TFLOP/s, and on a GPU the fraction of the device's dense peak for the precision used.

FLOPs per token of training (forward + backward) = 6 x non-embedding parameters + 6 x layers x sequence
length x hidden size (the attention scores and their weighted sum; Kaplan et al. 2020, "Scaling Laws for
Neural Language Models", table 1, times 3 for forward + backward). Non-embedding parameters per layer:
4 d^2 (query, key, value, output) + 2 d ff (the feed-forward pair); biases and layer norms left out.
The run counts real tokens (attention mask 1), never padding: padding costs time but does no useful work.
"""

from __future__ import annotations

import re
from typing import Any

# Dense (no sparsity) peak TFLOP/s per precision, from NVIDIA's datasheets: tensor cores for fp16/bf16,
# plain fp32 (no TF32) for fp32. Datasheets quote fp16/bf16 "with sparsity": the dense figure is half.
# T4: nvidia.com/content/dam/en-zz/Solutions/Data-Center/tesla-t4/t4-tensor-core-datasheet-951643.pdf
# L4 (GCP G2): resources.nvidia.com/en-us-data-center-overview/l4-gpu-datasheet (242 sparse fp16/bf16,
#       so 121 dense; 30.3 fp32)
# A100 (GCP A2, 40GB and 80GB alike): nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/
#       nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf (312 bf16/fp16 dense, 19.5 fp32)
# V100 (GCP: SXM2): images.nvidia.com/content/technologies/volta/pdf/
#       volta-v100-datasheet-update-us-1165301-r5.pdf (125 fp16 tensor, 15.7 fp32; no bf16)
# P100 (GCP: PCIe 16GB) and P4: their NVIDIA datasheets (P100 PCIe 18.7 fp16, 9.3 fp32; P4 5.5 fp32). Below
#       compute capability 7 the precision policy trains in fp32 (trainer/precision.py).
# H100: nvidia.com/en-us/data-center/h100/ datasheet (SXM 1,979 / PCIe 1,513 bf16 sparse; 67 / 51 fp32);
#       the same dense figures in glennklockwood.com/garden/processors/h100
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "T4": {"fp16": 65.0, "fp32": 8.1},
    "L4": {"fp16": 121.0, "bf16": 121.0, "fp32": 30.3},
    "A100": {"fp16": 312.0, "bf16": 312.0, "fp32": 19.5},
    "V100": {"fp16": 125.0, "fp32": 15.7},
    "P100": {"fp16": 18.7, "fp32": 9.3},
    "P4": {"fp32": 5.5},
    "H100 PCIe": {"fp16": 756.0, "bf16": 756.0, "fp32": 51.0},
    "H100": {"fp16": 989.0, "bf16": 989.0, "fp32": 67.0},
}


def _dims(config: Any) -> tuple[int, int, int]:
    """(layers, hidden size, feed-forward size) of a BERT-like (hidden_size, num_hidden_layers,
    intermediate_size) or DistilBERT-like (dim, n_layers, hidden_dim) configuration."""
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None)
    ff = getattr(config, "intermediate_size", None) or getattr(config, "hidden_dim", None)
    if not (layers and hidden and ff):
        raise ValueError(f"cannot read layers / hidden size / feed-forward size from {type(config).__name__}")
    return int(layers), int(hidden), int(ff)


def non_embedding_params(config: Any) -> int:
    layers, d, ff = _dims(config)
    return layers * (4 * d * d + 2 * d * ff)


def training_flops_per_token(config: Any, sequence_length: float) -> float:
    """Forward + backward FLOPs per token at the given (mean) sequence length."""
    layers, d, _ = _dims(config)
    return 6.0 * non_embedding_params(config) + 6.0 * layers * sequence_length * d


def achieved_tflops(config: Any, tokens: int, sequence_length: float, seconds: float) -> float:
    """Training TFLOP/s over `tokens` real tokens processed in `seconds`."""
    if seconds <= 0:
        return 0.0
    return training_flops_per_token(config, sequence_length) * tokens / seconds / 1e12


def gpu_model(device_name: str) -> str | None:
    """The PEAK_TFLOPS key a device name is ("Tesla T4" -> "T4"), else None (a CPU, an unlisted GPU)."""
    name = device_name.upper()
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):  # "H100 PCIE" before "H100"
        # A whole model name: "NVIDIA L4" is an L4, "NVIDIA L40S" is not.
        if re.search(rf"(?<![A-Z0-9]){re.escape(key.upper())}(?![A-Z0-9])", name):
            return key
    return None


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The dense peak of a known GPU for a precision, else None (a CPU, an unlisted GPU)."""
    key = gpu_model(device_name)
    return PEAK_TFLOPS[key].get(precision) if key else None


def fraction_of_peak(achieved: float, device_name: str, precision: str) -> float | None:
    peak = peak_tflops(device_name, precision)
    return round(achieved / peak, 4) if peak else None


def hardware_line(use: dict[str, Any]) -> str:
    """The run's last line about the hardware: achieved training TFLOP/s and, on a known GPU, the
    fraction of its dense peak."""
    text = f"training {use['train_tflops']:.3g} TFLOP/s ({use['train_tokens_per_second']:.0f} real tokens/s)"
    if use.get("fraction_of_peak") is not None:
        text += f", {use['fraction_of_peak']:.1%} of the {use['peak_for']} dense peak"
    return text
