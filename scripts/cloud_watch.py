#!/usr/bin/env python3
"""Keep a cloud run alive through preemptions and stock-outs, declaratively: `make watch RUN=<name>`.

    cloud_watch.py converge [--auto-approve] [--inventory CMD] [--provision CMD [--provision-always]]
                                                      terraform apply, moving zones on a GPU stock-out
    cloud_watch.py watch RUN [options] -- START...    converge, then (re)start the run until it is done
    cloud_watch.py price                              terraform plan, priced by trainer/prices.py

Converging is Terraform's own work: the module wants the VM RUNNING (`desired_status`), so `terraform
apply` refreshes the state (a preempted VM shows TERMINATED), starts a VM that a preemption, its maximum
run duration or a maintenance event stopped, and reads it back with its new ephemeral address; the
outputs are read after the apply, never before, so SSH never goes to a stale address.

A create that GCP refuses for lack of GPUs in the zone (ZONE_RESOURCE_POOL_EXHAUSTED and friends, see
STOCK_OUT) is applied again with `-var zone=<next>`, through the module's `zones` order (zone, then
fallback_zones). Changing the zone replaces the VM and its data disk (disks are zonal): the new disk is
empty, the checkpoints and artifacts stay in the bucket. The zone that worked is written to
infra/zone.auto.tfvars.json (ZONE_FILE), which Terraform reads by itself, so the next plain `terraform
apply` does not move the VM back (a tfvars file given with -var-file wins over it: pass it after).

A VM that the apply made anew has a bare boot disk (no driver, no Docker): a first create, and every
replacement, which Terraform does for a change of an argument the google provider marks ForceNew (spot
or standard, the maximum run duration, the GPUs, the boot image, the zone). `converge` then runs the
--inventory command (the address is new too) and the --provision command (the playbook) before it says
done; with --provision-always (PROVISION_ALWAYS=1: `make infra-up`) it provisions the VM it kept too.

`watch` loops at most --attempts times: converge; done when gs://<bucket>/runs/<RUN>/manifest.json
exists (the trainer writes the manifest last); otherwise refresh the inventory (the address may have
changed), provision a VM that the apply made anew, and run the START command (everything after `--`, e.g.
`scripts/tf_cloud.sh train RUN`; it should resume the run, not start it over, and may return at once
for a detached run); then sleep --sleep seconds. Each step prints one `watch:` line; a failure ends in
one `error:` line and a non-zero exit status (2: bad input).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the trainer package (its bucket client and layout), also when not installed
ZONE_FILE = "zone.auto.tfvars.json"
# GCP's answers that mean "no GPU (or VM) capacity in this zone now": another zone may have some.
STOCK_OUT = (
    "ZONE_RESOURCE_POOL_EXHAUSTED",  # also matches ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS
    "does not have enough resources available to fulfill the request",
    "resource pool exhausted",
    "STOCKOUT",
)
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
CREATED = re.compile(r"^google_compute_instance\.trainer\[\d+\]: Creating\.\.\.", re.M)


class WatchError(Exception):
    """Ends `watch`/`converge` with one `error:` line."""


def say(message: str) -> None:
    print(f"watch: {message}", flush=True)


def stock_out(output: str) -> str | None:
    """The line of terraform's output that says the zone is out of stock, or None."""
    for line in output.splitlines():
        if any(marker.lower() in line.lower() for marker in STOCK_OUT):
            return " ".join(line.strip(" │╷╵").split())
    return None


