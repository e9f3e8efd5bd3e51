"""Attention over views of the shared store.

A forward pass carries rows (new tokens) grouped by the view they attend through. For each
row and each block of its view, the *query* is rotated by (row position - block offset) and
scored against the block's stored keys; per-block softmaxes are merged with log-sum-exp
(DESIGN.md §4). Everything that depends only on the pass (which rows see which blocks, the
rotation angles, the masks) is computed once in :class:`PassLayout` and reused by every layer.

:class:`ReferencePlan` is the deliberately simple oracle: it re-rotates every key to its view
position, concatenates the view and runs dense masked attention, one row at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .cache import KVStore
from .models.rope import Rope, rotate


@dataclass
class QueryGroup:
    """Rows that share one view. ``blocks``/``locals`` say where each row's K/V are stored."""

    view: Sequence[int]  # block ids in view order (a block may repeat, e.g. a marker)
    blocks: Sequence[int]  # per row: the block the row's token is written into
    locals: Sequence[int]  # per row: its local index in that block


def view_offsets(store: KVStore, view: Sequence[int]) -> list[int]:
    offsets, total = [], 0
    for block_id in view:
        offsets.append(total)
        total += store.length(block_id)
    return offsets


def row_position(store: KVStore, view: Sequence[int], block_id: int, local: int) -> int:
    """View position of a row: offset of its block's LAST occurrence in the view + local index."""
    offsets = view_offsets(store, view)
    for i in range(len(view) - 1, -1, -1):
        if view[i] == block_id:
            return offsets[i] + local
    raise ValueError(f"block {block_id} is not in the view it is written through")


class PassLayout:
    """Per-pass bookkeeping shared by all layers. Built after slots are reserved."""

    def __init__(self, store: KVStore, rope: Rope, groups: Sequence[QueryGroup]):
        device = store.device
        self.store = store
        slots, k_locals, pair_rows, deltas = [], [], [], []
        per_block: dict[int, list[tuple[int, int, bool]]] = {}  # block -> [(row, delta, partial)]
        row = 0
        for g in groups:
            offsets = view_offsets(store, g.view)
            for block_id, local in zip(g.blocks, g.locals):
                slots.extend(store.slot_range(block_id, local, 1))
                k_locals.append(local)
                p = row_position(store, g.view, block_id, local)
                for b, off in zip(g.view, offsets):
                    n = store.length(b)
                    if n == 0 or off > p:
                        continue
                    per_block.setdefault(b, []).append((row, p - off, off + n - 1 > p))
                row += 1
        self.num_rows = row
        self.slots = torch.tensor(slots, dtype=torch.long, device=device)
        self.k_cos, self.k_sin = rope.cos_sin(torch.tensor(k_locals, device=device))
        # pairs sorted by block: each block's pairs form one contiguous slice
        self.segments: list[tuple[int, int, int, torch.Tensor | None]] = []
        for b, pairs in per_block.items():
            start = len(pair_rows)
            mask = None
            if any(partial for _, _, partial in pairs):
                local_idx = torch.arange(store.length(b), device=device)
                limits = torch.tensor([d for _, d, _ in pairs], device=device)
                mask = local_idx[None, :] <= limits[:, None]  # [pairs, len] True = visible
            for r, d, _ in pairs:
                pair_rows.append(r)
                deltas.append(d)
            self.segments.append((b, start, len(pair_rows), mask))
        self.pair_rows = torch.tensor(pair_rows, dtype=torch.long, device=device)
        self.q_cos, self.q_sin = rope.cos_sin(torch.tensor(deltas, device=device))
        # one pair per row, in row order: no merge needed (e.g. single-block prefill)
        self.trivial_merge = len(pair_rows) == row and pair_rows == list(range(row))


