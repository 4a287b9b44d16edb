"""Predict with a finished run: `python -m trainer.predict --run runs/local --text "..."`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from trainer.config import choose_mode, config_file, load_config
from trainer.errors import UserError
from trainer.run_folder import RunFolder


@dataclass
class Predictor:
    model: object
    tokenizer: object
    labels: list[str]
    max_length: int
    "the run's own model.max_length: texts are truncated exactly as in training"

    @classmethod
    def load(cls, run_dir: str | Path) -> Predictor:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = RunFolder(run_dir)
        labels = folder.labels()
        max_length = folder.resolved_config().model.max_length
        model = AutoModelForSequenceClassification.from_pretrained(folder.model_dir)
        model.eval()
        return cls(model, AutoTokenizer.from_pretrained(folder.model_dir), labels, max_length)

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict]:
        import torch

        out: list[dict] = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            enc = self.tokenizer(
                chunk, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
            )
            with torch.inference_mode():
                probs = torch.softmax(self.model(**enc).logits, dim=-1)
            for text, row in zip(chunk, probs.tolist(), strict=True):
                best = max(range(len(row)), key=row.__getitem__)
                out.append(
                    {
                        "text": text,
                        "label": self.labels[best],
                        "scores": {name: round(p, 6) for name, p in zip(self.labels, row, strict=True)},
                    }
                )
        return out


def default_run() -> str:
    """The output folder of the config the mode uses (config/local.yaml: runs/local)."""
    mode = choose_mode(None)
    return load_config(config_file(mode), mode).runtime.output_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.predict", description=__doc__)
    parser.add_argument(
        "--run", help="finished run folder (default: the output folder of config/<mode>.yaml)"
    )
    parser.add_argument("--text", action="append", default=[], help="a text to classify (repeatable)")
    parser.add_argument("--file", help="a text file with one text per line")
    args = parser.parse_args(argv)
    try:
        texts = list(args.text)
        if args.file:
            try:
                texts += [
                    ln.strip()
                    for ln in Path(args.file).read_text(encoding="utf-8").splitlines()
                    if ln.strip()
                ]
            except OSError as exc:
                raise UserError(f"cannot read --file {args.file}: {exc.strerror}") from None
        if not texts:
            raise UserError('nothing to classify: pass --text "..." or --file texts.txt')
        for row in Predictor.load(args.run or default_run()).predict(texts):
            print(json.dumps(row, ensure_ascii=False))
    except UserError as exc:
        sys.stderr.write(f"trainer: error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
