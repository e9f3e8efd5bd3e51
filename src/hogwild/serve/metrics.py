"""Prometheus metrics of one server (its own registry, so several apps can live in a process).

Counters and histograms are updated where things happen (the scheduler's passes, each run's
tokens, each request); gauges that describe the present (runs, KV bytes, rates over the last
:data:`RATE_WINDOW_S` seconds) are read when ``/metrics`` is scraped.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

RATE_WINDOW_S = 10.0
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


class Rate:
    """Events per second over a sliding window (thread-safe)."""

    def __init__(self, window_s: float = RATE_WINDOW_S):
        self.window_s = window_s
        self.marks: deque[tuple[float, float]] = deque()
        self.lock = threading.Lock()

    def add(self, amount: float = 1.0) -> None:
        now = time.monotonic()
        with self.lock:
            self.marks.append((now, amount))
            self._trim(now)

    def per_second(self) -> float:
        now = time.monotonic()
        with self.lock:
            self._trim(now)
            return sum(a for _, a in self.marks) / self.window_s

    def _trim(self, now: float) -> None:
        while self.marks and self.marks[0][0] < now - self.window_s:
            self.marks.popleft()


class Metrics:
    """Every metric the server exports (names start with ``hogwild_``)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.pass_rate, self.token_rate = Rate(), Rate()
        self.passes = Counter("hogwild_passes", "Decode passes of the shared batch.", registry=r)
        self.prefill_chunks = Counter("hogwild_prefill_chunks", "Prefill chunks run by the batch.", registry=r)
        self.rows = Histogram("hogwild_rows_per_pass", "Rows (new tokens of all runs) per decode pass.",
                              buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.pass_seconds = Histogram("hogwild_pass_seconds", "Duration of one scheduler step.",
                                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5), registry=r)
        self.tokens = Counter("hogwild_generated_tokens", "Tokens sampled by workers (headers not counted).",
                              registry=r)
        self.requests = Counter("hogwild_requests", "Requests answered, by endpoint and status.",
                                ["endpoint", "status"], registry=r)
        self.errors = Counter("hogwild_errors", "Errors answered, by kind (the error code).", ["kind"], registry=r)
        self.runs_started = Counter("hogwild_runs_started", "Runs submitted to the batch.", registry=r)
        self.runs_finished = Counter("hogwild_runs_finished", "Runs ended, by how.", ["how"], registry=r)
        self.latency = Histogram("hogwild_request_seconds", "Time from request to its last byte.",
                                 ["endpoint", "stream"], buckets=LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("hogwild_time_to_first_token_seconds",
                                     "Time from request to the first generated token.", ["endpoint"],
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("hogwild_queue_seconds", "Time a request waited for a slot in the batch.",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.running = Gauge("hogwild_runs_running", "Runs in the batch now (prefilling or decoding).", registry=r)
        self.queued = Gauge("hogwild_runs_queued", "Requests waiting for a slot in the batch.", registry=r)
        self.passes_per_s = Gauge("hogwild_passes_per_second",
                                  f"Decode passes per second over the last {RATE_WINDOW_S:g} s.", registry=r)
        self.tokens_per_s = Gauge("hogwild_tokens_per_second",
                                  f"Generated tokens per second over the last {RATE_WINDOW_S:g} s.", registry=r)
        self.kv_in_use = Gauge("hogwild_kv_bytes_in_use", "Bytes of the shared KV pool holding tokens.", registry=r)
        self.kv_allocated = Gauge("hogwild_kv_bytes_allocated", "Bytes allocated for the shared KV pool.",
                                  registry=r)
        self.batch_runs = Gauge("hogwild_batch_runs", "Runs the shared batch holds now (their blocks live).",
                                registry=r)
        self.kv_tokens = Gauge("hogwild_kv_tokens_in_use", "Tokens stored in the shared KV pool.", registry=r)
        self.ready = Gauge("hogwild_ready", "1 once the model is loaded and the batch runs.", registry=r)
        self.passes_per_s.set_function(self.pass_rate.per_second)
        self.tokens_per_s.set_function(self.token_rate.per_second)

    def on_step(self, seconds: float, rows: int) -> None:
        """A scheduler step: a decode pass of ``rows`` rows, or (rows == 0) a prefill chunk."""
        self.pass_seconds.observe(seconds)
        if rows > 0:
            self.passes.inc()
            self.pass_rate.add()
            self.rows.observe(rows)
        else:
            self.prefill_chunks.inc()

    def on_tokens(self, count: int) -> None:
        self.tokens.inc(count)
        self.token_rate.add(count)

    def watch(self, running: Callable[[], int], queued: Callable[[], int]) -> None:
        """Read the admission counts at scrape time."""
        self.running.set_function(lambda: float(running()))
        self.queued.set_function(lambda: float(queued()))

    def set_load(self, load: dict | None) -> None:
        """The scheduler's load (read off the event loop, once per scrape)."""
        load = load or {}
        self.kv_in_use.set(load.get("kv_bytes_in_use", 0))
        self.kv_allocated.set(load.get("kv_bytes_allocated", 0))
        self.kv_tokens.set(load.get("kv_tokens_in_use", 0))
        self.batch_runs.set(load.get("runs", 0))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
