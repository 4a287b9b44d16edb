"""GPU VM prices from the Cloud Billing Catalog API (ops/catalog.py) and the offer's price in any region
(ops/prices.offer_hourly), read by the real google-cloud-billing client from a stand-in catalogue
(tests/standins/billing_catalog.py) with a real service-account login.

Each expected figure is written out by hand from what the stand-in serves (vCPUs x core rate + GiB x RAM
rate, with the machine type's shape spelled out here), so a wrong shape, a decoy SKU taken, a spot rate
used for on-demand or a region mixed up changes it.
"""

from __future__ import annotations

import socket
import time
from datetime import datetime, timezone

import pytest

from ops import catalog, prices
from tests.standins import billing_catalog
from tests.standins.billing_catalog import StandInCatalog

stand_in_catalog = billing_catalog.stand_in_catalog  # the fixture, found here by pytest

US, EU = "us-central1", "europe-west4"
SSD_1G = 375 * 0.08 / 730  # an a2-ultragpu-1g's local SSD per hour, as ops/prices.py's table has it

# (description name, {region: (on demand, spot)}) as the stand-in serves them.
GPU_RATES = {
    "nvidia-tesla-t4": ("Nvidia Tesla T4", {US: (0.35, 0.14), EU: (0.41, 0.16)}),
    "nvidia-l4": ("Nvidia L4", {US: (0.5599, 0.2236), EU: (0.6163, 0.2465)}),
    "nvidia-tesla-a100": ("Nvidia Tesla A100", {US: (2.933908, 1.1736), EU: (3.2265, 1.29)}),
    "nvidia-a100-80gb": ("Nvidia Tesla A100 80GB", {US: (3.92808, 1.571), EU: (4.32, 1.73)}),
}
# series: (description name, resource group, {region: ((core on demand, spot), (RAM on demand, spot))})
SERIES_RATES = {
    "n1": ("N1 Predefined Instance", "N1Standard", {
        US: ((0.031611, 0.00698), (0.004237, 0.00094)), EU: ((0.034773, 0.0077), (0.004661, 0.00103)),
    }),
    "g2": ("G2 Instance", "G2Standard", {
        US: ((0.02499, 0.00999), (0.00293, 0.00117)), EU: ((0.02749, 0.011), (0.00322, 0.00129)),
    }),
    "a2": ("A2 Instance", "A2", {
        US: ((0.031611, 0.01264), (0.004237, 0.00169)), EU: ((0.034773, 0.0139), (0.004661, 0.00186)),
    }),
}  # fmt: skip
AREAS = {US: ("Americas", [US, "us-east1", "us-west1"]), EU: ("Netherlands", [EU])}


def serve(stand_in: StandInCatalog, regions=(US, EU), decoys: bool = True) -> None:
    """The four GPU kinds and the three series in `regions`, the decoys beside them (A100 80GB beside
    A100 is no decoy: both are served, at their own prices). L4's spot SKU in the newer wording."""
    for region in regions:
        area, served = AREAS[region]
        for name, rates in GPU_RATES.values():
            stand_in.add_gpu(name, area, served, *rates[region], attached=name == "Nvidia L4")
        for name, group, rates in SERIES_RATES.values():
            core, ram = rates[region]
            stand_in.add_series(name, group, area, served, core, ram)
        if decoys:
            stand_in.add_decoys(served, area)


def today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


@pytest.fixture
def read(stand_in_catalog, tmp_path):
    login = stand_in_catalog.credentials(tmp_path)

    def load(regions=frozenset({US, EU})) -> catalog.Catalogue:
        return catalog.load(set(regions), credentials=login, endpoint=stand_in_catalog.url)

    return load


# ---- the figures --------------------------------------------------------------------------------


@pytest.mark.parametrize("gpu_type", list(GPU_RATES))
def test_each_gpu_is_priced_per_region_on_demand_and_spot(stand_in_catalog, read, gpu_type):
    serve(stand_in_catalog)
    catalogue = read()
    for region in (US, EU):
        on_demand, spot = GPU_RATES[gpu_type][1][region]
        price = catalogue.gpu(gpu_type, region)
        assert price.on_demand == pytest.approx(on_demand, abs=1e-9), region
        assert price.spot == pytest.approx(spot, abs=1e-9), region
        assert (
            price.source == f"Cloud Billing Catalog API (services/6F81-5844-456A), read {today()}, {region}"
        )
        assert price.estimate == ""


