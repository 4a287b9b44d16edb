"""The stand-in provider's GCP: one JSON file, written by the provider and steered by the tests.

The file (named by the environment variable CLOUD_ENV when Terraform runs) holds:

- `resources`: what exists "in GCP", `{"<type> <id>": state}`. The provider adds a resource on create,
  rewrites it on update and removes it on delete; a refresh (ReadResource) reads it back from here,
  so a test can change the cloud behind Terraform's back: `set_attributes(...)` (a VM TERMINATED by a
  preemption, a new external address) or `remove(...)` (deleted outside Terraform).
- `rules`: what the test wants GCP to answer, each `{"type", "where": {argument: value}, ...}` matched
  against the resource's top-level arguments:
  `"values": {"network_interface.0.access_config.0.nat_ip": "10.200.0.2"}` (computed values at apply),
  `"create_error": "<message>"` (the create fails with GCP's message; nothing is created; `{project}`,
  `{zone}`, `{name}` and the resource's other top-level values are filled in),
  `"delete_error": "<message>"`.

Standard library only: the tests (in .venv) and the provider process (in .tools) both import it.
Writers hold an exclusive lock on `<file>.lock`, so parallel applies do not lose each other's writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CLOUD_ENV = "TRAINER_STANDIN_GOOGLE_CLOUD"
STOCK_OUT = (
    "Error waiting for instance to create: ZONE_RESOURCE_POOL_EXHAUSTED: The zone 'projects/{project}/zones/"
    "{zone}' does not have enough resources available to fulfill the request.  Try a different zone, or "
    "try again later."
)
QUOTA = (
    "Error waiting for instance to create: QUOTA_EXCEEDED: Quota '{metric}' exceeded.  Limit: {limit} in "
    "region {region}."
)
BUCKET_NOT_EMPTY = (
    "Error trying to delete bucket {name} containing objects without `force_destroy` set to true"
)


class StandInCloud:
    """Read and change the cloud file (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.read()
            yield data
            tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            tmp.replace(self.path)

    def read(self) -> dict[str, Any]:
        data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        data.setdefault("resources", {})
        data.setdefault("rules", [])
        return data

    # ---- what the tests say ----------------------------------------------------------------------

    def add_rule(self, rtype: str, where: dict[str, Any] | None = None, **answer: Any) -> None:
        with self._locked() as data:
            data["rules"].append({"type": rtype, "where": where or {}, **answer})

    def set_values(self, rtype: str, where: dict[str, Any], values: dict[str, Any]) -> None:
        """Computed attributes GCP returns at apply, by dotted path (`network_interface.0.network_ip`)."""
        self.add_rule(rtype, where, values=values)

    def instance_address(self, name: str, nat_ip: str, network_ip: str | None = None) -> None:
        """The VM `name` gets the external address `nat_ip` (and this internal one, if given)."""
        values = {"network_interface.0.access_config.0.nat_ip": nat_ip}
        if network_ip:
            values["network_interface.0.network_ip"] = network_ip
        self.set_values("google_compute_instance", {"name": name}, values)

    def stock_out(self, zone: str) -> None:
        """Every VM created in `zone` fails with GCE's zonal stock-out (ZONE_RESOURCE_POOL_EXHAUSTED)."""
        self.add_rule("google_compute_instance", {"zone": zone}, create_error=STOCK_OUT)

    def quota_exceeded(self, region: str, metric: str = "NVIDIA_T4_GPUS", limit: float = 0.0) -> None:
        """Every VM created in `region` fails with GCE's regional quota error."""
        message = QUOTA.format(metric=metric, limit=limit, region=region)
        self.add_rule("google_compute_instance", {"zone": f"{region}-*"}, create_error=message)

    def bucket_not_empty(self, name: str) -> None:
        """The bucket holds objects: deleting it fails unless force_destroy is true."""
        self.add_rule("google_storage_bucket", {"name": name, "force_destroy": False},
                      delete_error=BUCKET_NOT_EMPTY)  # fmt: skip

    def set_attributes(self, rtype: str, name: str, **attributes: Any) -> None:
        """Change an existing resource behind Terraform's back (seen at the next refresh)."""
        with self._locked() as data:
            _, state = self._find(data, rtype, name)
            for dotted, value in attributes.items():
                _assign(state, dotted.split("."), value)

    def remove(self, rtype: str, name: str) -> None:
        """Delete an existing resource behind Terraform's back."""
        with self._locked() as data:
            key, _ = self._find(data, rtype, name)
            del data["resources"][key]

    # ---- what exists -----------------------------------------------------------------------------

    def resources(self, rtype: str | None = None) -> list[dict[str, Any]]:
        return [s for k, s in sorted(self.read()["resources"].items()) if rtype in (None, k.split(" ", 1)[0])]

    def names(self, rtype: str) -> list[str]:
        return sorted(str(s.get("name")) for s in self.resources(rtype))

    @staticmethod
    def _find(data: dict[str, Any], rtype: str, name: str) -> tuple[str, dict[str, Any]]:
        for key, state in data["resources"].items():
            if key.split(" ", 1)[0] == rtype and state.get("name") == name:
                return key, state
        raise KeyError(f"no {rtype} named {name!r} in {data['resources'].keys()}")

    # ---- used by the provider --------------------------------------------------------------------

    def rules_for(self, rtype: str, value: dict[str, Any], kind: str) -> list[Any]:
        return [
            r[kind]
            for r in self.read()["rules"]
            if r["type"] == rtype and kind in r and _matches(r["where"], value)
        ]

    def put(self, rtype: str, rid: str, state: dict[str, Any]) -> None:
        with self._locked() as data:
            data["resources"][f"{rtype} {rid}"] = state

    def drop(self, rtype: str, rid: str) -> None:
        with self._locked() as data:
            data["resources"].pop(f"{rtype} {rid}", None)

    def get(self, rtype: str, rid: str) -> dict[str, Any] | None:
        return self.read()["resources"].get(f"{rtype} {rid}")

    def find(self, reference: str) -> dict[str, Any] | None:
        """A resource by its id or self link."""
        for key, state in self.read()["resources"].items():
            if reference and reference in (key.split(" ", 1)[1], state.get("self_link")):
                return state
        return None

    def addresses(self, kind: str) -> set[str]:
        """The instances' `network_ip` or `nat_ip` addresses in use."""
        found = set()
        for state in self.resources("google_compute_instance"):
            for nic in state.get("network_interface") or []:
                if kind == "network_ip":
                    found.add(nic.get("network_ip"))
                else:
                    found.update(access.get("nat_ip") for access in nic.get("access_config") or [])
        return {address for address in found if isinstance(address, str)}


def _assign(state: dict[str, Any], path: list[str], value: Any) -> None:
    target: Any = state
    for step in path[:-1]:
        target = target[int(step)] if isinstance(target, list) else target[step]
    last = path[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


def _matches(where: dict[str, Any], value: dict[str, Any]) -> bool:
    for key, wanted in where.items():
        have = value.get(key)
        if isinstance(wanted, str) and wanted.endswith("*"):
            if not (isinstance(have, str) and have.startswith(wanted[:-1])):
                return False
        elif have != wanted:
            return False
    return True
