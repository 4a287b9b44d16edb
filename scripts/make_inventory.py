#!/usr/bin/env python3
"""Write the Ansible inventory for the trainer VM from Terraform's outputs.

    terraform -chdir=infra output -json | python scripts/make_inventory.py --from -
    python scripts/make_inventory.py                 # runs `terraform -chdir=infra output -json` itself
    python scripts/make_inventory.py --from outputs.json --out ansible/inventory/hosts.yml

The inventory has one group, `trainer`, with the VM as its host: `ansible_host` (external IP),
`ansible_user` (ssh_user), `ansible_ssh_private_key_file` (--ssh-key, else $SSH_KEY, else
~/.ssh/id_ed25519), and the host variables the roles read: `trainer_host_data_disk_device`,
`trainer_bucket_url`, `trainer_host_gpu_count`. Standard library only; the YAML is written with JSON
scalars (valid YAML), so no quoting surprises.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "ansible" / "inventory" / "hosts.yml"
DEFAULT_SSH_KEY = "~/.ssh/id_ed25519"

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
}


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
    if missing:
        problems.insert(0, "missing outputs: " + ", ".join(missing))
    if problems:
        raise InventoryError("terraform outputs: " + "; ".join(problems))
    return values


def render_inventory(values: dict, ssh_key: str) -> str:
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
    for name, ip in hosts:
        host_vars = {
            "ansible_host": ip,
            "ansible_user": values["ssh_user"],
            "ansible_ssh_private_key_file": ssh_key,
            "trainer_host_data_disk_device": values["data_disk_device_name"],
            "trainer_bucket_url": values.get("bucket_url") or "",
            "trainer_host_gpu_count": values.get("gpu_count", 1),
        }
        lines.append(f"    {json.dumps(name)}:")
        lines += [f"      {key}: {json.dumps(value)}" for key, value in host_vars.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    args = parser.parse_args(argv)
    try:
        values = output_values(read_outputs(args.source, args.infra_dir))
    except InventoryError as err:
        print(f"make_inventory: {err}", file=sys.stderr)
        return 2
    text = render_inventory(values, os.path.expanduser(args.ssh_key))
    if str(args.out) == "-":
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"make_inventory: wrote {args.out} (host {values['instance_name']} at {values['external_ip']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
