"""The server's Prometheus metrics (prometheus_client), one registry per app so that several apps
in one process (tests) count apart."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Requests per model batch and texts per model batch: powers of two up to the largest batch.
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sbert_requests", "HTTP requests answered, by route and status code.", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "sbert_request_duration_seconds",
            "Time from a request's arrival to its answer, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "sbert_batch_requests",
            "Requests answered together by one model/index call, by kind (embeddings, search).",
            ["kind"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batch_texts = Histogram(
            "sbert_batch_texts",
            "Texts (inputs or queries) in one model/index call, by kind.",
            ["kind"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.rows = Gauge("sbert_store_rows", "Rows in the store state being served.", registry=r)
        self.generation = Gauge(
            "sbert_store_generation", "Store states served since start-up (1, then +1 per reload).", registry=r
        )
        self.reloads = Counter(
            "sbert_store_reloads", "Attempts to follow a change of the store, by result.", ["result"], registry=r
        )
        self.queued = Gauge("sbert_queued_requests", "Requests waiting for the model.", registry=r)

    def observe_batch(self, kind: str, requests: int, texts: int) -> None:
        self.batch_requests.labels(kind).observe(requests)
        self.batch_texts.labels(kind).observe(texts)

    def render(self) -> bytes:
        return generate_latest(self.registry)
