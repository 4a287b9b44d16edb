"""Runs on the VM: train (ship, start, follow), start, logs, state, stop, runs, fetch.

On the VM a run is the systemd unit trainer-run@RUN (the trainer_host role installs it with
/usr/local/sbin/trainer-run, whose header says why a unit rather than a detached container): it does not
depend on this SSH session, resumes by itself at boot after a preemption, and keeps its console output on
the data disk. Ctrl-C or a dropped connection while following only stops following. A run whose VM disk
has no checkpoint resumes from the newest complete one in the bucket (the trainer does it).
"""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ops import bucket, ship
from ops.inventory import Connection
from ops.vm import Session
from trainer import run_state
from trainer.errors import UserError
from trainer.gcs import BUCKET_URL, run_prefix, split_bucket_url

DEMO = Path("data/demo/tweets.csv")


def check_name(run: str, verb: str) -> str:
    if not run:
        raise UserError(f"which run? make {verb} RUN=<run name> (make runs lists them)")
    if not run_state.valid_name(run):
        raise UserError(f"RUN={run!r}: a run name has {run_state.RUN_NAME_RULE}")
    return run


def new_name() -> str:
    return time.strftime("cloud-%Y%m%d-%H%M%S")


def say(message: str) -> None:
    print(f"train-cloud: {message}", flush=True)


@dataclass(frozen=True)
class Inputs:
    """What a run takes from the laptop: DATA (a file, a folder or a gs:// URL) and MODEL (a folder)."""

    data: str = ""
    model: str = ""

    def check(self, conn: Connection) -> None:
        if self.data.startswith("gs://"):
            if not BUCKET_URL.fullmatch(self.data) or not split_bucket_url(self.data)[1]:
                raise UserError(f"DATA={self.data}: name an object or folder in a bucket, gs://bucket/path")
            name = split_bucket_url(self.data)[0]
            if name != conn.bucket and name not in conn.data_buckets:
                raise UserError(
                    f"DATA={self.data}: the VM's account may read only gs://{conn.bucket} and the buckets in "
                    f'data_read_buckets; add "{name}" to data_read_buckets in your tfvars and make '
                    "infra-apply"
                )
            bucket.check_bucket(self.data)
        elif self.data:
            local(self.data, "DATA", "a CSV/JSONL/Parquet file, a saved dataset folder or a gs:// URL")
        elif not DEMO.is_file():
            raise UserError(
                "no data for the run: pass DATA=path/to.csv or DATA=gs://bucket/file.csv, "
                "or run make data for the demo tweets"
            )
        if self.model:
            local(
                self.model,
                "MODEL",
                "a saved model folder (hub models: ARGS='--set model.name=<id>')",
                folder=True,
            )

    def ship(self, vm: Session) -> list[str]:
        """Copy them to the data disk; the trainer flags that point the run at them."""
        conn, extra = vm.conn, []
        data_dir = f"{conn.data_mount}/data"
        if not self.data:
            say(f"copying data/demo/ to {conn.target}:{data_dir}/")  # config/cloud.yaml reads /data/demo/
            vm.push(DEMO.parent, data_dir)
        elif self.data.startswith("gs://"):
            extra += ["--set", f"data.path={self.data}"]
        else:
            path = Path(self.data).expanduser()
            say(f"copying {self.data} to {conn.target}:{data_dir}/")
            vm.push(path, data_dir)
            extra += ["--set", f"data.path=/data/{path.name}"]
        if self.model:
            path = Path(self.model).expanduser()
            say(f"copying {self.model} to {conn.target}:{conn.data_mount}/models/")
            vm.push(path, f"{conn.data_mount}/models")
            extra += ["--set", f"model.name=/models/{path.name}"]
        return extra


def local(given: str, what: str, expected: str, folder: bool = False) -> Path:
    """A local file or folder the run takes: it exists, and its name can go on the VM as it is."""
    path = Path(given).expanduser()
    if not (path.is_dir() if folder else path.exists()):
        raise UserError(
            f"{what}={given} {'is not a folder' if folder else 'does not exist'}: pass {expected}"
        )
    if not run_state.valid_name(path.name):
        raise UserError(f"{what}={given}: name it with letters, digits, '.', '_' and '-' only")
    return path


def check_args(args: list[str]) -> None:
    for arg in args:
        if re.search(r"[\x00-\x1f\x7f]", arg):
            raise UserError("ARGS holds a control character (a newline?): pass each flag on one line")


def state(vm: Session, run: str) -> str:
    done = vm.manager("state", run, capture=True)
    if done.returncode != 0:
        raise UserError(
            f"cannot read run {run}'s state on the VM: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
        )
    return done.stdout.strip()


