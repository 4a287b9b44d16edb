"""Object values shaped by a schema block (see schema.py), and the values GCP would compute for them.

A resource's value is a dict with every attribute and block of its schema block; list and set blocks
are lists of such dicts, single blocks one dict or None. `UNKNOWN` stands for a value known only after
apply (the `tf` package's `Unknown` in the provider process; any sentinel works here).

`computed_value()` answers, for one computed attribute left unknown by the plan, what Google's API
returns for it: ids and self links in the API's own formats (numeric ids new at each create, so a
replaced VM has another `instance_id`), the service account's email, the bucket's gs:// URL, an
instance's internal address from its subnet, RUNNING for a new VM. The cloud file's `values` rules
(cloud.py) come first; an attribute none of this knows stays null, which Terraform accepts for a
computed attribute. `replaced_by()` answers which changes replace a resource (REPLACED_BY, FORCE_NEW).
"""

from __future__ import annotations

import hashlib
import ipaddress
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

Path = tuple[Any, ...]  # attribute names and list indexes: ("network_interface", 0, "network_ip")

COMPUTE = "https://www.googleapis.com/compute/v1/"
IDS = {
    "google_compute_instance": "projects/{project}/zones/{zone}/instances/{name}",
    "google_compute_disk": "projects/{project}/zones/{zone}/disks/{name}",
    "google_compute_network": "projects/{project}/global/networks/{name}",
    "google_compute_subnetwork": "projects/{project}/regions/{region}/subnetworks/{name}",
    "google_compute_firewall": "projects/{project}/global/firewalls/{name}",
    "google_compute_address": "projects/{project}/regions/{region}/addresses/{name}",
    "google_service_account": (
        "projects/{project}/serviceAccounts/{account_id}@{project}.iam.gserviceaccount.com"
    ),
    "google_storage_bucket": "{name}",
    "google_storage_bucket_iam_member": "b/{bucket}/{role}/{member}",
    "google_project_iam_member": "{project}/{role}/{member}",
    "google_project_service": "{project}/{service}",
}
# Arguments that replace the resource when they change, for every google resource that has them (the
# bindings' descriptions say "forces a new resource" for only some of them).
REPLACED_BY = {
    "name",
    "project",
    "zone",
    "region",
    "location",
    "account_id",
    "bucket",
    "role",
    "member",
    "service",
}
# Arguments and blocks below the top level that replace the resource when they change: ForceNew in the
# real provider's schema, which its JSON schema (and so the bindings) does not carry. Dotted schema paths
# without list indexes; a block named here replaces on a change of its number of items (added, removed).
# google_compute_instance, from hashicorp/terraform-provider-google's ResourceComputeInstance schema
# (google/services/compute/resource_compute_instance.go, 6.x; the same flags in the 6.x copy that
# GoogleCloudPlatform/terraform-google-conversion keeps): ForceNew are boot_disk and its initialize_params,
# network_interface (its number), guest_accelerator and its type and count, scheduling.preemptible,
# scheduling.provisioning_model, scheduling.termination_time and scheduling.max_run_duration (its seconds
# and nanos too). Not ForceNew there, so updated in place (the VM stopped first where GCE needs it, with
# allow_stopping_for_update): machine_type, scheduling.on_host_maintenance, automatic_restart and
# instance_termination_action (ForceNew only in google_compute_instance_template), labels, metadata.
# Top-level name and zone replace through REPLACED_BY.
FORCE_NEW = {
    "google_compute_instance": frozenset({
        "boot_disk",
        "boot_disk.device_name",
        "boot_disk.mode",
        "boot_disk.source",
        "boot_disk.initialize_params",
        "boot_disk.initialize_params.image",
        "boot_disk.initialize_params.size",
        "boot_disk.initialize_params.type",
        "boot_disk.initialize_params.labels",
        "network_interface",
        "network_interface.nic_type",
        "guest_accelerator",
        "guest_accelerator.type",
        "guest_accelerator.count",
        "scheduling.preemptible",
        "scheduling.provisioning_model",
        "scheduling.termination_time",
        "scheduling.max_run_duration",
        "scheduling.max_run_duration.seconds",
        "scheduling.max_run_duration.nanos",
    }),
}  # fmt: skip
ATTRIBUTION_LABEL = {"goog-terraform-provisioned": "true"}  # added by google provider 6.x by default


