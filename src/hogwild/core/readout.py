"""What a run shows its consumers: views, snapshots, texts and counters (read-only).

A mixin of :class:`hogwild.core.engine.Run`, kept apart so that the engine module holds the
pass loop only; nothing here changes the run.
"""

from __future__ import annotations

from typing import Any

from .events import RunStats, Snapshot, WorkerStats
from .layouts import LayoutState


class RunReadout:
    """Read-only accessors of a run (it uses the run's blocks, workers and store)."""

    layout: Any
    store: Any
    model: Any
    workers: list
    prefixes: list
    block_ids: dict[int, list[int]]

    def ids_of(self, block: int) -> list[int]:
        """The token ids stored in one of this run's blocks (or its shared prefixes)."""
        if block in self.block_ids:
            return self.block_ids[block]
        for p in self.prefixes:
            if p.block == block:
                return list(p.ids[p.start :])
        raise KeyError(f"block {block} is not this run's")

    @property
    def num_workers(self) -> int:
        return len(self.workers)

    def layout_state(self) -> LayoutState:
        return LayoutState(
            prompt=self.prompt,
            history=[self.history, *self.history_pending],
            current=[w.block for w in self.workers],
            constants=self.constants,
            done=[w.done for w in self.workers],
        )

    def view(self, worker: int) -> list[int]:
        """Block ids of a worker's view, in order."""
        return self._expand(self.layout.build(self.layout_state(), worker))

    def views(self) -> list[list[int]]:
        """Every worker's view (the prompt block expanded to the prompt's blocks)."""
        return [self._expand(v) for v in self.layout.views(self.layout_state())]

    def _expand(self, view: list[int]) -> list[int]:
        if not self.prefixes:
            return view
        out: list[int] = []
        for b in view:
            out += self.prompt_chain if b == self.prompt else [b]
        return out

    def view_token_ids(self, worker: int) -> list[int]:
        """The token ids a worker attends to, in view order (for checks and debugging)."""
        return [t for b in self.view(worker) for t in self.ids_of(b)]

    def view_length(self, worker: int) -> int:
        return sum(self.store.length(b) for b in self.view(worker))

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    def snapshot(self) -> Snapshot:
        text = self._text
        return Snapshot(
            passes=self.passes,
            workers=[text(w.all_ids) for w in self.workers],
            history=[(w, text(ids)) for w, ids in self.history_order],
            current=[(w.index, text(w.step_ids)) for w in self.workers if w.step_ids and not w.done],
            generated_tokens=[w.generated_count for w in self.workers],
            history_tokens=[len(ids) for _, ids in self.history_order],
            current_tokens=[len(w.step_ids) for w in self.workers if w.step_ids and not w.done],
        )

    def worker_ids(self, worker: int) -> tuple[int, ...]:
        """Every token id ``worker`` has written so far (headers included), in order."""
        return tuple(self.workers[worker].all_ids)

    def worker_text(self, worker: int) -> str:
        """Everything ``worker`` has written so far, decoded."""
        return self._text(self.workers[worker].all_ids)

    def stats(self) -> RunStats:
        """A read-only summary of the run's state, for consumers (CLI, eval, bench)."""
        stored = self.tokens_stored()
        return RunStats(
            passes=self.passes,
            stop_reason=self.stop_reason,
            workers=tuple(
                WorkerStats(w.index, w.step, w.generated_count, len(w.all_ids),
                            len(w.all_ids) - sum(len(t) for _, t in w.pending), w.done)
                for w in self.workers
            ),
            history_steps=len(self.history_order),
            tokens_stored=stored,
            kv_bytes_in_use=self.kv_bytes_stored(),
            kv_bytes_allocated=self.store.bytes_allocated(),
        )

    def kv_bytes_stored(self) -> int:
        """K and V bytes of :meth:`tokens_stored` (int8 blocks at their own size)."""
        store = self.store
        blocks = list(self.block_ids) + [p.block for p in self.prefixes]
        return sum(store.length(b) * store.bytes_per_token(store.blocks[b].compact) for b in blocks)

    def tokens_stored(self) -> int:
        """Tokens of this run in the pool: its own blocks and its shared prefix."""
        own = sum(self.store.length(b) for b in self.block_ids)
        return own + sum(self.store.length(p.block) for p in self.prefixes)
