"""The one error tree of Slipway.

Every error says what went wrong and what to do next (``hint``). Vendor exceptions are mapped to
these at the boundary (in each target module) by their structured codes and chained with ``from``.

    SlipwayError
    ├── ConfigError            the spec, a model file, a credential or a setting is wrong: fix input
    │   └── ModelError         the model cannot be packaged (missing, not a model, fails on samples)
    ├── LedgerError            the release ledger cannot be read or written
    ├── DeployLocked           another deploy of the same model holds the lock
    ├── TargetError            a target operation failed (not worth retrying as is)
    │   └── TransientTargetError  a target operation failed in a way that may pass on retry
    └── GateFailed             the release on staging violated its SLOs or smoke checks

Only ``TransientTargetError`` is retried by the flow's tasks.
"""

from __future__ import annotations

from collections.abc import Sequence


class SlipwayError(Exception):
    """Base of every error Slipway raises on purpose."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  → {self.hint}" if self.hint else self.message


class ConfigError(SlipwayError):
    """The input is wrong: spec, model file, credential or setting. Retrying will not help."""


class ModelError(ConfigError):
    """The model cannot be packaged: it is missing, is not a model, or fails on its samples."""


class LedgerError(SlipwayError):
    """The release ledger cannot be opened, read or written."""


class DeployLocked(SlipwayError):
    """Another deploy of the same model is running."""


class TargetError(SlipwayError):
    """A target operation failed.

    Carries the target kind, the operation and the resource it acted on, so that the message
    names them without the caller having to.
    """

    def __init__(self, message: str, *, target: str, operation: str, resource: str = "", hint: str = "") -> None:
        where = f"{target} {operation}" + (f" {resource}" if resource else "")
        super().__init__(f"[{where}] {message}", hint=hint)
        self.target = target
        self.operation = operation
        self.resource = resource


class TransientTargetError(TargetError):
    """A target operation failed in a way that may pass when retried (throttling, 5xx, timeouts)."""


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


def is_transient(exc: BaseException | None) -> bool:
    """True for errors worth retrying: the retry condition of every task."""
    return isinstance(exc, TransientTargetError)
