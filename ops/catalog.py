"""GPU VM prices read from the Cloud Billing Catalog API: today's list prices, any region, spot included.

    catalogue = load({"us-central1", "europe-west4"})      # one walk over Compute Engine's SKUs
    catalogue.gpu("nvidia-l4", "europe-west4")              # Price(on_demand, spot, source, estimate)
    catalogue.machine("g2-standard-8", "europe-west4")      # vCPUs x core rate + GiB x RAM rate
    prices.offer_hourly("g2-standard-8", "nvidia-l4", 1, True, "europe-west4", catalogue)

The catalogue needs a login that may call cloudbilling.googleapis.com (the API enabled in the login's
quota project); when it cannot be read, `load` raises CatalogUnreadable with one line saying why, and
the caller prices from ops/prices.py's dated table instead. Figures are list prices (no sustained-use or
committed-use discounts, no taxes), each Price naming the API, the day it was read and the region.

Which SKUs are read: Compute Engine's on-demand ("OnDemand") and spot ("Preemptible") SKUs of the GPU
types in ops/prices.GPUS and of the vCPUs and memory of the N1, G2 and A2 series, matched by the whole
description (so "Nvidia Tesla A100" never takes the rows of "Nvidia Tesla A100 80GB", and no Sole
Tenancy, Custom or Virtual Workstation row is taken for a GPU's or a machine's) and by the region in
`service_regions`; commitments ("Commit1Yr", ...) and every other usage type are left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ops.prices import LOCAL_SSD_GB, SHAPES, SPOT_SHARE, Price, local_ssd_hourly

SERVICE = "services/6F81-5844-456A"  # Compute Engine in the Billing Catalog
API = "cloudbilling.googleapis.com"
TIMEOUT_S = 30.0  # per page; a page is asked for once (no retries)
MAX_PAGES = 200  # Compute Engine has a few thousand SKUs, 5000 to a page by default

# A GPU type's name in SKU descriptions ("Nvidia Tesla T4 GPU running in Americas").
GPU_SKU_NAMES: dict[str, str] = {
    "nvidia-tesla-t4": "Nvidia Tesla T4",
    "nvidia-tesla-p4": "Nvidia Tesla P4",
    "nvidia-tesla-v100": "Nvidia Tesla V100",
    "nvidia-tesla-p100": "Nvidia Tesla P100",
    "nvidia-l4": "Nvidia L4",
    "nvidia-tesla-a100": "Nvidia Tesla A100",
    "nvidia-a100-80gb": "Nvidia Tesla A100 80GB",
}
# A machine series' name in SKU descriptions ("N1 Predefined Instance Core running in Americas").
SERIES_SKU_NAMES: dict[str, str] = {"n1": "N1 Predefined Instance", "g2": "G2 Instance", "a2": "A2 Instance"}
USAGE_TYPES = {"OnDemand": False, "Preemptible": True}  # -> spot
UNITS = {"core": "h", "ram": "GiBy.h", "gpu": "h"}


class CatalogUnreadable(Exception):
    """The Billing Catalog could not be read (unreachable, permission denied, API not enabled, an answer
    this module does not understand): the message says why in one line."""


def _patterns() -> list[tuple[re.Pattern, str, str]]:
    """(description pattern, item, part): item is a GPU type or a series, part "gpu", "core" or "ram"."""
    spot = "(?P<spot>Spot Preemptible |Preemptible )?"
    found = []
    for gpu_type, name in GPU_SKU_NAMES.items():
        attached = "(?P<attached> attached to Spot Preemptible VMs)?"
        found.append((re.compile(f"{spot}{re.escape(name)} GPU{attached} running in .+"), gpu_type, "gpu"))
    for series, name in SERIES_SKU_NAMES.items():
        for part, word in (("core", "Core"), ("ram", "Ram")):
            found.append((re.compile(f"{spot}{re.escape(name)} {word} running in .+"), series, part))
    return found


PATTERNS = _patterns()


@dataclass(frozen=True)
class Catalogue:
    """The rates read: (region, item, part, spot) -> USD per unit-hour (per GPU, per vCPU, per GiB)."""

    read_on: str  # ISO date (UTC) of the reading
    regions: frozenset[str]
    rates: dict[tuple[str, str, str, bool], float] = field(default_factory=dict)
    skus_read: int = 0
    pages: int = 0

    def source(self, region: str) -> str:
        return f"Cloud Billing Catalog API ({SERVICE}), read {self.read_on}, {region}"

    def _pair(self, region: str, item: str, part: str) -> tuple[float, float] | None:
        on_demand = self.rates.get((region, item, part, False))
        spot = self.rates.get((region, item, part, True))
        return None if on_demand is None or spot is None else (on_demand, spot)

    def gpu(self, gpu_type: str, region: str) -> Price | None:
        """One GPU's price per hour in `region`; None when the catalogue has no on-demand or no spot rate."""
        pair = self._pair(region, gpu_type, "gpu")
        return None if pair is None else Price(round(pair[0], 9), round(pair[1], 9), self.source(region))

    def machine(self, machine_type: str, region: str) -> Price | None:
        """A machine type's vCPUs and memory per hour in `region` (the GPUs apart, as in ops/prices.py);
        None for a type without a shape or a series whose rates the catalogue lacks there."""
        if machine_type not in SHAPES:
            return None
        vcpus, gib = SHAPES[machine_type]
        series = machine_type.split("-")[0]
        core, ram = self._pair(region, series, "core"), self._pair(region, series, "ram")
        if core is None or ram is None:
            return None
        on_demand, spot = (vcpus * core[i] + gib * ram[i] for i in (0, 1))
        estimate = ""
        if machine_type in LOCAL_SSD_GB:
            # An a2-ultragpu's local SSD: not read from the catalogue; added as ops/prices.py's table does
            # (its GB-month rate on demand, SPOT_SHARE of that as spot), and said so in `estimate`.
            ssd = local_ssd_hourly(machine_type)
            on_demand, spot = on_demand + ssd, spot + ssd * SPOT_SHARE
            estimate = f"local SSD ({LOCAL_SSD_GB[machine_type]} GB) at ops/prices.py's table rate"
        return Price(round(on_demand, 9), round(spot, 9), self.source(region), estimate)


