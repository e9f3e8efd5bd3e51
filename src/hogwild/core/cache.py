"""The shared key/value store: every token of every worker lives here exactly once.

All layers share one K tensor and one V tensor of shape [layers, kv_heads, capacity,
head_dim]. A *block* is a contiguous region of that pool holding an ordered run of tokens
whose keys are rotated at block-local positions 0..len-1 (docs/architecture.md, "Blocks and
views"), so it can sit at any position of a view without being rewritten. Views are built by
the layouts from block ids; attention reads a block as a strided view of the pool, never as a
copy.

Growth is amortised O(1): a block reserves spare room and, when full, moves once into a region
twice its size; the pool itself doubles when no free region is large enough, up to
``max_capacity`` tokens (then :class:`PoolFullError`).

A block may be held by several readers at once (a prefix shared by many runs, a step that a
forced-answer branch still reads after it was folded into history): :meth:`KVStore.retain`
adds a holder, and :meth:`KVStore.free` releases one; the region is returned to the pool
when the last holder lets go.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import HogwildError
from ..models.config import ModelConfig
from ..models.rope import Rope, rotate


class PoolFullError(HogwildError):
    """The KV pool would have to grow past its configured maximum."""


@dataclass
class Block:
    start: int
    capacity: int
    length: int = 0
    holders: int = 1

    @property
    def end(self) -> int:
        return self.start + self.length


class KVStore:
    """A pool of blocks. Block ids are small integers, never reused within one store."""

    def __init__(
        self,
        config: ModelConfig,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        capacity: int = 1024,
        max_capacity: int | None = None,
    ):
        self.config = config
        self.max_capacity = max_capacity
        self.dtype = dtype
        self.device = torch.device(device)
        shape = (config.num_layers, config.num_kv_heads, capacity, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=self.device)
        self.v = torch.zeros(shape, dtype=dtype, device=self.device)
        self.blocks: dict[int, Block] = {}
        self._free: list[tuple[int, int]] = [(0, capacity)]  # (start, size), sorted by start
        self._next_id = 0

    # ------------------------------------------------------------------ allocation
    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def new_block(self, capacity: int = 16) -> int:
        block_id = self._next_id
        self._next_id += 1
        self.blocks[block_id] = Block(self._allocate(max(1, capacity)), max(1, capacity))
        return block_id

    def length(self, block_id: int) -> int:
        return self.blocks[block_id].length

    def reserve(self, block_id: int, n: int) -> torch.Tensor:
        """Extend a block by ``n`` tokens and return their pool slots (to be written per layer)."""
        block = self.blocks[block_id]
        if block.length + n > block.capacity:
            self._move(block, max(2 * block.capacity, block.length + n))
        slots = torch.arange(block.end, block.end + n, device=self.device)
        block.length += n
        return slots

    def retain(self, block_id: int) -> None:
        """One more holder of ``block_id``: it stays allocated until every holder freed it."""
        self.blocks[block_id].holders += 1

    def free(self, block_id: int) -> None:
        """Release one holder; the last one returns the block's region to the pool."""
        block = self.blocks[block_id]
        block.holders -= 1
        if block.holders > 0:
            return
        del self.blocks[block_id]
        self._release(block.start, block.capacity)

    def free_tokens(self) -> int | None:
        """Tokens the pool can still take (free regions plus room to grow), or None when
        it may grow without limit."""
        if self.max_capacity is None:
            return None
        return sum(n for _, n in self._free) + self.max_capacity - self.capacity

    # ------------------------------------------------------------------ data
    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store rows ``k``, ``v`` [rows, kv_heads, d] (k already rotated) at ``slots``."""
        self.k[layer].index_copy_(1, slots, k.transpose(0, 1).to(self.dtype))
        self.v[layer].index_copy_(1, slots, v.transpose(0, 1).to(self.dtype))

    def keys(self, layer: int, block_id: int) -> torch.Tensor:
        """[kv_heads, len, d] view of a block's stored (locally rotated) keys."""
        b = self.blocks[block_id]
        return self.k[layer, :, b.start : b.end]

    def values(self, layer: int, block_id: int) -> torch.Tensor:
        b = self.blocks[block_id]
        return self.v[layer, :, b.start : b.end]

    def append_block(self, dst_id: int, src_id: int, rope: Rope) -> None:
        """Move ``src``'s tokens to the end of ``dst`` and free ``src``.

        The only re-rotation in the system: keys stored at local positions j of ``src`` become
        keys at local positions ``len(dst) + j`` of ``dst``, a rotation by one fixed angle per
        frequency, applied once per merged token.
        """
        src = self.blocks[src_id]
        n = src.length
        offset = self.blocks[dst_id].length
        self.reserve(dst_id, n)
        dst = self.blocks[dst_id]
        cos, sin = rope.cos_sin([offset] * n)
        L, H, _, D = self.k.shape
        src_k = self.k[:, :, src.start : src.end]  # [L, H, n, D]
        rows = src_k.permute(2, 0, 1, 3).reshape(n, L * H, D)
        rotated = rotate(rows, cos, sin).reshape(n, L, H, D).permute(1, 2, 0, 3)
        self.k[:, :, dst.end - n : dst.end] = rotated
        self.v[:, :, dst.end - n : dst.end] = self.v[:, :, src.start : src.end]
        self.free(src_id)

    # ------------------------------------------------------------------ accounting
    def tokens_in_use(self) -> int:
        return sum(b.length for b in self.blocks.values())

    def bytes_in_use(self) -> int:
        """Bytes of K and V for the tokens actually stored (each token exactly once)."""
        return self.tokens_in_use() * self.config.kv_bytes_per_token(self.k.element_size())

    def bytes_allocated(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    # ------------------------------------------------------------------ internals
    def _allocate(self, size: int) -> int:
        for i, (start, free_size) in enumerate(self._free):
            if free_size >= size:
                if free_size == size:
                    del self._free[i]
                else:
                    self._free[i] = (start + size, free_size - size)
                return start
        self._grow(size)
        return self._allocate(size)

    def _release(self, start: int, size: int) -> None:
        self._free.append((start, size))
        self._free.sort()
        merged: list[tuple[int, int]] = []
        for s, n in self._free:
            if merged and merged[-1][0] + merged[-1][1] == s:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            else:
                merged.append((s, n))
        self._free = merged

    def _grow(self, at_least: int) -> None:
        old = self.capacity
        new = max(2 * old, old + at_least)
        if self.max_capacity is not None:
            if old + at_least > self.max_capacity:
                raise PoolFullError(
                    f"the KV pool is full ({old} tokens; its limit is {self.max_capacity}): "
                    f"wait for running runs to finish or raise the limit")
            new = min(new, self.max_capacity)
        for name in ("k", "v"):
            t = getattr(self, name)
            bigger = torch.zeros(t.shape[:2] + (new,) + t.shape[3:], dtype=t.dtype, device=t.device)
            bigger[:, :, :old] = t
            setattr(self, name, bigger)
        self._release(old, new - old)

    def _move(self, block: Block, capacity: int) -> None:
        start = self._allocate(capacity)
        n = block.length
        self.k[:, :, start : start + n] = self.k[:, :, block.start : block.start + n]
        self.v[:, :, start : start + n] = self.v[:, :, block.start : block.start + n]
        self._release(block.start, block.capacity)
        block.start, block.capacity = start, capacity
