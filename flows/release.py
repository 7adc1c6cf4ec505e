"""The release flow: package → build image → push → deploy staging → gate → promote.

Production is only ever switched to the release that passed the gate on staging; a failed gate or
any error leaves production serving what it served before. Staging is torn down at the end of
every run, passed or failed. Every attempt is in the ledger with its outcome and gate figures.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, cast

from prefect import flow, get_run_logger
from prefect.states import Cancelled
from pydantic import Field

from flows.pipeline import Pipeline, open_pipeline, run_id
from flows.recovery import settle_interrupted
from slipway.costs import price_table
from slipway.errors import GateFailed
from slipway.ledger import Outcome, ReleaseRecord
from slipway.registry import pin_version, superseded
from slipway.release import Release, Stage
from targets.base import Deployment
from tasks.gate import CostBasis, GateReport, gate
from tasks.image import build_image, push_image
from tasks.package import ModelPackage, package
from tasks.promote import promote
from tasks.review import review_step
from tasks.stage import deploy_staging, teardown_stage


@dataclass(frozen=True)
class ReleaseResult:
    release: Release
    production: Deployment
    report: GateReport


RegistryVersion = Annotated[
    str,
    Field(
        pattern=r"^([0-9]+)?$",
        description="MLflow registry version to release instead of the spec's (models:/ sources only); "
        "empty: the spec's. A version that a newer one (or the alias) has superseded is skipped.",
    ),
]


@flow(name="release", log_prints=True)
def release(
    spec_path: str, trigger: str = "manual", version: RegistryVersion = "", strict: bool = False
) -> ReleaseResult:
    """Release the model of the spec at ``spec_path`` to production, through staging and the gate.

    Args:
        spec_path: Path of the release spec (slipway.yaml) on the machine that runs the flow.
        trigger: What started this run (manual, schedule, or the id of the event), for the ledger.
        version: MLflow registry version to release instead of the spec's; empty for the spec's.
        strict: Refuse on any warning of the practices review, not only on its refusals.
    """
    p = open_pipeline(spec_path)
    source = p.spec.model.source
    if version:
        p = replace(p, spec=pin_version(p.spec, version))
    p.ledger.check_writable()
    p.store.check()
    with p.ledger.lock(p.service, timeout_s=p.settings.lock_timeout_s, purpose="deploy"):
        for note in settle_interrupted(p, run_id()):
            get_run_logger().warning(note)
        if version and (reason := superseded(source, version)):
            get_run_logger().info("version %s not released: %s", version, reason)
            return cast(ReleaseResult, Cancelled(message=f"version {version} superseded: {reason}"))
        review_step(p.spec, p.staging, p.production, strict)
        pkg = package(p.spec, p.store.working)
        p.store.publish_package(pkg.dir)  # before anything is built: any worker can roll back to it
        image_id = build_image(p.spec, pkg, [p.staging, p.production])
        image = push_image(p.spec, image_id)
        rel = Release(
            id=_new_release_id(pkg.sha256),
            service=p.service,
            model=p.spec.model.name,
            version=pkg.manifest.version,
            package_sha256=pkg.sha256,
            package_dir=pkg.dir,
            spec_hash=p.spec.spec_hash,
            image=image,
        )
        p.ledger.start(ReleaseRecord(rel, p.staging.kind, p.production.kind, flow_run_id=run_id(), trigger=trigger))
        return _stage_gate_promote(p, rel, pkg)


def _stage_gate_promote(p: Pipeline, rel: Release, pkg: ModelPackage) -> ReleaseResult:
    logger = get_run_logger()
    report: GateReport | None = None
    try:
        staged = deploy_staging(p.staging, rel, p.spec.timeouts(Stage.STAGING))
        report_dir = p.settings.path("reports", p.service, rel.id)
        report = gate(staged, pkg.dir, p.spec.gate, p.api_key, report_dir, _cost(p), p.gate_runner)
        p.store.publish_report(report_dir, p.service, rel.id)
        if not report.passed:
            raise GateFailed(rel.id, report.violations, report_path=report.html_report)
        live = promote(p.production, rel, p.spec.timeouts(Stage.PRODUCTION), p.ledger, run_id())
    except GateFailed as exc:
        p.ledger.finish(rel.id, Outcome.REJECTED, gate=report.figures() if report else None, error=str(exc))
        raise
    except BaseException as exc:
        p.ledger.finish(
            rel.id, Outcome.FAILED, gate=report.figures() if report else None, error=f"{type(exc).__name__}: {exc}"
        )
        raise
    finally:
        try:
            teardown_stage(p.staging)
        except Exception as exc:  # reported, not hidden: the run's own error stays the one raised
            logger.error("staging could not be torn down: %s; run `slipway teardown --stage staging`", exc)
    p.ledger.finish(rel.id, Outcome.PROMOTED, gate=report.figures())
    return ReleaseResult(rel, live, report)


def _cost(p: Pipeline) -> CostBasis:
    staging, production = p.staging.facts(), p.production.facts()
    return CostBasis(production.usage, price_table(p.spec.costs.prices), staging.instances, production.instances)


def _new_release_id(sha256: str) -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{sha256[:8]}-{secrets.token_hex(2)}"
