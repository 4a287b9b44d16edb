"""GCP list prices (us-central1, dated) and the cost estimates made from them: one owner for prices.

    estimate_cost("n1-standard-4", "nvidia-tesla-t4", 1, spot=True, disk_gb=150, hours=2.5)
    python -m ops prices                            # the table, with each figure's source
    make infra-price                                # the hourly price of what infra-up would leave running

Every figure is an estimate of the bill, never the bill: spot prices move (up to once a day), the
catalogue changes, sustained-use and committed-use discounts, taxes, network egress and the bucket's
storage are left out. The real cost is in Cloud Billing reports (console: Billing > Reports, grouped
by SKU or by the `app` label that infra/ puts on every resource).

Each figure names its source; `estimate` says why a figure is not a listed price read on PRICE_DATE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ops.catalog import Catalogue

PRICE_DATE = "2026-11-27"
REGION = "us-central1"
HOURS_PER_MONTH = 730  # Google's own conversion for per-month prices (disks, addresses)

DESIGN = "DESIGN.md, 'Facts about GCP': the 2026-11 catalogue snapshot of Google's prices, us-central1"
VM_PRICING = "https://cloud.google.com/compute/vm-instance-pricing (N1 predefined, us-central1)"
ACCELERATOR_VM_PRICING = (
    "https://cloud.google.com/compute/vm-instance-pricing (G2 and A2 machine types, us-central1)"
)
GPU_PRICING = "https://cloud.google.com/compute/gpus-pricing (us-central1)"
DISK_PRICING = "https://cloud.google.com/compute/disks-image-pricing (zonal persistent disk, us-central1)"
CATALOGUE = (
    "https://github.com/skypilot-org/skypilot-catalog/blob/017e2502fb63c7a28757acd94002b2d6099d3e3d/"
    "catalogs/v7/gcp/vms.csv (GCP's catalogue as SkyPilot records it; rows for us-central1; "
    f"on-demand as {GPU_PRICING})"
)
IP_PRICING = "https://cloud.google.com/vpc/network-pricing#ipaddress (external IPv4 in use)"
NOT_RECHECKED = (
    "Google's list price as published before this table was written; not re-read on PRICE_DATE "
    "(the pricing pages were out of reach)"
)


@dataclass(frozen=True)
class Price:
    """USD per hour (machines, GPUs, addresses) or per GB-month (disks)."""

    on_demand: float
    spot: float
    source: str
    estimate: str = ""  # why this figure is not a listed price read on PRICE_DATE; "" when it is

    def rate(self, spot: bool) -> float:
        return self.spot if spot else self.on_demand


# Each machine type's vCPUs and GiB of memory (Google's machine-type tables): one owner for the shapes.
# The machine parts below and the Billing Catalog's (ops/catalog.py) are both these times the series'
# per-vCPU and per-GiB rates, so the two cannot disagree on what a machine type is made of.
SHAPES: dict[str, tuple[int, float]] = {
    **{f"n1-standard-{n}": (n, 3.75 * n) for n in (4, 8, 16)},
    **{f"g2-standard-{n}": (n, 4.0 * n) for n in (4, 8, 12, 16, 24, 32, 48, 96)},
    **{f"a2-highgpu-{n}g": (12 * n, 85.0 * n) for n in (1, 2, 4, 8)},
    "a2-megagpu-16g": (96, 1360.0),
    **{f"a2-ultragpu-{n}g": (12 * n, 170.0 * n) for n in (1, 2, 4, 8)},
}

# An a2-ultragpu comes with 375 GB of local SSD per GPU, billed with the machine at this rate.
LOCAL_SSD_GB = {f"a2-ultragpu-{n}g": 375 * n for n in (1, 2, 4, 8)}
LOCAL_SSD_GB_MONTH = 0.08


def local_ssd_hourly(machine_type: str) -> float:
    """USD per hour of the local SSD a machine type comes with (0 for all but a2-ultragpu)."""
    return LOCAL_SSD_GB.get(machine_type, 0) * LOCAL_SSD_GB_MONTH / HOURS_PER_MONTH


# N1 machine types: on-demand = vCPUs x $0.031611 + GiB x $0.004237 (the N1 per-vCPU and per-GiB list
# prices), to the cent as DESIGN.md states n1-standard-4's $0.19; spot = n1-standard-4's $0.052 per 4 vCPUs.
N1_VCPU, N1_GIB, N1_SPOT_PER_4_VCPUS = 0.031611, 0.004237, 0.052


def _n1_machine(machine_type: str, source: str, estimate: str = "") -> Price:
    vcpus, gib = SHAPES[machine_type]
    on_demand = round(vcpus * N1_VCPU + gib * N1_GIB, 2)
    return Price(on_demand, round(N1_SPOT_PER_4_VCPUS * vcpus / 4, 6), source, estimate)


MACHINES: dict[str, Price] = {
    "n1-standard-4": _n1_machine("n1-standard-4", DESIGN),
    "n1-standard-8": _n1_machine(
        "n1-standard-8",
        VM_PRICING,
        "on-demand: per-vCPU/GiB list price; spot: 2 x n1-standard-4's spot figure",
    ),
    "n1-standard-16": _n1_machine(
        "n1-standard-16",
        VM_PRICING,
        "on-demand: per-vCPU/GiB list price; spot: 4 x n1-standard-4's spot figure",
    ),
}

# G2 and A2 machine types come with their GPUs; Google bills the machine's vCPUs and memory (and an
# a2-ultragpu's local SSD) at the series' rates and each GPU at the GPU's rate, so MACHINES holds the
# machine part alone and GPUS the per-GPU rate, as for N1, and the module's price_inputs name the GPUs
# the machine type comes with. The machine parts are estimates: vCPUs and GiB times the series' rates
# as last read from VM_PRICING, not re-read on PRICE_DATE; spot at the 40% of on-demand that the
# catalogue's GPU rows show (spot prices move daily).
G2_RATES = "G2: $0.02499 per vCPU-hour + $0.00293 per GiB-hour (4 GiB per vCPU)"
A2_RATES = "A2: $0.031611 per vCPU-hour + $0.004237 per GiB-hour"
A2_ULTRA_RATES = f"{A2_RATES} + 375 GB local SSD per GPU at ${LOCAL_SSD_GB_MONTH} per GB-month"
SPOT_SHARE = 0.4
SERIES_RATES = {"g2": (0.02499, 0.00293, G2_RATES), "a2": (0.031611, 0.004237, A2_RATES)}


def _estimated_machine(machine_type: str) -> Price:
    vcpus, gib = SHAPES[machine_type]
    vcpu_rate, gib_rate, rates = SERIES_RATES[machine_type.split("-")[0]]
    if machine_type in LOCAL_SSD_GB:
        rates = A2_ULTRA_RATES
    on_demand = round(vcpus * vcpu_rate + gib * gib_rate + local_ssd_hourly(machine_type), 6)
    why = f"{NOT_RECHECKED}: {rates}; spot = {SPOT_SHARE:.0%} of on-demand"
    return Price(on_demand, round(on_demand * SPOT_SHARE, 6), ACCELERATOR_VM_PRICING, why)


MACHINES.update({m: _estimated_machine(m) for m in SHAPES if not m.startswith("n1-")})

# The GPUs each G2 / A2 machine type comes with (infra/locals.tf's built_in_gpus; a test keeps the two
# equal): a planned VM of these types has no guest_accelerator, so plan_price reads its GPUs here.
BUILT_IN_GPUS: dict[str, tuple[str, int]] = {
    **{f"g2-standard-{n}": ("nvidia-l4", 1) for n in (4, 8, 12, 16, 32)},
    **{f"g2-standard-{n}": ("nvidia-l4", gpus) for n, gpus in ((24, 2), (48, 4), (96, 8))},
    **{f"a2-highgpu-{n}g": ("nvidia-tesla-a100", n) for n in (1, 2, 4, 8)},
    "a2-megagpu-16g": ("nvidia-tesla-a100", 16),
    **{f"a2-ultragpu-{n}g": ("nvidia-a100-80gb", n) for n in (1, 2, 4, 8)},
}

# Per GPU. T4: DESIGN.md's figures (the catalogue snapshot below has T4 spot at $0.14 that day: spot
# prices move). P4, V100, P100: SkyPilot's catalogue of GCP prices (made from Google's Cloud Billing
# catalogue), the rows for one GPU in us-central1 zones.
GPUS: dict[str, Price] = {
    "nvidia-tesla-t4": Price(0.35, 0.175, DESIGN),
    "nvidia-tesla-p4": Price(0.60, 0.24, CATALOGUE),
    "nvidia-tesla-v100": Price(2.48, 0.992, CATALOGUE),
    "nvidia-tesla-p100": Price(1.46, 0.584, CATALOGUE),
    # L4 (G2) and A100 (A2): the per-GPU list prices as last read from GPU_PRICING, not re-read on
    # PRICE_DATE; spot at 40% of on-demand like the catalogue's rows above.
    "nvidia-l4": Price(0.56, 0.224, GPU_PRICING, f"{NOT_RECHECKED}; spot = 40% of on-demand"),
    "nvidia-tesla-a100": Price(2.933908, 1.173563, GPU_PRICING, f"{NOT_RECHECKED}; spot = 40% of on-demand"),
    "nvidia-a100-80gb": Price(3.93, 1.572, GPU_PRICING, f"{NOT_RECHECKED}; spot = 40% of on-demand"),
}

# Per GB-month of provisioned size, billed while the disk exists (a stopped VM's disks too).
DISKS: dict[str, Price] = {
    "pd-standard": Price(0.04, 0.04, DISK_PRICING, NOT_RECHECKED),
    "pd-balanced": Price(0.10, 0.10, DISK_PRICING, NOT_RECHECKED),
    "pd-ssd": Price(0.17, 0.17, DISK_PRICING, NOT_RECHECKED),
}

# An external IPv4 address in use (the VM's ephemeral address), per hour; spot VMs pay half.
EXTERNAL_IP = Price(0.005, 0.0025, IP_PRICING, NOT_RECHECKED)


class PriceUnknown(ValueError):
    """A machine, GPU or disk type the table has no price for."""


def _lookup(table: dict[str, Price], key: str, what: str) -> Price:
    if key not in table:
        raise PriceUnknown(
            f"no {what} price for {key!r} in ops/prices.py (known: {', '.join(sorted(table))}): "
            "add it with its source"
        )
    return table[key]


def hourly_price(
    machine_type: str,
    gpu_type: str | None,
    gpu_count: int,
    spot: bool,
    disks: dict[str, float] | None = None,
    nodes: int = 1,
) -> dict[str, Any]:
    """USD per hour of `nodes` VMs, each with `gpu_count` GPUs and the disks `{type: GB}` (per VM).

    Returns the parts (`machine`, `gpus`, `external_ip`, `disks`), `running` (their sum: an hour of
    the VMs running) and `stopped` (the disks alone: an hour of the VMs stopped)."""
    machine = _lookup(MACHINES, machine_type, "machine").rate(spot)
    gpus = _lookup(GPUS, gpu_type, "GPU").rate(spot) * gpu_count if gpu_type and gpu_count else 0.0
    address = EXTERNAL_IP.rate(spot)
    disk = sum(_lookup(DISKS, kind, "disk").on_demand * gb for kind, gb in (disks or {}).items())
    parts = {
        "machine": machine * nodes,
        "gpus": gpus * nodes,
        "external_ip": address * nodes,
        "disks": disk / HOURS_PER_MONTH * nodes,
    }
    return {
        **{k: round(v, 6) for k, v in parts.items()},
        "running": round(sum(parts.values()), 6),
        "stopped": round(parts["disks"], 6),
    }


def offer_hourly(
    machine_type: str,
    gpu_type: str | None,
    gpu_count: int,
    spot: bool,
    region: str,
    catalogue: Catalogue | None = None,
) -> tuple[float, str]:
    """USD per hour of one VM's machine and GPUs (no disks, no address) in `region`, and where the figure
    comes from in a few words: the Billing Catalog (ops/catalog.py) when `catalogue` prices both parts
    there, else this table (whose prices are us-central1's)."""
    gpu_type = gpu_type if gpu_count else None
    machine = _lookup(MACHINES, machine_type, "machine")
    gpu = _lookup(GPUS, gpu_type, "GPU") if gpu_type else None
    source = f"table {PRICE_DATE}, {REGION} prices"
    if region != REGION:
        source = f"table {PRICE_DATE} ({REGION} prices; {region} may differ)"
    if catalogue is not None:
        read_machine = catalogue.machine(machine_type, region)
        read_gpu = catalogue.gpu(gpu_type, region) if gpu_type else None
        if read_machine is not None and (read_gpu is not None or not gpu_type):
            machine, gpu, source = read_machine, read_gpu, f"Billing Catalog {catalogue.read_on}"
    # (An a2-ultragpu's local SSD is in both machine figures: the catalogue's adds the table's rate.)
    gpus = gpu.rate(spot) * gpu_count if gpu else 0.0
    return round(machine.rate(spot) + gpus, 6), source


def estimate_cost(
    machine_type: str,
    gpu_type: str | None,
    gpu_count: int,
    spot: bool,
    disk_gb: float,
    hours: float,
    disk_type: str = "pd-balanced",
    nodes: int = 1,
) -> dict[str, Any]:
    """The estimated cost of `hours` of running VMs (summed over every attempt of a run) with
    `disk_gb` of `disk_type` disk per VM (boot + data): what a run's manifest records."""
    if hours < 0 or disk_gb < 0 or gpu_count < 0 or nodes < 1:
        raise ValueError("hours, disk_gb and gpu_count must be >= 0 and nodes >= 1")
    price = hourly_price(machine_type, gpu_type, gpu_count, spot, {disk_type: disk_gb}, nodes)
    return {
        "estimated_cost_usd": round(price["running"] * hours, 4),
        "hours": round(hours, 4),
        "hourly_usd": price["running"],
        "parts_hourly_usd": {k: price[k] for k in ("machine", "gpus", "external_ip", "disks")},
        "machine_type": machine_type,
        "gpu": {"type": gpu_type, "count": gpu_count},
        "provisioning": "spot" if spot else "on-demand",
        "nodes": nodes,
        "prices": f"{REGION} list prices of {PRICE_DATE} (ops/prices.py): an estimate; "
        "the bill is in Cloud Billing reports",
    }


# ---- a Terraform plan's price -------------------------------------------------------------------


def _resources(module: dict[str, Any]) -> list[dict[str, Any]]:
    found = list(module.get("resources", []))
    for child in module.get("child_modules", []):
        found += _resources(child)
    return found


def plan_price(plan: dict[str, Any]) -> dict[str, Any]:
    """The hourly price of what a `terraform show -json` plan leaves in place (its planned values):
    every google_compute_instance and google_compute_disk of it."""
    resources = _resources(plan.get("planned_values", {}).get("root_module", {}))
    vms, disk_gb, zones = [], {}, set()
    for r in resources:
        values = r.get("values") or {}
        if r.get("type") == "google_compute_instance":
            accelerators = values.get("guest_accelerator") or [{}]
            scheduling = (values.get("scheduling") or [{}])[0]
            boot = ((values.get("boot_disk") or [{}])[0].get("initialize_params") or [{}])[0]
            # Attached GPUs (N1), else the ones the machine type comes with (G2, A2), else none.
            built_in = BUILT_IN_GPUS.get(values.get("machine_type"), (None, 0))
            gpu_type = accelerators[0].get("type") or built_in[0]
            gpu_count = accelerators[0].get("count") or built_in[1]
            vms.append({
                "name": values.get("name"), "machine_type": values.get("machine_type"),
                "gpu_type": gpu_type, "gpu_count": gpu_count,
                "spot": scheduling.get("provisioning_model") == "SPOT",
            })  # fmt: skip
            kind = boot.get("type") or "pd-standard"
            disk_gb[kind] = disk_gb.get(kind, 0) + (boot.get("size") or 10)
            zones.add(values.get("zone"))
        elif r.get("type") == "google_compute_disk":
            kind = values.get("type") or "pd-standard"
            disk_gb[kind] = disk_gb.get(kind, 0) + (values.get("size") or 0)
            zones.add(values.get("zone"))
    total = {"machine": 0.0, "gpus": 0.0, "external_ip": 0.0}
    for vm in vms:
        price = hourly_price(vm["machine_type"], vm["gpu_type"], vm["gpu_count"], vm["spot"])
        vm["hourly_usd"] = price["running"]
        for key in total:
            total[key] += price[key]
    disks = sum(_lookup(DISKS, kind, "disk").on_demand * gb for kind, gb in disk_gb.items()) / HOURS_PER_MONTH
    running = sum(total.values()) + disks
    return {
        "vms": vms,
        "disk_gb": disk_gb,
        "disks_hourly_usd": round(disks, 6),
        "running_hourly_usd": round(running, 6),
        "stopped_hourly_usd": round(disks, 6),
        "other_regions": sorted(z for z in zones if isinstance(z, str) and not z.startswith(REGION + "-")),
    }


def plan_lines(plan: dict[str, Any]) -> list[str]:
    """What `make infra-plan` prints under the plan."""
    try:
        price = plan_price(plan)
    except PriceUnknown as exc:
        return [f"price: unknown ({exc})"]
    lines = [f"price: an estimate from {REGION} list prices of {PRICE_DATE} (ops/prices.py)"]
    for vm in price["vms"]:
        gpu = f" + {vm['gpu_count']} x {vm['gpu_type']}" if vm["gpu_count"] else ""
        kind = "spot" if vm["spot"] else "on demand"
        lines.append(f"  {vm['name']}: {vm['machine_type']}{gpu}, {kind}: ${vm['hourly_usd']:.4f}/h")
    disks = ", ".join(f"{gb:g} GB {kind}" for kind, gb in sorted(price["disk_gb"].items()))
    monthly = price["disks_hourly_usd"] * HOURS_PER_MONTH
    hourly, running, stopped = (
        price[k] for k in ("disks_hourly_usd", "running_hourly_usd", "stopped_hourly_usd")
    )
    lines.append(f"  disks: {disks or 'none'}: ${hourly:.4f}/h (${monthly:.2f}/month, stopped too)")
    lines.append(f"  total: ${running:.4f}/h while running, ${stopped:.4f}/h stopped")
    if price["other_regions"]:
        lines.append(f"  note: {', '.join(price['other_regions'])} may be priced unlike {REGION}")
    lines.append("  the bill itself: Cloud Billing reports (console > Billing > Reports)")
    return lines


def table_lines() -> list[str]:
    lines = [f"GCP list prices, {REGION}, {PRICE_DATE} (USD; disks per GB-month, the rest per hour)"]
    tables = {"machine": MACHINES, "GPU": GPUS, "disk": DISKS, "address": {"external IPv4": EXTERNAL_IP}}
    for title, table in tables.items():
        for name, p in table.items():
            note = f" [estimate: {p.estimate}]" if p.estimate else ""
            lines.append(
                f"  {title:8} {name:18} on demand {p.on_demand:<7g} spot {p.spot:<7g} {p.source}{note}"
            )
    return lines
