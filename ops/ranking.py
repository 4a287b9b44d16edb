"""The offers side by side, before anything is applied: the quota preflight that drops the offers the
project has no GPU quota for (ops/quota.py), each offer's hourly price (ops/prices.py: the Billing
Catalog when the login reaches it, else the dated table) and the estimated cost of the run about to start
(ops/runcost.py). `make infra-plan` and `python -m ops offers` print the table; `make infra-up` and `make
watch` use the preflight, and the costs when the tfvars ask for the cheapest offer first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ops import quota
from ops.offers import Candidate, Offers
from ops.prices import PriceUnknown, offer_hourly
from ops.runcost import Estimate, Measured, RunWork, Unestimable, estimate
from trainer.errors import UserError

Say = Callable[[str], None]


def needs(offers: Offers, candidate: Candidate) -> quota.Need:
    c = candidate
    return quota.Need(c.gpu_type, c.gpu_count * offers.nodes, c.spot, c.region)


def verdicts(
    offers: Offers, candidates: list[Candidate], endpoint: str | None = None, credentials=None
) -> dict[quota.Need, quota.Verdict]:
    """The quota verdict of each distinct need among the candidates (one Compute API reading for all);
    raises quota.QuotaUnreadable when the API cannot be read."""
    wanted = list(dict.fromkeys(needs(offers, c) for c in candidates))
    return dict(zip(wanted, quota.check(offers.project, wanted, credentials, endpoint), strict=True))


def preflight(
    offers: Offers, todo: list[Candidate], say: Say, endpoint: str | None = None, credentials=None,
    spared: Candidate | None = None,
) -> list[Candidate]:  # fmt: skip
    """The candidates whose region has GPU quota for them, and `spared` (the VM that is there: its own GPUs
    count in its quota's usage) unchecked; one line for each (offer, region) dropped. None left: one error
    naming the quota to request. The API out of reach: one line, and all are kept (the apply's own quota
    error still moves to the next offer)."""
    checked = [c for c in todo if c != spared]
    if not checked:
        return todo
    try:
        judged = verdicts(offers, checked, endpoint, credentials)
    except quota.QuotaUnreadable as exc:
        say(f"GPU quota not checked ({exc}); trying the offers anyway")
        return todo
    kept: list[Candidate] = []
    dropped: dict[tuple[int, str], list[Candidate]] = {}
    for c in todo:
        if c == spared or judged[needs(offers, c)].ok:
            kept.append(c)
        else:
            dropped.setdefault((c.offer, c.region), []).append(c)
    for (number, region), gone in dropped.items():
        where = region if len(gone) == len(offers.by_offer()[number]) else ", ".join(c.zone for c in gone)
        line = judged[needs(offers, gone[0])].line
        say(f"offer {number} ({gone[0].kind()}) skipped in {where}: no GPU quota, {line}")
    if not kept:
        raise UserError(quota.no_quota_message(offers.project, list(judged.values())))
    return kept


@dataclass(frozen=True)
class Row:
    offer: int
    first: Candidate
    zones: list[str]
    hourly: float | None  # all nodes, machine + GPUs
    price_source: str
    estimate: Estimate | None
    quota: str  # "ok", "no quota: ...", or "not checked"


def rows(
    offers: Offers,
    work: RunWork | None,
    catalogue=None,
    measured: Measured | None = None,
    verdicts: dict[quota.Need, quota.Verdict] | None = None,
) -> list[Row]:
    found = []
    for number, candidates in offers.by_offer().items():
        first = candidates[0]
        try:
            one, source = offer_hourly(
                first.machine_type, first.gpu_type, first.gpu_count, first.spot, first.region, catalogue
            )
            hourly: float | None = one * offers.nodes
        except PriceUnknown as exc:
            hourly, source = None, str(exc)
        guess = None
        if work is not None and hourly is not None:
            guess = estimate(work, first.gpu_type, first.gpu_count * offers.nodes, hourly, measured)
        verdict = (verdicts or {}).get(needs(offers, first))
        state = "not checked" if verdict is None else "ok" if verdict.ok else f"no quota ({verdict.line})"
        found.append(Row(number, first, [c.zone for c in candidates], hourly, source, guess, state))
    return found


def costs(table: list[Row]) -> dict[int, float | None]:
    return {row.offer: (row.estimate.cost if row.estimate else None) for row in table}


def lines(offers: Offers, table: list[Row], work: RunWork | None, why_not: str = "") -> list[str]:
    """The table `make infra-plan` and `python -m ops offers` print."""
    order = "cheapest run first" if offers.order == "cheapest" else "in the order listed"
    nodes = f" x {offers.nodes} VMs" if offers.nodes > 1 else ""
    out = [f"offers ({order}{nodes}; prices per hour of machine + GPUs):"]
    ranked = sorted(table, key=lambda r: (r.estimate is None, r.estimate.cost if r.estimate else 0, r.offer))
    shown = ranked if offers.order == "cheapest" else table
    for row in shown:
        zones = ", ".join(row.zones)
        price = f"${row.hourly:.4f}/h" if row.hourly is not None else "price unknown"
        if row.estimate is not None:
            run = (
                f"run ~{row.estimate.hours:.2f} h, ~${row.estimate.cost:.2f} (MFU {row.estimate.mfu_source})"
            )
        else:
            run = "run cost: n/a"
        out.append(f"  offer {row.offer}: {row.first.kind()} in {zones}")
        out.append(f"      {price} [{row.price_source}]; {run}; quota: {row.quota}")
    if work is not None:
        out.append(f"  the run: {work.describe()}: an upper bound (early stopping may end sooner)")
    else:
        out.append(f"  the run's cost is not estimated: {why_not}")
    return out


def work_or_reason(config: Path, data: str, model: str, demo: Path) -> tuple[RunWork | None, str]:
    from ops.runcost import run_work

    try:
        return run_work(config, data, model, demo), ""
    except Unestimable as exc:
        return None, str(exc)
