"""A stand-in Cloud Billing Catalog API (cloudbilling.googleapis.com v1) on the stand-in Google REST API:
`GET /v1/services/{service}/skus` as google-cloud-billing's REST transport asks for it (`pageSize`,
`pageToken`), answering realistic Compute Engine SKUs in the API's camelCase JSON, a page at a time.

    catalog = StandInCatalog(page_size=4)          # at most 4 SKUs a page: a listing takes several
    catalog.add_gpu("Nvidia L4", "Americas", ["us-central1"], on_demand=0.56, spot=0.2)
    catalog.add_series("G2 Instance", "G2Standard", "Americas", ["us-central1"], core=(0.025, 0.01),
                       ram=(0.003, 0.001))         # (on demand, spot) per vCPU-hour / per GiB-hour
    catalog.add_decoys(["us-central1"])            # commitments, Sole Tenancy, Custom, vWS, other regions
    catalog.refuse("SERVICE_DISABLED")             # every listing answers 403 from now on
    catalog.credentials(tmp_path)                  # a service account login that the stand-in accepts
    catalog.page_requests                          # the pageToken of each listing request ("" = first)

The descriptions follow the real catalogue's ("Nvidia Tesla T4 GPU running in Americas", "Spot
Preemptible N1 Predefined Instance Core running in Americas", "Nvidia L4 GPU attached to Spot Preemptible
VMs running in ..."), written here independently of ops/catalog.py's patterns. Cannot see: the real
catalogue's size and wording drift, currency conversion (`currencyCode`), price timelines
(`startTime`/`endTime`: only the current price is served), tiered GPU rates.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.standins.google_api import GoogleAPI, error, key_file

COMPUTE = "6F81-5844-456A"
EFFECTIVE = "2026-12-01T08:00:00.000Z"
UNITS = {
    "h": ("hour", "s", "second", 3600),
    "GiBy.h": ("gibibyte hour", "By.s", "byte second", 3865470566400),
}
GEO_TYPES = {"GLOBAL": 1, "REGIONAL": 2, "MULTI_REGIONAL": 3}
REFUSALS = {
    "SERVICE_DISABLED": error(
        403,
        "PERMISSION_DENIED",
        "Cloud Billing API has not been used in project 123456789 before or it is disabled. Enable it by "
        "visiting https://console.developers.google.com/apis/api/cloudbilling.googleapis.com/overview?"
        "project=123456789 then retry.",
        "SERVICE_DISABLED",
    ),
    "PERMISSION_DENIED": error(403, "PERMISSION_DENIED", "The caller does not have permission"),
}


def money(usd: float) -> dict[str, Any]:
    """google.type.Money as JSON: whole dollars (an int64, so a string) and nanos."""
    units = int(usd)
    return {"currencyCode": "USD", "units": str(units), "nanos": round((usd - units) * 1e9)}


class StandInCatalog:
    def __init__(self, page_size: int = 4, api: GoogleAPI | None = None):
        self.api = api or GoogleAPI()
        self.page_size = page_size  # the server's own page size: a smaller pageSize asked is kept
        self.skus: list[dict[str, Any]] = []
        self.page_requests: list[str] = []
        self.refusal: dict[str, Any] | None = None
        self._ids = itertools.count(0x1A2B)
        self.api.route("GET", r"/v1/services/(?P<service>[^/]+)/skus", self._list)

    @property
    def url(self) -> str:
        return self.api.url

    def credentials(self, folder: Path):
        """A service account's login (its key file in `folder`) that authenticates against the stand-in."""
        from google.oauth2 import service_account

        path = key_file(folder / "key.json", self.api)
        return service_account.Credentials.from_service_account_file(str(path))

    def refuse(self, kind: str | None) -> None:
        """From now on answer every listing with 403: "SERVICE_DISABLED" (the API not enabled in the
        login's project) or "PERMISSION_DENIED"; None answers again."""
        self.refusal = REFUSALS[kind] if kind else None

    def close(self) -> None:
        self.api.close()

    # ---- the SKUs -------------------------------------------------------------------------------

    def add_sku(
        self,
        description: str,
        group: str,
        usage: str,
        regions: list[str],
        usd: float,
        unit: str = "h",
        family: str = "Compute",
        free_first: float = 0,
    ) -> dict[str, Any]:
        """One SKU at `usd` per `unit`; `free_first` units free before that (a tier at $0 first)."""
        number = next(self._ids)
        sku_id = f"{number:04X}-{number * 7 % 0xFFFF:04X}-{number * 13 % 0xFFFF:04X}"
        unit_description, base, base_description, factor = UNITS.get(unit, (unit, unit, unit, 1))
        tiers = [{"startUsageAmount": free_first, "unitPrice": money(usd)}]
        if free_first:
            tiers.insert(0, {"startUsageAmount": 0, "unitPrice": money(0)})
        sku = {
            "name": f"services/{COMPUTE}/skus/{sku_id}",
            "skuId": sku_id,
            "description": description,
            "category": {
                "serviceDisplayName": "Compute Engine",
                "resourceFamily": family,
                "resourceGroup": group,
                "usageType": usage,
            },
            "serviceRegions": regions,
            "pricingInfo": [
                {
                    "summary": "",
                    "pricingExpression": {
                        "usageUnit": unit,
                        "displayQuantity": 1,
                        "tieredRates": tiers,
                        "usageUnitDescription": unit_description,
                        "baseUnit": base,
                        "baseUnitDescription": base_description,
                        "baseUnitConversionFactor": factor,
                    },
                    "currencyConversionRate": 1,
                    "effectiveTime": EFFECTIVE,
                }
            ],
            "serviceProviderName": "Google",
            "geoTaxonomy": {"type": "MULTI_REGIONAL" if len(regions) > 1 else "REGIONAL", "regions": regions},
        }
        self.skus.append(sku)
        return sku

    def add_gpu(
        self, name: str, area: str, regions: list[str], on_demand: float, spot: float, attached: bool = False
    ) -> None:
        """A GPU's on-demand and spot SKUs: "Nvidia Tesla T4 GPU running in Americas" and "Spot
        Preemptible Nvidia Tesla T4 GPU running in Americas" (or, `attached`, the newer wording "Nvidia
        L4 GPU attached to Spot Preemptible VMs running in Americas")."""
        self.add_sku(f"{name} GPU running in {area}", "GPU", "OnDemand", regions, on_demand)
        spot_description = (
            f"{name} GPU attached to Spot Preemptible VMs running in {area}"
            if attached
            else f"Spot Preemptible {name} GPU running in {area}"
        )
        self.add_sku(spot_description, "GPU", "Preemptible", regions, spot)

    def add_series(
        self,
        name: str,
        group: str,
        area: str,
        regions: list[str],
        core: tuple[float, float],
        ram: tuple[float, float],
    ) -> None:
        """A machine series' vCPU ("<name> Core", per hour) and memory ("<name> Ram", per GiB-hour) SKUs,
        (on demand, spot) each: name "N1 Predefined Instance", "G2 Instance", "A2 Instance"."""
        for part, unit, (on_demand, spot) in (("Core", "h", core), ("Ram", "GiBy.h", ram)):
            self.add_sku(f"{name} {part} running in {area}", group, "OnDemand", regions, on_demand, unit)
            self.add_sku(
                f"Spot Preemptible {name} {part} running in {area}", group, "Preemptible", regions, spot, unit
            )

    def add_decoys(self, regions: list[str], area: str = "Americas") -> None:
        """SKUs in `regions` that a reader must not take for a GPU's or a machine's price (each at $97+,
        so one taken shows in any figure): commitments, reservations, Sole Tenancy, Custom, DWS and
        Virtual Workstation rows, other resource families, and the same GPUs and series in a region far
        away."""
        add = self.add_sku
        add(f"Commitment v1: Nvidia Tesla T4 GPU running in {area}", "GPU", "Commit1Yr", regions, 97.1)
        add(f"Commitment v1: Nvidia L4 GPU running in {area}", "GPU", "Commit3Yr", regions, 97.2)
        add(f"Commitment v1: A2 Cpu in {area} for 1 Year", "CPU", "Commit1Yr", regions, 97.3)
        add(f"Commitment v1: G2 Ram in {area} for 3 Year", "RAM", "Commit3Yr", regions, 97.4, "GiBy.h")
        add(f"N1 Sole Tenancy Instance Core running in {area}", "CPU", "OnDemand", regions, 97.5)
        add(f"N1 Sole Tenancy Instance Ram running in {area}", "RAM", "OnDemand", regions, 97.6, "GiBy.h")
        add(f"N1 Custom Instance Core running in {area}", "CPU", "OnDemand", regions, 97.7)
        add(f"Spot Preemptible N1 Custom Instance Ram running in {area}", "RAM", "Preemptible", regions, 97.8)
        add(f"Nvidia Tesla T4 Virtual Workstation GPU running in {area}", "GPU", "OnDemand", regions, 97.9)
        add(f"Nvidia Tesla A100 GPU running in {area}", "GPU", "Reserved", regions, 98.0)
        add(f"Nvidia H100 80GB GPU running in {area}", "GPU", "OnDemand", regions, 98.1)
        # Longer descriptions that hold a read SKU's whole: only a full match tells them apart.
        add(
            f"Sole Tenancy Premium for N1 Predefined Instance Core running in {area}",
            "CPU",
            "OnDemand",
            regions,
            98.4,
        )
        add(f"DWS Defined Duration Nvidia Tesla A100 GPU running in {area}", "GPU", "OnDemand", regions, 98.5)
        add(
            f"Licensing Fee for Nvidia L4 GPU running in {area}",
            "GPU",
            "OnDemand",
            regions,
            98.2,
            "h",
            "License",
        )
        add(
            f"Network Internet Egress from {area} to {area}",
            "PremiumInternetEgress",
            "OnDemand",
            regions,
            98.3,
        )
        far = ["australia-southeast1"]
        self.add_gpu("Nvidia Tesla T4", "Sydney", far, 99.1, 99.2)
        self.add_gpu("Nvidia Tesla A100", "Sydney", far, 99.3, 99.4)
        self.add_series("N1 Predefined Instance", "N1Standard", "Sydney", far, (99.5, 99.6), (99.7, 99.8))

    # ---- the API --------------------------------------------------------------------------------

    def _list(self, match, query: dict[str, list[str]]) -> tuple[int, Any]:
        token = query.get("pageToken", [""])[0]
        self.page_requests.append(token)
        if self.refusal:
            return 403, self.refusal
        if match.group("service") != COMPUTE:
            return 404, error(404, "NOT_FOUND", f"Service {match.group('service')} not found")
        if token and not (token.startswith("page-") and token[5:].isdigit()):
            return 400, error(400, "INVALID_ARGUMENT", f"Invalid page token: {token}")
        start = int(token[5:]) if token else 0
        asked = int(query.get("pageSize", ["0"])[0] or 0)
        size = min(asked, self.page_size) if asked > 0 else self.page_size
        ints = "enum-encoding=int" in query.get("$alt", [""])[0]
        page = [self._encoded(sku, ints) for sku in self.skus[start : start + size]]
        body: dict[str, Any] = {"skus": page}
        if start + size < len(self.skus):
            body["nextPageToken"] = f"page-{start + size}"
        return 200, body

    @staticmethod
    def _encoded(sku: dict[str, Any], ints: bool) -> dict[str, Any]:
        """As the API writes the SKU: enums as numbers when the client asks for `enum-encoding=int`."""
        if not ints:
            return sku
        geo = {**sku["geoTaxonomy"], "type": GEO_TYPES[sku["geoTaxonomy"]["type"]]}
        return {**sku, "geoTaxonomy": geo}


@pytest.fixture
def stand_in_catalog() -> Iterator[StandInCatalog]:
    """A stand-in Billing Catalog for one test, closed after it."""
    catalog = StandInCatalog()
    yield catalog
    catalog.close()
