"""The formats a finished run's model can answer in, each behind one small engine: logits from a tokenized
batch (numpy arrays in, a float32 array out).

    pytorch   the run's own model/ (fp32), as training saved it
    int8      PyTorch's dynamic int8 quantization of every nn.Linear (weights int8, activations quantized
              per batch on the fly): torch.ao.quantization.quantize_dynamic; the embeddings stay fp32
    onnx      the model exported by torch.onnx (the dynamo exporter), dynamic batch and sequence axes,
              run by ONNX Runtime's CPU execution provider

`trainer.export` writes int8 and onnx into the run folder (RunFolder.export_dir); `trainer.predict`
loads whichever the run's manifest names as its default, or the one asked for.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

PYTORCH, INT8, ONNX = "pytorch", "int8", "onnx"
FORMATS = (PYTORCH, INT8, ONNX)
EXPORTED = (INT8, ONNX)
"the formats `make export` writes (pytorch is the run's own model/)"
ONNX_OPSET = 18
# What each exported format's folder holds (inside RunFolder.export_dir(format)).
FILES = {INT8: "model-int8.pt", ONNX: "model.onnx"}
PRECISION = {PYTORCH: "fp32", INT8: "int8 weights, dynamic activations", ONNX: "fp32"}


def threads() -> int:
    """The intra-op threads every engine uses: PyTorch's own setting (the cores, or OMP_NUM_THREADS)."""
    import torch

    return torch.get_num_threads()


class TorchEngine:
    """A PyTorch sequence classifier (fp32, or int8 after `quantize`)."""

    def __init__(self, model: Any, fmt: str = PYTORCH):
        self.model = model
        self.format = fmt

    @property
    def runtime(self) -> str:
        import torch

        return f"torch {torch.__version__}"

    def logits(self, enc: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            inputs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in enc.items()}
            return self.model(**inputs).logits.float().numpy()


class OnnxEngine:
    """An ONNX file run by ONNX Runtime on the CPU, with as many threads as PyTorch uses."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ONNX Runtime's threads spin between calls by default: on a machine whose cores are shared (a
        # server's event loop, other processes) the spinning takes the cores the next call needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.format = ONNX

    @property
    def runtime(self) -> str:
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"

    def logits(self, enc: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: np.ascontiguousarray(enc[name], dtype=np.int64) for name in self.inputs}
        return self.session.run(None, feed)[0]


def quantize(model: Any) -> Any:
    """PyTorch's dynamic int8 quantization of the model's nn.Linear layers (a new model; the fp32 one is
    untouched). torch.ao.quantization warns that it moves to torchao; it is still PyTorch's own and the
    one the issue names, so those two deprecation notices are kept off the user's terminal."""
    import copy

    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor", category=UserWarning)
        return quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)


def save_int8(model: Any, path: Path) -> None:
    import torch

    torch.save(quantize(model).state_dict(), path)


def load_int8(model: Any, path: Path) -> Any:
    """The fp32 architecture quantized the same way, then the saved int8 weights loaded into it."""
    import torch

    quantized = quantize(model)
    with warnings.catch_warnings():
        # raised inside torch.load for the packed int8 weights; nothing the user can act on
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
        state = torch.load(path, map_location="cpu", weights_only=True)
    quantized.load_state_dict(state)
    return quantized.eval()


def export_onnx(model: Any, tokenizer: Any, path: Path) -> None:
    """torch.onnx's dynamo exporter with dynamic batch and sequence axes (example: two texts of unequal
    length, so neither axis is specialised to 1), into one file."""
    import torch

    enc = tokenizer(["an example text to trace", "two"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc]
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with warnings.catch_warnings():
        # the exporter's progress lines are warnings; a failure still raises
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        torch.onnx.export(
            model.eval(),
            (),
            str(path),
            kwargs={n: enc[n] for n in names},
            input_names=names,
            output_names=["logits"],
            dynamic_shapes={n: {0: batch, 1: seq} for n in names},
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,  # one self-contained file (a classifier is far below protobuf's 2 GB)
            verbose=False,
        )
