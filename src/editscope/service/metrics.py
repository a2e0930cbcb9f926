"""The service's Prometheus metrics, in a registry of their own (no process-wide state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Edits applied, rejected and queued; edit and query latency; refused requests."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.edits_applied = Counter("editscope_edits_applied", "Edits applied by the writer",
                                     registry=self.registry)
        self.edits_rejected = Counter("editscope_edits_rejected", "Edits the editor rejected (or that failed)",
                                      registry=self.registry)
        self.edits_queued = Gauge("editscope_edits_queued", "Edits journaled as pending, waiting for the writer",
                                  registry=self.registry)
        self.edit_seconds = Histogram("editscope_edit_seconds", "Time the writer took to apply one edit",
                                      buckets=LATENCY_BUCKETS, registry=self.registry)
        self.query_seconds = Histogram("editscope_query_seconds", "Time to answer one query (waiting included)",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.requests_refused = Counter("editscope_requests_refused", "Requests answered with a 4xx status",
                                        ["status"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
