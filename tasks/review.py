"""Review step: the spec and both targets against the cloud-deployment chapter's DO and DON'T lists.

Each practice gets a finding — pass, warning or refusal — with the reason and the fix. ``plan``
prints them; the release flow runs the review before it changes anything and stops on a refusal
(``strict`` turns every warning into one). What a target is configured to be comes from its
``facts()`` and its plan from ``changes()``; a new target fills those in and is reviewed like the
others. The costs are estimated from the price table (``slipway/costs.py``), never guessed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from slipway.costs import Estimate, monthly, price_table
from slipway.errors import ConfigError
from slipway.spec import ReleaseSpec
from targets.base import Facts, Target

Level = Literal["pass", "warn", "refuse"]
_CREDENTIALS = [  # values that are credentials, wherever they sit in a spec
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"AIza[0-9A-Za-z_\-]{35}"), "a Google API key"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\."), "a JSON web token"),
    (re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}|pnu_[A-Za-z0-9]{30,})"), "an API token"),
    (re.compile(r"://[^/\s:@]+:[^/\s@]+@"), "a password in a URL"),
]
MIN_KEY_LENGTH = 16


@dataclass(frozen=True)
class Finding:
    practice: str  # the chapter's words
    level: Level
    reason: str
    fix: str = ""


@dataclass(frozen=True)
class Review:
    findings: list[Finding]
    costs: dict[str, Estimate]  # stage → monthly estimate at the spec's traffic

    def refused(self, strict: bool) -> list[Finding]:
        return [f for f in self.findings if f.level == "refuse" or (strict and f.level == "warn")]

    def check(self, strict: bool) -> None:
        """Raise ``ConfigError`` listing every refusal (and, when strict, every warning)."""
        refused = self.refused(strict)
        if refused:
            lines = "\n".join(f"  - {f.practice}: {f.reason}" + (f" ({f.fix})" if f.fix else "") for f in refused)
            raise ConfigError(
                f"the release spec does not follow the deployment practices it must:\n{lines}",
                hint="fix the spec as each line says"
                + ("; or run without --strict to accept warnings" if strict else ""),
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "findings": [f.__dict__ for f in self.findings],
            "costs": {stage: e.__dict__ for stage, e in self.costs.items()},
        }


def review(spec: ReleaseSpec, staging: Target, production: Target) -> Review:
    """Every practice, for this spec and these targets."""
    facts = {"staging": staging.facts(), "production": production.facts()}
    findings = [
        *_authentication(spec),
        *_credentials(spec),
        _staging_first(staging, production),
        *_scaling(facts["production"], production),
        Finding("DO monitor everything / DON'T skip monitoring", "pass", "; ".join(facts["production"].monitoring)),
        _encryption(facts["production"]),
        *_limits(facts),
        Finding(
            "DO version deployments",
            "pass",
            "immutable release ids; packages content-addressed by sha256; "
            "images pinned by digest; every attempt in the ledger",
        ),
        Finding(
            "DO use infrastructure as code",
            "pass",
            "the plan lists what each target creates, changes and deletes (--output json for a bot)",
        ),
    ]
    prices = price_table(spec.costs.prices)
    duration_s = spec.gate.slo.p95_ms / 1000  # per-request platforms: at the SLO's bound
    costs = {
        stage: monthly(f.usage, prices, spec.costs.requests_per_month, duration_s)
        for stage, f in facts.items()
        if f.usage is not None
    }
    findings.append(_costs(costs, spec))
    return Review(findings, costs)


def _authentication(spec: ReleaseSpec) -> list[Finding]:
    practice = "DON'T expose models without authentication"
    auth = spec.auth
    if auth.mode != "none":
        key = os.environ.get(auth.api_key_env, "")
        if key and len(key) < MIN_KEY_LENGTH:
            return [
                Finding(
                    practice,
                    "refuse",
                    f"${auth.api_key_env} is {len(key)} characters long",
                    f"use at least {MIN_KEY_LENGTH} random characters, e.g. $(openssl rand -hex 24)",
                )
            ]
        return [Finding(practice, "pass", f"every endpoint requires the API key in ${auth.api_key_env}")]
    if not auth.unauthenticated_because:
        return [
            Finding(
                practice,
                "refuse",
                "auth.mode is none: anyone who reaches production may call it",
                "set auth.mode: api_key, or say why it may be open in auth.unauthenticated_because",
            )
        ]
    return [
        Finding(
            practice,
            "warn",
            f"production serves without authentication: {auth.unauthenticated_because}",
            "set auth.mode: api_key unless the network in front of it authenticates",
        )
    ]


def _credentials(spec: ReleaseSpec) -> list[Finding]:
    practice = "DON'T hard-code credentials"
    found = [
        f"{path} holds {what}"
        for path, value in _strings(spec.model_dump(), "")
        for pattern, what in _CREDENTIALS
        if pattern.search(value)
    ]
    if found:
        return [
            Finding(
                practice,
                "refuse",
                "; ".join(found),
                "remove it from the spec: credentials come from the "
                "environment or a Prefect block, and the spec names where (e.g. image.registry_credentials)",
            )
        ]
    return [
        Finding(
            practice,
            "pass",
            f"no value in the spec looks like a credential; the key comes from ${spec.auth.api_key_env}",
        )
    ]


def _strings(node: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(node, dict):
        return [pair for k, v in node.items() for pair in _strings(v, f"{path}.{k}" if path else str(k))]
    if isinstance(node, list):
        return [pair for i, v in enumerate(node) for pair in _strings(v, f"{path}[{i}]")]
    return [(path, node)] if isinstance(node, str) else []


def _staging_first(staging: Target, production: Target) -> Finding:
    practice = "DON'T deploy directly to production / DO test in staging first"
    if staging.location == production.location:
        return Finding(
            practice,
            "refuse",
            f"staging and production are one place ({staging.location})",
            "give staging its own place: another port, namespace, service or account",
        )
    return Finding(practice, "pass", f"every release is gated on staging ({staging.location}) before production")


def _scaling(facts: Any, target: Target) -> list[Finding]:
    practice = "DO implement auto-scaling / DON'T over-provision"
    out = []
    if facts.autoscaling:
        out.append(Finding(practice, "pass", f"production: {facts.autoscaling}"))
    elif facts.can_autoscale:
        out.append(
            Finding(
                practice,
                "warn",
                f"production runs a fixed {facts.instances} instance(s) where {target.kind} can scale",
                "set the target's autoscaling settings",
            )
        )
    else:
        out.append(
            Finding(
                practice,
                "pass",
                f"production runs {facts.instances} instance(s); {target.kind} has no autoscaling here",
            )
        )
    if facts.can_autoscale and facts.instances <= 1 and (facts.zones or 0) < 2:  # no platform spreading it
        out.append(
            Finding(
                "DO use multiple availability zones",
                "warn",
                f"production runs {facts.instances} instance at the least: one failure takes it down",
                "keep at least 2 instances",
            )
        )
    if facts.can_span_zones and facts.zones == 1:
        out.append(
            Finding(
                "DO use multiple availability zones",
                "warn",
                "production is in one availability zone",
                "spread it over two or more",
            )
        )
    return out


def _encryption(facts: Any) -> Finding:
    practice = "DO encrypt data"
    at_rest = f"; at rest: {', '.join(facts.at_rest)}" if facts.at_rest else ""
    if facts.public and not facts.tls:
        return Finding(
            practice,
            "warn",
            f"production's endpoint is public over plain HTTP{at_rest}",
            "put a TLS-terminating load balancer or proxy in front of it",
        )
    how = "over TLS" if facts.tls else "not reachable from outside this machine or private network"
    return Finding(practice, "pass", f"production's endpoint is {how}{at_rest}")


def _limits(facts: dict[str, Facts]) -> list[Finding]:
    """The platform's limits (serverless: time, memory, package size): a stage over one is refused."""
    practice = "Serverless limits: time, memory, package size"
    out = []
    for stage, f in facts.items():
        if not f.limits:
            continue
        shown = "; ".join(
            f"{lim.what} {'not known yet' if lim.value is None else f'{lim.value:,.0f}'} of {lim.limit:,.0f} {lim.unit}"
            + (f" ({lim.note})" if lim.note else "")
            for lim in f.limits
        )
        over = [lim.what for lim in f.limits if lim.exceeded]
        if over:
            out.append(Finding(practice, "refuse", f"{stage}: {', '.join(over)} over the limit: {shown}",
                               "make it smaller (a model loaded from object storage, fewer dependencies) or pick "
                               "a pattern without that limit"))  # fmt: skip
        else:
            out.append(Finding(practice, "pass", f"{stage}: {shown}"))
    return out


