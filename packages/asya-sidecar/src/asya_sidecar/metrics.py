"""Prometheus metrics of one sidecar (its own registry, so several can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    def __init__(self, actor: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"actor": actor}
        self.messages = Counter(
            "asya_sidecar_messages",
            "Messages settled, by outcome",
            ["actor", "outcome"],
            registry=self.registry,
        )
        self.processing = Histogram(
            "asya_sidecar_processing_seconds",
            "Time from delivery to ack",
            ["actor"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800),
        ).labels(**labels)
        self.in_flight = Gauge(
            "asya_sidecar_in_flight", "Messages being processed", ["actor"], registry=self.registry
        ).labels(**labels)
        self.retries = Counter(
            "asya_sidecar_retries", "Retries scheduled", ["actor"], registry=self.registry
        ).labels(**labels)
        self.runtime_errors = Counter(
            "asya_sidecar_runtime_errors",
            "Runtime failures, by error code",
            ["actor", "code"],
            registry=self.registry,
        )
        self.redeliveries = Counter(
            "asya_sidecar_redeliveries",
            "Redelivered messages seen",
            ["actor"],
            registry=self.registry,
        ).labels(**labels)
        self.batch_size = Histogram(
            "asya_sidecar_batch_size",
            "Deliveries per batch sent to a batch handler",
            ["actor"],
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        ).labels(**labels)
        self._actor = actor

    def outcome(self, outcome: str) -> None:
        self.messages.labels(actor=self._actor, outcome=outcome).inc()

    def runtime_error(self, code: str) -> None:
        self.runtime_errors.labels(actor=self._actor, code=code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
