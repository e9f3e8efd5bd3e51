"""The dense oracle: re-rotate every key to its view position and attend row by row."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ...models.rope import Rope, rotate
from ..cache import KVStore
from .fast import PassLayout
from .plan import QueryGroup, row_position, view_offsets


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
            lengths = g.lengths(store)
            offsets = view_offsets(lengths)
            for block_id, off, n in zip(g.view, offsets, lengths):
                stored = store.keys(layer, block_id, n).transpose(0, 1)  # [n, kv_heads, d] at local 0..n-1
                cos, sin = rope.cos_sin([off] * n)
                keys.append(rotate(stored, cos, sin))  # now at view positions off..off+n-1
                values.append(store.values(layer, block_id, n).transpose(0, 1))
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
