"""What the engine tells its consumers (CLI, server, eval). Plain data, no behaviour."""

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
