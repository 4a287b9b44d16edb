"""Packed batches (trainer.packing): rows filled first-fit decreasing, each text laid out whole with its
own positions and a mask that lets it see only itself, and a model that scores each text of a packed
batch exactly as it scores the text alone (tiny BERT and DistilBERT, sdpa and eager attention)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import make_texts
from trainer.modeling import load_model, load_tokenizer
from trainer.packing import PACKED_INDEX, PackingCollator, first_tokens, pack_rows, packing_problem

ROW = 32


def test_rows_hold_every_text_once_and_few_rows_are_used():
    rng = random.Random(0)
    for _ in range(50):
        lengths = [rng.randint(1, ROW) for _ in range(rng.randint(1, 40))]
        rows = pack_rows(lengths, ROW)
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in row) <= ROW for row in rows)
        # first-fit decreasing never needs more than 11/9 of the optimum (+ 6/9 of a row)
        assert len(rows) <= 11 / 9 * (-(-sum(lengths) // ROW)) + 1
    assert pack_rows([40, 3], ROW) == [[0], [1]]  # longer than a row (not truncated): a row of its own


def features(tokenizer, n: int = 12, with_types: bool = True) -> list[dict]:
    texts = list(make_texts(n, seed=7)["text"])
    rows = []
    for i, text in enumerate(texts):
        encoded = {"input_ids": tokenizer(text, truncation=True, max_length=ROW)["input_ids"]}
        if with_types:  # a pair's second segment, for some texts: packing carries the types along
            encoded["token_type_ids"] = [i % 2] * len(encoded["input_ids"])
        rows.append({**encoded, "labels": i % 3})
    return rows


def test_each_text_lies_whole_in_a_row_and_sees_only_itself(tiny_bert_dir):
    feats = features(load_tokenizer(str(tiny_bert_dir)))
    batch = PackingCollator(ROW, pad_token_id=0)(feats)
    ids, positions, mask = batch["input_ids"], batch["position_ids"], batch["attention_mask"]
    rows, width = ids.shape
    assert mask.shape == (rows, 1, width, width) and mask.dtype == torch.bool
    assert width <= ROW and rows < len(feats)
    assert batch["labels"].tolist() == [f["labels"] for f in feats]
    flat_ids, flat_pos = ids.reshape(-1), positions.reshape(-1)
    owner = torch.full((rows * width,), -1)
    for i, (f, start) in enumerate(zip(feats, batch[PACKED_INDEX].tolist(), strict=True)):
        n = len(f["input_ids"])
        assert start % width + n <= width  # the text does not run over its row's end
        assert flat_ids[start : start + n].tolist() == f["input_ids"]
        assert flat_pos[start : start + n].tolist() == list(range(n))
        assert batch["token_type_ids"].reshape(-1)[start : start + n].tolist() == f["token_type_ids"]
        owner[start : start + n] = i
    owner = owner.reshape(rows, width)
    for r in range(rows):
        for q in range(width):
            seen = mask[r, 0, q].nonzero().flatten().tolist()
            if owner[r, q] >= 0:
                assert seen == (owner[r] == owner[r, q]).nonzero().flatten().tolist()
            else:  # padding at a row's end: sees itself only, so no softmax row is empty
                assert seen == [q] and ids[r, q] == 0


def test_eager_attention_gets_an_additive_mask_and_types_are_optional(tiny_bert_dir):
    feats = features(load_tokenizer(str(tiny_bert_dir)), with_types=False)
    boolean = PackingCollator(ROW, 0)(feats)
    additive = PackingCollator(ROW, 0, additive_mask=True)(feats)
    assert "token_type_ids" not in additive
    assert additive["attention_mask"].dtype == torch.float32
    assert torch.equal(additive["attention_mask"] == 0, boolean["attention_mask"])
    assert additive["attention_mask"].min() == torch.finfo(torch.float32).min


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_a_packed_batch_scores_each_text_as_it_scores_it_alone(
    kind, attention, tiny_bert_dir, tiny_model_dir
):
    folder = str(tiny_bert_dir if kind == "bert" else tiny_model_dir)
    tokenizer = load_tokenizer(folder)
    model = load_model(folder, ["a", "b", "c"]).eval()
    model.set_attn_implementation(attention)
    assert packing_problem(model) is None
    feats = features(tokenizer, n=20, with_types=kind == "bert")  # DistilBERT has no token types
    batch = PackingCollator(ROW, tokenizer.pad_token_id, additive_mask=attention == "eager")(feats)
    index = batch.pop(PACKED_INDEX)
    assert batch["input_ids"].shape[0] < len(feats)  # several texts share a row
    with torch.no_grad(), first_tokens(model, index):
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    with torch.no_grad():
        alone = torch.cat(
            [
                model(**{k: torch.tensor([v]) for k, v in f.items() if k != "labels" and k in batch}).logits
                for f in feats
            ]
        )
        padded = model(input_ids=batch["input_ids"]).logits  # the hook is gone: one score per row again
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-5)
    assert padded.shape[0] == batch["input_ids"].shape[0]


def test_models_packing_cannot_serve_are_named():
    def model(kind: str, attention: str = "sdpa"):
        return SimpleNamespace(config=SimpleNamespace(model_type=kind, _attn_implementation=attention))

    assert "'roberta'" in packing_problem(model("roberta"))  # positions from padding_idx + 1
    assert "'flash_attention_2'" in packing_problem(model("bert", "flash_attention_2"))
    assert "no encoder" in packing_problem(model("bert"))