@pytest.mark.parametrize(
    ("machine_type", "vcpus", "gib"),
    [
        ("n1-standard-4", 4, 15),
        ("n1-standard-16", 16, 60),
        ("g2-standard-8", 8, 32),
        ("g2-standard-96", 96, 384),
        ("a2-highgpu-2g", 24, 170),
        ("a2-megagpu-16g", 96, 1360),
    ],
)
def test_each_machine_is_its_vcpus_and_memory_at_the_series_rates(
    stand_in_catalog, read, machine_type, vcpus, gib
):
    serve(stand_in_catalog)
    catalogue = read()
    for region in (US, EU):
        (core, core_spot), (ram, ram_spot) = SERIES_RATES[machine_type[:2]][2][region]
        price = catalogue.machine(machine_type, region)
        assert price.on_demand == pytest.approx(vcpus * core + gib * ram, abs=1e-9), region
        assert price.spot == pytest.approx(vcpus * core_spot + gib * ram_spot, abs=1e-9), region
        assert price.source.endswith(f"read {today()}, {region}") and price.estimate == ""


def test_an_a2_ultragpus_local_ssd_is_added_at_the_tables_rate(stand_in_catalog, read):
    serve(stand_in_catalog)
    price = read().machine("a2-ultragpu-1g", EU)
    assert price.on_demand == pytest.approx(12 * 0.034773 + 170 * 0.004661 + SSD_1G, abs=1e-9)
    assert price.spot == pytest.approx(12 * 0.0139 + 170 * 0.00186 + 0.4 * SSD_1G, abs=1e-9)
    assert "local SSD (375 GB)" in price.estimate


