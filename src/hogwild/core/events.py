"""What the engine tells its consumers (CLI, driver, eval, bench). Plain data, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TokenEvent:
    """Worker ``worker`` sampled ``token`` in pass ``passes``; ``text`` is the new decoded text."""

    passes: int
    worker: int
    token: int
    text: str


@dataclass(frozen=True)
class HeaderEvent:
    """Text the protocol fed to a worker (its opening or a step header), not sampled."""

    passes: int
    worker: int
    text: str


@dataclass(frozen=True)
class StepEvent:
    """A worker finished step ``step``; it joins the shared history (header included in text)."""

    passes: int
    worker: int
    step: int
    text: str


@dataclass(frozen=True)
class Snapshot:
    passes: int
    workers: list[str]  # everything each worker wrote, in order
    history: list[tuple[int, str]]  # (worker, step text) in completion order
    current: list[tuple[int, str]]  # (worker, unfinished step text)
    generated_tokens: list[int] = field(default_factory=list)
    history_tokens: list[int] = field(default_factory=list)  # tokens of each history step
    current_tokens: list[int] = field(default_factory=list)  # tokens of each unfinished step


@dataclass(frozen=True)
class SnapshotEvent:
    passes: int
    snapshot: Snapshot


@dataclass(frozen=True)
class StopEvent:
    """The run ended: ``reason`` is budget, eos, stop-rule or context."""

    passes: int
    reason: str


Event = TokenEvent | HeaderEvent | StepEvent | SnapshotEvent | StopEvent


@dataclass(frozen=True)
class WorkerStats:
    """One worker's counters (see :class:`RunStats`)."""

    index: int
    step: int  # the step it is writing now (1-based)
    generated_tokens: int  # tokens it sampled (headers not counted)
    tokens_written: int  # everything it wrote, headers included
    tokens_fed: int  # of those, already stored in the cache (the rest is fed next pass)
    done: bool  # it emitted an end-of-turn token


@dataclass(frozen=True)
class RunStats:
    """A read-only summary of a run (``Run.stats()``), for consumers that must not touch
    the engine's mutable state."""

    passes: int
    stop_reason: str | None
    workers: tuple[WorkerStats, ...]
    history_steps: int  # finished steps in the shared history
    tokens_stored: int  # tokens in the shared KV store
    kv_bytes_in_use: int
    kv_bytes_allocated: int
