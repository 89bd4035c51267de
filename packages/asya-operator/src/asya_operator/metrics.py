"""The operator's Prometheus metrics, served by the probe server at ``GET /metrics``.

- ``asya_operator_reconciles_total{result="ok"|"error"}``: reconciles finished (counter);
- ``asya_operator_reconcile_errors_total{error=<exception class>}``: reconciles that raised;
- ``asya_operator_reconcile_duration_seconds``: the time of one reconcile (histogram);
- ``asya_operator_workqueue_depth``: keys waiting for a worker (gauge).

Each :class:`OperatorMetrics` has its own registry, so two operators in one process (tests)
count apart.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "OperatorMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "asya_operator_reconciles",
            "Reconciles finished, by result.",
            ["result"],
            registry=self.registry,
        )
        self.errors = Counter(
            "asya_operator_reconcile_errors",
            "Reconciles that raised, by exception class.",
            ["error"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "asya_operator_reconcile_duration_seconds",
            "Seconds one reconcile took.",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.depth = Gauge(
            "asya_operator_workqueue_depth",
            "Keys waiting in the work queue for a worker.",
            registry=self.registry,
        )
        for result in ("ok", "error"):
            self.reconciles.labels(result)  # both series exist from the start, at 0

    def observe(self, seconds: float, error: BaseException | None) -> None:
        """Count one reconcile that took ``seconds`` and raised ``error`` (or nothing)."""
        self.duration.observe(seconds)
        self.reconciles.labels("ok" if error is None else "error").inc()
        if error is not None:
            self.errors.labels(type(error).__name__).inc()

    def track_depth(self, depth: Callable[[], int]) -> None:
        self.depth.set_function(lambda: float(depth()))

    def render(self) -> bytes:
        return generate_latest(self.registry)
