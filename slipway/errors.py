"""The one error tree of Slipway.

Every error says what went wrong and what to do next (``hint``). Vendor exceptions are mapped to
these at the boundary (in each target module, and in ``targets.containers`` / ``targets.aws`` for
what several share) by their structured codes and chained with ``from``.

    SlipwayError
    ├── ConfigError            the spec, a model file, a credential or a setting is wrong: fix input
    │   └── ModelError         the model cannot be packaged (missing, not a model, fails on samples)
    ├── LedgerError            the release ledger cannot be read or written
    ├── StoreError             the package store cannot be reached, or holds a damaged package
    ├── DeployLocked           another run of the same service holds its lock
    ├── OperationError         an operation on a system outside Slipway failed
    │   ├── TargetError        ... on a deployment target
    │   ├── ImageError         ... building or pushing an image
    │   └── GateError          ... running the gate itself (Locust did not run, left no figures)
    └── GateFailed             the release on staging violated its SLOs or smoke checks
        └── GuardrailRollback  the platform's own gate (SageMaker's alarms) rolled a promotion back

    TransientError             mixed into an OperationError that may pass on retry (throttling, 5xx,
                               timeouts): TransientTargetError, TransientImageError

Only ``TransientError`` is retried by the flow's tasks. An error about a place (a target, the image
step, the gate) carries an ``At``, printed as the message's ``[system operation resource]`` prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class At:
    """Where an error happened: the system (a target kind, ``image``, ``gate``), the operation and
    the resource it acted on."""

    system: str
    operation: str
    resource: str = ""

    def __str__(self) -> str:
        return f"[{self.system} {self.operation}" + (f" {self.resource}]" if self.resource else "]")


class SlipwayError(Exception):
    """Base of every error Slipway raises on purpose."""

    def __init__(self, message: str, *, hint: str = "", at: At | None = None) -> None:
        self.message = f"{at} {message}" if at else message
        super().__init__(self.message)
        self.hint = hint
        self.at = at

    def __str__(self) -> str:
        return f"{self.message}\n  → {self.hint}" if self.hint else self.message


class ConfigError(SlipwayError):
    """The input is wrong: spec, model file, credential or setting. Retrying will not help."""


class ModelError(ConfigError):
    """The model cannot be packaged: it is missing, is not a model, or fails on its samples."""


class LedgerError(SlipwayError):
    """The release ledger cannot be opened, read or written."""


class StoreError(SlipwayError):
    """The package store (``SLIPWAY_STORE_URL``) cannot be reached, or a package in it is damaged."""


class DeployLocked(SlipwayError):
    """Another run of the same service is running."""


class OperationError(SlipwayError):
    """An operation on a system outside Slipway failed; ``at`` names the system, operation and resource."""

    def __init__(self, message: str, *, at: At, hint: str = "") -> None:
        super().__init__(message, hint=hint, at=at)


class TransientError(OperationError):
    """An operation failed in a way that may pass when retried (throttling, 5xx, timeouts)."""


class TargetError(OperationError):
    """A target operation failed."""


class TransientTargetError(TargetError, TransientError):
    """A target operation failed in a way that may pass when retried."""


class ImageError(OperationError):
    """Building or pushing an image failed."""


class TransientImageError(ImageError, TransientError):
    """A push (or a registry call) failed in a way that may pass when retried."""


class GateError(OperationError):
    """The gate could not run (Locust exited with an error, or left no figures): nothing was judged."""


class GateFailed(SlipwayError):
    """The release on staging did not pass the gate. ``violations`` lists each failed check."""

    def __init__(self, release_id: str, violations: Sequence[str], *, report_path: str = "") -> None:
        lines = "\n".join(f"  - {v}" for v in violations)
        hint = "production was left untouched; fix the model or relax the SLOs in the spec's gate section"
        if report_path:
            hint += f" (Locust report: {report_path})"
        super().__init__(f"release {release_id} failed the gate:\n{lines}", hint=hint)
        self.release_id = release_id
        self.violations = list(violations)


class GuardrailRollback(GateFailed):
    """A platform's deployment guardrail rolled the promotion back (a CloudWatch alarm fired during a
    SageMaker blue/green update): the platform's own gate failed, so the release is recorded rejected,
    and production serves what it served before. ``alarms`` names the alarms that fired."""

    def __init__(self, release_id: str, alarms: Sequence[str], detail: str, *, at: At) -> None:
        super().__init__(release_id, [f"alarm {a} fired during the rollout" for a in alarms] or [detail])
        self.message = f"{at} {self.message}\n  ({detail})"
        self.args = (self.message,)
        self.hint = (
            "the platform rolled production back to its previous endpoint config; read the alarm's metric in "
            "CloudWatch, fix the model (or the alarm thresholds in the stage's alarms) and release again"
        )
        self.at = at
        self.alarms = list(alarms)


def is_transient(exc: BaseException | None) -> bool:
    """True for errors worth retrying: the retry condition of every task."""
    return isinstance(exc, TransientError)