def last_error(output: str) -> str:
    errors = [" ".join(line.split()) for line in output.splitlines() if "Error" in line]
    lines = errors or [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


@dataclass
class Terraform:
    """terraform -chdir=INFRA_DIR with the user's tfvars file."""

    infra_dir: Path
    tfvars: Path
    binary: str = "terraform"
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def run(self, *args: str, stream: bool = False, stdin_tty: bool = False) -> tuple[int, str]:
        cmd = [self.binary, f"-chdir={self.infra_dir}", *args]
        if not stream:
            done = subprocess.run(cmd, capture_output=True, text=True, env=self.env, stdin=subprocess.DEVNULL)
            return done.returncode, done.stdout + done.stderr
        # Shown as it comes (terraform's approval prompt too) and kept for the stock-out check.
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env,
            stdin=None if stdin_tty else subprocess.DEVNULL,
        )  # fmt: skip
        chunks, pipe = [], proc.stdout.fileno() if proc.stdout else -1
        while chunk := os.read(pipe, 4096):
            chunks.append(chunk)
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        return proc.wait(), b"".join(chunks).decode(errors="replace")

    def var_file(self) -> str:
        return f"-var-file={self.tfvars.resolve()}"

    def console(self, expression: str) -> object:
        """An expression of the module evaluated with the user's variables (no state needed)."""
        cmd = [self.binary, f"-chdir={self.infra_dir}", "console", "-no-color", self.var_file()]
        done = subprocess.run(
            cmd, input=f"jsonencode({expression})\n", capture_output=True, text=True, env=self.env
        )
        if done.returncode != 0:
            raise WatchError(
                f"terraform console in {self.infra_dir}: {last_error(done.stdout + done.stderr)}"
            )
        return json.loads(json.loads(done.stdout.strip().splitlines()[-1]))

    def outputs(self) -> dict[str, object]:
        code, text = self.run("output", "-json", "-no-color")
        if code != 0:
            raise WatchError(f"terraform output in {self.infra_dir}: {last_error(text)}")
        return {name: o.get("value") for name, o in json.loads(text).items()}


def zone_order(tf: Terraform) -> list[str]:
    """The zones to try, in order: the one the VM was moved to last (ZONE_FILE), else the module's."""
    zones = [str(z) for z in tf.console("local.zone_order")]  # type: ignore[union-attr]
    remembered = tf.infra_dir / ZONE_FILE
    if remembered.is_file():
        moved = json.loads(remembered.read_text()).get("zone")
        if moved:
            zones = [moved, *(z for z in zones if z != moved)]
    return zones


def remember_zone(tf: Terraform, zone: str, configured: str) -> None:
    """Once the VM has moved, ZONE_FILE names the zone it lives in (delete the file to go back)."""
    path = tf.infra_dir / ZONE_FILE
    if zone == configured and not path.is_file():
        return
    if path.is_file() and json.loads(path.read_text()).get("zone") == zone:
        return
    path.write_text(json.dumps({"zone": zone}, indent=2) + "\n")
    say(f"the VM lives in {zone} now, not {configured}: {path} keeps it there for later applies")


@dataclass
class Converged:
    outputs: dict[str, object]
    created: bool  # a new VM (and boot disk): it needs provisioning


def converge(tf: Terraform, auto_approve: bool = True, configured: str | None = None) -> Converged:
    """terraform apply in the first zone that has capacity; the outputs read after it."""
    zones = zone_order(tf)
    configured = configured or str(tf.console("var.zone"))
    approve = ["-auto-approve", "-input=false"] if auto_approve else []
    for number, zone in enumerate(zones, 1):
        say(f"terraform apply in {zone} (zone {number} of {len(zones)}: {', '.join(zones)})")
        code, text = tf.run(
            "apply", "-no-color", tf.var_file(), f"-var=zone={zone}", *approve,
            stream=True, stdin_tty=not auto_approve,
        )  # fmt: skip
        if code == 0:
            remember_zone(tf, zone, configured)
            return Converged(tf.outputs(), bool(CREATED.search(text)))
        reason = stock_out(text)
        if reason is None:
            raise WatchError(f"terraform apply failed in {zone}: {last_error(text)}")
        nxt = f"moving to {zones[number]}" if number < len(zones) else "no zone left"
        say(f"{zone} has no capacity ({reason}); {nxt} (a new data disk there; the bucket keeps checkpoints)")
    raise WatchError(
        f"every zone is out of capacity ({', '.join(zones)}): try again later, or set zone and "
        f"fallback_zones in {tf.tfvars} to another region's zones"
    )


