#!/usr/bin/env python3
"""Write the Ansible inventory for the trainer VM from Terraform's outputs.

    terraform -chdir=infra output -json | python scripts/make_inventory.py --from -
    python scripts/make_inventory.py                 # runs `terraform -chdir=infra output -json` itself
    python scripts/make_inventory.py --from outputs.json --out ansible/inventory/hosts.yml
    python scripts/make_inventory.py --show          # node 0's connection, `key=value` lines

The inventory has one group, `trainer`, with the VM as its host: `ansible_host` (external IP),
`ansible_port` (--ssh-port, else $SSH_PORT, else 22), `ansible_user` (ssh_user),
`ansible_ssh_private_key_file` (--ssh-key, else $SSH_KEY, else ~/.ssh/id_ed25519), and the host
variables the roles read: `trainer_host_data_disk_device`, `trainer_bucket_url`,
`trainer_host_gpu_count`, for distributed training `trainer_host_node_rank` (the host's place in
`instance_names`), `trainer_host_node_count`, `trainer_host_main_address` (node 0's internal address)
and `trainer_host_rendezvous_port`, `trainer_host_hourly_cost_usd` (an hour of every VM of the
deployment, priced by trainer/prices.py from the price_inputs output), `trainer_host_spot` (the
provisioning model, price_inputs' `spot`: the role derives a run's stop budget from it; true when the
outputs predate price_inputs, the shorter window), and where the project and the data disk live on the VM,
`trainer_host_project_dir` and `trainer_host_data_mount` (--project-dir / --data-mount, else
$TRAINER_VM_PROJECT_DIR / $TRAINER_VM_DATA_MOUNT, else VM_LAYOUT below). The inventory is the one
place the cloud verbs (scripts/tf_cloud.sh, through --show) and the playbook both read them from.
Standard library only; the YAML is written with JSON scalars (valid YAML), so no quoting surprises.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "ansible" / "inventory" / "hosts.yml"
DEFAULT_SSH_KEY = "~/.ssh/id_ed25519"
DEFAULT_SSH_PORT = 22
# Where the trainer_host role puts the project and mounts the data disk on the VM.
VM_LAYOUT = {"trainer_host_project_dir": "/opt/trainer", "trainer_host_data_mount": "/mnt/trainer-data"}
# --show: inventory host variable -> the name tf_cloud.sh reads.
SHOWN = {
    "ansible_host": "host",
    "ansible_port": "port",
    "ansible_user": "user",
    "trainer_bucket_url": "bucket_url",
    "trainer_host_project_dir": "project_dir",
    "trainer_host_data_mount": "data_mount",
    "trainer_host_node_count": "nodes",
}

# output name -> (accepted JSON types, required)
OUTPUTS: dict[str, tuple[tuple[type, ...], bool]] = {
    "instance_name": ((str,), True),
    "external_ip": ((str,), True),
    "ssh_user": ((str,), True),
    "data_disk_device_name": ((str,), True),
    "bucket_url": ((str, type(None)), False),
    "gpu_count": ((int,), False),
    # Several nodes (node_count > 1): every VM joins the group, node 0 first.
    "instance_names": ((list,), False),
    "external_ips": ((list,), False),
    "main_process_address": ((str,), False),
    "rendezvous_port": ((int,), False),
    # What an hour of the VMs costs is made of: priced here (trainer/prices.py) for the runs' manifests.
    "price_inputs": ((dict,), False),
}
DEFAULT_RENDEZVOUS_PORT = 29500


class InventoryError(Exception):
    """A problem with Terraform's outputs, worded for the user."""