class FastPlan:
    """The product path: per-block query rotation, no key re-rotation, log-sum-exp merge."""

    def __init__(self, store: KVStore, rope: Rope, groups: Sequence[QueryGroup], scale: float | None = None):
        self.store = store
        self.layout = PassLayout(store, rope, groups)
        self.scale = scale if scale is not None else 1.0 / math.sqrt(store.config.head_dim)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        lay, store = self.layout, self.store
        store.write(layer, lay.slots, rotate(k, lay.k_cos, lay.k_sin), v)
        heads, d = q.shape[1], q.shape[2]
        kv_heads = store.config.num_kv_heads
        groups = heads // kv_heads
        qp = rotate(q.index_select(0, lay.pair_rows), lay.q_cos, lay.q_sin)  # [P, H, d]
        outs, lses = [], []
        for block_id, start, end, mask in lay.segments:
            n = end - start
            qb = qp[start:end].view(n, kv_heads, groups, d).permute(1, 0, 2, 3).reshape(kv_heads, n * groups, d)
            scores = torch.matmul(qb, store.keys(layer, block_id).transpose(1, 2)).float() * self.scale
            if mask is not None:
                scores = scores.view(kv_heads, n, groups, -1)
                scores = scores.masked_fill(~mask[None, :, None, :], float("-inf")).view(kv_heads, n * groups, -1)
            m = scores.amax(-1, keepdim=True)
            p = torch.exp(scores - m)
            denom = p.sum(-1, keepdim=True)
            o = torch.matmul(p.to(q.dtype), store.values(layer, block_id)).float() / denom
            outs.append(o.view(kv_heads, n, groups, d).permute(1, 0, 2, 3).reshape(n, heads, d))
            lses.append((m + denom.log()).view(kv_heads, n, groups).permute(1, 0, 2).reshape(n, heads))
        if len(outs) == 1 and lay.trivial_merge:
            return outs[0].to(q.dtype)
        out = torch.cat(outs)  # [P, H, d], rows in segment order
        lse = torch.cat(lses)  # [P, H]
        rows = lay.pair_rows
        best = torch.full((lay.num_rows, heads), float("-inf"), device=q.device)
        best = best.scatter_reduce(0, rows[:, None].expand(-1, heads), lse, reduce="amax")
        w = torch.exp(lse - best.index_select(0, rows))  # [P, H]
        den = torch.zeros((lay.num_rows, heads), device=q.device).index_add_(0, rows, w)
        num = torch.zeros((lay.num_rows, heads, d), device=q.device).index_add_(0, rows, out * w[..., None])
        return (num / den[..., None]).to(q.dtype)


class ReferencePlan:
    """Oracle: rebuild each row's whole key sequence by re-rotating keys, dense masked attention."""

    def __init__(self, store: KVStore, rope: Rope, groups: Sequence[QueryGroup], scale: float | None = None):
        self.store, self.rope, self.groups = store, rope, list(groups)
        self.layout = PassLayout(store, rope, groups)  # only for slots and key angles
        self.scale = scale if scale is not None else 1.0 / math.sqrt(store.config.head_dim)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        store, rope = self.store, self.rope
        store.write(layer, self.layout.slots, rotate(k, self.layout.k_cos, self.layout.k_sin), v)
        groups = q.shape[1] // store.config.num_kv_heads
        out = torch.empty_like(q)
        row = 0
        for g in self.groups:
            keys, values = [], []
            for block_id, off in zip(g.view, view_offsets(store, g.view)):
                n = store.length(block_id)
                stored = store.keys(layer, block_id).transpose(0, 1)  # [n, kv_heads, d] at local 0..n-1
                cos, sin = rope.cos_sin(torch.full((n,), off, device=q.device))
                keys.append(rotate(stored, cos, sin))  # now at view positions off..off+n-1
                values.append(store.values(layer, block_id).transpose(0, 1))
            keys_all = torch.cat(keys).repeat_interleave(groups, dim=1)  # [T, H, d]
            values_all = torch.cat(values).repeat_interleave(groups, dim=1)
            total = keys_all.shape[0]
            for block_id, local in zip(g.blocks, g.locals):
                p = row_position(store, g.view, block_id, local)
                cos, sin = rope.cos_sin(torch.tensor([p], device=q.device))
                qr = rotate(q[row : row + 1], cos, sin)[0]  # [H, d]
                scores = torch.einsum("hd,thd->ht", qr.float(), keys_all.float()) * self.scale
                visible = torch.arange(total, device=q.device) <= p
                scores = scores.masked_fill(~visible[None, :], float("-inf"))
                probs = torch.softmax(scores, dim=-1)
                out[row] = torch.einsum("ht,thd->hd", probs, values_all.float()).to(q.dtype)
                row += 1
        return out
