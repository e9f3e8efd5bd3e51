"""Attention over views of the shared store.

A forward pass carries rows (new tokens) grouped by the view they attend through. For each
row and each block of its view, the *query* is rotated by (row position - block offset) and
scored against the block's stored keys; per-block softmaxes are merged with log-sum-exp
(DESIGN.md §4). Everything that depends only on the pass (which rows see which blocks, the
rotation angles, the masks) is computed once in :class:`PassLayout` and reused by every layer.

Three plans share these semantics: :class:`FastPlan` (PyTorch ops; prefill and non-CPU
devices), :class:`KernelPlan` (the CPU decode path: one native call per layer, or per pass
with a prepared model) and :class:`ReferencePlan`, the deliberately simple oracle: it
re-rotates every key to its view position, concatenates the view and runs dense masked
attention, one row at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import kernels
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


def pass_pairs(store: KVStore, groups: Sequence[QueryGroup]) -> PassPairs:
    """Expand the groups into (row, view entry) pairs. An entry is seen up to the row's own
    position: whole blocks before it, the row's block up to itself, nothing after it. A block
    that repeats in a view (a marker) yields one pair per occurrence, each with its rotation."""
    slots, k_locals, pairs = [], [], []
    row = 0
    for g in groups:
        offsets = view_offsets(store, g.view)
        lengths = [store.length(b) for b in g.view]
        for block_id, local in zip(g.blocks, g.locals):
            slots.append(store.blocks[block_id].start + local)
            k_locals.append(local)
            p = row_position(g.view, offsets, block_id, local)
            for b, off, n in zip(g.view, offsets, lengths):
                if n == 0 or off > p:
                    continue
                pairs.append((row, b, p - off, min(n, p - off + 1)))
            row += 1
    return PassPairs(slots, k_locals, pairs, row)


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
            if len(cluster) == 1:
                block = store.blocks[cluster[0]]
                seg = Segment(first, len(pair_rows), mask, region=(block.start, block.length))
            else:
                slots_of = [torch.arange(store.blocks[b].start, store.blocks[b].end) for b in cluster]
                seg = Segment(first, len(pair_rows), mask, gather=torch.cat(slots_of).to(device))
            self.segments.append(seg)
        self.num_pairs = len(pair_rows)
        self.pair_rows = torch.tensor(pair_rows, dtype=torch.long, device=device)
        self.q_cos, self.q_sin = rope.cos_sin(deltas)
        # one pair per row, in row order: nothing to merge (e.g. a single-block prefill)
        self.trivial_merge = len(pair_rows) == row and pair_rows == list(range(row))


SMALL_BLOCK = 256  # blocks shorter than this share one gathered segment


@dataclass
class Segment:
    """Pairs [first, end) attend to keys read in place (``region``) or gathered (``gather``)."""

    first: int
    end: int
    mask: torch.Tensor | None
    region: tuple[int, int] | None = None  # (pool start, length)
    gather: torch.Tensor | None = None  # pool slots, for small blocks taken together

    def keys_values(self, store: KVStore, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.region is not None:
            start, n = self.region
            return store.k[layer, :, start : start + n], store.v[layer, :, start : start + n]
        return store.k[layer].index_select(1, self.gather), store.v[layer].index_select(1, self.gather)


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


class KernelPlan:
    """The CPU decode path: one native call per layer stores the new keys and values and
    attends every row over every block of its view (per-block query rotation, online
    softmax across blocks; :func:`hogwild.kernels.attend`). Meant for passes of a few rows;
    prefill chunks go through :class:`FastPlan`, whose fused kernel tiles many queries."""

    MAX_ROWS = 64

    def __init__(self, store: KVStore, rope: Rope, groups: Sequence[QueryGroup], scale: float | None = None):
        self.store = store
        expanded = pass_pairs(store, groups)
        self.num_rows = expanded.num_rows
        self.slots = torch.tensor(expanded.slots, dtype=torch.long)
        self.k_cos, self.k_sin = rope.cos_sin(expanded.k_locals)
        pairs = expanded.pairs
        counts = [0] * (self.num_rows + 1)
        for r, _, _, _ in pairs:
            counts[r + 1] += 1
        for r in range(self.num_rows):
            counts[r + 1] += counts[r]
        self.row_start = torch.tensor(counts, dtype=torch.int32)
        starts = [store.blocks[b].start for _, b, _, _ in pairs]
        self.pair_slot = torch.tensor(starts, dtype=torch.long)
        self.pair_len = torch.tensor([v for _, _, _, v in pairs], dtype=torch.int32)
        self.max_slot = max((s + v for s, (_, _, _, v) in zip(starts, pairs)), default=0)
        self.max_write = max(expanded.slots, default=-1)
        self.q_cos, self.q_sin = (t.contiguous() for t in rope.cos_sin([d for _, _, d, _ in pairs]))
        self.scale = scale if scale is not None else 1.0 / math.sqrt(store.config.head_dim)
        self._native = None

    def native_pass(self):
        """This pass as the C struct :class:`hogwild.kernels.native.NativeDecoder` reads."""
        if self._native is None:
            from .kernels.native import PassInfo

            if self.max_slot > self.store.capacity or self.max_write >= self.store.capacity:
                raise ValueError("a pass reads or writes outside the store")
            self._native = PassInfo(
                self.num_rows, self.slots.data_ptr(), self.k_cos.data_ptr(), self.k_sin.data_ptr(),
                self.row_start.data_ptr(), self.pair_slot.data_ptr(), self.pair_len.data_ptr(),
                self.q_cos.data_ptr(), self.q_sin.data_ptr(),
            )
        return self._native

    @staticmethod
    def usable(store: KVStore, rows: int) -> bool:
        """Whether this pass can take the kernel path (CPU, fp32/bf16 store, few rows)."""
        c = store.config
        return (
            rows <= KernelPlan.MAX_ROWS
            and store.device.type == "cpu"
            and store.dtype in (torch.float32, torch.bfloat16)
            and kernels.supports_attention(c.num_heads, c.num_kv_heads, c.head_dim)
            and kernels.available()
        )

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        store = self.store
        k_pool, v_pool = store.k[layer], store.v[layer]
        kernels.store_kv(
            k.float().contiguous(), v.float().contiguous(), self.slots, self.k_cos, self.k_sin, k_pool, v_pool
        )
        out = kernels.attend(
            q.float().contiguous(), self.row_start, self.pair_slot, self.pair_len, self.q_cos, self.q_sin,
            k_pool, v_pool, self.scale, self.max_slot,
        )
        return out.to(q.dtype)


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
            offsets = view_offsets(store, g.view)
            for block_id, off in zip(g.view, offsets):
                n = store.length(block_id)
                stored = store.keys(layer, block_id).transpose(0, 1)  # [n, kv_heads, d] at local 0..n-1
                cos, sin = rope.cos_sin([off] * n)
                keys.append(rotate(stored, cos, sin))  # now at view positions off..off+n-1
                values.append(store.values(layer, block_id).transpose(0, 1))
            keys_all = torch.cat(keys).repeat_interleave(groups, dim=1)  # [T, H, d]
            values_all = torch.cat(values).repeat_interleave(groups, dim=1)
            total = keys_all.shape[0]
            for block_id, local in zip(g.blocks, g.locals):
                p = row_position(g.view, offsets, block_id, local)
                cos, sin = rope.cos_sin([p])
                qr = rotate(q[row : row + 1], cos, sin)[0]  # [H, d]
                scores = torch.einsum("hd,thd->ht", qr.float(), keys_all.float()) * self.scale
                visible = torch.arange(total, device=q.device) <= p
                scores = scores.masked_fill(~visible[None, :], float("-inf"))
                probs = torch.softmax(scores, dim=-1)
                out[row] = torch.einsum("ht,thd->hd", probs, values_all.float()).to(q.dtype)
                row += 1
        return out