def test_the_listing_is_walked_page_by_page_and_read_once(stand_in_catalog, read):
    serve(stand_in_catalog)
    before = today()
    catalogue = read()
    assert catalogue.read_on in {before, today()}
    pages = -(-len(stand_in_catalog.skus) // stand_in_catalog.page_size)
    assert pages > 10 and catalogue.pages == pages and catalogue.skus_read == len(stand_in_catalog.skus)
    assert stand_in_catalog.page_requests == [""] + [f"page-{4 * n}" for n in range(1, pages)]
    assert catalogue.gpu("nvidia-l4", US) and catalogue.machine("g2-standard-8", EU)
    assert len(stand_in_catalog.page_requests) == pages  # the figures come from the one reading


def test_regions_and_types_not_read_have_no_figure(stand_in_catalog, read):
    serve(stand_in_catalog)
    catalogue = read({US})
    assert catalogue.gpu("nvidia-tesla-t4", EU) is None and catalogue.machine("n1-standard-4", EU) is None
    assert catalogue.gpu("nvidia-tesla-t4", "us-east1") is None  # served there, not asked for
    # The decoys' far region (Sydney) was served; not asked for, so not kept.
    assert catalogue.gpu("nvidia-tesla-t4", "australia-southeast1") is None
    assert catalogue.machine("n1-highmem-8", US) is None  # no shape
    assert catalogue.gpu("nvidia-tesla-v100", US) is None  # not in the catalogue
    assert catalogue.gpu("nvidia-tesla-t4", US).on_demand == pytest.approx(0.35, abs=1e-9)


def test_a100_is_not_read_from_the_80gb_rows_nor_from_decoys(stand_in_catalog, read):
    """Only the 80GB card and the decoys are served: the 40GB A100 and the N1 series have no figure
    (a reservation SKU "Nvidia Tesla A100 GPU running in Americas", Sole Tenancy and Custom N1 rows, a
    Virtual Workstation T4 are all there)."""
    stand_in_catalog.add_gpu("Nvidia Tesla A100 80GB", "Americas", [US], 3.92808, 1.571)
    stand_in_catalog.add_decoys([US])
    catalogue = read({US})
    assert catalogue.gpu("nvidia-tesla-a100", US) is None
    assert catalogue.gpu("nvidia-a100-80gb", US).spot == pytest.approx(1.571, abs=1e-9)
    assert catalogue.gpu("nvidia-tesla-t4", US) is None and catalogue.gpu("nvidia-l4", US) is None
    assert catalogue.machine("n1-standard-4", US) is None and catalogue.machine("a2-highgpu-1g", US) is None


def test_a_machine_needs_both_its_core_and_its_ram_rates(stand_in_catalog, read):
    stand_in_catalog.add_sku("G2 Instance Core running in Americas", "G2Standard", "OnDemand", [US], 0.025)
    stand_in_catalog.add_sku("Spot Preemptible G2 Instance Core running in Americas", "G2Standard",
                             "Preemptible", [US], 0.01)  # fmt: skip
    stand_in_catalog.add_sku(
        "G2 Instance Ram running in Americas", "G2Standard", "OnDemand", [US], 0.003, "GiBy.h"
    )
    assert read({US}).machine("g2-standard-4", US) is None  # no spot RAM rate


def test_a_sku_with_a_free_first_tier_is_read_at_its_last_tier(stand_in_catalog, read):
    stand_in_catalog.add_sku(
        "Nvidia Tesla T4 GPU running in Americas", "GPU", "OnDemand", [US], 0.35, free_first=1
    )
    stand_in_catalog.add_sku("Spot Preemptible Nvidia Tesla T4 GPU running in Americas", "GPU", "Preemptible",
                             [US], 0.14)  # fmt: skip
    price = read({US}).gpu("nvidia-tesla-t4", US)
    assert (price.on_demand, price.spot) == (pytest.approx(0.35, abs=1e-9), pytest.approx(0.14, abs=1e-9))


# ---- offer_hourly: the catalogue's figure, else the table's --------------------------------------


def test_offer_hourly_takes_the_catalogues_figures_where_it_has_both(stand_in_catalog, read):
    serve(stand_in_catalog, regions=[EU])
    catalogue = read({US, EU})
    price, source = prices.offer_hourly("g2-standard-24", "nvidia-l4", 2, True, EU, catalogue)
    assert price == pytest.approx(24 * 0.011 + 96 * 0.00129 + 2 * 0.2465, abs=1e-6)
    assert source == f"Billing Catalog {catalogue.read_on}"
    price, source = prices.offer_hourly("n1-standard-8", "nvidia-tesla-t4", 1, False, EU, catalogue)
    assert price == pytest.approx(8 * 0.034773 + 30 * 0.004661 + 0.41, abs=1e-6)
    price, source = prices.offer_hourly("a2-highgpu-1g", None, 0, False, EU, catalogue)  # machine alone
    assert price == pytest.approx(12 * 0.034773 + 85 * 0.004661, abs=1e-6) and source.startswith("Billing")


def test_offer_hourly_falls_back_to_the_table_and_says_whose_prices_they_are(stand_in_catalog, read):
    stand_in_catalog.add_series("N1 Predefined Instance", "N1Standard", "Netherlands", [EU],
                                (0.034773, 0.0077), (0.004661, 0.00103))  # fmt: skip
    catalogue = read({US, EU})
    table = f"table {prices.PRICE_DATE} (us-central1 prices; {EU} may differ)"
    # N1's rates are there but not T4's: the whole offer from the table, not half of each.
    assert prices.offer_hourly("n1-standard-4", "nvidia-tesla-t4", 1, True, EU, catalogue) == (
        pytest.approx(0.052 + 0.175),
        table,
    )
    # Nothing read for us-central1; no catalogue at all.
    us_table = (pytest.approx(0.19 + 0.35), f"table {prices.PRICE_DATE}, us-central1 prices")
    assert prices.offer_hourly("n1-standard-4", "nvidia-tesla-t4", 1, False, US, catalogue) == us_table
    assert prices.offer_hourly("n1-standard-4", "nvidia-tesla-t4", 1, False, US) == us_table
    g2 = prices.offer_hourly("g2-standard-4", "nvidia-l4", 1, False, "asia-southeast1")
    assert g2 == (
        pytest.approx(prices.MACHINES["g2-standard-4"].on_demand + 0.56),
        f"table {prices.PRICE_DATE} (us-central1 prices; asia-southeast1 may differ)",
    )
    with pytest.raises(prices.PriceUnknown, match="'n1-highmem-8'"):
        prices.offer_hourly("n1-highmem-8", "nvidia-tesla-t4", 1, False, EU, catalogue)
    with pytest.raises(prices.PriceUnknown, match="'nvidia-h100-80gb'"):
        prices.offer_hourly("n1-standard-4", "nvidia-h100-80gb", 1, False, EU, catalogue)


# ---- unreadable ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        (
            "SERVICE_DISABLED",
            r"the Cloud Billing API is not enabled \(gcloud services enable cloudbilling\.googleapis\.com\): "
            "Cloud Billing API has not been used in project 123456789",
        ),
        ("PERMISSION_DENIED", "permission denied reading http://127.0.0.1:[0-9]+: The caller does not have"),
    ],
)
def test_a_refusal_is_unreadable_with_its_reason(stand_in_catalog, read, kind, said):
    serve(stand_in_catalog)
    stand_in_catalog.refuse(kind)
    with pytest.raises(catalog.CatalogUnreadable, match=said) as refused:
        read()
    assert "\n" not in str(refused.value)
    assert stand_in_catalog.page_requests == [""]  # asked once: no retries


