"""The native CPU attention plan: one kernel call per layer (or per pass) for decode passes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ... import kernels
from ...models.rope import Rope
from ..cache import KVStore
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
    sit in the store, so batching runs changes nothing they compute.
    """

    def __init__(self, store: KVStore, rope: Rope, groups: Sequence[QueryGroup], scale: float | None = None):
        self.store = store
        expanded = pass_pairs(store, groups)
        rows = expanded.num_rows
        self.slots = torch.tensor(expanded.slots, dtype=torch.long)
        self.k_cos, self.k_sin = rope.cos_sin(expanded.k_locals)
        pairs = expanded.pairs
        counts = [0] * (rows + 1)
        for r, _, _, _ in pairs:
            counts[r + 1] += 1
        for r in range(rows):
            counts[r + 1] += counts[r]
        self.row_start = torch.tensor(counts, dtype=torch.int32)
        starts = [store.blocks[b].start for _, b, _, _ in pairs]
        self.pair_slot = torch.tensor(starts, dtype=torch.long)
        self.pair_len = torch.tensor([v for _, _, _, v in pairs], dtype=torch.int32)
        self.max_slot = max((s + v for s, (_, _, _, v) in zip(starts, pairs)), default=0)
        self.max_write = max(expanded.slots, default=-1)
        self.q_cos, self.q_sin = (t.contiguous() for t in rope.cos_sin([d for _, _, d, _ in pairs]))
        self.scale = scale if scale is not None else 1.0 / math.sqrt(store.config.head_dim)
        self._native: kernels.NativePass | None = None

    def native_pass(self) -> kernels.NativePass:
        """This pass for :class:`hogwild.kernels.NativeDecoder`, checked once against the
        store's bounds (the native decoder does not check slots itself)."""
        if self._native is None:
            store = self.store
            if self.max_slot > store.capacity or self.max_write >= store.capacity:
                raise ValueError("a pass reads or writes outside the store")
            self._native = kernels.NativePass(
                slots=self.slots, k_cos=self.k_cos, k_sin=self.k_sin, row_start=self.row_start,
                pair_slot=self.pair_slot, pair_len=self.pair_len, pair_cos=self.q_cos, pair_sin=self.q_sin,
                k=store.k, v=store.v, scale=self.scale,
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
