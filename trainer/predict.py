"""Predict with a finished run: `python -m trainer.predict --run runs/local --text "..."`.

One JSON line out per text in, in order: a blank text (an empty line of --file) gets a line with
`"label": null` and `"skipped"` saying why, so the output lines up with the input. --file is read as
UTF-8, the encoding training reads. A run folder that is unfinished or damaged (a cut-off model file,
a broken config) is refused in one line, exit 2.

The format (`trainer.inference`): the one `make export` recorded as the run's default when there is one
(ONNX Runtime or int8, measured at no more than 0.005 macro-F1 below the fp32 model), else the run's own
fp32 PyTorch model; `--format` picks one. Which one answered is said on stderr.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer import inference
from trainer.config import choose_mode, config_file, load_config
from trainer.errors import OneLineParser, UserError, report
from trainer.run_folder import MANIFEST, MODEL, RunFolder

BLANK = "blank text: nothing to classify"


@dataclass
class Predictor:
    model: object
    "a PyTorch classifier, or an engine of trainer.inference (TorchEngine, OnnxEngine)"
    tokenizer: object
    labels: list[str]
    max_length: int
    "the run's own model.max_length: texts are truncated exactly as in training"
    pad_to_max: bool = False
    "pad every text to max_length (the first predictor's way; the benchmark's baseline)"
    source: str = ""
    "where the model came from, for the line that says which format answered"

    def __post_init__(self) -> None:
        if not isinstance(self.model, (inference.TorchEngine, inference.OnnxEngine)):
            self.model = inference.TorchEngine(self.model)

    @property
    def engine(self) -> inference.TorchEngine | inference.OnnxEngine:
        return self.model  # type: ignore[return-value]

    @property
    def format(self) -> str:
        return self.engine.format

    def describe(self) -> str:
        """One line: the format, the file it came from, the runtime and its threads."""
        where = f" ({self.source})" if self.source else ""
        return f"format {self.format}{where}, {self.engine.runtime}, {inference.threads()} threads"

    @classmethod
    def load(cls, run_dir: str | Path, fmt: str | None = None) -> Predictor:
        """The run's model in `fmt` (a name of inference.FORMATS), or by default the format the run's
        export recorded as default, else its own fp32 PyTorch model."""
        folder = RunFolder(run_dir)
        refuse_model_folder(folder)
        labels = folder.labels()
        max_length = folder.resolved_config().model.max_length
        fmt, path = folder.export_to_use(fmt)
        tokenizer = _damaged_if_fails(folder, lambda: _tokenizer(folder))
        source = str(path) if path else str(folder.model_dir)
        if fmt == inference.ONNX:
            engine = _load_onnx(path)
            outputs = engine.session.get_outputs()[0].shape[-1]
            if outputs != len(labels):
                raise UserError(
                    f"{path} has {outputs} outputs but the run lists {len(labels)} labels: export again "
                    f"(make export RUN={folder.path})"
                )
            return cls(engine, tokenizer, labels, max_length, source=source)
        model = _damaged_if_fails(folder, lambda: _fp32_model(folder))
        if model.config.num_labels != len(labels):
            raise UserError(
                f"{folder.model_dir} has {model.config.num_labels} outputs but the run lists {len(labels)} "
                "labels: the run folder is damaged; fetch the run again or retrain it"
            )
        model.eval()
        if fmt == inference.INT8:
            model = _load_int8(model, path)
        return cls(inference.TorchEngine(model, fmt), tokenizer, labels, max_length, source=source)

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict]:
        """One result per text, in the input's order; blank texts are not classified (label null,
        `skipped`). Batches are made longest text first and the results put back in order."""
        out: list[dict] = [{"text": t, "label": None, "scores": None, "skipped": BLANK} for t in texts]
        todo = [i for i, text in enumerate(texts) if text.strip()]
        if not todo:  # the tokenizer takes no empty batch
            return out
        # Longest first (a stable sort, as in evaluation): each batch pads to about its own length.
        tokens = self.tokenizer([texts[i] for i in todo], truncation=True, max_length=self.max_length)
        lengths = dict(zip(todo, map(len, tokens["input_ids"]), strict=True))
        todo.sort(key=lambda i: -lengths[i])
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            for i, row in zip(chunk, self.probabilities([texts[i] for i in chunk]), strict=True):
                best = max(range(len(row)), key=row.__getitem__)
                out[i] = {
                    "text": texts[i],
                    "label": self.labels[best],
                    "scores": {name: round(p, 6) for name, p in zip(self.labels, row, strict=True)},
                }
        return out

    def probabilities(self, texts: list[str]) -> list[list[float]]:
        """Class probabilities of one batch of (non-blank) texts, padded to the longest of them (or to
        max_length with pad_to_max)."""
        from trainer.metrics import softmax

        enc = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_length,
            padding="max_length" if self.pad_to_max else True,
            return_tensors="np",
        )
        return softmax(self.engine.logits(dict(enc)).astype(np.float64)).tolist()


def _damaged_if_fails(folder: RunFolder, load):
    from safetensors import SafetensorError

    try:
        return load()
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise UserError(
            f"cannot load the model in {folder.model_dir} ({_first_line(exc)}): the run folder is damaged; "
            "fetch the run again or retrain it"
        ) from None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _tokenizer(folder: RunFolder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder.model_dir)


def _fp32_model(folder: RunFolder):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(folder.model_dir)


def _load_int8(model, path: Path):
    try:
        return inference.load_int8(model, path)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise UserError(
            f"cannot load the int8 export {path} ({_first_line(exc)}): export it again "
            f"(make export RUN=... FORMAT=int8) or pass --format pytorch"
        ) from None


def _load_onnx(path: Path) -> inference.OnnxEngine:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError(
            "ONNX Runtime is not installed (the serve extra): run make setup, or pass --format pytorch"
        ) from None
    try:
        return inference.OnnxEngine(path)
    except Exception as exc:  # onnxruntime raises its own exception classes (Fail, InvalidGraph, ...)
        raise UserError(
            f"cannot load the ONNX export {path} ({_first_line(exc)}): export it again "
            f"(make export RUN=... FORMAT=onnx) or pass --format pytorch"
        ) from None


def refuse_model_folder(folder: RunFolder) -> None:
    """--run names the run folder. Given the `model/` folder inside a run (or another folder with a model,
    such as a checkpoint), say so and name the run folder to pass, rather than "not a finished run"."""
    from transformers.utils import CONFIG_NAME

    given = folder.path
    if folder.is_finished() or not given.is_dir():
        return
    is_model_dir = given.resolve().name == MODEL
    if not is_model_dir and not (given / CONFIG_NAME).is_file():
        return
    # "runs/local/model" -> runs/local, runs (as the user wrote it); "." or ".." -> absolute paths
    ups = list(given.parents if given.name not in ("", "..") else given.resolve().parents)[:2]
    run = next((up for up in ups if RunFolder(up).is_finished()), None)
    if run is None and is_model_dir and ups:
        run = ups[0]
    what = f"the {MODEL}/ folder inside a run" if is_model_dir else f"a model folder ({CONFIG_NAME})"
    if run is not None:
        raise UserError(
            f"{given} is {what}, not a run folder: --run takes the run folder, the parent of {MODEL}/ "
            f"(the folder with {MANIFEST}): pass --run {run}"
        )
    raise UserError(
        f"{given} is {what}, not a run folder: --run takes the folder a training run wrote, which holds "
        f"{MODEL}/ and {MANIFEST} (e.g. runs/local)"
    )


def read_lines(path: str) -> list[str]:
    """Every line of a text file, blank ones included (so results line up), as UTF-8 like training."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UserError(f"cannot read --file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = _line_at(Path(path), exc.start)
        raise UserError(
            f"--file {path} is not UTF-8 (line {line}): convert it, e.g. iconv -f latin1 -t utf-8 {path}"
        ) from None
    return [line.strip() for line in text.splitlines()]