def test_an_unreachable_endpoint_is_unreadable_quickly(tmp_path, stand_in_catalog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    login = stand_in_catalog.credentials(tmp_path)
    started = time.monotonic()
    with pytest.raises(catalog.CatalogUnreadable, match=f"http://127.0.0.1:{port} cannot be reached"):
        catalog.load({US}, credentials=login, endpoint=f"http://127.0.0.1:{port}")
    assert time.monotonic() - started < 30


def test_odd_answers_are_unreadable(stand_in_catalog, read):
    with pytest.raises(catalog.CatalogUnreadable, match="listed no SKUs"):
        read()
    stand_in_catalog.add_sku("Nvidia L4 GPU running in Americas", "GPU", "OnDemand", [US], 400.0, "mo")
    with pytest.raises(catalog.CatalogUnreadable, match=r"priced per 'mo', not per 'h'"):
        read()


def test_two_skus_pricing_one_thing_differently_are_unreadable(stand_in_catalog, read):
    stand_in_catalog.add_gpu("Nvidia L4", "Americas", [US, "us-east1"], 0.56, 0.22)
    stand_in_catalog.add_gpu("Nvidia L4", "Iowa", [US], 0.57, 0.22)
    with pytest.raises(catalog.CatalogUnreadable, match="two SKUs price 'Nvidia L4 GPU running in Iowa'"):
        read()


def test_the_default_login_is_the_application_default_one(stand_in_catalog, tmp_path, monkeypatch):
    serve(stand_in_catalog, regions=[US], decoys=False)
    key = tmp_path / "login"
    key.mkdir()
    stand_in_catalog.credentials(key)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key / "key.json"))
    assert catalog.load({US}, endpoint=stand_in_catalog.url).gpu("nvidia-l4", US).on_demand == pytest.approx(
        0.5599
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(catalog.CatalogUnreadable, match="no Google login"):
        catalog.load({US}, endpoint=stand_in_catalog.url)


# ---- one table of shapes ------------------------------------------------------------------------


def test_one_table_of_shapes_covers_every_priced_machine_and_the_table_uses_it():
    assert set(prices.SHAPES) == set(prices.MACHINES)
    assert set(catalog.GPU_SKU_NAMES) == set(prices.GPUS)
    assert {m.split("-")[0] for m in prices.SHAPES} == set(catalog.SERIES_SKU_NAMES)
    # The table's G2 / A2 machine parts are the shapes at the series' rates (+ an ultragpu's local SSD).
    for machine_type, (vcpus, gib) in prices.SHAPES.items():
        series = machine_type.split("-")[0]
        if series != "n1":
            vcpu_rate, gib_rate, _ = prices.SERIES_RATES[series]
            expected = vcpus * vcpu_rate + gib * gib_rate + prices.local_ssd_hourly(machine_type)
            assert prices.MACHINES[machine_type].on_demand == pytest.approx(expected, abs=1e-6), machine_type
    assert prices.SHAPES["a2-ultragpu-8g"] == (96, 1360) and prices.SHAPES["g2-standard-48"] == (48, 192)
    assert prices.local_ssd_hourly("a2-ultragpu-2g") == pytest.approx(2 * SSD_1G)
    assert prices.local_ssd_hourly("a2-highgpu-2g") == 0
