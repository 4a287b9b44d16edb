"""`python -m trainer [flags]`: exit 0 on success, 2 with a one-line message on a user error."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from trainer.config import (
    CONFIG_DIR,
    MODE_ENV,
    MODES,
    all_keys,
    choose_mode,
    config_file,
    load_config,
    parse_override,
    to_yaml,
)
from trainer.errors import ConfigError, OneLineParser, UserError, report
from trainer.flops import hardware_line
from trainer.precision import DeviceInfo

# Flags a user of the original training script already knows -> the config key they set.
FLAG_KEYS = {
    "output_dir": "runtime.output_dir",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "learning_rate": "train.learning_rate",
    "seed": "train.seed",
}


def build_parser() -> argparse.ArgumentParser:
    keys = "\n".join(f"  {key:<38} {default!r:<12} {doc}" for key, default, doc in all_keys())
    parser = OneLineParser(
        prog="python -m trainer",
        description="Fine-tune a transformer text classifier. Precedence: config file < its "
        "cloud_overrides (with --mode cloud) < flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"config keys (set any with --set key=value):\n{keys}",
    )
    parser.add_argument("--config", help=f"YAML run config (default: {CONFIG_DIR}/<mode>.yaml)")
    parser.add_argument(
        "--mode",
        help=f"{' or '.join(MODES)} (default: ${MODE_ENV}, else local); cloud applies the file's "
        "cloud_overrides and syncs to runtime.bucket",
    )
    parser.add_argument("--output-dir", help="run folder for model, metrics and logs (runtime.output_dir)")
    parser.add_argument("--epochs", help="training epochs (train.epochs)")
    parser.add_argument("--batch-size", help="per-device training batch size (train.batch_size)")
    parser.add_argument("--learning-rate", help="peak learning rate (train.learning_rate)")
    parser.add_argument("--seed", help="seed for split, init and data order (train.seed)")
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="ask for fp16 mixed precision (train.precision=fp16; on a CPU it warns and trains in fp32)",
    )
    parser.add_argument(
        "--no-early-stopping",
        action="store_true",
        help="train all epochs (train.early_stopping.enabled=false)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished run in the output folder (runtime.overwrite)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config key, e.g. --set train.warmup_ratio=0.06 (repeatable)",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in args.set:
        key, value = parse_override(item)
        out[key] = value
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            out[key] = parse_override(f"{key}={value}")[1]
    if args.fp16:
        out["train.precision"] = "fp16"
    if args.no_early_stopping:
        out["train.early_stopping.enabled"] = False
    if args.overwrite:
        out["runtime.overwrite"] = True
    return out


def _flag_names(problem: str) -> str:
    for flag, key in FLAG_KEYS.items():
        if problem.startswith(key + " "):
            return f"--{flag.replace('_', '-')} ({key}){problem[len(key) :]}"
    return problem


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.addFilter(lambda record: not record.name.startswith("trainer.steps"))
    root = logging.getLogger("trainer")
    root.setLevel(logging.INFO)
    for old in [h for h in root.handlers if getattr(h, "trainer_console", False)]:
        root.removeHandler(old)  # main() called again in one process (tests, notebooks)
    handler.trainer_console = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.propagate = False
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()


def main(argv: list[str] | None = None, device: DeviceInfo | None = None) -> int:
    """`device`: tests hand in a device description; None detects the real one."""
    args = build_parser().parse_args(argv)
    try:
        mode = choose_mode(args.mode)
        config = load_config(config_file(mode, args.config), mode, overrides_from_args(args))
        if args.print_config:
            sys.stdout.write(to_yaml(config))
            return 0
        setup_logging()
        from trainer.run import run

        result = run(config, device)
    except ConfigError as exc:
        return report("; ".join(_flag_names(p) for p in exc.problems))
    except UserError as exc:
        return report(str(exc))
    except KeyboardInterrupt:
        sys.stderr.write("trainer: interrupted; rerun the same command to resume from the last checkpoint\n")
        return 130
    if result.manifest:
        test = result.metrics["test"]
        print(
            f"run finished: {result.run_dir}\n"
            f"  test macro-F1 {test['f1_macro']:.4f}  accuracy {test['accuracy']:.4f}  "
            f"({result.manifest['timing']['wall_seconds']:.0f} s, precision {result.manifest['precision']})\n"
            f"  {hardware_line(result.manifest['hardware_use'])}"
        )
    return 0
