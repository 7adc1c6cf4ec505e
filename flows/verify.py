"""The production check: re-run the gate's smoke phase against what production serves, and record it.

Every golden sample of the live release is sent to the production endpoint and each prediction
compared (``SmokeUser``, as in the gate). The result is a markdown artifact (key
``verify-<model>``) and a JSON file under ``<state>/reports/<model>/verify/``; a failed check
fails the run (``GateFailed``), so the Prefect UI and automations see it. Scheduled in
``prefect.yaml`` (deployment ``verify``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from slipway.errors import ConfigError, GateFailed
from slipway.ledger import now
from slipway.pipeline import open_pipeline
from targets.base import Stage
from tasks.gate import run_smoke as smoke


@dataclass(frozen=True)
class Verification:
    model: str
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
    live = p.ledger.live(p.model, Stage.PRODUCTION.value)
    endpoint = p.production.endpoint()
    if live is None or endpoint is None:
        raise ConfigError(
            f"production of {p.model!r} serves nothing to verify", hint="deploy a release first (slipway deploy)"
        )
    report_dir = p.settings.path("reports", p.model, "verify", f"{datetime.now(UTC):%Y%m%d-%H%M%S}")
    report_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "SLIPWAY_API_KEY"}
    env |= {"SLIPWAY_GATE_PACKAGE": live.package_dir, "SLIPWAY_GATE_BATCH": "1"}
    if p.api_key is not None:
        env["SLIPWAY_API_KEY"] = p.api_key.get_secret_value()
    result = Verification(p.model, live.id, live.version, endpoint.url, smoke(endpoint.url, env, report_dir), now())
    (report_dir / "verification.json").write_text(json.dumps(asdict(result), indent=2))
    create_markdown_artifact(
        key=f"verify-{p.model}",
        markdown=f"### Production check of `{p.model}`: {'passed' if result.passed else 'FAILED'}\n\n"
        f"release `{live.id}` (version {live.version}) at {endpoint.url}, {result.at}\n\n"
        + ("every golden sample answered correctly" if result.passed else "\n".join(f"- {f}" for f in result.failures)),
        description=f"smoke check of production, release {live.id}",
    )
    if not result.passed:
        raise GateFailed(live.id, [f"production smoke: {f}" for f in result.failures], report_path=str(report_dir))
    return result
