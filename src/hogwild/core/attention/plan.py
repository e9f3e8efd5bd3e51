"""Who sees what in a pass: query groups, view positions and (row, view entry) pairs.

Every attention plan starts from the same expansion (:func:`pass_pairs`), so the fast plans
and the reference oracle agree on semantics by construction; see docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..cache import KVStore


@dataclass
class QueryGroup:
    """Rows that share one view. ``blocks``/``locals`` say where each row's K/V are stored."""

    view: Sequence[int]  # block ids in view order (a block may repeat, e.g. a marker)
    blocks: Sequence[int]  # per row: the block the row's token is written into
    locals: Sequence[int]  # per row: its local index in that block
    #: per view entry, how many of the block's first tokens the view shows (None: all). A
    #: forced-answer branch reads blocks that keep growing as they were when it started.
    caps: Sequence[int | None] | None = None

    def lengths(self, store: KVStore) -> list[int]:
        """The length each view entry shows (its block's length, or less when capped)."""
        blocks = store.blocks
        if self.caps is None:
            return [blocks[b].length for b in self.view]
        return [blocks[b].length if c is None else min(c, blocks[b].length) for b, c in zip(self.view, self.caps)]


def view_offsets(lengths: Sequence[int]) -> list[int]:
    """Offsets of the view entries, from the lengths they show."""
    offsets, total = [], 0
    for n in lengths:
        offsets.append(total)
        total += n
    return offsets


def row_position(view: Sequence[int], offsets: Sequence[int], block_id: int, local: int) -> int:
    """View position of a row: offset of its block's LAST occurrence in the view + local index.

    ``offsets`` are the view's block offsets (:func:`view_offsets`), computed once per group."""
    for i in range(len(view) - 1, -1, -1):
        if view[i] == block_id:
            return offsets[i] + local
    raise ValueError(f"block {block_id} is not in the view it is written through")


@dataclass
class PassPairs:
    """Who sees what in one pass, in row order: the rows' store slots and local positions,
    and per row its (block, query rotation, visible keys) for every view entry it can see."""

    slots: list[int]
    k_locals: list[int]
    pairs: list[tuple[int, int, int, int]]  # (row, block, delta, visible keys), row-major
    num_rows: int
    row_start: list[int]  # [num_rows + 1]: each row's first pair, then len(pairs)


def pass_pairs(store: KVStore, groups: Sequence[QueryGroup]) -> PassPairs:
    """Expand the groups into (row, view entry) pairs. An entry is seen up to the row's own
    position: whole blocks before it, the row's block up to itself, nothing after it. A block
    that repeats in a view (a marker) yields one pair per occurrence, each with its rotation."""
    slots, k_locals, pairs, row_start = [], [], [], []
    add = pairs.append
    row = 0
    for g in groups:
        lengths = g.lengths(store)
        offsets = view_offsets(lengths)
        entries = list(zip(g.view, offsets, lengths))
        for block_id, local in zip(g.blocks, g.locals):
            slots.append(store.blocks[block_id].base + local)
            k_locals.append(local)
            p = row_position(g.view, offsets, block_id, local)
            row_start.append(len(pairs))
            for b, off, n in entries:
                if n and off <= p:
                    d = p - off
                    add((row, b, d, n if n <= d else d + 1))
            row += 1
    row_start.append(len(pairs))
    return PassPairs(slots, k_locals, pairs, row, row_start)
