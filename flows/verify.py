"""The production check: re-run the gate's smoke phase against what production serves, and record it.

Every golden sample of the live release is sent to the production endpoint and each prediction
compared (``SmokeUser``, as in the gate). The result is a markdown artifact (key
``verify-<service>``) and a JSON file under ``<state>/reports/<service>/verify/``; a failed check
fails the run (``GateFailed``), so the Prefect UI and automations see it. Scheduled in
``prefect.yaml`` (deployment ``verify``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.pipeline import open_pipeline
from slipway.errors import ConfigError, GateFailed
from slipway.release import Stage, now
from tasks.gate import gate_env, run_smoke


@dataclass(frozen=True)
class Verification:
    service: str
    release_id: str
    version: str
    endpoint: str
    failures: list[str]
    at: str

    @property
    def passed(self) -> bool:
        return not self.failures


@flow(name="verify production", log_prints=True)
def verify(spec_path: str) -> Verification:
    """Check that production answers every golden sample of its live release correctly.

    Args:
        spec_path: Path of the release spec (slipway.yaml) on the machine that runs the flow.
    """
    p = open_pipeline(spec_path)
    live = p.ledger.live(p.service, Stage.PRODUCTION)
    endpoint = p.production.endpoint()
    if live is None or endpoint is None:
        raise ConfigError(
            f"production of {p.service!r} serves nothing to verify", hint="deploy a release first (slipway deploy)"
        )
    release = live.release
    report_dir = p.settings.path("reports", p.service, "verify", f"{datetime.now(UTC):%Y%m%d-%H%M%S}")
    report_dir.mkdir(parents=True, exist_ok=True)
    package_dir = p.store.fetch_package(release.package_dir, release.id)  # its golden samples
    failures = run_smoke(endpoint.url, gate_env(endpoint, package_dir, p.api_key), report_dir)
    result = Verification(p.service, release.id, release.version, endpoint.url, failures, now())
    (report_dir / "verification.json").write_text(json.dumps(asdict(result), indent=2))
    create_markdown_artifact(
        key=f"verify-{p.service}",
        markdown=f"### Production check of `{p.service}`: {'passed' if result.passed else 'FAILED'}\n\n"
        f"release `{release.id}` (version {release.version}) at {endpoint.url}, {result.at}\n\n"
        + ("every golden sample answered correctly" if result.passed else "\n".join(f"- {f}" for f in result.failures)),
        description=f"smoke check of production, release {release.id}",
    )
    if not result.passed:
        raise GateFailed(release.id, [f"production smoke: {f}" for f in result.failures], report_path=str(report_dir))
    return result
