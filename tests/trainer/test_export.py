"""`make export` (python -m trainer.export) and the formats `predict` answers in: the export is written
beside the run's model without touching it, measured against fp32 on the run's own test split, recorded
in the manifest, used by `predict` when it is the default or asked for; bad input is one line, exit 2."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from tests.conftest import make_finished_run, make_scored_run
from trainer import inference
from trainer.export import MAX_F1_LOSS, decide
from trainer.export import main as export_main
from trainer.predict import Predictor
from trainer.predict import main as predict_main
from trainer.run_folder import RunFolder

TEXTS = ["i love this great day", "", "awful terrible worst", "the table report", "x"]


def tree_digest(folder) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("trainer: error: ")]
    assert len(errors) == 1 and not any("Traceback" in line for line in err), err
    return errors[0]


def predicted(capsys, *argv: str) -> tuple[list[dict], str]:
    assert predict_main(list(argv)) == 0
    out = capsys.readouterr()
    return [json.loads(line) for line in out.out.splitlines()], out.err


def test_onnx_export_is_recorded_and_predict_uses_it_by_default(onnx_run, capsys):
    entry = RunFolder(onnx_run).exports()["onnx"]
    assert (onnx_run / entry["path"]).is_file() and entry["path"] == "export/onnx/model.onnx"
    assert entry["format"] == "onnx" and entry["opset"] == inference.ONNX_OPSET
    assert entry["runtime"].startswith("onnxruntime ") and entry["threads"] >= 1
    assert entry["test_texts"] == 30 and entry["bytes"] == (onnx_run / entry["path"]).stat().st_size
    # the same model in another runtime: the same predictions, so the same F1 on the test split
    assert entry["test_f1_macro"] == pytest.approx(entry["pytorch_test_f1_macro"], abs=1e-9)
    assert entry["p50_ms"] > 0 and entry["pytorch_p50_ms"] > 0
    # ONNX Runtime answers the 2-layer model many times faster than PyTorch's eager calls: the default
    assert entry["default"] is True and entry["why"] == "faster than fp32 at the same macro-F1"
    rows, err = predicted(capsys, "--run", str(onnx_run), *(a for t in TEXTS for a in ("--text", t)))
    assert f"predict: format onnx ({onnx_run / 'export/onnx/model.onnx'}), onnxruntime" in err
    reference, err = predicted(capsys, "--run", str(onnx_run), "--format", "pytorch", *(
        a for t in TEXTS for a in ("--text", t)
    ))  # fmt: skip
    assert "predict: format pytorch" in err
    assert [r["text"] for r in rows] == TEXTS and rows[1]["label"] is None and rows[1]["skipped"]
    for got, want in zip(rows, reference, strict=True):
        assert got["label"] == want["label"]
        if want["scores"]:
            assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)


def test_int8_export_leaves_the_model_alone_and_answers_with_the_flag(onnx_run, tmp_path, capsys):
    run = shutil.copytree(onnx_run, tmp_path / "run")
    before = tree_digest(run / "model")
    assert export_main(["--run", str(run), "--format", "int8"]) == 0
    assert "exported int8 to export/int8/model-int8.pt" in capsys.readouterr().out
    assert tree_digest(run / "model") == before  # the run's own model is never rewritten
    exports = RunFolder(run).exports()
    assert set(exports) == {"onnx", "int8"} and exports["int8"]["opset"] is None
    assert exports["int8"]["bytes"] < exports["int8"]["pytorch_bytes"]
    assert abs(exports["int8"]["test_f1_macro"] - exports["int8"]["pytorch_test_f1_macro"]) < 0.2
    assert not any(p.name.startswith(".") for p in (run / "export").iterdir())  # no staging left over
    int8 = Predictor.load(run, "int8")
    assert int8.format == "int8" and "DynamicQuantizedLinear" in repr(int8.engine.model)
    fp32 = Predictor.load(run, "pytorch")
    texts = [t for t in TEXTS if t]
    for got, want in zip(int8.predict(texts), fp32.predict(texts), strict=True):
        assert got["scores"] == pytest.approx(want["scores"], abs=0.05)


@pytest.mark.parametrize(
    ("loss", "p50", "fp32_p50", "default", "why"),
    [
        (0.0, 1.0, 2.0, True, "faster than fp32 at the same macro-F1"),
        (MAX_F1_LOSS, 1.0, 2.0, True, "faster than fp32 at the same macro-F1"),
        (0.0051, 1.0, 2.0, False, "loses 0.0051 macro-F1 (more than 0.005)"),
        (-0.01, 2.0, 2.0, False, "not faster than fp32 here"),
    ],
)
def test_only_a_faster_format_at_the_same_f1_becomes_the_default(loss, p50, fp32_p50, default, why):
    assert decide(loss, p50, fp32_p50) == (default, why)


def test_a_new_default_takes_the_mark_from_the_old_one(onnx_run, tmp_path, capsys):
    run = RunFolder(shutil.copytree(onnx_run, tmp_path / "run"))
    (run.export_dir("int8")).mkdir()
    shutil.copy(run.export_dir("onnx") / "model.onnx", run.export_dir("int8") / "model-int8.pt")
    run.record_export("int8", {"format": "int8", "default": True})
    assert run.exports()["onnx"]["default"] is False and run.export_to_use(None)[0] == "int8"
    assert run.is_finished() and run.manifest()["run_name"] == "run"


def test_predict_with_a_format_never_exported_is_one_line(tmp_path, tiny_model_dir, capsys):
    run = make_finished_run(tmp_path / "plain", tiny_model_dir, max_length=32)
    assert predict_main(["--run", str(run), "--format", "onnx", "--text", "hi"]) == 2
    assert one_error_line(capsys) == (
        f"trainer: error: {run} has no onnx export (no export record): run make export RUN={run} "
        "FORMAT=onnx, or pass --format pytorch"
    )
    rows, err = predicted(capsys, "--run", str(run), "--text", "hi")  # no export: the fp32 model
    assert "predict: format pytorch" in err and rows[0]["label"]


def test_a_damaged_onnx_export_is_refused_in_one_line(onnx_run, tmp_path, capsys):
    run = shutil.copytree(onnx_run, tmp_path / "run")
    onnx = run / "export/onnx/model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:1000])
    assert predict_main(["--run", str(run), "--text", "hi"]) == 2
    line = one_error_line(capsys)
    assert f"cannot load the ONNX export {onnx}" in line and "or pass --format pytorch" in line
    onnx.unlink()
    assert predict_main(["--run", str(run), "--text", "hi"]) == 2
    assert f"has no onnx export (no {onnx})" in one_error_line(capsys)


def test_export_needs_the_data_the_run_trained_on(tmp_path, tiny_model_dir, tiny_csv, capsys):
    csv = shutil.copy(tiny_csv, tmp_path / "data.csv")
    run = make_scored_run(tmp_path / "run", tiny_model_dir, csv)
    with open(csv, "a", encoding="utf-8") as f:
        f.write("one more row,positive\n")
    assert export_main(["--run", str(run)]) == 2
    assert f"{csv} is not the file {run} trained on" in one_error_line(capsys)
    csv.unlink()
    assert export_main(["--run", str(run)]) == 2
    line = one_error_line(capsys)
    assert "the run's test split is needed to measure the export" in line and str(csv) in line
    assert not (run / "export").exists() or not any((run / "export").iterdir())
    assert "exports" not in RunFolder(run).manifest()


def test_export_of_an_unfinished_run_is_one_line(onnx_run, tmp_path, capsys):
    run = shutil.copytree(onnx_run, tmp_path / "run")
    (run / "manifest.json").unlink()
    assert export_main(["--run", str(run)]) == 2
    assert f"{run} is not a finished run (no manifest.json)" in one_error_line(capsys)
    with pytest.raises(SystemExit) as exit_:
        export_main(["--run", str(run), "--format", "fp16"])
    assert exit_.value.code == 2 and "invalid choice: 'fp16'" in one_error_line(capsys)
