"""Runs on the VM: train (ship, start, follow), start, logs, state, stop, fetch (runs: ops/runs_table.py).

On the VM a run is the systemd unit trainer-run@RUN (the trainer_host role installs it with
/usr/local/sbin/trainer-run, whose header says why a unit rather than a detached container): it does not
depend on this SSH session, resumes by itself at boot after a preemption, and keeps its console output on
the data disk. Ctrl-C or a dropped connection while following only stops following. A run whose VM disk
has no checkpoint resumes from the newest complete one in the bucket (the trainer does it).
"""

from __future__ import annotations

import os
import re
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
# The trackers' settings (train.report_to) a cloud run takes from the laptop's environment, as MLflow and
# W&B document them; folders (`*_DIR`) are the laptop's own and stay here. Their values go to the VM on
# ssh's standard input and into a root-only file there, never onto a command line, the manifest, the
# resolved config, the log or the bucket.
TRACKER_ENV = ("MLFLOW_", "WANDB_")


def tracker_env(environ: dict[str, str]) -> dict[str, str]:
    return {
        name: value for name, value in sorted(environ.items())
        if name.startswith(TRACKER_ENV) and not name.endswith("_DIR") and re.fullmatch(r"[A-Z0-9_]+", name)
    }  # fmt: skip


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
        private = tracker_env(dict(os.environ))
        if private:
            say(f"passing {', '.join(private)} to the run (values not shown)")
        started = vm.manager(
            "start", run, "--env", f"TRAINER_GIT_COMMIT={commit}", "--env-stdin",
            "--", "--mode", "cloud", *extra, *args,
            feed="".join(f"{name}={value}\0" for name, value in private.items()),
        )  # fmt: skip
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
