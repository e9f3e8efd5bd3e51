"""The PyTorch attention plan: per-block query rotation, fused block kernels, log-sum-exp merge.

Used for prefill chunks, passes too large for the native kernels, and every non-CPU device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...models.rope import Rope, rotate
from ..cache import KVStore
from .plan import QueryGroup, pass_pairs


class PassLayout:
    """Per-pass bookkeeping shared by all layers. Built after slots are reserved.

    Pairs (row, view entry) are grouped by block so each block's keys are read once per
    layer for all rows that see it.
    """

    def __init__(self, store: KVStore, rope: Rope, groups: Sequence[QueryGroup]):
        device = store.device
        self.store = store
        expanded = pass_pairs(store, groups)
        pair_rows, deltas = [], []
        per_block: dict[int, list[tuple[int, int, int]]] = {}  # block -> [(row, delta, visible)]
        for r, b, d, visible in expanded.pairs:
            per_block.setdefault(b, []).append((r, d, visible))
        self.num_rows = row = expanded.num_rows
        self.slots = torch.tensor(expanded.slots, dtype=torch.long, device=device)
        self.k_cos, self.k_sin = rope.cos_sin(expanded.k_locals)
        groups_per_kv = store.config.kv_groups
        # Segments: one kernel call per layer each. A large block is its own segment, read
        # in place. All small blocks (steps, headers, markers) share one segment: their few
        # keys are gathered once per layer and a mask keeps each pair to its own block, so
        # the call count per layer stays at about three however many workers there are.
        self.segments: list[Segment] = []
        big = [b for b in per_block if store.length(b) >= SMALL_BLOCK]
        small = [b for b in per_block if store.length(b) < SMALL_BLOCK]
        for cluster in [[b] for b in big] + ([small] if small else []):
            first = len(pair_rows)
            lo, hi, any_partial, base = [], [], False, 0
            for b in cluster:
                n = store.length(b)
                for r, d, visible in per_block[b]:
                    pair_rows.append(r)
                    deltas.append(d)
                    lo.append(base)
                    hi.append(base + visible)
                    any_partial = any_partial or visible < n
                base += n
            mask = None
            if len(cluster) > 1 or any_partial:
                idx = torch.arange(base, device=device)
                lo_t = torch.tensor(lo, device=device)[:, None]
                hi_t = torch.tensor(hi, device=device)[:, None]
                visible_t = (idx[None, :] >= lo_t) & (idx[None, :] < hi_t)  # [pairs, keys]
                additive = torch.zeros(visible_t.shape, dtype=store.dtype, device=device)
                additive.masked_fill_(~visible_t, float("-inf"))
                # kernel layout: rows of a segment are (pair, group), pair-major
                mask = additive.repeat_interleave(groups_per_kv, dim=0)
            self.segments.append(Segment(first, len(pair_rows), mask, cluster))
        self.num_pairs = len(pair_rows)
        self.pair_rows = torch.tensor(pair_rows, dtype=torch.long, device=device)
        self.q_cos, self.q_sin = rope.cos_sin(deltas)
        # one pair per row, in row order: nothing to merge (e.g. a single-block prefill)
        self.trivial_merge = len(pair_rows) == row and pair_rows == list(range(row))


SMALL_BLOCK = 256  # blocks shorter than this share one gathered segment


@dataclass
class Segment:
    """Pairs [first, end) attend to the keys of ``blocks``: one block read in place (or
    dequantized, when int8), or several small ones concatenated."""

    first: int
    end: int
    mask: torch.Tensor | None
    blocks: list[int]

    def keys_values(self, store: KVStore, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self.blocks) == 1:
            return store.keys(layer, self.blocks[0]), store.values(layer, self.blocks[0])
        keys = torch.cat([store.keys(layer, b) for b in self.blocks], dim=1)
        return keys, torch.cat([store.values(layer, b) for b in self.blocks], dim=1)


def _block_attention_cpu(q, k, v, mask, scale):
    """Fused CPU kernel returning (out, logsumexp): one call per block instead of ~8 ops."""
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, False, attn_mask=None if mask is None else mask[None, None], scale=scale
    )


def _block_attention_generic(q, k, v, mask, scale):
    """The same in plain ops, for devices without the fused CPU kernel. q [1, Hkv, n, d]."""
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
    if mask is not None:
        scores = scores + mask.float()
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse[..., None])
    return torch.matmul(probs.to(v.dtype), v), lse


class FastPlan:
    """The product path: per-block query rotation, no key re-rotation, log-sum-exp merge."""

    def __init__(self, store: KVStore, rope: Rope, groups: Sequence[QueryGroup], scale: float | None = None):
        self.store = store
        self.layout = PassLayout(store, rope, groups)
        self.scale = scale if scale is not None else 1.0 / math.sqrt(store.config.head_dim)
        self.block_attention = (
            _block_attention_cpu if store.device.type == "cpu" else _block_attention_generic
        )

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        lay, store = self.layout, self.store
        store.write(layer, lay.slots, rotate(k, lay.k_cos, lay.k_sin), v)
        heads, d = q.shape[1], q.shape[2]
        kv_heads = store.config.num_kv_heads
        groups = heads // kv_heads
        # in the store's dtype: the fused kernel wants q, k, v (and the mask) alike
        qp = rotate(q.index_select(0, lay.pair_rows), lay.q_cos, lay.q_sin).to(store.dtype)  # [P, H, d]
        # kernel layout [kv_heads, pairs, groups, d]: the G query heads sharing a KV head
        # are treated as extra query rows against that head's keys
        qk = qp.view(lay.num_pairs, kv_heads, groups, d).transpose(0, 1).contiguous()
        outs, lses = [], []
        for seg in lay.segments:
            n = seg.end - seg.first
            qb = qk[:, seg.first : seg.end].reshape(1, kv_heads, n * groups, d)
            keys, values = seg.keys_values(store, layer)
            o, lse = self.block_attention(qb, keys[None], values[None], seg.mask, self.scale)
            outs.append(o.view(kv_heads, n, groups, d))
            lses.append(lse.view(kv_heads, n, groups))
        if len(outs) == 1 and lay.trivial_merge:
            merged = outs[0]
        else:
            merged = self._merge(torch.cat(outs, dim=1), torch.cat(lses, dim=1).float())
        return merged.transpose(0, 1).reshape(lay.num_rows, heads, d).to(q.dtype)

    def _merge(self, out: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
        """Combine per-block results of each row: weights exp(lse_b - max), normalised."""
        lay = self.layout
        kv_heads, _, groups, d = out.shape
        rows = lay.pair_rows
        index = rows[None, :, None].expand(kv_heads, -1, groups)
        best = torch.full((kv_heads, lay.num_rows, groups), float("-inf"), device=out.device)
        best = best.scatter_reduce(1, index, lse, reduce="amax")
        w = torch.exp(lse - best.gather(1, index))  # [Hkv, P, G]
        den = torch.zeros_like(best).index_add_(1, rows, w)
        num = torch.zeros((kv_heads, lay.num_rows, groups, d), device=out.device)
        num.index_add_(1, rows, out.float() * w[..., None])
        return num / den[..., None]
