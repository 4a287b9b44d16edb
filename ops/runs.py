"""Runs on the VM: train (ship, start, follow), start, logs, state, stop, fetch (runs: ops/runs_table.py).

Several VMs (node_count > 1) run one run together: each node runs the same unit, its rank and node 0's
address in its .env, and they meet at node 0 (torch.distributed). The verbs act on every node: train probes
them all (SSH, provisioning for this node count and rank) before anything starts, ships the same commit,
config and data to each, and starts the unit on each; stop stops them all at once (the processes agree on
one step and save one checkpoint); a run's state is node 0's (it keeps the records) with the other nodes'
disagreements said. A run that stopped on some nodes only is restarted on all of them, resuming from the
checkpoint. Node 0's log is followed (`make logs RUN=x NODE=k` shows another's).

On the VM a run is the systemd unit trainer-run@RUN (the trainer_host role installs it with
/usr/local/sbin/trainer-run, whose header says why a unit rather than a detached container): it does not
depend on this SSH session, resumes by itself at boot after a preemption (one VM; several: `make watch`
restarts it on all), and keeps its console output on
the data disk. Ctrl-C or a dropped connection while following only stops following. A run whose VM disk
has no checkpoint resumes from the newest complete one in the bucket (the trainer does it).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ops import bucket, ship
from ops.inventory import Connection
from ops.vm import RUN_MANAGER, Session
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
        vm_said = "" if conn.nodes == 1 else f" (node {conn.rank})"
        if not self.data:
            # config/cloud.yaml reads /data/demo/
            say(f"copying data/demo/ to {conn.target}:{data_dir}/{vm_said}")
            vm.push(DEMO.parent, data_dir)
        elif self.data.startswith("gs://"):
            extra += ["--set", f"data.path={self.data}"]
        else:
            path = Path(self.data).expanduser()
            say(f"copying {self.data} to {conn.target}:{data_dir}/{vm_said}")
            vm.push(path, data_dir)
            extra += ["--set", f"data.path=/data/{path.name}"]
        if self.model:
            path = Path(self.model).expanduser()
            say(f"copying {self.model} to {conn.target}:{conn.data_mount}/models/{vm_said}")
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
            f"cannot read run {run}'s state on {vm.label}: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
        )
    return done.stdout.strip()


def fold(main: str, others: dict[int, str | None]) -> str:
    """A run's state over its nodes: node 0's (it keeps the run's records), and each other node that does
    not go along with it (rank -> its state there, None: it does not answer), said."""
    notes = []
    for rank, there in sorted(others.items()):
        if there is None:
            notes.append(f"node {rank} down")
        elif main == run_state.RUNNING and there != run_state.RUNNING:
            notes.append(f"node {rank} not running")
        elif main != run_state.RUNNING and there == run_state.RUNNING:
            notes.append(f"node {rank} still running")
    return f"{main} ({', '.join(notes)})" if notes else main


def nodes_state(nodes: list[Session], run: str) -> str:
    """`make state`: node 0's state of the run, folded with the others' (one node: just its state)."""
    others: dict[int, str | None] = {}
    for vm in nodes[1:]:
        try:
            others[vm.conn.rank] = state(vm, run)
        except UserError:
            others[vm.conn.rank] = None
    return fold(state(nodes[0], run), others)


def _ship(vm: Session, root: Path, commit: str, inputs: Inputs) -> list[str]:
    """The project, the inputs and the image, on one node; the trainer flags that point at the inputs."""
    conn = vm.conn
    on = "" if conn.nodes == 1 else f" (node {conn.rank})"
    say(f"shipping the project ({commit}) to {conn.target}:{conn.project_dir}{on}")
    vm.push_project(root)
    extra = inputs.ship(vm)
    say(f"building the image on {vm.label} (only what changed is rebuilt)")
    build = vm.script(
        'cd "$1" && sudo env DOCKER_BUILDKIT=0 COMPOSE_BAKE=false docker compose build --quiet trainer',
        conn.project_dir,
    )
    if build.returncode != 0:
        raise UserError(f"building the image on {vm.label} failed (exit {build.returncode}; see above)")
    return extra


def tune_args(root: Path, study: str, tune_file: str, trials: str) -> tuple[str, list[str]]:
    """`make tune MODE=cloud`: the study's name (STUDY, else the tune file's study.name) and the flags of
    `python -m trainer.tune` on the VM. The tune file goes there with config/, so it must be in config/."""
    import yaml

    given = tune_file or "config/tune.yaml"
    path = (root / given).resolve() if not Path(given).is_absolute() else Path(given)
    config_dir = (root / "config").resolve()
    if not path.is_file():
        raise UserError(f"TUNE={given}: no such file (the search space, e.g. config/tune.yaml)")
    if config_dir not in path.parents:
        raise UserError(
            f"TUNE={given}: a cloud study reads its tune file from config/ (shipped): move it there"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"TUNE={given} is not YAML: {str(exc).splitlines()[0]}") from None
    named = (raw.get("study") or {}).get("name") if isinstance(raw, dict) else None
    name = study or str(named or "tune")
    if not run_state.valid_name(name):
        raise UserError(f"STUDY={name!r}: a study name has {run_state.RUN_NAME_RULE}")
    flags = ["--tune", f"/config/{path.relative_to(config_dir).as_posix()}"]
    if trials:
        flags += ["--trials", trials]
    return name, flags


def train(
    nodes: list[Session],
    root: Path,
    run: str,
    args: list[str],
    inputs: Inputs,
    follow_it: bool = True,
    task: str = "train",
) -> int:
    """Ship code, config and data, start run RUN detached on every node, follow node 0's log (a running
    RUN: just follow). Every check, on every node, runs before anything is copied or started. task "tune":
    RUN is a study of make tune (one VM), its trials runs of the trainer in /runs/RUN/trial-NNN."""
    vm = nodes[0]
    conn = vm.conn
    check_name(run, "tune MODE=cloud STUDY=" if task == "tune" else "train MODE=cloud")
    check_args(args)
    if task == "tune" and len(nodes) > 1:
        raise UserError(
            f"make tune MODE=cloud runs a study on one VM, and this deployment has {len(nodes)} nodes: set "
            "node_count = 1 (several GPUs on one VM: one trial per GPU), or point study.storage at a "
            "database every VM reaches"
        )
    commit = ship.commit(root)
    inputs.check(conn)
    if len(nodes) != conn.nodes:
        raise UserError(f"the inventory lists {len(nodes)} of {conn.nodes} nodes: run make inventory")
    bucket.check_bucket(conn.bucket_url)
    for node in nodes:
        node.probe()
    now = state(vm, run)
    others = {node.conn.rank: state(node, run) for node in nodes[1:]}
    if now == run_state.RUNNING and all(st == run_state.RUNNING for st in others.values()):
        where = "the VM" if len(nodes) == 1 else "every node"
        say(f"run {run} is already running on {where}: nothing shipped")
    elif now == run_state.FINISHED and others:
        say(f"run {run} is finished: nothing started")
    else:
        # Several nodes: a run that goes on on some of them only waits for the others in vain; it is
        # stopped (its checkpoint saved) and restarted on all of them together.
        states = [now, *others.values()]
        for node, there in zip(nodes, states, strict=True):
            if there == run_state.RUNNING:
                say(f"run {run} runs on {node.label} but not on every node: stopping it to restart it on all")
                node.manager("stop", run)
        extra: list[str] = []
        for node in nodes:
            extra = _ship(node, root, commit, inputs)
        say(f"run {run}; artifacts in /runs/{run} on the data disk and under {conn.bucket_url}/runs/{run}")
        private = tracker_env(dict(os.environ))
        if private:
            say(f"passing {', '.join(private)} to the run (values not shown)")
        for node in reversed(nodes):  # node 0 last: the others wait for it at the rendezvous
            started = node.manager(
                "start", run, "--env", f"TRAINER_GIT_COMMIT={commit}", "--env-stdin",
                "--", *(["tune"] if task == "tune" else []), "--mode", "cloud", *extra, *args,
                feed="".join(f"{name}={value}\0" for name, value in private.items()),
            )  # fmt: skip
            if started.returncode != 0:
                for other in nodes:
                    if other.conn.rank > node.conn.rank:
                        other.manager("stop", run)
                raise UserError(
                    f"starting run {run} on {node.label} failed (exit {started.returncode}; see above)"
                )
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


def pick(nodes: list[Session], node: str) -> Session:
    """NODE=k (default 0): that node's session."""
    if not node:
        return nodes[0]
    if not node.isdigit() or int(node) >= len(nodes):
        raise UserError(f"NODE={node!r}: the deployment has {len(nodes)} node(s), NODE=0 to {len(nodes) - 1}")
    return nodes[int(node)]


def logs(vm: Session, run: str, follow_it: bool) -> int:
    check_name(run, "logs")
    if follow_it and vm.conn.rank > 0:  # another node's console: the run's outcome is node 0's to say
        try:
            vm.manager("logs", run, "--follow")
        except KeyboardInterrupt:
            raise SystemExit(130) from None
        say(f"{vm.label}'s log of run {run} ends here; its state: make runs (node 0 keeps the records)")
        return 0
    if follow_it:
        follow(vm, run)
        return 0
    return vm.manager("logs", run).returncode


def stop(nodes: list[Session], run: str) -> int:
    """Stops the run on every node at once: the processes agree on one step and save one checkpoint."""
    check_name(run, "stop")
    where = "" if len(nodes) == 1 else f" on {len(nodes)} nodes"
    print(f"stop: stopping run {run}{where} (the trainer saves a checkpoint to the bucket first)", flush=True)
    if len(nodes) == 1:
        return nodes[0].manager("stop", run).returncode
    stopping = [
        subprocess.Popen(vm.argv(["sudo", RUN_MANAGER, "stop", run]), stdin=subprocess.DEVNULL)
        for vm in nodes
    ]
    return max(proc.wait() for proc in stopping)


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
