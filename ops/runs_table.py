"""`make runs`: every run the VM and the bucket know, compared by their manifests' figures (test macro-F1,
best validation metric, epochs, GPU kind x count x nodes, spot, wall time, estimated cost, commit), as an
aligned table or CSV, sorted by date, F1 or cost."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from ops import bucket
from ops.runs import fold
from ops.vm import Session
from trainer import run_state
from trainer.errors import UserError

# SORT: by the run's start (runs without one after, by name), test macro-F1 best first, cheapest first.
SORTS = ("date", "f1", "cost")
FORMATS = ("table", "csv")  # FORMAT: an aligned text table, or CSV for a spreadsheet
COLUMNS = ("RUN", "STATE", "TEST_F1", "BEST_VAL", "EPOCHS", "GPU", "SPOT", "WALL", "COST_USD", "COMMIT",
           "STARTED", "WHERE")  # fmt: skip


def listing_options(sort: str, fmt: str) -> tuple[str, str]:
    """SORT and FORMAT checked, both at once, before anything is read."""
    problems = [f"SORT={sort!r}: one of {', '.join(SORTS)}"] if sort not in SORTS else []
    problems += [f"FORMAT={fmt!r}: one of {', '.join(FORMATS)}"] if fmt not in FORMATS else []
    if problems:
        raise UserError("; ".join(problems))
    return sort, fmt


@dataclass
class Run:
    """One run as the VM and the bucket know it: its state, where it is, its manifest when finished."""

    name: str
    state: str
    where: str
    manifest: dict | None = None
    listed_cost: str = "-"  # the run manager's figure (from the manifest on the VM's disk)


def _figure(manifest: dict | None, *keys: str):
    """manifest[k1][k2]...: None where a level is missing or not an object."""
    value = manifest
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _fmt(value, spec: str) -> str:
    number = _number(value)
    return "-" if number is None else format(number, spec)


def _gpu(manifest: dict | None) -> str:
    """KINDxGPUSxNODES (T4x1x1) from the manifest's environment and distributed sections; cpu (mps...)."""
    from trainer.flops import gpu_model

    device = _figure(manifest, "environment", "device")
    if device != "cuda":
        return device if isinstance(device, str) and device else "-"
    name = _figure(manifest, "environment", "gpu_name")
    kind = (gpu_model(name) or name.replace(" ", "")) if isinstance(name, str) and name else "-"
    count, nodes = _figure(manifest, "environment", "gpu_count"), _figure(manifest, "distributed", "machines")
    return f"{kind}x{_fmt(count, 'g')}x{_fmt(nodes, 'g')}"


def _wall(seconds) -> str:
    number = _number(seconds)
    if number is None:
        return "-"
    whole = round(number)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _best(manifest: dict | None) -> str:
    """The best validation figure of the early-stopping metric, as metric=value (a study: its best
    trial's value of the study's metric)."""
    if _figure(manifest, "kind") == "study":
        value, metric = _figure(manifest, "best", "value"), _figure(manifest, "metric")
        return f"{metric}={value:.4f}" if _number(value) is not None else "-"
    best = _figure(manifest, "training", "best_metric")
    (metric, value), *_ = best.items() if isinstance(best, dict) and best else [("", None)]
    return f"{metric}={value:.4f}" if _number(value) is not None else "-"


def _text(value) -> str:
    return value if isinstance(value, str) and value else "-"


def cells(run: Run) -> tuple[str, ...]:
    """The run's row (COLUMNS), each figure from its manifest (trainer/artifacts.py); '-' where it has
    none (an unfinished run has no manifest)."""
    m = run.manifest
    done, planned = _figure(m, "training", "epochs_completed"), _figure(m, "training", "epochs_planned")
    if _figure(m, "kind") == "study":  # a study of make tune: its trials done of those asked
        done, planned = _figure(m, "complete"), _figure(m, "n_trials")
    spot, commit = _figure(m, "environment", "spot"), _text(_figure(m, "git_commit"))
    cost = _fmt(_figure(m, "estimated_cost_usd"), ".4f")
    return (
        run.name,
        run.state,
        _fmt(_figure(m, "test_f1_macro"), ".4f"),
        _best(m),
        "-" if done is None and planned is None else f"{_fmt(done, '.3g')}/{_fmt(planned, '.3g')}",
        _gpu(m),
        ("yes" if spot else "no") if isinstance(spot, bool) else "-",
        _wall(_figure(m, "timing", "wall_seconds")),
        run.listed_cost if cost == "-" else cost,
        commit[:7] + ("-dirty" if commit.endswith("-dirty") else ""),
        _text(_figure(m, "started_at")),
        run.where,
    )