@dataclass
class Manifest:
    """The run's manifest in the bucket, where the trainer's bucket sync puts it (trainer/storage.py's
    layout, trainer/run_folder.py's file name); read with trainer/bucket.py's client."""

    bucket_url: str
    run: str

    def __post_init__(self) -> None:
        from trainer.bucket import client
        from trainer.errors import UserError
        from trainer.run_folder import MANIFEST
        from trainer.storage import BucketSync

        try:
            self.gcs = client()
            sync = BucketSync(self.bucket_url, self.run, client=self.gcs)
        except UserError as exc:
            raise WatchError(str(exc)) from None
        self.bucket, self.path = sync.bucket, f"{sync.run_prefix}/{MANIFEST}"
        self.url = f"{sync.url}/{MANIFEST}"

    def exists(self) -> bool:
        """objects.list only, as trainer/bucket.py does: no bucket metadata is read."""
        from google.api_core import exceptions

        try:
            found = self.gcs.list_blobs(self.bucket, prefix=self.path, max_results=1)
            return any(blob.name == self.path for blob in found)
        except exceptions.GoogleAPIError as exc:
            raise WatchError(f"cannot read {self.url}: {str(exc).splitlines()[0]}") from None


def step(what: str, command: list[str]) -> int:
    say(f"{what}: {shlex.join(command)}")
    try:
        return subprocess.run(command, cwd=ROOT).returncode
    except OSError as exc:
        raise WatchError(f"{what}: cannot run {command[0]}: {exc.strerror}") from None


def hand_over(state: Converged, inventory: str, provision: str, always: bool = False, then: str = "") -> None:
    """After an apply: the inventory rewritten (the address may be new), then the playbook on a VM the
    apply made anew (or on any VM when `always`). A failure names the way on (`then`: what to run after
    `make provision`), since the next apply keeps this VM and does not provision it."""
    if inventory and step("inventory", shlex.split(inventory)) != 0:
        raise WatchError("writing the inventory failed (see above)")
    if not provision:
        return
    if not (state.created or always):
        say("the VM was there before: not provisioned again (make provision re-runs the playbook)")
        return
    what = "provisioning the new VM" if state.created else "provisioning the VM"
    if step(what, shlex.split(provision)) != 0:
        raise WatchError(f"{what} failed (see above): fix it, then make provision{then}")


def where(outputs: dict[str, object]) -> str:
    name, status, zone, address = (
        outputs.get(k) for k in ("instance_name", "instance_status", "zone", "external_ip")
    )
    return f"{name} is {status} in {zone} at {address}"


def watch(tf: Terraform, args: argparse.Namespace) -> int:
    configured = str(tf.console("var.zone"))
    manifest = None
    for attempt in range(1, args.attempts + 1):
        say(f"attempt {attempt} of {args.attempts} for run {args.run}")
        state = converge(tf, configured=configured)
        say(where(state.outputs))
        manifest = manifest or Manifest(str(state.outputs.get("bucket_url")), args.run)
        if manifest.exists():
            say(f"run {args.run} is finished: {manifest.url}")
            return 0
        hand_over(state, args.inventory, args.provision, then=f" and make watch RUN={args.run} again")
        say(f"the run command exited {step(f'run {args.run}', args.start)}")
        if manifest.exists():
            say(f"run {args.run} is finished: {manifest.url}")
            return 0
        if attempt < args.attempts:
            say(f"run {args.run} is not finished; next check in {args.sleep:g} s")
            time.sleep(args.sleep)
    raise WatchError(
        f"run {args.run} is not finished after {args.attempts} attempts "
        f"(no {manifest.url if manifest else 'manifest'}): see its log (make logs RUN={args.run}), "
        f"then make watch RUN={args.run} again"
    )


