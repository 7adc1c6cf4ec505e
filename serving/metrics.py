"""Request metrics in Prometheus' text exposition format, without prometheus_client.

Recording is a few dict/list operations per request; everything else happens when ``/metrics`` is
scraped. Counters are per process: with ``--workers N`` each scrape sees one worker's numbers
(the ``pid`` label on ``slipway_process_info`` says which).
"""

from __future__ import annotations

import gc
import os
import time
from bisect import bisect_left
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serving.batching import Batcher

# seconds; a 1-row sklearn predict is ~0.1-0.3 ms, so the low buckets matter
BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class Metrics:
    def __init__(self, model_info: dict[str, str], batcher: Batcher | None = None) -> None:
        self.batcher = batcher
        self.requests: dict[tuple[str, int], int] = {}
        self.buckets: dict[str, list[int]] = {}  # path -> per-bucket (non-cumulative) counts, last = +Inf
        self.sums: dict[str, float] = {}
        self.predictions = 0
        self.prediction_errors = 0
        self.model_info = model_info
        self.started = time.time()

    def observe(self, path: str, status: int, seconds: float) -> None:
        key = (path, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        counts = self.buckets.get(path)
        if counts is None:
            counts = self.buckets[path] = [0] * (len(BUCKETS) + 1)
            self.sums[path] = 0.0
        counts[bisect_left(BUCKETS, seconds)] += 1
        self.sums[path] += seconds

    def render(self, ready: bool) -> bytes:
        lines = [
            "# HELP slipway_requests_total HTTP requests answered, by path and status.",
            "# TYPE slipway_requests_total counter",
        ]
        for (path, status), count in sorted(self.requests.items()):
            lines.append(f'slipway_requests_total{{path="{_escape(path)}",status="{status}"}} {count}')
        lines += [
            "# HELP slipway_request_duration_seconds Time from request start to response sent, by path.",
            "# TYPE slipway_request_duration_seconds histogram",
        ]
        for path, counts in sorted(self.buckets.items()):
            label = _escape(path)
            cumulative = 0
            for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else _num(bound)
                lines.append(f'slipway_request_duration_seconds_bucket{{path="{label}",le="{le}"}} {cumulative}')
            lines.append(f'slipway_request_duration_seconds_sum{{path="{label}"}} {_num(self.sums[path])}')
            lines.append(f'slipway_request_duration_seconds_count{{path="{label}"}} {cumulative}')
        lines += self._batching()
        info = ",".join(f'{k}="{_escape(v)}"' for k, v in self.model_info.items())
        lines += [
            "# HELP slipway_predictions_total Rows predicted.",
            "# TYPE slipway_predictions_total counter",
            f"slipway_predictions_total {self.predictions}",
            "# HELP slipway_prediction_errors_total Requests where the model raised on valid input.",
            "# TYPE slipway_prediction_errors_total counter",
            f"slipway_prediction_errors_total {self.prediction_errors}",
            "# HELP slipway_model_info The model this process serves.",
            "# TYPE slipway_model_info gauge",
            f"slipway_model_info{{{info}}} 1",
            "# HELP slipway_ready 1 when the model passed its self-check and the server is not draining.",
            "# TYPE slipway_ready gauge",
            f"slipway_ready {int(ready)}",
            "# HELP slipway_process_info The process that answered this scrape.",
            "# TYPE slipway_process_info gauge",
            f'slipway_process_info{{pid="{os.getpid()}"}} 1',
            "# HELP python_gc_collections_total Garbage collections of each generation in this process.",
            "# TYPE python_gc_collections_total counter",
            *(
                f'python_gc_collections_total{{generation="{g}"}} {stat["collections"]}'
                for g, stat in enumerate(gc.get_stats())
            ),
            "# HELP python_gc_frozen_objects Objects the launcher moved out of the collector's sight after the load.",
            "# TYPE python_gc_frozen_objects gauge",
            f"python_gc_frozen_objects {gc.get_freeze_count()}",
            "# HELP slipway_process_start_time_seconds When the app was created, Unix time.",
            "# TYPE slipway_process_start_time_seconds gauge",
            f"slipway_process_start_time_seconds {_num(self.started)}",
        ]
        return ("\n".join(lines) + "\n").encode()

    def _batching(self) -> list[str]:
        """Requests per model.predict call (a histogram), when batching is on."""
        batcher = self.batcher
        if batcher is None:
            return []
        from serving.batching import SIZE_BUCKETS

        lines = [
            "# HELP slipway_batch_requests Requests answered by one model.predict call (adaptive batching).",
            "# TYPE slipway_batch_requests histogram",
        ]
        cumulative = 0
        for bound, count in zip((*map(str, SIZE_BUCKETS), "+Inf"), batcher.sizes, strict=True):
            cumulative += count
            lines.append(f'slipway_batch_requests_bucket{{le="{bound}"}} {cumulative}')
        lines += [
            f"slipway_batch_requests_sum {batcher.requests}",
            f"slipway_batch_requests_count {cumulative}",
            "# HELP slipway_predict_calls_total model.predict calls made by the batcher.",
            "# TYPE slipway_predict_calls_total counter",
            f"slipway_predict_calls_total {batcher.calls}",
            "# HELP slipway_batch_fallbacks_total Batches whose predict call failed and ran again request by request.",
            "# TYPE slipway_batch_fallbacks_total counter",
            f"slipway_batch_fallbacks_total {batcher.fallbacks}",
        ]
        return lines