def _sort_key(sort: str, row: tuple[str, ...]):
    """Known figures first in the order asked, then the rest by name."""
    by = {"date": COLUMNS.index("STARTED"), "f1": COLUMNS.index("TEST_F1"), "cost": COLUMNS.index("COST_USD")}
    text = row[by[sort]]
    if sort == "date":
        return (text == "-", text, row[0])
    try:
        number = float(text)
    except ValueError:
        return (True, 0.0, row[0])
    return (False, -number if sort == "f1" else number, row[0])


def _listing(vm: Session) -> dict[str, tuple[str, str]] | None:
    """`trainer-run list` on one node: run -> (state, cost); None when the node does not answer."""
    listed = vm.manager("list", capture=True)
    if listed.returncode != 0:
        return None
    found = {}
    for line in listed.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0]:
            found[parts[0]] = (parts[1], parts[2])
    return found


def collect(vm: Session, others: Sequence[Session] = ()) -> list[Run]:
    """Every run the VM knows (its data disk) and the bucket knows (finished ones and checkpoints), merged:
    the VM's state wins (it knows what is running), the bucket fills in the rest; manifests from the bucket,
    and from the VM's disk for finished runs the bucket lacks (one more SSH call, only then). Several nodes:
    node 0's state, with what the other nodes say otherwise (runs.fold: one down, one not running)."""
    found: dict[str, Run] = {}
    listed = _listing(vm)
    if listed is not None:
        for name, (st, cost) in listed.items():
            found[name] = Run(name, st, "vm", listed_cost=cost)
    else:
        print("runs: the VM does not answer over SSH (stopped?): runs from the bucket only", file=sys.stderr)
    said: dict[str, dict[int, str | None]] = {name: {} for name in found}
    for node in others:
        there = _listing(node)
        if there is None:
            print(f"runs: {node.label} does not answer over SSH (down?)", file=sys.stderr)
        for name, run in found.items():
            if there is not None:
                said[name][node.conn.rank] = there.get(name, (run_state.UNKNOWN, "-"))[0]
            elif run.state == run_state.RUNNING:  # a node down matters to a run that goes on
                said[name][node.conn.rank] = None
    for name, run in found.items():
        run.state = fold(run.state, said[name])
    for name, manifest in bucket.runs_with_manifests(vm.conn.bucket_url).items():
        st = run_state.state_of(manifest) if manifest is not None else run_state.INTERRUPTED
        run = found.setdefault(name, Run(name, st, ""))
        run.where = ",".join(filter(None, (run.where, "bucket")))
        run.manifest = manifest
        if run.state == run_state.UNKNOWN:
            run.state = st
    missing = [r.name for r in found.values() if r.where.startswith("vm") and r.state == run_state.FINISHED
               and not r.manifest]  # fmt: skip
    if missing:
        for name, manifest in _vm_manifests(vm, missing).items():
            found[name].manifest = manifest
    return [found[name] for name in sorted(found)]


def _vm_manifests(vm: Session, names: list[str]) -> dict[str, dict]:
    done = vm.manager("manifests", *names, capture=True)
    try:
        read = json.loads(done.stdout) if done.returncode == 0 else None
    except ValueError:
        read = None
    if not isinstance(read, dict):
        print(
            f"runs: the manifests of {', '.join(names)} on the VM could not be read (an older run manager? "
            "make provision updates it): their figures show '-'",
            file=sys.stderr,
        )
        return {}
    return {name: m for name, m in read.items() if name in names and isinstance(m, dict)}


def show_runs(nodes: list[Session], sort: str = "date", fmt: str = "table") -> int:
    listing_options(sort, fmt)
    rows = sorted((cells(run) for run in collect(nodes[0], nodes[1:])), key=lambda row: _sort_key(sort, row))
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
        return 0
    widths = [max(len(row[i]) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    for row in [COLUMNS, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print("(figures: each run's manifest, '-' where it has none; cost: an estimate, the bill: Cloud Billing)")
    return 0
