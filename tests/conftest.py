"""Fixtures: a tiny random DistilBERT with a locally trained WordPiece tokenizer, tiny datasets, and
finished run folders made from the tiny model without training.

Nothing comes from the hub: the tokenizer is trained here in well under a second and the model is
randomly initialised, so training runs in seconds on a CPU.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest
import torch

WORDS = {
    "negative": ["awful", "hate", "terrible", "worst", "angry", "broken", "sad", "ugly"],
    "neutral": ["today", "table", "report", "meeting", "train", "monday", "paper", "chair"],
    "positive": ["love", "great", "wonderful", "best", "happy", "amazing", "nice", "lovely"],
}
FILLER = ["the", "a", "this", "is", "was", "and", "so", "my", "our", "it", "really", "very"]


def make_texts(n: int, seed: int = 0, labels: tuple[str, ...] = ("negative", "neutral", "positive")):
    """Short texts whose label is learnable from their words (with some noise words)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.choices(WORDS[label], k=rng.randint(1, 3)) + rng.choices(FILLER, k=rng.randint(2, 12))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return pd.DataFrame(rows)


def build_tiny_model(folder: Path, kind: str = "distilbert") -> Path:
    """A tiny random encoder of `kind` (distilbert, bert or roberta) with the WordPiece tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = list(make_texts(600, seed=123)["text"])
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)  # the same random weights in every session: results do not drift between runs
    tiny_encoder(kind, len(fast), fast.pad_token_id).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def tiny_encoder(kind: str, vocab_size: int, pad_token_id: int):
    """A randomly initialised encoder of 2 layers, 2 heads, width 32, no dropout."""
    if kind == "distilbert":
        from transformers import DistilBertConfig, DistilBertModel

        config = DistilBertConfig(
            vocab_size=vocab_size,
            dim=32,
            n_layers=2,
            n_heads=2,
            hidden_dim=64,
            max_position_embeddings=64,
            dropout=0.0,
            attention_dropout=0.0,
            seq_classif_dropout=0.0,
            pad_token_id=pad_token_id,
        )
        return DistilBertModel(config)
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    classes = {"bert": (BertConfig, BertModel), "roberta": (RobertaConfig, RobertaModel)}
    config_class, model_class = classes[kind]
    config = config_class(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64 + (pad_token_id + 1 if kind == "roberta" else 0),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=pad_token_id,
    )
    return model_class(config)


@pytest.fixture(autouse=True)
def _no_mode_from_the_outer_shell(monkeypatch):
    """TRAINER_MODE is the default of --mode: a value set in the shell running the tests must not leak in."""
    monkeypatch.delenv("TRAINER_MODE", raising=False)


def make_finished_run(folder: Path, model_dir: Path, max_length: int) -> Path:
    """A run folder as a finished run leaves it, without training: the tiny model with a seeded new
    classification head, the resolved config (with `max_length`), the labels, and the manifest last."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from trainer.config import load_config
    from trainer.run_folder import RunFolder

    labels = list(WORDS)
    cfg = load_config(
        None,
        "local",
        {"model.name": str(model_dir), "model.max_length": max_length, "runtime.output_dir": str(folder)},
    )
    run = RunFolder(folder)
    run.start(cfg)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    model.save_pretrained(run.model_dir)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(run.model_dir)
    run.write_labels(labels)
    run.write_manifest({"run_name": folder.name, "model": str(model_dir)})
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-distilbert")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert") / "tiny-bert", "bert")


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-data") / "tiny.csv"
    make_texts(300, seed=1).to_csv(path, index=False)
    return path


@pytest.fixture
def tiny_config_file(tmp_path, tiny_model_dir, tiny_csv) -> Path:
    """A complete config for a seconds-long CPU run on the tiny model and data."""
    path = tmp_path / "tiny.yaml"
    path.write_text(
        f"""
model:
  name: {tiny_model_dir}
  max_length: 32
data:
  path: {tiny_csv}
train:
  epochs: 2
  batch_size: 16
  eval_batch_size: 64
  learning_rate: 5.0e-3
  logging_steps: 5
  precision: auto
runtime:
  output_dir: {tmp_path / "run"}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="session")
def no_gnu(tmp_path_factory):
    """(folder, log): `tar`, `sed`, `date`, `find`, `xargs` and `bash` that fail on any use and write it down;
    the laptop verbs' tests put the folder first on PATH (tests/standins/portability.py)."""
    from tests.standins.portability import make_wrappers

    return make_wrappers(tmp_path_factory.mktemp("laptop-path"))


@pytest.fixture
def laptop_env(no_gnu):
    """The environment a laptop verb runs with here: the failing GNU tools first on PATH. The test fails if
    any of them was called while it ran."""
    import os

    from tests.standins.portability import calls, laptop_path

    bin_dir, log = no_gnu
    before = len(calls(log))
    yield {**os.environ, "PATH": laptop_path(bin_dir)}
    used = calls(log)[before:]
    assert not used, f"the laptop side called tools a Mac lacks or has in BSD form: {used}"


def make_scored_run(folder: Path, model_dir: Path, csv: Path, max_length: int = 32) -> Path:
    """A finished run (`make_finished_run`) whose resolved config names `csv` as its data and whose manifest
    records that file's sha256, as a trained run's does: `make export` can score it on its own test split."""
    from trainer.config import load_config
    from trainer.data import file_sha256
    from trainer.run_folder import RunFolder

    make_finished_run(folder, model_dir, max_length)
    run = RunFolder(folder)
    overrides = {
        "model.name": str(model_dir),
        "model.max_length": max_length,
        "runtime.output_dir": str(folder),
        "data.path": str(csv),
        "data.max_rows": None,
    }
    run.write_config(load_config(None, "local", overrides))
    manifest = {**run.manifest(), "data": {"sources": [{"path": str(csv), "sha256": file_sha256(csv)}]}}
    run.write_manifest(manifest)
    return folder


@pytest.fixture(scope="session")
def onnx_run(tmp_path_factory, tiny_model_dir, tiny_csv) -> Path:
    """A finished tiny run with its ONNX export in place (`python -m trainer.export`), shared by the
    export, serve and container tests. Tests that change it work on a copy."""
    from trainer.export import export

    run = make_scored_run(tmp_path_factory.mktemp("onnx-run") / "run", tiny_model_dir, tiny_csv)
    export(run, "onnx", say=lambda _line: None)
    return run
