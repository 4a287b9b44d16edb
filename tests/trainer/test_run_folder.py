"""The run folder, read back: prediction truncates as the run trained, the API the cloud verbs use, and
the manifest's git commit where there is no .git."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import make_finished_run
from trainer import artifacts
from trainer.errors import UserError
from trainer.predict import Predictor
from trainer.predict import main as predict_main
from trainer.run_folder import RunFolder

# Every word is one token of the tiny WordPiece vocabulary (checked below), so the first N words of a
# text are exactly what truncation to N + 2 tokens ([CLS] ... [SEP]) keeps.
WORDS = ["love", "hate", "table", "great", "awful", "monday", "happy", "broken"]
LONG = " ".join(WORDS * 12)  # 96 tokens + 2: longer than the tiny model's 64 positions


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("finished")
    return {n: make_finished_run(base / f"trained-at-{n}", tiny_model_dir, max_length=n) for n in (16, 24)}


def first_words(n_tokens: int) -> str:
    return " ".join((WORDS * 12)[: n_tokens - 2])


def predicted(run, capsys, *texts: str) -> list[dict]:
    argv = ["--run", str(run)]
    for text in texts:
        argv += ["--text", text]
    assert predict_main(argv) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_the_words_are_single_tokens(runs):
    tokenizer = Predictor.load(runs[16]).tokenizer
    assert all(len(tokenizer(w)["input_ids"]) == 3 for w in WORDS)


@pytest.mark.parametrize("max_length", [16, 24])
def test_predict_truncates_at_the_runs_own_max_length(runs, max_length, capsys):
    """A long text gets exactly the scores of its first max_length tokens, the length the run trained at
    (prediction used to truncate at 256: on this 64-position model that crashed)."""
    assert Predictor.load(runs[max_length]).max_length == max_length
    long, cut = predicted(runs[max_length], capsys, LONG, first_words(max_length))
    assert long["scores"] == cut["scores"]


def test_the_same_weights_trained_at_another_length_score_otherwise(runs, capsys):
    """Both folders hold identical weights; only config.resolved.yaml's max_length differs."""
    (at_16,) = predicted(runs[16], capsys, LONG)
    (at_24,) = predicted(runs[24], capsys, LONG)
    assert at_16["scores"] != at_24["scores"]


def test_run_folder_reads_back_what_a_run_wrote(runs):
    folder = RunFolder(runs[16])
    assert folder.is_finished()
    assert folder.manifest()["run_name"] == "trained-at-16"
    assert folder.labels() == ["negative", "neutral", "positive"]
    cfg = folder.resolved_config()
    assert cfg.model.max_length == 16 and cfg.mode == "local"


def test_an_unfinished_run_is_not_read_as_finished(tmp_path, runs):
    folder = RunFolder(tmp_path / "half")
    with pytest.raises(UserError, match="does not exist"):
        folder.manifest()
    (tmp_path / "half").mkdir()
    assert not folder.is_finished()
    with pytest.raises(UserError, match=r"is not a finished run \(no manifest.json\)"):
        folder.labels()


def test_predict_on_an_unfinished_run_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    assert predict_main(["--run", str(tmp_path / "half"), "--text", "hello"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trainer: error: ") and "not a finished run" in err[0]


# ---------------------------------------------------------------------- the manifest's git commit


def test_git_commit_without_a_checkout_comes_from_the_environment(tmp_path, monkeypatch):
    """On the VM and in the container there is no .git: the launcher's TRAINER_GIT_COMMIT says it."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv("TRAINER_GIT_COMMIT", raising=False)
    assert artifacts.git_commit(tmp_path) is None
    monkeypatch.setenv("TRAINER_GIT_COMMIT", "0123456789abcdef0123456789abcdef01234567")
    assert artifacts.git_commit(tmp_path) == "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("TRAINER_GIT_COMMIT", "0123456789abcdef0123456789abcdef01234567-dirty")
    assert artifacts.git_commit(tmp_path) == "0123456789abcdef0123456789abcdef01234567-dirty"
    monkeypatch.setenv("TRAINER_GIT_COMMIT", "main; rm -rf /")
    assert artifacts.git_commit(tmp_path) is None


def test_git_commit_of_a_checkout_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    monkeypatch.setenv("TRAINER_GIT_COMMIT", "f" * 40)
    assert artifacts.git_commit(tmp_path) == head.stdout.strip()


# ---------------------------------------------------------------------- where the folder is, its attempts


def test_a_folder_given_with_tilde_or_a_variable_is_the_expanded_one(tmp_path, monkeypatch):
    """The lock, the guard and the Trainer's checkpoints see one folder: `~` and $VARS expanded once."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RUNS", str(tmp_path / "runs"))
    assert RunFolder("~/x").path == tmp_path / "home" / "x"
    assert RunFolder("~/x").checkpoints_dir == tmp_path / "home" / "x" / "checkpoints"
    assert RunFolder("$RUNS/x").path == RunFolder("${RUNS}/x").path == tmp_path / "runs" / "x"
    assert RunFolder(tmp_path / "plain").path == tmp_path / "plain"


def test_the_attempts_record_counts_every_start_of_the_run(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.create()
    attempts = folder.attempts
    assert attempts.path == folder.path / "attempts.json" and attempts.records() == []
    attempts.begin(None, started=1000.0)
    attempts.update(last_checkpoint_step=15)
    attempts.end("interrupted")
    checkpoint = folder.checkpoints_dir / "checkpoint-15"
    attempts.begin(checkpoint, started=2000.0)
    attempts.end("finished")
    first, second = attempts.records()
    assert (first["outcome"], first["last_checkpoint_step"], first["resumed_from"]) == (
        "interrupted",
        15,
        None,
    )
    assert (second["outcome"], second["resumed_from"], second["resumed_at_step"]) == (
        "finished",
        "checkpoint-15",
        15,
    )
    summary = attempts.summary()
    assert summary.count == 2
    assert summary.wall_seconds == pytest.approx(first["last_seen"] - 1000.0 + second["last_seen"] - 2000.0)
    assert summary.resume_points == [
        {"checkpoint": "checkpoint-15", "step": 15, "at": "1970-01-01T00:33:20Z"}
    ]
    assert sorted(p.name for p in folder.path.iterdir()) == ["attempts.json"]  # no .tmp left behind


def test_an_unreadable_attempts_record_counts_as_none(tmp_path, caplog):
    folder = RunFolder(tmp_path)
    (tmp_path / "attempts.json").write_text("{not json", encoding="utf-8")
    assert folder.attempts.records() == []
    assert "is unreadable" in caplog.text
    folder.attempts.update(outcome="failed")  # nothing to update: no record is made up
    assert (tmp_path / "attempts.json").read_text(encoding="utf-8") == "{not json"
