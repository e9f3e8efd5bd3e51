"""The engine's mutable per-worker state (consumers read ``Run.stats()`` and snapshots)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .textstream import IncrementalDecoder


@dataclass
class WorkerState:
    """Engine-internal, mutable state of one worker. Consumers read :meth:`Run.stats`,
    :meth:`Run.worker_text` and snapshots instead."""

    index: int
    block: int
    decoder: IncrementalDecoder
    step: int = 1
    step_ids: list[int] = field(default_factory=list)  # current step, header included
    generated: list[int] = field(default_factory=list)  # current step, generated part only
    pending: list[tuple[int, list[int]]] = field(default_factory=list)  # (block, ids) to feed
    all_ids: list[int] = field(default_factory=list)  # everything this worker wrote, in order
    generated_count: int = 0
    done: bool = False