def train(vm: Session, root: Path, run: str, args: list[str], inputs: Inputs, follow_it: bool = True) -> int:
    """Ship code, config and data, start run RUN detached, follow its log (a running RUN: just follow).
    Every check runs before anything is copied or started."""
    conn = vm.conn
    check_name(run, "train MODE=cloud")
    check_args(args)
    commit = ship.commit(root)
    inputs.check(conn)
    # Several VMs: each runs the container with its rank (.env), but starting and following all of them is
    # not built yet; refuse rather than train on node 0 while the others idle on the bill.
    if conn.nodes != 1:
        raise UserError(
            f"the infrastructure has {conn.nodes} nodes (node_count): make train MODE=cloud runs on one VM "
            "only; set node_count = 1 in your tfvars and make infra-up, or start the trainer on every "
            "node by hand (README: Scaling out)"
        )
    bucket.check_bucket(conn.bucket_url)
    vm.probe()
    if state(vm, run) == run_state.RUNNING:
        say(f"run {run} is already running on the VM: nothing shipped")
    else:
        say(f"shipping the project ({commit}) to {conn.target}:{conn.project_dir}")
        vm.push_project(root)
        extra = inputs.ship(vm)
        say("building the image on the VM (only what changed is rebuilt)")
        build = vm.script(
            'cd "$1" && sudo env DOCKER_BUILDKIT=0 COMPOSE_BAKE=false docker compose build --quiet trainer',
            conn.project_dir,
        )
        if build.returncode != 0:
            raise UserError(f"building the image on the VM failed (exit {build.returncode}; see above)")
        say(f"run {run}; artifacts in /runs/{run} on the data disk and under {conn.bucket_url}/runs/{run}")
        started = vm.manager(
            "start", run, "--env", f"TRAINER_GIT_COMMIT={commit}", "--", "--mode", "cloud", *extra, *args
        )
        if started.returncode != 0:
            raise UserError(f"starting run {run} on the VM failed (exit {started.returncode}; see above)")
    if not follow_it:
        say(f"follow it with: make logs RUN={run}")
        return 0
    follow(vm, run)
    say(f"done; bring it home with: make fetch RUN={run}")
    return 0


def follow(vm: Session, run: str) -> None:
    """Follows the run's log until it ends. Ctrl-C or a lost connection ends only the following."""
    say(f"following run {run} (Ctrl-C stops following, not the run)")
    try:
        done = vm.manager("logs", run, "--follow")
    except KeyboardInterrupt:
        print(f"\ntrain-cloud: stopped following; run {run} goes on on the VM (make logs RUN={run})")
        raise SystemExit(130) from None
    if done.returncode == 0:
        return
    try:
        now = state(vm, run)
    except UserError:
        now = "unreachable"
    if now == run_state.RUNNING:
        raise UserError(
            f"stopped following (the connection ended); run {run} goes on there: make logs RUN={run} "
            "reattaches"
        )
    if now == "unreachable":
        raise UserError(
            f"lost the connection to the VM; if it is up, run {run} goes on there: make logs RUN={run} "
            "reattaches"
        )
    raise UserError(
        f"run {run} is {now}: make logs RUN={run} shows why; make train MODE=cloud RUN={run} resumes it"
    )


def logs(vm: Session, run: str, follow_it: bool) -> int:
    check_name(run, "logs")
    if follow_it:
        follow(vm, run)
        return 0
    return vm.manager("logs", run).returncode


def stop(vm: Session, run: str) -> int:
    check_name(run, "stop")
    print(f"stop: stopping run {run} (the trainer saves a checkpoint to the bucket first)", flush=True)
    return vm.manager("stop", run).returncode


# ------------------------------------------------------------------ make runs: the runs compared

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
    """The best validation figure of the early-stopping metric, as metric=value."""
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


def collect(vm: Session) -> list[Run]:
    """Every run the VM knows (its data disk) and the bucket knows (finished ones and checkpoints), merged:
    the VM's state wins (it knows what is running), the bucket fills in the rest; manifests from the bucket,
    and from the VM's disk for finished runs the bucket lacks (one more SSH call, only then)."""
    found: dict[str, Run] = {}
    listed = vm.manager("list", capture=True)
    if listed.returncode == 0:
        for line in listed.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[0]:
                found[parts[0]] = Run(parts[0], parts[1], "vm", listed_cost=parts[2])
    else:
        print("runs: the VM does not answer over SSH (stopped?): runs from the bucket only", file=sys.stderr)
    for name, manifest in bucket.runs_with_manifests(vm.conn.bucket_url).items():
        st = run_state.recorded(manifest, None) if manifest is not None else run_state.INTERRUPTED
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


def show_runs(vm: Session, sort: str = "date", fmt: str = "table") -> int:
    listing_options(sort, fmt)
    rows = sorted((cells(run) for run in collect(vm)), key=lambda row: _sort_key(sort, row))
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


def fetch(conn: Connection, run: str, source: str, vm: Session | None = None) -> int:
    check_name(run, "fetch")
    dest = Path("runs") / run
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"{dest} already exists: move it away first (nothing was fetched)")
    if source == "vm":
        assert vm is not None
        vm.pull(f"{conn.data_mount}/runs/{run}", dest)
        print(f"fetch: {dest} (from the VM's data disk)")
        return 0
    if source != "bucket":
        raise UserError(f"SOURCE={source!r}: fetch from the bucket (SOURCE=bucket, the default) or SOURCE=vm")
    name, prefix = split_bucket_url(conn.bucket_url)
    url = f"gs://{name}/{run_prefix(prefix, run)}"
    count = bucket.fetch(url, dest)
    print(f"fetch: {dest} ({count} files from {url}/)")
    return 0
