"""What a stage costs: a versioned price table (``slipway/prices.yaml``, each price with its source and
date, any of them overridable in the spec) and the arithmetic of the two figures Slipway shows.

A target says what it uses (``targets.base.Usage``): price items per hour of always-on capacity,
per request, and per request-second (duration-billed platforms). ``monthly`` is the estimate
``plan`` prints for a traffic level; ``per_thousand`` is the cost of 1,000 predictions at the
throughput (always-on) or request duration (per-request) the gate measured. Prices are never
guessed: an item missing from the table is reported, with the key to set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources

import yaml

HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class Price:
    usd: float
    unit: str
    source: str
    date: str


@dataclass(frozen=True)
class Usage:
    """What a stage is billed by: price item → quantity."""

    hourly: Mapping[str, float] = field(default_factory=dict)  # per hour, whatever the traffic
    per_request: Mapping[str, float] = field(default_factory=dict)  # per request
    per_request_second: Mapping[str, float] = field(default_factory=dict)  # per request per second it lasts

    @property
    def items(self) -> set[str]:
        return {*self.hourly, *self.per_request, *self.per_request_second}


@dataclass(frozen=True)
class Estimate:
    usd: float | None  # None: some item has no price
    missing: list[str]
    lines: list[str]  # how it was computed, one line per item


def price_table(overrides: Mapping[str, float] | None = None) -> dict[str, Price]:
    """The shipped table, with the spec's overrides (sourced as such)."""
    raw = yaml.safe_load(resources.files("slipway").joinpath("prices.yaml").read_text())
    table = {key: Price(**value) for key, value in raw["prices"].items()}
    for key, usd in (overrides or {}).items():
        unit = table[key].unit if key in table else "as given"
        table[key] = Price(float(usd), unit, "the spec (costs.prices)", "")
    return table


def monthly(usage: Usage, prices: Mapping[str, Price], requests: float, duration_s: float) -> Estimate:
    """The cost of a month of ``requests`` requests, each lasting ``duration_s``."""
    terms = [(k, q * HOURS_PER_MONTH, f"{HOURS_PER_MONTH:g} h") for k, q in usage.hourly.items()]
    terms += [(k, q * requests, f"{requests:,.0f} requests") for k, q in usage.per_request.items()]
    terms += [(k, q * requests * duration_s, f"{requests:,.0f} × {duration_s * 1000:.0f} ms")
              for k, q in usage.per_request_second.items()]  # fmt: skip
    return _sum(terms, prices)


def per_thousand(usage: Usage, prices: Mapping[str, Price], rps: float, duration_s: float) -> Estimate:
    """The cost of 1,000 predictions: always-on capacity at ``rps`` (it serves ``rps × 3600`` an hour),
    per-request items at ``duration_s`` each. None when the always-on part has no throughput to share."""
    if usage.hourly and rps <= 0:
        return Estimate(None, [], ["no throughput measured: always-on capacity cannot be shared out"])
    hours = 1000.0 / (rps * 3600.0) if usage.hourly else 0.0
    terms = [(k, q * hours, f"{hours * 3600:.2f} s of capacity") for k, q in usage.hourly.items()]
    terms += [(k, q * 1000.0, "1,000 requests") for k, q in usage.per_request.items()]
    terms += [(k, q * 1000.0 * duration_s, f"1,000 × {duration_s * 1000:.1f} ms") for k, q in
              usage.per_request_second.items()]  # fmt: skip
    return _sum(terms, prices)


def _sum(terms: list[tuple[str, float, str]], prices: Mapping[str, Price]) -> Estimate:
    missing = sorted({k for k, _, _ in terms if k not in prices})
    lines = [f"{k}: {q:,.6g} {prices[k].unit} ({how}) × ${prices[k].usd:g} = ${q * prices[k].usd:,.4f} "
             f"[{prices[k].source}{', ' + prices[k].date if prices[k].date else ''}]"
             for k, q, how in terms if k in prices]  # fmt: skip
    total = None if missing else sum(q * prices[k].usd for k, q, _ in terms)
    return Estimate(total, missing, lines)
