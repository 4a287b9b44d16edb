"""Prediction as a user runs it (`python -m trainer.predict`): one output line per input line, the
encoding training reads, and a damaged run folder refused in one line."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import make_finished_run
from trainer.predict import main


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    return make_finished_run(tmp_path_factory.mktemp("predict") / "run", tiny_model_dir, max_length=32)


@pytest.fixture
def damaged(tmp_path, finished):
    """A copy of the finished run, for a test to break."""
    return shutil.copytree(finished, tmp_path / "damaged")


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("trainer: error: ")]
    assert len(errors) == 1 and not any("Traceback" in line for line in err), err
    return errors[0]


def test_every_input_line_gets_one_output_line_in_order(finished, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("i love this great day\n\nawful terrible worst\n   \nthe table\n", encoding="utf-8")
    assert main(["--run", str(finished), "--file", str(texts)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["i love this great day", "", "awful terrible worst", "", "the table"]
    for i in (1, 3):  # the blank lines: a clear marker, no label, no scores
        assert rows[i]["label"] is None and rows[i]["scores"] is None
        assert rows[i]["skipped"] == "blank text: nothing to classify"
    for i in (0, 2, 4):
        assert rows[i]["label"] in {"negative", "neutral", "positive"} and "skipped" not in rows[i]
        assert abs(sum(rows[i]["scores"].values()) - 1.0) < 1e-4


def test_an_empty_text_gets_no_confident_label(finished, capsys):
    assert main(["--run", str(finished), "--text", "", "--text", "lovely"]) == 0
    empty, lovely = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert empty["label"] is None and lovely["label"] is not None


def test_utf8_file_is_read_as_training_reads_it(finished, tmp_path, capsys):
    texts = tmp_path / "utf8.txt"
    # With a byte-order mark, as some editors write UTF-8.
    texts.write_bytes("\ufeffcafé crème \u2013 \u201cgreat\u201d\nnaïve\n".encode())
    assert main(["--run", str(finished), "--file", str(texts)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["café crème \u2013 \u201cgreat\u201d", "naïve"]


def test_a_latin1_file_is_refused_in_one_line(finished, tmp_path, capsys):
    texts = tmp_path / "latin1.txt"
    texts.write_bytes("fine\ncaf\xe9\n".encode("latin-1"))
    assert main(["--run", str(finished), "--file", str(texts)]) == 2
    line = one_error_line(capsys)
    assert f"--file {texts} is not UTF-8 (line 2)" in line and "iconv -f latin1 -t utf-8" in line


@pytest.mark.parametrize(
    "damage",
    [
        "truncated-weights",
        "empty-weights",
        "no-weights",
        "broken-config",
        "no-model-folder",
        "labels-mismatch",
    ],
)
def test_a_damaged_model_folder_is_refused_in_one_line(damaged, damage, capsys):
    weights = damaged / "model" / "model.safetensors"
    if damage == "truncated-weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "empty-weights":
        weights.write_bytes(b"")
    elif damage == "no-weights":
        weights.unlink()
    elif damage == "broken-config":
        (damaged / "model" / "config.json").write_text("{")
    elif damage == "no-model-folder":
        shutil.rmtree(damaged / "model")
    elif damage == "labels-mismatch":
        (damaged / "labels.json").write_text('{"labels": ["a", "b"]}')
    assert main(["--run", str(damaged), "--text", "lovely"]) == 2
    line = one_error_line(capsys)
    assert str(damaged / "model") in line and "the run folder is damaged" in line
    assert capsys.readouterr().out == ""


def test_an_unreadable_manifest_or_labels_file_is_refused_in_one_line(damaged, capsys):
    (damaged / "labels.json").write_text("{not json")
    assert main(["--run", str(damaged), "--text", "lovely"]) == 2
    assert "labels.json is unreadable" in one_error_line(capsys)


def test_a_wrong_flag_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--txt", "hello"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "trainer: error: unrecognized arguments: --txt hello (see python -m trainer.predict --help)"
    ]


@pytest.mark.parametrize(("cwd", "given", "use"), [("above", "run/model", "run"), ("model", ".", "RUN")])
def test_the_model_folder_inside_a_run_names_the_run_folder_to_pass(
    finished, cwd, given, use, monkeypatch, capsys
):
    """`--run RUN/model` is the run's model, not an unfinished run: the message names the run folder."""
    monkeypatch.chdir(finished.parent if cwd == "above" else finished / "model")
    assert main(["--run", given, "--text", "lovely"]) == 2
    run = str(finished) if use == "RUN" else use
    assert one_error_line(capsys) == (
        f"trainer: error: {given} is the model/ folder inside a run, not a run folder: --run takes the run "
        f"folder, the parent of model/ (the folder with manifest.json): pass --run {run}"
    )
    assert capsys.readouterr().out == ""


def test_a_model_folder_outside_any_run_is_not_called_an_unfinished_run(tiny_model_dir, capsys):
    assert main(["--run", str(tiny_model_dir), "--text", "lovely"]) == 2
    line = one_error_line(capsys)
    assert f"{tiny_model_dir} is a model folder (config.json), not a run folder" in line
    assert "--run takes the folder a training run wrote, which holds model/ and manifest.json" in line
    assert "let the run finish" not in line


def test_an_unfinished_run_is_still_called_one(damaged, capsys):
    (damaged / "manifest.json").unlink()
    assert main(["--run", str(damaged), "--text", "lovely"]) == 2
    assert f"{damaged} is not a finished run (no manifest.json): let the run finish" in one_error_line(capsys)
