"""Offers: the GPU kinds, counts, spot or on demand, and zones a VM may run on, tried in order.

The user lists them in the tfvars (`offers`, infra/variables.tf); the module resolves each to its machine
type and zones (`local.candidates`, infra/locals.tf) and checks them (`local.offer_problem_list`). Here:

- `Offers.read(tf)`: the candidates (offer x zone) in the module's order, the order wanted ("preference"
  or "cheapest"), the node count and project, and the placement remembered from the last apply.
- `failure(output)`: what a failed apply says, when another offer or zone may do better: a stock-out, a
  GPU quota refused, or a zone that does not offer the GPU or machine type.
- The run's estimated cost on each offer, the figure "cheapest" orders by: the run's training FLOPs (the
  manifest's own formula, trainer/flops.py: FLOPs per real token x the training split's real tokens x
  epochs) over the GPUs' dense peak x an MFU (ASSUMED_MFU, or the measured one of an earlier run on that
  GPU kind from a manifest in the bucket), times the offer's hourly price.

The placement that worked is written to INFRA_DIR/placement.auto.tfvars.json (PLACEMENT_FILE): every later
plan, apply and destroy reads it (the module's var.placement), so the VM stays where it is until
`make infra-down` removes the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PLACEMENT_FILE = "placement.auto.tfvars.json"
LEGACY_ZONE_FILE = "zone.auto.tfvars.json"

# GCP's answers, on a create, that another zone, region or GPU kind may not give.
STOCK_OUT = (
    "ZONE_RESOURCE_POOL_EXHAUSTED",  # also matches ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS
    "does not have enough resources available to fulfill the request",
    "resource pool exhausted",
    "STOCKOUT",
)
QUOTA = re.compile(r"QUOTA_EXCEEDED|Quota '[A-Z0-9_]+' exceeded", re.I)
QUOTA_METRIC = re.compile(r"Quota '([A-Z0-9_]+)' exceeded")
UNSUPPORTED = (
    re.compile(r"does not exist in zone", re.I),
    re.compile(r"is not (available|supported) in (the )?zone", re.I),
    re.compile(r"(acceleratorTypes|machineTypes)/[-a-z0-9]+' was not found", re.I),
)


def _clean(line: str) -> str:
    return " ".join(line.strip(" │╷╵").split())


def failure(output: str) -> tuple[str, str] | None:
    """(kind, the line that says it) for an apply that another placement may pass: "stock-out", "quota"
    (a GPU metric or GPUS_ALL_REGIONS: other quotas, CPUs or addresses, would refuse every GPU offer
    alike) or "unsupported" (the zone lacks the GPU or the machine type); None for anything else."""
    for line in output.splitlines():
        if any(marker.lower() in line.lower() for marker in STOCK_OUT):
            return "stock-out", _clean(line)
    for line in output.splitlines():
        if QUOTA.search(line):
            metric = QUOTA_METRIC.search(line)
            if metric is None or "GPUS" in metric.group(1):
                return "quota", _clean(line)
    for line in output.splitlines():
        if any(p.search(line) for p in UNSUPPORTED):
            return "unsupported", _clean(line)
    return None


def quota_metric(line: str) -> str:
    found = QUOTA_METRIC.search(line)
    return found.group(1) if found else ""


@dataclass(frozen=True)
class Candidate:
    """One offer in one zone: what a `-var placement=...` apply makes."""

    offer: int
    zone: str
    machine_type: str
    gpu_type: str
    gpu_count: int
    spot: bool

    @property
    def region(self) -> str:
        return self.zone.rsplit("-", 1)[0]

    def placement(self) -> dict[str, Any]:
        return asdict(self)

    def kind(self) -> str:
        """`1 x nvidia-l4 (g2-standard-4), spot`"""
        how = "spot" if self.spot else "on demand"
        return f"{self.gpu_count} x {self.gpu_type} ({self.machine_type}), {how}"

    def same_vm(self, other: Candidate) -> bool:
        """The same VM, whatever offer number it had (the offers' order may have changed)."""
        mine, theirs = self.placement(), other.placement()
        mine.pop("offer"), theirs.pop("offer")
        return mine == theirs


@dataclass
class Offers:
    candidates: list[Candidate]
    order: str = "preference"
    nodes: int = 1
    project: str = ""
    listed: bool = False  # the user listed offers (else: the one offer of the scalar variables)
    remembered: Candidate | None = None
    problems: list[str] = field(default_factory=list)

    EXPRESSION = (
        "{candidates = local.candidates, order = var.offer_order, nodes = var.node_count, "
        "project = var.project_id, listed = length(var.offers) > 0, remembered = var.placement, "
        "problems = local.offer_problem_list}"
    )

    @classmethod
    def read(cls, tf) -> Offers:
        """One `terraform console` of the module with the user's tfvars (and the remembered placement)."""
        value = tf.console(cls.EXPRESSION)
        remembered = value.get("remembered")
        return cls(
            candidates=[_candidate(c) for c in value["candidates"]],
            order=value["order"],
            nodes=int(value["nodes"]),
            project=value["project"],
            listed=bool(value["listed"]),
            remembered=_candidate(remembered) if remembered else None,
            problems=list(value.get("problems") or []),
        )

    def by_offer(self) -> dict[int, list[Candidate]]:
        grouped: dict[int, list[Candidate]] = {}
        for c in self.candidates:
            grouped.setdefault(c.offer, []).append(c)
        return grouped

    def ordered(self, costs: dict[int, float | None] | None = None) -> list[Candidate]:
        """The candidates to try: by offer in the listed order, or cheapest run first (offers without an
        estimate last, in the listed order); the remembered placement first when it is still offered."""
        offers = self.by_offer()
        numbers = list(offers)
        if self.order == "cheapest" and costs is not None:
            numbers.sort(key=lambda n: (costs.get(n) is None, costs.get(n) or 0.0, n))
        found = [c for n in numbers for c in offers[n]]
        here = self.remembered_candidate()
        if here is not None:
            found = [here, *(c for c in found if c != here)]
        return found

    def remembered_candidate(self) -> Candidate | None:
        if self.remembered is None:
            return None
        return next((c for c in self.candidates if c.same_vm(self.remembered)), None)


def _candidate(value: dict[str, Any]) -> Candidate:
    return Candidate(
        offer=int(value.get("offer") or 0),
        zone=str(value["zone"]),
        machine_type=str(value["machine_type"]),
        gpu_type=str(value["gpu_type"]),
        gpu_count=int(value["gpu_count"]),
        spot=bool(value["spot"]),
    )


def remember(infra_dir: Path, placement: Candidate) -> Path:
    path = infra_dir / PLACEMENT_FILE
    text = json.dumps({"placement": placement.placement()}, indent=2) + "\n"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def forget(infra_dir: Path) -> None:
    (infra_dir / PLACEMENT_FILE).unlink(missing_ok=True)
    # What remembered the zone before offers: Terraform would still load it (*.auto.tfvars.json).
    (infra_dir / LEGACY_ZONE_FILE).unlink(missing_ok=True)