def load(regions: set[str], credentials: Any = None, endpoint: str | None = None) -> Catalogue:
    """Compute Engine's SKUs, listed once (every page), kept for `regions`: the GPU types of
    ops/prices.GPUS and the N1, G2 and A2 vCPU and memory rates, on demand and spot. `credentials`:
    the login's application-default credentials unless given; `endpoint`: Google's API unless given
    (a URL such as "http://127.0.0.1:PORT")."""
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions
    from google.protobuf import json_format
    from requests import exceptions as http_exceptions

    read_on = datetime.now(timezone.utc).date().isoformat()
    where = endpoint or API
    try:
        pages = _pages(credentials, endpoint)
        rates: dict[tuple[str, str, str, bool], float] = {}
        count = number = 0
        wanted = set(regions)
        for number, page in enumerate(pages, 1):
            if number > MAX_PAGES:
                raise CatalogUnreadable(f"{where} answered more than {MAX_PAGES} pages of SKUs")
            for sku in page.skus:
                count += 1
                _keep(sku, wanted, rates)
    except exceptions.GoogleAPICallError as exc:
        raise CatalogUnreadable(_refusal(exc, where)) from None
    except auth_exceptions.DefaultCredentialsError as exc:
        raise CatalogUnreadable(f"no Google login to read {where} with ({_first_line(exc)})") from None
    except auth_exceptions.GoogleAuthError as exc:
        raise CatalogUnreadable(f"the login could not authenticate to {where}: {_first_line(exc)}") from None
    except http_exceptions.RequestException as exc:
        raise CatalogUnreadable(f"{where} cannot be reached ({type(exc).__name__})") from None
    except json_format.ParseError as exc:
        raise CatalogUnreadable(f"{where} answered something that is not a SKU list: {exc}") from None
    if count == 0:
        raise CatalogUnreadable(f"{where} listed no SKUs for Compute Engine ({SERVICE})")
    return Catalogue(read_on, frozenset(regions), rates, count, number)


def _pages(credentials: Any, endpoint: str | None):
    from google.cloud import billing_v1

    if credentials is None:
        from trainer.gcs import default_credentials

        credentials = default_credentials()[0]
    options = {"api_endpoint": endpoint} if endpoint else None
    client = billing_v1.CloudCatalogClient(credentials=credentials, transport="rest", client_options=options)
    return client.list_skus(parent=SERVICE, retry=None, timeout=TIMEOUT_S).pages


def _keep(sku: Any, regions: set[str], rates: dict[tuple[str, str, str, bool], float]) -> None:
    """Adds the SKU's rate for each of `regions` it serves, when it is one this module reads."""
    category = sku.category
    spot = USAGE_TYPES.get(category.usage_type)
    served = regions.intersection(sku.service_regions)
    if spot is None or category.resource_family != "Compute" or not served:
        return
    for pattern, item, part in PATTERNS:
        match = pattern.fullmatch(sku.description)
        if not match:
            continue
        described_spot = bool(match.group("spot")) or bool(match.groupdict().get("attached"))
        if described_spot != spot or (part == "gpu" and category.resource_group != "GPU"):
            return
        rate = _hourly_rate(sku, UNITS[part])
        for region in served:
            key = (region, item, part, spot)
            if key in rates and rates[key] != rate:
                raise CatalogUnreadable(
                    f"two SKUs price {sku.description!r} in {region}: ${rates[key]} and ${rate} ({sku.name})"
                )
            rates[key] = rate
        return


def _hourly_rate(sku: Any, unit: str) -> float:
    if not sku.pricing_info:
        raise CatalogUnreadable(f"SKU {sku.name} ({sku.description!r}) has no pricing info")
    expression = sku.pricing_info[-1].pricing_expression  # the current price: the timeline's last
    if expression.usage_unit != unit or not expression.tiered_rates:
        raise CatalogUnreadable(
            f"SKU {sku.name} ({sku.description!r}) is priced per {expression.usage_unit!r}, not per {unit!r}"
        )
    price = expression.tiered_rates[-1].unit_price
    if price.currency_code != "USD":
        raise CatalogUnreadable(f"SKU {sku.name} is priced in {price.currency_code!r}, not USD")
    return price.units + price.nanos / 1e9


def _refusal(exc: Any, where: str) -> str:
    reason = getattr(exc, "reason", None) or ""
    message = re.sub(r"^[A-Z]+ \S+: ", "", _first_line(exc))  # Google's message, without "GET <url>: "
    if reason == "SERVICE_DISABLED" or "has not been used in project" in message:
        return f"the Cloud Billing API is not enabled (gcloud services enable {API}): {message}"
    if exc.code == 403:
        return f"permission denied reading {where}: {message}"
    return f"{where} answered {exc.code} {type(exc).__name__}: {message}"


def _first_line(exc: Exception) -> str:
    from trainer.gcs import first_line

    return first_line(exc)
