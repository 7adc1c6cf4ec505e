"""One module per pipeline step. Each holds the plain step function (testable without Prefect) and
its Prefect task, which retries only transient target errors and returns a typed, immutable result."""

from __future__ import annotations

import logging
from typing import Any

from prefect import get_run_logger
from prefect.client.schemas.objects import State
from prefect.exceptions import MissingContextError

from slipway.errors import is_transient

_log = logging.getLogger("slipway")


def retry_transient(task: Any, task_run: Any, state: State[Any]) -> bool:
    """``retry_condition_fn`` of every task: retry ``TransientError`` and nothing else."""
    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return is_transient(exc if isinstance(exc, BaseException) else None)


TASK_OPTIONS: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [2, 5, 15],
    "retry_condition_fn": retry_transient,
}


def log_progress(message: str) -> None:
    """Report a long operation's progress: to the run's log inside a flow or task, else to ``logging``."""
    try:
        get_run_logger().info(message)
    except MissingContextError:
        _log.info(message)
