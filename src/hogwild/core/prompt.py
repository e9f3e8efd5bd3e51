"""How a run stores its prompt: shared prefixes from the batch's cache, then chunked prefill.

The prompt is stored as [shared prefixes (read-only blocks of the batch, maybe cached)] +
the rest. The split depends only on the script (``Script.shared_prefix``), so the prompt is
computed the same way whether a prefix came from the cache or not; each chunk is a model
call of its own, of at most ``Batch.prefill_tokens`` tokens, never across a prefix boundary.
"""

from __future__ import annotations

from typing import Any

from .attention import QueryGroup
from .batch import Prefix, prefix_ends


class PromptStorage:
    """The prompt part of :class:`hogwild.core.engine.Run` (a mixin: it uses the run's
    ``batch``, ``store``, ``script`` and ``_new_block``/``_reserve``)."""

    batch: Any
    store: Any
    script: Any
    prefixes: list[Prefix]
    prompt: int

    def _init_prompt(self, script: Any) -> None:
        ends = prefix_ends(script.shared_prefix, len(script.prompt_ids))
        self.prefixes = [
            self.batch.acquire_prefix(self, script.prompt_ids[:k], start) for start, k in zip([0, *ends], ends)]
        k = ends[-1] if ends else 0
        self._prefilled_upto = k  # prompt tokens stored so far (shared prefixes count once ready)
        self.prompt = self._new_block(len(script.prompt_ids) - k, compact=True)

    @property
    def prompt_chain(self) -> list[int]:
        """The blocks the prompt is stored in, in order (shared prefixes first)."""
        return [p.block for p in self.prefixes] + [self.prompt]

    @property
    def prefilled(self) -> bool:
        """Is everything but the last prompt token stored (the run can make pass 1)?"""
        return self._prefilled_upto >= len(self.script.prompt_ids) - 1 and all(p.ready for p in self.prefixes)

    def prefill(self) -> None:
        """Store the whole prompt now (all chunks; a shared prefix another run is still
        computing is finished first). Holds the batch's lock: the pool is shared."""
        with self.batch.lock:
            while not self.prefilled:
                if not self._prefill_chunk(self.batch.prefill_tokens):
                    owner = next(p.owner for p in self.prefixes if not p.ready)
                    owner._prefill_chunk(self.batch.prefill_tokens)  # finish it for both

    def _prefill_chunk(self, limit: int) -> bool:
        """Store the next chunk of the prompt (up to ``limit`` tokens, never across a prefix
        boundary) in a model call of its own. Returns False when the run must wait for a
        prefix another run is computing."""
        chain, start = self.prompt_chain, 0
        for i, prefix in enumerate(self.prefixes):
            if not prefix.ready:
                if prefix.owner is None:  # its first owner left before finishing it
                    prefix.owner = self
                if prefix.owner is not self:
                    return False
                done = self.store.length(prefix.block)
                chunk = list(prefix.ids[prefix.start + done : prefix.start + done + limit])
                self.store.reserve(prefix.block, len(chunk))
                self._prefill_forward(chunk, chain[: i + 1], done)
                if prefix.start + done + len(chunk) == len(prefix.ids):
                    prefix.owner, prefix.ready = None, True
                return True
            start = len(prefix.ids)
        ids, at = self.script.prompt_ids, self._prefilled_upto
        chunk = list(ids[at : min(at + limit, len(ids) - 1)])
        if chunk:
            self._reserve(self.prompt, chunk)
            self._prefill_forward(chunk, chain, at - start)
        self._prefilled_upto = at + len(chunk)
        return True

    def _prefill_forward(self, chunk: list[int], view: list[int], first_local: int) -> None:
        """Prefill rows into the last block of ``view``, from local index ``first_local``."""
        group = QueryGroup(view, [view[-1]] * len(chunk), list(range(first_local, first_local + len(chunk))))
        self.batch.forward(chunk, [group], [len(chunk) - 1])
