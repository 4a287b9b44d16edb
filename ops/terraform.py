"""Terraform, the one wrapper: init (local state, or GCS when infra/backend.hcl exists), plan with its price,
apply with the zone fallback, and the targeted destroy that keeps the bucket.

Converging is Terraform's own work: the module wants the VM RUNNING (`desired_status`), so `terraform
apply` refreshes the state (a preempted VM shows TERMINATED), starts a VM that a preemption, its maximum
run duration or a maintenance event stopped, and reads it back with its new ephemeral address; the
outputs are read after the apply, never before, so SSH never goes to a stale address.

A create that GCP refuses for lack of GPUs in the zone (ZONE_RESOURCE_POOL_EXHAUSTED and friends, see
STOCK_OUT) is applied again with `-var zone=<next>`, through the module's `zones` order (zone, then
fallback_zones). Changing the zone replaces the VM and its data disk (disks are zonal): the new disk is
empty, the checkpoints and artifacts stay in the bucket. The zone that worked is written to
infra/zone.auto.tfvars.json (ZONE_FILE), which every later plan, apply and destroy passes after the
user's tfvars, so a plain apply does not move the VM back (infra-down deletes it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from trainer.errors import UserError

ZONE_FILE = "zone.auto.tfvars.json"
BACKEND_OVERRIDE = "backend_override.tf"
# GCP's answers that mean "no GPU (or VM) capacity in this zone now": another zone may have some.
STOCK_OUT = (
    "ZONE_RESOURCE_POOL_EXHAUSTED",  # also matches ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS
    "does not have enough resources available to fulfill the request",
    "resource pool exhausted",
    "STOCKOUT",
)
CREATED = re.compile(r"^google_compute_instance\.trainer\[\d+\]: Creating\.\.\.", re.M)
INSTALL = "terraform is not installed (>= 1.5 needed): see https://developer.hashicorp.com/terraform/install"


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
    """terraform -chdir=INFRA_DIR with the user's tfvars file (and the zone file, when the VM moved)."""

    infra_dir: Path
    tfvars: Path
    binary: str = "terraform"
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def run(self, *args: str, stream: bool = False, stdin_tty: bool = False) -> tuple[int, str]:
        cmd = [self.binary, f"-chdir={self.infra_dir}", *args]
        try:
            if not stream:
                done = subprocess.run(
                    cmd, capture_output=True, text=True, env=self.env, stdin=subprocess.DEVNULL
                )
                return done.returncode, done.stdout + done.stderr
            # Shown as it comes (terraform's approval prompt too) and kept for the stock-out check.
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env,
                stdin=None if stdin_tty else subprocess.DEVNULL,
            )  # fmt: skip
        except FileNotFoundError:
            raise UserError(INSTALL) from None
        chunks, pipe = [], proc.stdout.fileno() if proc.stdout else -1
        while chunk := os.read(pipe, 4096):
            chunks.append(chunk)
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        return proc.wait(), b"".join(chunks).decode(errors="replace")

    def read(self, *args: str) -> str:
        """A command's standard output alone (JSON, addresses): warnings on stderr stay out of it."""
        cmd = [self.binary, f"-chdir={self.infra_dir}", *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=self.env, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise UserError(INSTALL) from None
        if done.returncode != 0:
            raise UserError(f"terraform {args[0]} in {self.infra_dir} failed: {last_error(done.stderr)}")
        return done.stdout

    def must(self, *args: str, stream: bool = False) -> str:
        code, text = self.run(*args, stream=stream)
        if code != 0:
            if not stream:
                sys.stderr.write(text)
            raise UserError(f"terraform {args[0]} in {self.infra_dir} failed: {last_error(text)}")
        return text

    def var_files(self) -> list[str]:
        files = [f"-var-file={self.tfvars.resolve()}"]
        if (self.infra_dir / ZONE_FILE).is_file():
            files.append(f"-var-file={(self.infra_dir / ZONE_FILE).resolve()}")
        return files

    def check(self) -> None:
        """terraform runs, and the user's tfvars file is there."""
        self.run("version")
        if not self.tfvars.is_file():
            example = self.infra_dir / "terraform.tfvars.example"
            raise UserError(
                f"{self.tfvars} not found: cp {example} {self.tfvars} and set project_id and "
                "ssh_source_ranges"
            )

    def init(self, quiet: bool = False) -> None:
        """Local state by default; GCS when the user wrote INFRA_DIR/backend.hcl."""
        override = self.infra_dir / BACKEND_OVERRIDE
        args = ["init", "-input=false", "-no-color"]
        if (self.infra_dir / "backend.hcl").is_file():
            override.write_text(
                "# Written by make infra-init because backend.hcl exists: the state lives in GCS.\n"
                'terraform {\n  backend "gcs" {}\n}\n'
            )
            args.append("-backend-config=backend.hcl")
        else:
            override.unlink(missing_ok=True)
        self.must(*args, stream=not quiet)

    def console(self, expression: str) -> object:
        """An expression of the module evaluated with the user's variables (no state needed)."""
        cmd = [self.binary, f"-chdir={self.infra_dir}", "console", "-no-color", *self.var_files()]
        done = subprocess.run(
            cmd, input=f"jsonencode({expression})\n", capture_output=True, text=True, env=self.env
        )
        if done.returncode != 0:
            raise UserError(f"terraform console in {self.infra_dir}: {last_error(done.stdout + done.stderr)}")
        return json.loads(json.loads(done.stdout.strip().splitlines()[-1]))

    def outputs_json(self) -> str:
        return self.read("output", "-json", "-no-color")

    def outputs(self) -> dict[str, object]:
        return {name: o.get("value") for name, o in json.loads(self.outputs_json()).items()}

    def plan(self, shown: bool = True) -> dict:
        """The saved plan of what `apply` would do (shown as it is made, unless not `shown`), read back as
        JSON (for its price)."""
        with tempfile.TemporaryDirectory(prefix="tfplan-") as scratch:
            saved = str(Path(scratch) / "tfplan")
            self.must("plan", "-input=false", "-no-color", f"-out={saved}", *self.var_files(), stream=shown)
            return json.loads(self.read("show", "-json", "-no-color", saved))

    # ------------------------------------------------------------------ apply, with the zone fallback

    def zone_order(self) -> list[str]:
        """The zones to try, in order: the one the VM was moved to last (ZONE_FILE), else the module's."""
        zones = [str(z) for z in self.console("local.zone_order")]  # type: ignore[union-attr]
        remembered = self.infra_dir / ZONE_FILE
        if remembered.is_file():
            moved = json.loads(remembered.read_text()).get("zone")
            if moved:
                zones = [moved, *(z for z in zones if z != moved)]
        return zones

    def remember_zone(self, zone: str, configured: str) -> None:
        """Once the VM has moved, ZONE_FILE names the zone it lives in (infra-down deletes it)."""
        path = self.infra_dir / ZONE_FILE
        if zone == configured and not path.is_file():
            return
        if path.is_file() and json.loads(path.read_text()).get("zone") == zone:
            return
        path.write_text(json.dumps({"zone": zone}, indent=2) + "\n")
        say(f"the VM lives in {zone} now, not {configured}: {path} keeps it there for later applies")

    def converge(self, auto_approve: bool = True, configured: str | None = None) -> Converged:
        """terraform apply in the first zone that has capacity; the outputs read after it."""
        zones = self.zone_order()
        configured = configured or str(self.console("var.zone"))
        approve = ["-auto-approve", "-input=false"] if auto_approve else []
        for number, zone in enumerate(zones, 1):
            say(f"terraform apply in {zone} (zone {number} of {len(zones)}: {', '.join(zones)})")
            code, text = self.run(
                "apply", "-no-color", *self.var_files(), f"-var=zone={zone}", *approve,
                stream=True, stdin_tty=not auto_approve,
            )  # fmt: skip
            if code == 0:
                self.remember_zone(zone, configured)
                return Converged(self.outputs(), bool(CREATED.search(text)))
            reason = stock_out(text)
            if reason is None:
                raise UserError(f"terraform apply failed in {zone}: {last_error(text)}")
            nxt = f"moving to {zones[number]}" if number < len(zones) else "no zone left"
            say(
                f"{zone} has no capacity ({reason}); {nxt} (a new data disk there; the bucket keeps "
                "checkpoints)"
            )
        raise UserError(
            f"every zone is out of capacity ({', '.join(zones)}): try again later, or set zone and "
            f"fallback_zones in {self.tfvars} to another region's zones"
        )

    # ------------------------------------------------------------------ infra-down

    def down_targets(self, keep_data_disk: bool) -> tuple[list[str], list[str]]:
        """(destroyed, kept) resource addresses. infra-down destroys everything except the bucket (unless
        force_destroy), the enabled APIs (never disabled anyway) and, with KEEP_DATA_DISK=1, the data disk.
        Destroying a resource by -target also destroys what depends on it, so nothing kept may depend on a
        destroyed resource: the bucket depends only on the APIs, the data disk only on the APIs."""
        try:
            listed = self.read("state", "list")
        except UserError:
            listed = ""  # no state yet: nothing to destroy
        addresses = sorted({line.split("[")[0] for line in listed.splitlines() if line.strip()})
        try:
            force = self.read("output", "-json", "bucket_force_destroy").strip()
        except UserError:
            force = "false"
        keep = ["google_project_service."]
        if force != "true":
            keep.append("google_storage_bucket.artifacts")
        if keep_data_disk:
            keep.append("google_compute_disk.data")
        kept = [a for a in addresses if any(a == k or (k.endswith(".") and a.startswith(k)) for k in keep)]
        return [a for a in addresses if a not in kept], kept

    def down(self, keep_data_disk: bool, auto_approve: bool) -> None:
        targets, kept = self.down_targets(keep_data_disk)
        if not targets:
            print(f"infra-down: nothing to destroy in {self.infra_dir}'s state")
            return
        print(f"infra-down destroys: {' '.join(targets)}")
        print(f"infra-down keeps: {' '.join(kept)}")
        approve = ["-auto-approve"] if auto_approve else []
        code, text = self.run(
            "destroy", "-input=false", *self.var_files(), *approve, *(f"-target={t}" for t in targets),
            stream=True, stdin_tty=not auto_approve,
        )  # fmt: skip
        if code != 0:
            raise UserError(f"terraform destroy failed: {last_error(text)}")
        # The next infra-up starts from the configured zone again.
        (self.infra_dir / ZONE_FILE).unlink(missing_ok=True)


@dataclass
class Converged:
    outputs: dict[str, object]
    created: bool  # a new VM (and boot disk): it needs provisioning

    def where(self) -> str:
        name, status, zone, address = (
            self.outputs.get(k) for k in ("instance_name", "instance_status", "zone", "external_ip")
        )
        return f"{name} is {status} in {zone} at {address}"