def blank(block: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = dict.fromkeys(block["attributes"])
    for name, nested in block["block_types"].items():
        value[name] = None if nested["nesting"] == "single" else []
    return value


def normalize(value: Any, block: dict[str, Any]) -> Any:
    """`value` with every attribute and block of `block` present (None, [] where absent)."""
    if not isinstance(value, dict):
        return value
    out = blank(block)
    out.update({k: v for k, v in value.items() if k in block["attributes"]})
    for name, nested in block["block_types"].items():
        items = value.get(name)
        if nested["nesting"] == "single":
            out[name] = normalize(items, nested["block"]) if isinstance(items, dict) else items
        elif isinstance(items, list):
            out[name] = [normalize(item, nested["block"]) for item in items]
        else:
            out[name] = [] if items is None else items
    return out


def objects(value: Any, block: dict[str, Any], path: Path = ()) -> Iterator[tuple[Path, dict, dict]]:
    """Every (path, object, its schema block) in a value, the value itself first."""
    if not isinstance(value, dict):
        return
    yield path, value, block
    for name, nested in block["block_types"].items():
        items = value.get(name)
        if nested["nesting"] == "single":
            yield from objects(items, nested["block"], (*path, name))
        elif isinstance(items, list):
            for index, item in enumerate(items):
                yield from objects(item, nested["block"], (*path, name, index))


def mark_unknown(value: dict[str, Any], block: dict[str, Any], unknown: Any) -> None:
    """A create plan: every computed attribute the configuration leaves null becomes unknown."""
    for _, obj, inner in objects(value, block):
        for name, attribute in inner["attributes"].items():
            if attribute["computed"] and obj.get(name) is None:
                obj[name] = unknown


def fill_unknown(value: dict[str, Any], block: dict[str, Any], unknown: Any, answer: Callable) -> None:
    """After apply: each unknown attribute gets `answer(path, obj)` (None when nothing knows it)."""
    for path, obj, inner in objects(value, block):
        for name in inner["attributes"]:
            if obj.get(name) is unknown:
                obj[name] = answer((*path, name), obj)


def dotted(path: Path) -> str:
    return ".".join(str(step) for step in path)


def replaced_by(
    prior: dict, planned: dict, block: dict, unknown: Any, force_new: frozenset[str] = frozenset()
) -> list[Path]:
    """The arguments whose change replaces the resource: REPLACED_BY, the schema's force_new and
    `force_new` (FORCE_NEW's dotted paths for this type), attributes and blocks alike."""
    paths = []
    prior_objects = {path: obj for path, obj, _ in objects(prior, block)}
    for path, obj, inner in objects(planned, block):
        before = prior_objects.get(path)
        if before is None:
            continue
        where = [str(step) for step in path if isinstance(step, str)]
        for name, attribute in inner["attributes"].items():
            if attribute["computed"] and not (attribute["optional"] or attribute["required"]):
                continue
            listed = ".".join([*where, name]) in force_new
            if not (attribute["force_new"] or listed or (not path and name in REPLACED_BY)):
                continue
            after = obj.get(name)
            if after is unknown or (after != before.get(name) and after is not None):
                paths.append((*path, name))
        for name in inner["block_types"]:
            if ".".join([*where, name]) in force_new and _items(obj.get(name)) != _items(before.get(name)):
                paths.append((*path, name))
    return paths


def _items(value: Any) -> int:
    """How many items a block has: a list's length, 1 or 0 for a single block."""
    return len(value) if isinstance(value, list) else int(value is not None)


def _number(*parts: Any) -> str:
    """A stable 19-digit id, like GCE's numeric resource ids."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return str(10**18 + int(digest[:15], 16) % (9 * 10**18))


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:16]


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0] if zone.count("-") >= 2 else zone


class Answers:
    """What GCP returns for one resource's computed attributes (see the module docstring)."""

    def __init__(self, rtype: str, value: dict, defaults: dict[str, str], cloud: Any):
        self.rtype, self.value, self.cloud = rtype, value, cloud
        self.project = value.get("project") or defaults.get("project") or "stand-in-project"
        self.zone = value.get("zone") if isinstance(value.get("zone"), str) else defaults.get("zone", "")
        self.region = value.get("region") if isinstance(value.get("region"), str) else ""
        self.region = self.region or defaults.get("region") or region_of(self.zone)
        self.created = uuid.uuid4().hex  # this incarnation: numeric ids differ from a replaced resource's

    def fields(self) -> dict[str, Any]:
        known = {k: v for k, v in self.value.items() if isinstance(v, str | int | float)}
        return {**known, "project": self.project, "zone": self.zone, "region": self.region}

    def resource_id(self) -> str | None:
        pattern = IDS.get(self.rtype)
        try:
            return pattern.format(**self.fields()) if pattern else None
        except KeyError:
            return None

    def __call__(self, path: Path, obj: dict) -> Any:
        name = path[-1]
        if len(path) == 1:
            return self.top(name)
        if self.rtype == "google_compute_instance":
            return self.instance_part(path, obj)
        return None

    def top(self, name: str) -> Any:
        rid = self.resource_id()
        value = self.value
        simple = {
            "id": rid,
            "project": self.project,
            "zone": self.zone or None,
            "region": self.region or None,
            "creation_timestamp": datetime.now(timezone.utc).astimezone().isoformat(timespec="milliseconds"),
            "etag": "BwY" + _fingerprint(rid, "etag")[:9],
            "fingerprint": _fingerprint(rid, "fingerprint"),
            "label_fingerprint": _fingerprint(rid, "labels"),
            "metadata_fingerprint": _fingerprint(rid, "metadata"),
            "tags_fingerprint": _fingerprint(rid, "tags"),
        }
        if name in ("effective_labels", "terraform_labels"):
            return {**(value.get("labels") or {}), **ATTRIBUTION_LABEL}
        if name == "self_link" and self.rtype == "google_storage_bucket":
            return f"https://www.googleapis.com/storage/v1/b/{value['name']}"
        if name == "self_link" and rid and self.rtype.startswith("google_compute_"):
            return COMPUTE + rid
        if self.rtype == "google_storage_bucket":
            return {
                "url": f"gs://{value.get('name')}",
                "project_number": int(_number(self.project)[:12]),
            }.get(name, simple.get(name))
        if self.rtype == "google_service_account":
            email = f"{value.get('account_id')}@{self.project}.iam.gserviceaccount.com"
            extra = {
                "email": email,
                "name": rid,
                "member": f"serviceAccount:{email}",
                "unique_id": _number(email)[:21],
            }
            return extra.get(name, simple.get(name))
        if self.rtype == "google_compute_instance":
            extra = {
                "instance_id": _number(rid, self.created),
                "current_status": "RUNNING",
                "cpu_platform": "Intel Broadwell",
            }
            return extra.get(name, simple.get(name))
        if self.rtype in ("google_compute_disk", "google_compute_network", "google_compute_subnetwork"):
            extra = {
                "disk_id": _number(rid, self.created),
                "network_id": _number(rid, self.created),
                "numeric_id": _number(rid, self.created),
                "subnetwork_id": int(_number(rid, self.created)[:15]),
                "gateway_address": self.gateway(),
                "type": "pd-standard",
                "size": 10,
            }
            return extra.get(name, simple.get(name))
        return simple.get(name)

    def gateway(self) -> str | None:
        cidr = self.value.get("ip_cidr_range")
        return str(ipaddress.ip_network(cidr, strict=False)[1]) if isinstance(cidr, str) else None

    def instance_part(self, path: Path, obj: dict) -> Any:
        name = path[-1]
        if path[0] == "network_interface" and len(path) == 3:
            subnet = self.cloud.find(obj.get("subnetwork") or "") or {}
            answers = {
                "name": f"nic{path[1]}",
                "network": subnet.get("network") or obj.get("network"),
                "network_ip": self.internal_ip(subnet),
                "stack_type": "IPV4_ONLY",
                "subnetwork_project": self.project,
            }
            value = answers.get(name)
            if name in ("network", "subnetwork") and isinstance(value, str) and not value.startswith("http"):
                return COMPUTE + value
            return value
        if path[0] == "network_interface" and path[2] == "access_config":
            return {"nat_ip": self.external_ip(), "network_tier": "PREMIUM"}.get(name)
        if path[0] == "boot_disk":
            disk = f"{COMPUTE}projects/{self.project}/zones/{self.zone}/disks/{self.value.get('name')}"
            return {
                "device_name": "persistent-disk-0",
                "source": disk,
                "image": obj.get("image"),
                "type": "pd-standard",
                "size": 10,
                "labels": {},
                "architecture": "X86_64",
                "guest_os_features": [],
                "resource_policies": [],
            }.get(name)
        if path[0] == "attached_disk" and name == "device_name":
            return f"persistent-disk-{path[1] + 1}"
        if path[0] == "scheduling":
            return {"on_host_maintenance": "MIGRATE", "provisioning_model": "STANDARD"}.get(name)
        if path[0] == "service_account" and name == "email":
            return f"{_number(self.project)[:12]}-compute@developer.gserviceaccount.com"
        return None

    def internal_ip(self, subnet: dict) -> str | None:
        """The lowest free address of the subnet (`.1` is its gateway)."""
        cidr = subnet.get("ip_cidr_range")
        if not isinstance(cidr, str):
            return None
        hosts = ipaddress.ip_network(cidr, strict=False)
        taken = self.cloud.addresses("network_ip")
        return next((str(h) for h in list(hosts.hosts())[1:] if str(h) not in taken), None)

    def external_ip(self) -> str | None:
        """An unused address of TEST-NET-3 (203.0.113.0/24, documentation only: never reachable)."""
        taken = self.cloud.addresses("nat_ip")
        return next((f"203.0.113.{n}" for n in range(10, 250) if f"203.0.113.{n}" not in taken), None)
