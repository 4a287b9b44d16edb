"""python -m ops VERB: the laptop side of the cloud verbs (mk/infra.mk runs each as a one-line recipe).

    init | plan | price | apply | up | down     Terraform in INFRA_DIR with TFVARS (ops.terraform)
    offers                                     the offers: quota, hourly price, estimated run cost
    inventory [--from FILE|-]                  write INVENTORY from Terraform's outputs (ops.inventory)
    provision [ANSIBLE-ARGS...]                the playbook against INVENTORY
    ssh [COMMAND...]                           a shell (or one command) on node 0 (NODE=k: node k)
    train RUN [ARGS...] | start RUN [ARGS...]  ship code, config and DATA/MODEL, start RUN, follow it (or not)
    tune [STUDY] [ARGS...]                     the same for a study of make tune (TUNE, TRIALS): /runs/STUDY
    logs RUN [--follow] | state RUN | stop RUN | runs | fetch RUN
    watch RUN [ARGS...]                        converge and (re)start RUN until it is finished
    bucket creds | bucket check URL | bucket runs URL | bucket fetch URL DEST
    pack --out FILE                            the project archive the playbook ships
    prices                                     the price table with its sources

Settings come from the environment, as make passes them (never spliced into a shell line): INFRA_DIR
(infra), TFVARS (INFRA_DIR/terraform.tfvars), SSH_KEY (~/.ssh/id_ed25519), SSH_PORT (overrides the
inventory's port), SSH_KNOWN_HOSTS (a known_hosts file of its own), INVENTORY (ansible/inventory/hosts.yml),
TERRAFORM (terraform), AUTO_APPROVE (1: no prompt), KEEP_DATA_DISK (1: down keeps the data disk), TUNE and
TRIALS (tune: the tune file in config/, n_trials), DATA, MODEL, SOURCE (vm: fetch from the VM's disk), NODE
(logs, ssh: node k), SORT (runs: date, f1, cost) and FORMAT (runs: table, csv), WATCH_ATTEMPTS, WATCH_SLEEP,
TRAINER_VM_PROJECT_DIR and TRAINER_VM_DATA_MOUNT (the inventory's VM layout; `{node}` in them: each node's
rank), QUOTA_CHECK (0: no GPU quota preflight), CONFIG (the run config whose cost the offers estimate:
config/cloud.yaml), TRAINER_COMPUTE_ENDPOINT and TRAINER_BILLING_ENDPOINT (another address for the Compute
Engine and Cloud Billing APIs: a private endpoint, or a test's stand-in).
Every user mistake ends in one `error: ...` line and exit status 2, before anything starts on the VM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ops import bucket, inventory, ranking, runs, runs_table, ship
from ops.offers import Candidate, Offers
from ops.terraform import Terraform, say
from trainer.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
USER_ERROR = 2


@dataclass
class Settings:
    env: dict[str, str]

    def get(self, name: str, default: str = "") -> str:
        return self.env.get(name) or default

    @property
    def infra_dir(self) -> Path:
        return Path(self.get("INFRA_DIR", "infra"))

    @property
    def tfvars(self) -> Path:
        return Path(self.get("TFVARS") or str(self.infra_dir / "terraform.tfvars"))

    @property
    def inventory(self) -> Path:
        return Path(self.get("INVENTORY", "ansible/inventory/hosts.yml"))

    @property
    def ssh_key(self) -> Path:
        return Path(self.get("SSH_KEY", "~/.ssh/id_ed25519")).expanduser()

    def flag(self, name: str) -> bool:
        return self.get(name) == "1"

    def number(self, name: str, default: str, kind=int):
        text = self.get(name, default)
        try:
            return kind(text)
        except ValueError:
            raise UserError(f"{name}={text!r} is not a number") from None

    def terraform(self) -> Terraform:
        return Terraform(self.infra_dir, self.tfvars, self.get("TERRAFORM", "terraform"))

    # ------------------------------------------------------------------ the checks before a verb

    def check_key(self) -> None:
        if not self.ssh_key.is_file():
            raise UserError(
                f"SSH key {self.ssh_key} not found: set SSH_KEY=<private key> (its .pub is "
                f"ssh_public_key_path) "
                "or run ssh-keygen -t ed25519"
            )

    def check_creds(self) -> None:
        named = self.get("GOOGLE_APPLICATION_CREDENTIALS")
        if named and not Path(named).is_file():
            raise UserError(
                f"GOOGLE_APPLICATION_CREDENTIALS={named} does not exist: point it to a key file or "
                "unset it and run 'gcloud auth application-default login'"
            )
        # A login on this machine is what counts, not a GCE metadata server: no probe of 169.254.169.254.
        os.environ.setdefault("NO_GCE_CHECK", "true")
        kind, project = bucket.load_credentials()
        print(f"credentials: {kind}, project {project or '(none set: gcloud config set project ...)'}")

    def connection(self) -> inventory.Connection:
        return inventory.read(self.inventory, self.ssh_key, self.get("SSH_PORT") or None)

    def session(self):
        return self.nodes()[0]

    def nodes(self) -> list:
        """A session to each node, node 0 first (one VM: a list of one)."""
        from ops.vm import Session

        self.check_key()
        conns = inventory.read_nodes(self.inventory, self.ssh_key, self.get("SSH_PORT") or None)
        return [Session(conn, self.get("SSH_KNOWN_HOSTS") or None) for conn in conns]

    # ------------------------------------------------------------------ offers: quota, prices, run cost

    def preflight(self, offers: Offers, todo: list[Candidate], spared: Candidate | None) -> list[Candidate]:
        if self.get("QUOTA_CHECK") == "0":
            say("GPU quota not checked (QUOTA_CHECK=0)")
            return todo
        endpoint = self.get("TRAINER_COMPUTE_ENDPOINT") or None
        return ranking.preflight(offers, todo, say, endpoint, spared=spared)

    def offer_table(self, tf: Terraform, offers: Offers, check_quota: bool = True):
        """(rows, the run's work or None, why not): each offer's quota, price and estimated run cost."""
        from ops import catalog, quota
        from ops.runcost import measured_mfu

        verdicts, notes = None, []
        if check_quota and self.get("QUOTA_CHECK") != "0":
            firsts = [candidates[0] for candidates in offers.by_offer().values()]
            try:
                verdicts = ranking.verdicts(offers, firsts, self.get("TRAINER_COMPUTE_ENDPOINT") or None)
            except quota.QuotaUnreadable as exc:
                notes.append(f"GPU quota not checked: {exc}")
        regions = {c.region for c in offers.candidates}
        try:
            catalogue = catalog.load(regions, endpoint=self.get("TRAINER_BILLING_ENDPOINT") or None)
        except catalog.CatalogUnreadable as exc:
            catalogue = None
            notes.append(f"prices from the dated table (the Billing Catalog was not read: {exc})")
        measured = {}
        try:
            url = str(tf.outputs().get("bucket_url") or "")
            measured = measured_mfu(bucket.finished_manifests(url)) if url else {}
        except UserError:
            pass  # nothing deployed yet, or the bucket out of reach: the assumed MFU
        config = Path(self.get("CONFIG", str(ROOT / "config" / "cloud.yaml")))
        work, why = ranking.work_or_reason(config, self.get("DATA"), self.get("MODEL"), runs.DEMO)
        return ranking.rows(offers, work, catalogue, measured, verdicts), work, why, notes

    def costs(self, tf: Terraform) -> Callable[[Offers], dict[int, float | None]]:
        def by_offer(offers: Offers) -> dict[int, float | None]:
            table, work, why, notes = self.offer_table(tf, offers, check_quota=False)
            for line in ranking.lines(offers, table, work, why) + notes:
                say(line)
            return ranking.costs(table)

        return by_offer

    # ------------------------------------------------------------------ the steps of several verbs

    def write_inventory(self, source: str | None = None) -> None:
        if source == "-":
            text, origin = sys.stdin.read(), "stdin"
        elif source:
            if not Path(source).is_file():
                raise UserError(f"{source}: no such file (expected `terraform output -json` output)")
            text, origin = Path(source).read_text(encoding="utf-8"), source
        else:
            text, origin = self.terraform().outputs_json(), "terraform output"
        values = inventory.output_values(inventory.parse_outputs(text, origin))
        layout = {
            "trainer_host_project_dir": inventory.vm_path(
                self.get("TRAINER_VM_PROJECT_DIR", "/opt/trainer"), "TRAINER_VM_PROJECT_DIR"
            ),
            "trainer_host_data_mount": inventory.vm_path(
                self.get("TRAINER_VM_DATA_MOUNT", "/mnt/trainer-data"), "TRAINER_VM_DATA_MOUNT"
            ),
        }
        port = inventory.port(self.get("SSH_PORT", str(inventory.DEFAULT_SSH_PORT)))
        text = inventory.render(values, str(self.ssh_key), port, layout)
        if str(self.inventory) == "-":
            sys.stdout.write(text)
            return
        inventory.write(text, self.inventory)
        print(
            f"inventory: wrote {self.inventory} (host {values['instance_name']} at {values['external_ip']})"
        )

    def provision(self, extra: Sequence[str] = ()) -> None:
        if not self.inventory.is_file() or not self.inventory.stat().st_size:
            raise UserError(f"{self.inventory} is missing: run `make inventory` (or `make infra-up`) first")
        ansible_dir = ROOT / "ansible"
        env = {**os.environ, "ANSIBLE_CONFIG": str(ansible_dir / "ansible.cfg")}
        # The role packs the project on the controller with `python -m ops pack`: this very Python.
        packer = json.dumps({"trainer_host_controller_python": sys.executable})
        cmd = ["ansible-playbook", "-i", str(self.inventory.resolve()), "site.yml", "-e", packer, *extra]
        try:
            code = subprocess.run(cmd, cwd=ansible_dir, env=env, check=False).returncode
        except FileNotFoundError:
            raise UserError("ansible-playbook is not installed: run make setup-tools") from None
        if code != 0:
            raise UserError(f"the playbook failed (ansible-playbook exit {code}; see above)")


def converge(s: Settings, always: bool, playbook_args: list[str]) -> int:
    from ops.watch import hand_over

    tf = s.terraform()
    tf.check()
    s.check_key()
    s.check_creds()
    tf.init()
    state = tf.converge(auto_approve=s.flag("AUTO_APPROVE"), preflight=s.preflight, costs=s.costs(tf))
    print(f"watch: {state.where()}")
    hand_over(state, s.write_inventory, lambda: s.provision(playbook_args), always=always)
    return 0


def terraform_verb(s: Settings, verb: str) -> int:
    from ops.prices import plan_lines

    tf = s.terraform()
    if verb == "init":
        tf.run("version")
        tf.init()
        return 0
    tf.check()
    s.check_creds()
    tf.init(quiet=True)
    if verb in ("plan", "price", "offers"):
        offers = tf.offers()
        table, listing = None, []
        if verb != "price" or offers.order == "cheapest":
            table, work, why, notes = s.offer_table(tf, offers, check_quota=verb != "price")
            listing = ranking.lines(offers, table, work, why) + notes
        if verb == "offers":
            print("\n".join(listing))
            return 0
        # The plan shows the VM that infra-up would try first: the one in use, else the first offer in the
        # order wanted.
        first = offers.ordered(ranking.costs(table) if table else None)[0] if offers.candidates else None
        plan = tf.plan(shown=verb == "plan", placement=first)
        print("\n".join(plan_lines(plan) + (listing if verb == "plan" else [])))
    else:  # down
        tf.down(keep_data_disk=s.flag("KEEP_DATA_DISK"), auto_approve=s.flag("AUTO_APPROVE"))
        s.inventory.unlink(missing_ok=True)
    return 0


def watch_verb(s: Settings, run: str, args: list[str]) -> int:
    from ops.watch import watch

    runs.check_name(run, "watch")
    attempts, sleep = s.number("WATCH_ATTEMPTS", "10"), s.number("WATCH_SLEEP", "60", float)
    if attempts < 1 or sleep < 0:
        raise UserError(f"WATCH_ATTEMPTS={attempts} WATCH_SLEEP={sleep:g}: at least 1 attempt and 0 seconds")
    tf = s.terraform()
    tf.check()
    s.check_key()
    s.check_creds()
    tf.init(quiet=True)
    inputs = runs.Inputs(s.get("DATA"), s.get("MODEL"))

    def start() -> None:
        runs.train(s.nodes(), ROOT, run, args, inputs)

    return watch(
        tf, run, start, s.write_inventory, s.provision,
        attempts=attempts, sleep=sleep, preflight=s.preflight, costs=s.costs(tf),
    )  # fmt: skip


def bucket_verb(s: Settings, words: list[str]) -> int:
    verb, rest = (words[0], words[1:]) if words else ("", [])
    if verb == "creds":
        s.check_creds()
    elif verb == "check" and len(rest) == 1:
        bucket.check_bucket(rest[0])
    elif verb == "runs" and len(rest) == 1:
        for name, (st, co) in bucket.list_runs(rest[0]).items():
            print(f"{name}\t{st}\t{co}")
    elif verb == "fetch" and len(rest) == 2:
        count = bucket.fetch(rest[0].rstrip("/"), Path(rest[1]))
        print(f"fetch: {rest[1]} ({count} files from {rest[0].rstrip('/')}/)")
    else:
        raise UserError("usage: python -m ops bucket creds | check URL | runs URL | fetch URL DEST")
    return 0


def run_verb(s: Settings, verb: str, words: list[str]) -> int:
    run, rest = (words[0], words[1:]) if words else ("", [])
    if verb in ("train", "start"):
        run = run or runs.new_name()
        s.check_key()
        s.check_creds()
        inputs = runs.Inputs(s.get("DATA"), s.get("MODEL"))
        return runs.train(s.nodes(), ROOT, run, rest, inputs, follow_it=verb == "train")
    if verb == "tune":  # run: the study's name (STUDY), else the tune file's
        s.check_key()
        s.check_creds()
        study, flags = runs.tune_args(ROOT, run, s.get("TUNE"), s.get("TRIALS"))
        inputs = runs.Inputs(s.get("DATA"), s.get("MODEL"))
        return runs.train(s.nodes(), ROOT, study, [*flags, *rest], inputs, task="tune")
    if verb == "fetch":
        runs.check_name(run, "fetch")
        source = s.get("SOURCE", "bucket")
        if source == "vm":
            return runs.fetch(s.connection(), run, source, s.session())
        s.check_creds()
        return runs.fetch(s.connection(), run, source)
    if verb == "runs":
        sort, fmt = runs_table.listing_options(s.get("SORT", "date"), s.get("FORMAT", "table"))
        # FORMAT=csv: standard output is the CSV alone (the credentials line goes to stderr).
        with contextlib.redirect_stdout(sys.stderr if fmt == "csv" else sys.stdout):
            s.check_creds()
        return runs_table.show_runs(s.nodes(), sort, fmt)
    runs.check_name(run, verb)
    nodes = s.nodes()
    if verb == "logs":
        return runs.logs(runs.pick(nodes, s.get("NODE")), run, follow_it="--follow" in rest)
    if verb == "state":
        print(runs.nodes_state(nodes, run))
        return 0
    return runs.stop(nodes, run)


RUN_VERBS = ("train", "start", "tune", "logs", "state", "stop", "runs", "fetch")
TERRAFORM_VERBS = ("init", "plan", "price", "offers", "down")
VERBS = (
    *TERRAFORM_VERBS,
    "apply",
    "up",
    "inventory",
    "provision",
    "ssh",
    *RUN_VERBS,
    "watch",
    "bucket",
    "pack",
    "prices",
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verb, words = (argv[0], argv[1:]) if argv else ("", [])
    s = Settings(dict(os.environ))
    try:
        if verb in RUN_VERBS:
            return run_verb(s, verb, words)
        if verb in TERRAFORM_VERBS:
            return terraform_verb(s, verb)
        if verb in ("apply", "up"):
            return converge(s, always=verb == "up", playbook_args=words)
        if verb == "watch":
            return watch_verb(s, words[0] if words else "", words[1:])
        if verb == "inventory":
            parser = argparse.ArgumentParser(prog="python -m ops inventory")
            parser.add_argument(
                "--from", dest="source", metavar="FILE", help="`terraform output -json` text ('-': stdin)"
            )
            s.write_inventory(parser.parse_args(words).source)
            return 0
        if verb == "provision":
            s.provision(words)
            return 0
        if verb == "ssh":
            runs.pick(s.nodes(), s.get("NODE")).interactive(words)
            return 0
        if verb == "bucket":
            return bucket_verb(s, words)
        if verb == "pack":
            parser = argparse.ArgumentParser(prog="python -m ops pack")
            parser.add_argument("--out", type=Path, required=True)
            parser.add_argument("--src", type=Path, default=ROOT)
            args = parser.parse_args(words)
            print(f"pack: {ship.write_archive(args.src, args.out)} files in {args.out}")
            return 0
        if verb == "prices":
            from ops.prices import table_lines

            print("\n".join(table_lines()))
            return 0
        if verb in ("", "-h", "--help", "help"):
            print(__doc__)
            return 0 if verb else USER_ERROR
        raise UserError(f"unknown verb {verb!r}: one of {', '.join(VERBS)} (python -m ops --help)")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