def _line_at(path: Path, offset: int) -> int:
    return path.read_bytes()[:offset].count(b"\n") + 1


def default_run() -> str:
    """The output folder of the config the mode uses (config/local.yaml: runs/local)."""
    mode = choose_mode(None)
    return load_config(config_file(mode), mode).runtime.output_dir


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m trainer.predict", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", help="finished run folder (default: the output folder of config/<mode>.yaml)"
    )
    parser.add_argument("--text", action="append", default=[], help="a text to classify (repeatable)")
    parser.add_argument("--file", help="a text file with one text per line")
    parser.add_argument(
        "--format",
        choices=inference.FORMATS,
        help="pytorch (the run's fp32 model), int8 or onnx (made by make export); default: the run's "
        "exported default when it has one, else pytorch",
    )
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stdout is the results; stderr stays for what went wrong
    try:
        texts = list(args.text) + (read_lines(args.file) if args.file else [])
        if not any(text.strip() for text in texts):
            raise UserError('nothing to classify: pass --text "..." or --file texts.txt')
        predictor = Predictor.load(args.run or default_run(), args.format)
        sys.stderr.write(f"predict: {predictor.describe()}\n")
        for row in predictor.predict(texts):
            print(json.dumps(row, ensure_ascii=False))
    except UserError as exc:
        return report(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