def price(tf: Terraform) -> int:
    """The hourly price of what `terraform apply` would leave running: the saved plan, as JSON."""
    from trainer.prices import plan_lines

    with tempfile.TemporaryDirectory(prefix="tfplan-") as scratch:
        saved = str(Path(scratch) / "tfplan")
        code, text = tf.run("plan", "-input=false", "-no-color", "-out", saved, tf.var_file())
        if code != 0:
            raise WatchError(f"terraform plan failed: {last_error(text)}")
        code, text = tf.run("show", "-json", "-no-color", saved)
        if code != 0:
            raise WatchError(f"terraform show failed: {last_error(text)}")
    print("\n".join(plan_lines(json.loads(text))))
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cloud_watch.py", description=__doc__.splitlines()[0])
    parser.add_argument("--infra-dir", type=Path, default=Path(os.environ.get("INFRA_DIR") or "infra"))
    parser.add_argument(
        "--tfvars",
        type=Path,
        default=os.environ.get("TFVARS") or None,
        help="default: $TFVARS, else INFRA_DIR/terraform.tfvars",
    )
    parser.add_argument("--terraform", default=os.environ.get("TERRAFORM", "terraform"))
    verbs = parser.add_subparsers(dest="verb", required=True)
    conv = verbs.add_parser("converge", help="terraform apply, moving zones on a stock-out")
    conv.add_argument(
        "--auto-approve",
        action="store_true",
        default=os.environ.get("AUTO_APPROVE") == "1",
        help="no prompt (default: AUTO_APPROVE=1 in the environment; else terraform asks)",
    )
    conv.add_argument("--inventory", default="", help="command that rewrites the inventory after applying")
    conv.add_argument("--provision", default="", help="command that provisions a VM the apply made anew")
    conv.add_argument(
        "--provision-always",
        action="store_true",
        default=os.environ.get("PROVISION_ALWAYS") == "1",
        help="provision the VM also when the apply kept it (default: PROVISION_ALWAYS=1 in the environment)",
    )
    verbs.add_parser("price", help="the hourly price of what terraform apply would leave running")
    run = verbs.add_parser("watch", help="keep RUN going until its manifest is in the bucket")
    run.add_argument("run")
    run.add_argument("--attempts", type=int, default=10, help="at most this many rounds (default 10)")
    run.add_argument("--sleep", type=float, default=60.0, help="seconds between rounds (default 60)")
    run.add_argument("--inventory", default="", help="command that rewrites the inventory after converging")
    run.add_argument("--provision", default="", help="command that provisions a newly created VM")
    # Everything after `--` is the command that (re)starts the run.
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.start = argv[split + 1 :]
    args.tfvars = Path(args.tfvars) if args.tfvars else args.infra_dir / "terraform.tfvars"
    if args.verb == "watch":
        problems = []
        if not args.run:
            problems.append("which run? make watch RUN=<run name> (the name make train MODE=cloud printed)")
        elif not RUN_NAME.fullmatch(args.run):
            problems.append(
                f"RUN={args.run!r}: use letters, digits, '.', '_' and '-', a letter or digit first"
            )
        if args.attempts < 1 or args.sleep < 0:
            problems.append("WATCH_ATTEMPTS must be at least 1 and WATCH_SLEEP at least 0")
        if not args.start:
            problems.append("no command to (re)start the run after --")
        if problems:
            parser.exit(2, f"error: {'; '.join(problems)}\n")
    if not args.tfvars.is_file():
        example = args.infra_dir / "terraform.tfvars.example"
        parser.exit(2, f"error: {args.tfvars} not found: cp {example} {args.tfvars} and fill it in\n")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    tf = Terraform(args.infra_dir, args.tfvars, args.terraform)
    try:
        if args.verb == "price":
            return price(tf)
        if args.verb == "converge":
            state = converge(tf, auto_approve=args.auto_approve)
            say(where(state.outputs))
            hand_over(state, args.inventory, args.provision, args.provision_always)
            return 0
        return watch(tf, args)
    except WatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