def read_outputs(source: str | None, infra_dir: Path) -> dict:
    """Parse `terraform output -json` from a file, from stdin ('-'), or by running terraform."""
    if source == "-":
        text, origin = sys.stdin.read(), "stdin"
    elif source:
        path = Path(source)
        if not path.is_file():
            raise InventoryError(f"{source}: no such file (expected `terraform output -json` output)")
        text, origin = path.read_text(encoding="utf-8"), source
    else:
        cmd = ["terraform", f"-chdir={infra_dir}", "output", "-json"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise InventoryError("terraform is not installed (or pass --from FILE)") from None
        if done.returncode != 0:
            detail = done.stderr.strip().splitlines()[-1:] or ["no message"]
            raise InventoryError(f"`{' '.join(cmd)}` failed: {detail[0]}")
        text, origin = done.stdout, "terraform output"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InventoryError(f"{origin}: not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise InventoryError(f"{origin}: expected a JSON object of outputs, got {type(data).__name__}")
    if not data:
        raise InventoryError(f"{origin}: no outputs; has `make infra-up` (terraform apply) run?")
    return data


def output_values(outputs: dict) -> dict:
    """Check the outputs the inventory needs and return their plain values."""
    missing, problems, values = [], [], {}
    for name, (types, required) in OUTPUTS.items():
        entry = outputs.get(name)
        if entry is None:
            if required:
                missing.append(name)
            continue
        if not isinstance(entry, dict) or "value" not in entry:
            problems.append(f"{name} is not a terraform output object (no 'value')")
            continue
        value = entry["value"]
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            problems.append(f"{name} should be {wanted}, got {json.dumps(value)}")
        elif required and not str(value).strip():
            problems.append(f"{name} is empty")
        else:
            values[name] = value
    names, ips = values.get("instance_names"), values.get("external_ips")
    if names is not None or ips is not None:
        if names is None or ips is None or len(names) != len(ips) or not names:
            problems.append("instance_names and external_ips should be lists of the same, non-zero length")
        elif not all(isinstance(x, str) and x for x in [*names, *ips]):
            problems.append("instance_names and external_ips should hold non-empty strings")
    spot = (values.get("price_inputs") or {}).get("spot", False)
    if not isinstance(spot, bool):
        problems.append(f"price_inputs.spot should be true or false, got {json.dumps(spot)}")
    if len(names or [None]) > 1 and not values.get("main_process_address"):
        problems.append("several VMs but no main_process_address (node 0's internal address)")
    if missing:
        problems.insert(0, "missing outputs: " + ", ".join(missing))
    if problems:
        raise InventoryError("terraform outputs: " + "; ".join(problems))
    return values


def hourly_cost(values: dict) -> float:
    """USD per hour of every VM of the deployment running (machines, GPUs, addresses, disks), from
    the price_inputs output and trainer/prices.py's dated table; 0.0, with a warning, where unknown."""
    inputs = values.get("price_inputs")
    if not inputs:
        return 0.0
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from trainer.prices import PriceUnknown, hourly_price

    disks: dict[str, float] = {}
    try:
        for disk in inputs["disks"]:
            disks[disk["type"]] = disks.get(disk["type"], 0.0) + float(disk["gb"])
        price = hourly_price(
            str(inputs["machine_type"]),
            inputs.get("gpu_type"),
            int(inputs.get("gpu_count") or 0),
            bool(inputs.get("spot")),
            disks,
            nodes=int(inputs.get("node_count") or 1),
        )
    except PriceUnknown as exc:
        print(f"make_inventory: warning: {exc}; runs' manifests will show no cost", file=sys.stderr)
        return 0.0
    except (KeyError, TypeError, ValueError) as exc:
        raise InventoryError(f"terraform outputs: price_inputs is malformed ({exc!r})") from None
    return price["running"]


def is_spot(values: dict) -> bool:
    """The provisioning model, from price_inputs' `spot`; unknown (outputs without price_inputs): spot, whose
    30 s soft-off window is the shorter one, so a run's stop never counts on a standard VM's 120 s."""
    inputs = values.get("price_inputs")
    if not inputs or "spot" not in inputs:
        return True
    return inputs["spot"]  # a bool: output_values checked it


def render_inventory(
    values: dict, ssh_key: str, ssh_port: int = DEFAULT_SSH_PORT, layout: dict | None = None
) -> str:
    """The inventory as YAML text (JSON scalars, which YAML reads as they are)."""
    hosts = list(
        zip(
            values.get("instance_names") or [values["instance_name"]],
            values.get("external_ips") or [values["external_ip"]],
            strict=True,
        )
    )
    lines = [
        "# Generated by scripts/make_inventory.py from `terraform output -json`; do not edit.",
        "trainer:",
        "  hosts:",
    ]
    hourly = hourly_cost(values)  # the whole deployment's price, the same on every host
    spot = is_spot(values)
    for rank, (name, ip) in enumerate(hosts):
        host_vars = {
            "ansible_host": ip,
            "ansible_port": ssh_port,
            "ansible_user": values["ssh_user"],
            "ansible_ssh_private_key_file": ssh_key,
            "trainer_host_data_disk_device": values["data_disk_device_name"],
            "trainer_bucket_url": values.get("bucket_url") or "",
            "trainer_host_gpu_count": values.get("gpu_count", 1),
            # Distributed training: this node's rank, how many nodes, where node 0 listens.
            "trainer_host_node_rank": rank,
            "trainer_host_node_count": len(hosts),
            "trainer_host_main_address": values.get("main_process_address", ""),
            "trainer_host_rendezvous_port": values.get("rendezvous_port", DEFAULT_RENDEZVOUS_PORT),
            # The price of an hour of the whole deployment: a run's manifest multiplies its hours by it.
            "trainer_host_hourly_cost_usd": hourly,
            # Spot or standard: how long a soft-off leaves a run to checkpoint (the role derives the budget).
            "trainer_host_spot": spot,
            **(layout or VM_LAYOUT),
        }
        lines.append(f"    {json.dumps(name)}:")
        lines += [f"      {key}: {json.dumps(value)}" for key, value in host_vars.items()]
    return "\n".join(lines) + "\n"


def show_connection(inventory: Path) -> dict[str, str]:
    """Node 0's connection settings from an inventory this script wrote (its own JSON-scalar YAML)."""
    if not inventory.is_file():
        raise InventoryError(
            f"no inventory at {inventory}: run `make infra-up` (or `make inventory` after a terraform apply)"
        )
    found: dict[str, object] = {}
    for line in inventory.read_text(encoding="utf-8").splitlines():
        if line.startswith("    ") and not line.startswith("      ") and found:
            break  # the next host: node 0 is the first
        match = re.fullmatch(r"      ([a-z_]+): (.+)", line)
        if match and match.group(1) in SHOWN:
            try:
                found[match.group(1)] = json.loads(match.group(2))
            except json.JSONDecodeError:
                raise InventoryError(f"{inventory}: {match.group(1)} is not a JSON value") from None
    found.setdefault("trainer_host_node_count", 1)  # an inventory written before node counts: one VM
    missing = [key for key in SHOWN if key not in found]
    if missing:
        raise InventoryError(f"{inventory} has no {', '.join(missing)}: run `make inventory` again")
    return {SHOWN[key]: str(found[key]) for key in SHOWN}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        sys.stderr.write(f"make_inventory: {message}\n")
        raise SystemExit(2)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"SSH port must be a number from 1 to 65535, got {text!r}")
    return int(text)


def _vm_path(text: str) -> str:
    if not re.fullmatch(r"/[A-Za-z0-9._/-]*", text) or "/../" in f"{text}/":
        raise argparse.ArgumentTypeError(
            f"a VM path must be absolute, of letters, digits and . _ - /: {text!r}"
        )
    return text.rstrip("/") or "/"


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--from",
        dest="source",
        metavar="FILE",
        help="`terraform output -json` text ('-' for stdin); default: run terraform",
    )
    parser.add_argument(
        "--infra-dir", type=Path, default=ROOT / "infra", help="Terraform root module (default: infra/)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="inventory file to write ('-' for stdout)"
    )
    parser.add_argument(
        "--ssh-key",
        default=os.environ.get("SSH_KEY") or DEFAULT_SSH_KEY,
        help="private key for SSH (default: $SSH_KEY, else ~/.ssh/id_ed25519)",
    )
    parser.add_argument(
        "--ssh-port",
        type=_port,
        default=os.environ.get("SSH_PORT") or str(DEFAULT_SSH_PORT),
        help="SSH port of the VM (default: $SSH_PORT, else 22)",
    )
    for option, key, env in (
        ("--project-dir", "trainer_host_project_dir", "TRAINER_VM_PROJECT_DIR"),
        ("--data-mount", "trainer_host_data_mount", "TRAINER_VM_DATA_MOUNT"),
    ):
        parser.add_argument(
            option,
            type=_vm_path,
            default=os.environ.get(env) or VM_LAYOUT[key],
            help=f"{key} on the VM (default: ${env}, else {VM_LAYOUT[key]})",
        )
    parser.add_argument(
        "--show",
        action="store_true",
        help="print node 0's connection settings from the inventory (--out) as key=value lines",
    )
    args = parser.parse_args(argv)
    try:
        if args.show:
            for key, value in show_connection(args.out).items():
                print(f"{key}={value}")
            return 0
        values = output_values(read_outputs(args.source, args.infra_dir))
    except InventoryError as err:
        print(f"make_inventory: {err}", file=sys.stderr)
        return 2
    layout = {"trainer_host_project_dir": args.project_dir, "trainer_host_data_mount": args.data_mount}
    text = render_inventory(values, os.path.expanduser(args.ssh_key), args.ssh_port, layout)
    if str(args.out) == "-":
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"make_inventory: wrote {args.out} (host {values['instance_name']} at {values['external_ip']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