def _costs(costs: dict[str, Estimate], spec: ReleaseSpec) -> Finding:
    practice = "DON'T forget about costs"
    if not costs:
        return Finding(practice, "pass", "both stages run on this machine: nothing is billed")
    missing = sorted({item for e in costs.values() for item in e.missing})
    known = [f"{stage} ${e.usd:,.2f}/month" for stage, e in costs.items() if e.usd is not None]
    traffic = f"at {spec.costs.requests_per_month:,.0f} requests/month"
    if missing:
        return Finding(
            practice,
            "warn",
            f"not estimated for {', '.join(missing)} {traffic}" + (f"; {', '.join(known)}" if known else ""),
            "set their prices (USD) in costs.prices in the spec",
        )
    return Finding(practice, "pass", f"{', '.join(known)} {traffic} (slipway/prices.yaml; costs.prices overrides)")


@task(name="review practices", cache_policy=NONE)
def review_step(spec: ReleaseSpec, staging: Target, production: Target, strict: bool) -> Review:
    """The review as the flow's first step: a refusal stops the run before anything changes."""
    result = review(spec, staging, production)
    logger = get_run_logger()
    for f in result.findings:
        if f.level != "pass":
            logger.warning("%s: %s: %s (%s)", f.level, f.practice, f.reason, f.fix)
    result.check(strict)
    return result
