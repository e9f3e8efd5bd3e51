"""No repeated n-grams across a run's steps: the decoding side of the protocol's loop rule.

Small models loop by copying: after "**Bob [2]:**" the model finds "**Bob [1]:**" a few
hundred tokens back and copies what followed it, step after step (an induction copy; the
protocol's redirect cannot stop it, since the model then copies the text that followed the
previous redirect). :class:`NgramBan` breaks the copy where it happens: a worker may not
write a token that would complete an ``n``-gram of token ids already present in any step of
its run (finished or being written, any worker, fed headers included), the rule of
``no_repeat_ngram_size`` in common generation libraries, applied over the team's shared text
instead of one sequence. n-grams never span a step boundary, and the prompt is not indexed,
so restating the problem stays possible.

The ban depends only on the run's own tokens, so it keeps every batch invariance property of
the engine (a run's tokens do not depend on which runs share its passes). Greedy decoding
reads each row's argmax once per model call; only a row whose argmax is banned is read
again, with the banned ids masked.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .sampling import greedy_ids


class NgramBan:
    """The n-grams written so far in a run's steps, as (n-1 tokens) -> tokens that followed."""

    def __init__(self, n: int):
        if n < 2:
            raise ValueError(f"no-repeat n-grams need n >= 2 (got {n})")
        self.n = n
        self.follow: dict[tuple[int, ...], set[int]] = {}

    def add(self, step: Sequence[int], start: int) -> None:
        """Index the n-grams of ``step`` (one step's ids) that end at ``start`` or later."""
        k = self.n - 1
        for i in range(max(start, k), len(step)):
            self.follow.setdefault(tuple(step[i - k : i]), set()).add(step[i])

    def banned(self, step: Sequence[int]) -> set[int]:
        """Tokens that may not come next in ``step`` (they would repeat an n-gram)."""
        k = self.n - 1
        if len(step) < k:
            return set()
        return self.follow.get(tuple(step[len(step) - k :]), set())

    def apply(self, logits: torch.Tensor, steps: Sequence[Sequence[int]], greedy: Sequence[int] | None,
              sampled: bool) -> tuple[torch.Tensor, list[int] | None]:
        """The ban on one pass's rows (``steps``: each row's current step ids): for sampling,
        the logits masked; for greedy decoding, each row's choice (``greedy``: the argmax
        already read, or None to read it here)."""
        if sampled:
            return self.mask(logits, steps), None if greedy is None else list(greedy)
        picks = list(greedy) if greedy is not None else greedy_ids(logits)
        return logits, self.fix_greedy(logits, steps, picks)

    def mask(self, logits: torch.Tensor, steps: Sequence[Sequence[int]]) -> torch.Tensor:
        """``logits`` [rows, vocab] with each row's banned tokens at -inf (a copy, or the
        same tensor when nothing is banned). A row whose every token is banned is left as it
        is rather than emptied."""
        out = logits
        for row, step in enumerate(steps):
            ban = self.banned(step)
            if ban and len(ban) < logits.shape[-1]:
                if out is logits:
                    out = logits.clone()
                out[row, sorted(ban)] = float("-inf")
        return out

    def fix_greedy(self, logits: torch.Tensor, steps: Sequence[Sequence[int]], greedy: Sequence[int]) -> list[int]:
        """Each row's greedy token with the ban applied: its argmax when that is allowed,
        else the argmax of the row with its banned tokens masked."""
        out = list(greedy)
        for row, step in enumerate(steps):
            ban = self.banned(step)
            if out[row] in ban and len(ban) < logits.shape[-1]:
                masked = logits[row].clone()
                masked[sorted(ban)] = float("-inf")
                out[row] = int(masked.argmax())
        return out
