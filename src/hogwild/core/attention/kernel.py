"""The native CPU attention plan: one kernel call per layer (or per pass) for decode passes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ... import kernels
from ...models.rope import Rope
from ...tensors import int_tensor
from ..cache import COMPACT_SLOT, KVStore
from .plan import QueryGroup, pass_pairs


class KernelPlan(kernels.NativePassSource):
    """The CPU decode path: one native call per layer stores the new keys and values and
    attends every row over every block of its view (per-block query rotation, online
    softmax across blocks; :func:`hogwild.kernels.attend`). On a model prepared with the
    native decoder, the whole pass is one call instead (:meth:`native_pass`).

    Meant for decode passes: a few rows, or up to :data:`hogwild.kernels.MAX_ROWS` (128) when
    many runs advance in one call; bigger prefill chunks go through :class:`FastPlan`, whose
    fused kernel tiles many queries. The row limit is the kernels' one: the attention kernel
    itself takes any number of rows, but above the limit the linears leave the kernels too,
    and one limit keeps a pass on one path. On this path a row's attention output is the same
    bits whatever other rows (of its run or of others) share the pass and wherever its blocks
    sit in the store, so batching runs changes nothing they compute. Blocks in the store's
    int8 pool (``Batch(kv="int8")``) are read in place and dequantized per 32-key chunk.
    """

    def __init__(self, store: KVStore, rope: Rope, groups: Sequence[QueryGroup], scale: float | None = None):
        self.store = store
        expanded = pass_pairs(store, groups)
        self.slots = int_tensor(expanded.slots, torch.long)
        # rotations as positions in the rotary tables: the native decoder reads the tables'
        # rows itself (gathering them here took 0.1 ms of a 16-worker pass's host time)
        self.rope = rope
        self.k_at = int_tensor(expanded.k_locals)
        # each pair's first slot, keys and rotation (a 16-worker pass has about 550 pairs)
        _, pair_blocks, deltas, lens = zip(*expanded.pairs) if expanded.pairs else ((),) * 4
        blocks = store.blocks
        base = {b: blocks[b].base for b in set(pair_blocks)}
        self.row_start = int_tensor(expanded.row_start)
        self.pair_slot = int_tensor([base[b] for b in pair_blocks], torch.long)
        self.pair_len = int_tensor(lens)
        # the blocks by id: the kernel orders a row's short blocks by them, never by where the
        # pool puts them (that moves with the other runs in the pool)
        self.pair_key = int_tensor(pair_blocks, torch.long)
        # bounds of what the pairs read and write in each pool (int8 slots less COMPACT_SLOT):
        # a pair reads at most its block's length, so the blocks' ends bound the reads
        ends = [start + blocks[b].length for b, start in base.items()]
        self.max_slot = max((e for e in ends if e <= COMPACT_SLOT), default=0)
        self.max_compact = max((e - COMPACT_SLOT for e in ends if e > COMPACT_SLOT), default=0)
        self.max_write = max((s for s in expanded.slots if s < COMPACT_SLOT), default=-1)
        self.max_compact_write = max((s - COMPACT_SLOT for s in expanded.slots if s >= COMPACT_SLOT), default=-1)
        # the int8 pool as C reads it (this pass only: the pool's tensors are replaced when it grows)
        p = store.compact
        self.compact = None if p is None else kernels.compact_pool(p.t["k"], p.t["v"], p.t["ks"], p.t["vs"])
        self.pair_at = int_tensor(deltas)
        self.top = max(max(expanded.k_locals, default=0), max(deltas, default=0))
        self._rows: tuple[torch.Tensor, ...] | None = None
        self.scale = scale if scale is not None else 1.0 / math.sqrt(store.config.head_dim)
        self._native: kernels.NativePass | None = None

    def native_pass(self) -> kernels.NativePass:
        """This pass for :class:`hogwild.kernels.NativeDecoder`, checked once against the
        store's bounds (the native decoder does not check slots itself)."""
        if self._native is None:
            store = self.store
            compact_capacity = 0 if self.compact is None else self.compact.capacity
            if (self.max_slot > store.capacity or self.max_write >= store.capacity
                    or self.max_compact > compact_capacity or self.max_compact_write >= compact_capacity):
                raise ValueError("a pass reads or writes outside the store")
            cos, sin = self.rope.tables(self.top)
            self._native = kernels.NativePass(
                slots=self.slots, rope_cos=cos, rope_sin=sin, k_at=self.k_at, row_start=self.row_start,
                pair_slot=self.pair_slot, pair_len=self.pair_len, pair_at=self.pair_at, pair_key=self.pair_key,
                k=store.k, v=store.v, scale=self.scale, compact=self.compact,
            )
        return self._native

    @staticmethod
    def usable(store: KVStore, rows: int) -> bool:
        """Whether this pass can take the kernel path (CPU, fp32/bf16 store, at most
        :data:`hogwild.kernels.MAX_ROWS` rows, a head layout the kernel supports)."""
        c = store.config
        return (
            rows <= kernels.MAX_ROWS
            and store.device.type == "cpu"
            and store.dtype in (torch.float32, torch.bfloat16)
            and kernels.supports_attention(c.num_heads, c.num_kv_heads, c.head_dim)
            and kernels.available()
        )

    def rotation_rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """cos and sin rows [rows, head_dim] of the new keys, then [pairs, head_dim] of the
        queries: what the per-layer kernels (:meth:`attend`) take, gathered once per pass."""
        if self._rows is None:
            cos, sin = self.rope.tables(self.top)
            self._rows = tuple(t.index_select(0, i.long()).contiguous()
                               for i in (self.k_at, self.pair_at) for t in (cos, sin))
        return self._rows

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        store = self.store
        k_pool, v_pool = store.k[layer], store.v[layer]
        k_cos, k_sin, q_cos, q_sin = self.rotation_rows()
        kernels.store_kv(
            k.float().contiguous(), v.float().contiguous(), self.slots, k_cos, k_sin, k_pool, v_pool,
            self.compact, layer,
        )
        out = kernels.attend(
            q.float().contiguous(), self.row_start, self.pair_slot, self.pair_len, q_cos, q_sin,
            k_pool, v_pool, self.scale, self.max_slot, self.compact, layer, self.max_compact, self.pair_key,
        )
        return out.to(q.dtype)
