"""One module per pipeline step. Each holds the plain step function (testable without Prefect) and
its Prefect task, which retries only transient target errors and returns a typed, immutable result."""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import State

from slipway.errors import is_transient


def retry_transient(task: Any, task_run: Any, state: State[Any]) -> bool:
    """``retry_condition_fn`` of every task: retry ``TransientTargetError`` and nothing else."""
    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return is_transient(exc if isinstance(exc, BaseException) else None)


TASK_OPTIONS: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [2, 5, 15],
    "retry_condition_fn": retry_transient,
}
