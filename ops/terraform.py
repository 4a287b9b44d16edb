"""Terraform, the one wrapper: init (local state, or GCS when infra/backend.hcl exists), plan with its price,
apply through the offers, and the targeted destroy that keeps the bucket.

Converging is Terraform's own work: the module wants the VM RUNNING (`desired_status`), so `terraform
apply` refreshes the state (a preempted VM shows TERMINATED), starts a VM that a preemption, its maximum
run duration or a maintenance event stopped, and reads it back with its new ephemeral address; the
outputs are read after the apply, never before, so SSH never goes to a stale address.

The VM's placement (GPU kind and count, machine type, spot or not, zone) is one of the offers
(ops/offers.py): `converge` applies with `-var placement=<the next one>` in order, the remembered one
first, after the quota preflight has dropped those without GPU quota. An apply that GCP refuses with a
stock-out, a GPU quota error or a zone without the GPU moves to the next (skipping the rest of a region
whose quota refused); anything else ends it. Another zone or region replaces the VM and its data disk
(disks are zonal): the new disk is empty, the checkpoints and artifacts stay in the bucket, which never
moves (it lives in zone's region). The placement that worked is written to
infra/placement.auto.tfvars.json, which every later plan, apply and destroy passes after the user's
tfvars, so a plain apply does not move the VM back (infra-down deletes it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ops.offers import PLACEMENT_FILE, Candidate, Offers, failure, forget, quota_metric, remember
from trainer.errors import UserError

BACKEND_OVERRIDE = "backend_override.tf"
CREATED = re.compile(r"^google_compute_instance\.trainer\[\d+\]: Creating\.\.\.", re.M)
INSTALL = "terraform is not installed (>= 1.5 needed): see https://developer.hashicorp.com/terraform/install"


def say(message: str) -> None:
    print(f"watch: {message}", flush=True)


def last_error(output: str) -> str:
    errors = [" ".join(line.split()) for line in output.splitlines() if "Error" in line]
    lines = errors or [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


@dataclass
class Terraform:
    """terraform -chdir=INFRA_DIR with the user's tfvars file (and the placement file, once applied)."""

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
        if (self.infra_dir / PLACEMENT_FILE).is_file():
            files.append(f"-var-file={(self.infra_dir / PLACEMENT_FILE).resolve()}")
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

    def plan(self, shown: bool = True, placement: Candidate | None = None) -> dict:
        """The saved plan of what `apply` would do (shown as it is made, unless not `shown`), read back as
        JSON (for its price); on `placement` when given (the first offer ops would try)."""
        where = [f"-var=placement={json.dumps(placement.placement())}"] if placement else []
        with tempfile.TemporaryDirectory(prefix="tfplan-") as scratch:
            saved = str(Path(scratch) / "tfplan")
            self.must(
                "plan", "-input=false", "-no-color", f"-out={saved}", *self.var_files(), *where, stream=shown
            )  # fmt: skip
            return json.loads(self.read("show", "-json", "-no-color", saved))

    # ------------------------------------------------------------------ apply, through the offers

    def offers(self) -> Offers:
        """The offers as the module resolves them, with the placement in use (remembered, or the VM the
        state holds); one that names no usable machine or zone is refused here, before anything is applied."""
        found = Offers.read(self)
        if found.problems:
            raise UserError(f"offers in {self.tfvars}: {'; '.join(found.problems)}")
        if found.remembered is not None and found.remembered_candidate() is None:
            say(
                f"the remembered placement ({found.remembered.kind()} in {found.remembered.zone}) is not "
                f"among the offers of {self.tfvars} any more: forgotten"
            )
            forget(self.infra_dir)
            found = Offers.read(self)
        if found.remembered is None:
            # A VM made before the placement was remembered (or by a plain terraform apply): where it is.
            found.remembered = self.deployed()
        return found

    def converge(
        self,
        auto_approve: bool = True,
        preflight: Callable[[Offers, list[Candidate], Candidate | None], list[Candidate]] | None = None,
        costs: Callable[[Offers], dict[int, float | None]] | None = None,
    ) -> Converged:
        """terraform apply on the first offer and zone that GCP grants; the outputs read after it.
        `preflight` drops the candidates without GPU quota but the remembered one (it prints why, and raises
        when none is left);
        `costs` gives each offer's estimated run cost when the tfvars ask for the cheapest first."""
        offers = self.offers()
        todo = offers.ordered(costs(offers) if costs and offers.order == "cheapest" else None)
        here = offers.remembered_candidate()
        if preflight is not None:
            # The remembered placement may hold a VM whose GPUs its own quota counts: never dropped.
            todo = preflight(offers, todo, here)
        approve = ["-auto-approve", "-input=false"] if auto_approve else []
        tried: list[str] = []
        while todo:
            here, todo = todo[0], todo[1:]
            number = len(tried) + 1
            say(
                f"terraform apply in {here.zone}: offer {here.offer}, {here.kind()} "
                f"(try {number} of {number + len(todo)})"
            )
            code, text = self.run(
                "apply", "-no-color", *self.var_files(), f"-var=placement={json.dumps(here.placement())}",
                *approve, stream=True, stdin_tty=not auto_approve,
            )  # fmt: skip
            if code == 0:
                self.remember(here, offers)
                return Converged(self.outputs(), bool(CREATED.search(text)))
            found = failure(text)
            if found is None:
                raise UserError(f"terraform apply failed in {here.zone}: {last_error(text)}")
            kind, line = found
            tried.append(f"{here.zone} ({kind})")
            if kind == "quota":
                # A regional quota refuses the region's other zones alike; GPUS_ALL_REGIONS every region.
                metric = quota_metric(line)
                todo = [
                    c for c in todo
                    if not (c.gpu_type == here.gpu_type and c.spot == here.spot
                            and (c.region == here.region or metric == "GPUS_ALL_REGIONS"))
                ]  # fmt: skip
                why = f"offer {here.offer} has no GPU quota in {here.region} ({line})"
            elif kind == "stock-out":
                why = f"{here.zone} has no capacity ({line})"
            else:
                why = f"{here.zone} does not offer {here.gpu_type} on {here.machine_type} ({line})"
            say(f"{why}; {moving(here, todo[0] if todo else None)}")
        raise UserError(
            f"no offer could be placed (tried {', '.join(tried) or 'none'}): try again later, or list more "
            f"offers (other zones, regions or GPU kinds) in {self.tfvars}"
        )

    def deployed(self) -> Candidate | None:
        """The VM the state holds now, as a placement (from the outputs), or None."""
        try:
            values = self.outputs()
        except UserError:
            return None
        inputs = values.get("price_inputs")
        if not isinstance(inputs, dict) or not values.get("zone") or not values.get("instance_name"):
            return None
        return Candidate(
            offer=0, zone=str(values["zone"]), machine_type=str(inputs.get("machine_type")),
            gpu_type=str(inputs.get("gpu_type")), gpu_count=int(inputs.get("gpu_count") or 0),
            spot=bool(inputs.get("spot")),
        )  # fmt: skip

    def remember(self, placement: Candidate, offers: Offers) -> None:
        """The placement that worked, kept for every later apply until infra-down; said when it is not the
        first offer's first zone (the VM moved)."""
        path = remember(self.infra_dir, placement)
        first = offers.candidates[0] if offers.candidates else None
        if first is not None and not placement.same_vm(first):
            say(
                f"the VM runs on offer {placement.offer}, {placement.kind()} in {placement.zone}: {path} "
                "keeps it there for later applies (make infra-down forgets it)"
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
        # The next infra-up starts from the first offer again.
        forget(self.infra_dir)


def moving(here: Candidate, nxt: Candidate | None) -> str:
    if nxt is None:
        return "no offer left"
    what = f"moving to {nxt.zone}"
    if nxt.offer != here.offer:
        what += f" (offer {nxt.offer}, {nxt.kind()})"
    if nxt.region != here.region:
        what += f": a new VM and data disk in {nxt.region}; the bucket stays and keeps the checkpoints"
    else:
        what += " (a new data disk there; the bucket keeps checkpoints)"
    return what


@dataclass
class Converged:
    outputs: dict[str, object]
    created: bool  # a new VM (and boot disk): it needs provisioning

    def where(self) -> str:
        name, status, zone, address = (
            self.outputs.get(k) for k in ("instance_name", "instance_status", "zone", "external_ip")
        )
        return f"{name} is {status} in {zone} at {address}"
