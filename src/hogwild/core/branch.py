"""Forced answers from the cache: a branch reads a run's blocks as they were, plus a suffix.

When a budget is reached without an answer, the protocol's "time is up ... \\boxed{" text is
decoded greedily after the transcript. Instead of re-tokenizing and re-prefilling that
transcript in a fresh engine, a :class:`Branch` is an extra reader of the run: its view is
made of the run's existing blocks, frozen at the length they had when the branch started
(caps), followed by a new suffix block. It is decoded in the same batched passes as its run,
which continues untouched, and it is freed when it ends. The exact view is described in
docs/design-decisions.md ("Forced answers from the cache").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequestError
from .attention import QueryGroup

#: The run a branch belongs to (:class:`hogwild.core.engine.Run`; typed loosely so that the
#: engine imports this module and not the reverse).
Run = Any


@dataclass
class Branch:
    """One forced answer being decoded.

    worker:  None reads the team's transcript (prompt, history, every unfinished step closed
             by the script's ``forced_marker``); an index reads only that worker's own text
             (layouts without steps: independent samples, a plain chain of thought).
    stop:    decoded continuation -> finished? (e.g. the box closed).
    """

    worker: int | None
    max_tokens: int
    stop: Callable[[str], bool]
    started_at: int = 0  # the run's pass count when the branch was asked for
    entries: list[tuple[int, int | None]] | None = None  # frozen view (block, cap), no suffix
    block: int = -1  # the suffix block (prompt suffix, then generated tokens)
    pending: list[int] = field(default_factory=list)  # ids to feed next pass
    ids: list[int] = field(default_factory=list)  # generated ids
    text: str = ""  # generated text
    suffix_text: str = ""  # the forced-answer text fed after the transcript
    view_ids: list[int] = field(default_factory=list)  # the transcript it reads, as frozen
    logits: Any = None  # the last logits it read (tests compare them across plans)
    reason: str | None = None  # why it ended: stop, eos, budget, context, cancelled

    @property
    def done(self) -> bool:
        return self.reason is not None


def freeze(run: Run, branch: Branch) -> None:
    """Fix the branch's view at the run's current block lengths and queue its suffix.

    Called by the run's schedule stage after this pass's tokens have their slots, so the
    view holds everything the run's snapshot at this point shows as text."""
    store = run.store
    entries: list[tuple[int, int | None]] = [(b, None) for b in run.prompt_chain]
    script = run.script
    if branch.worker is None:
        entries += [(run.history, store.length(run.history))]
        entries += [(b, store.length(b)) for b in run.history_pending]
        marker = run.constants.get(script.forced_marker) if script.forced_marker else None
        for w in run.workers:
            if w.done or not w.step_ids:
                continue
            entries.append((w.block, trimmed_length(run, w.block)))
            if marker is not None:
                entries.append((marker, None))
    else:
        if run.layout.steps:
            raise InvalidRequestError("a forced answer of one worker needs a layout without steps")
        entries.append((run.workers[branch.worker].block, trimmed_length(run, run.workers[branch.worker].block)))
    for block, cap in entries:
        store.retain(block)
        branch.view_ids += run.ids_of(block)[:cap]
    branch.entries = entries
    last = branch.view_ids[-1:]
    ends_newline = bool(last) and run.decode is not None and run.decode(last).endswith("\n")
    suffix = list(script.forced_suffix(ends_newline))
    if not suffix:
        raise InvalidRequestError("the script gives no forced-answer text")
    branch.suffix_text = run.decode(suffix) if run.decode is not None else ""
    branch.block = store.new_block(len(suffix) + branch.max_tokens + 1)
    branch.pending = suffix


def trimmed_length(run: Run, block: int) -> int:
    """The block's length without its trailing whitespace tokens (the text's ``rstrip``)."""
    ids = run.ids_of(block)
    n = len(ids)
    if run.decode is None:
        return n
    while n > 0 and not run.decode(ids[n - 1 : n]).strip():
        n -= 1
    return n


def group(run: Run, branch: Branch) -> QueryGroup | None:
    """Reserve the branch's pending tokens and describe its rows (None: it would overflow)."""
    store = run.store
    view = [b for b, _ in branch.entries] + [branch.block]
    caps = [c for _, c in branch.entries] + [None]
    lengths = QueryGroup(view, [], [], caps).lengths(store)
    if sum(lengths) + len(branch.pending) > run.max_positions:
        return None
    start = store.length(branch.block)
    store.reserve(branch.block, len(branch.pending))
    locals_ = list(range(start, start + len(branch.pending)))
    return QueryGroup(view, [branch.block] * len(branch.pending), locals_, caps)


def accept(run: Run, branch: Branch, logits: Any, token: int | None = None) -> None:
    """Take the branch's greedy token (``token``, when the caller has read it already); end
    it on a stop id, its rule, or its budget."""
    branch.logits = logits
    if token is None:
        token = int(logits.argmax())
    if token in run.script.stop_ids:
        close(run, branch, "eos")
        return
    branch.ids.append(token)
    branch.text = run.decode(branch.ids) if run.decode is not None else ""
    branch.pending = [token]
    if branch.stop(branch.text):
        close(run, branch, "stop")
    elif len(branch.ids) >= branch.max_tokens:
        close(run, branch, "budget")


def close(run: Run, branch: Branch, reason: str) -> None:
    """End the branch and free what it holds (its suffix block, its hold on the run's)."""
    if branch.done:
        return
    branch.reason = reason
    branch.pending = []
    if branch.entries is not None:
        for block, _ in branch.entries:
            run.store.free(block)
        run.store.free(branch.block)
    run.branches.remove(branch)
