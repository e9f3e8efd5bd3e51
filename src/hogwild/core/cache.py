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

With ``compact=True`` the store has a second, int8 pool for *finished* blocks (prompt,
history; docs/architecture.md, "Compact KV cache"): each stored key or value vector
(head_dim numbers of one layer, kv head and token) is kept as int8 with one fp32 scale,
round-to-nearest (:func:`quantize`). Blocks made with ``new_block(..., compact=True)`` live
there; the current steps stay in the full-precision pool until the fold quantizes them into
history. Slots of the int8 pool are numbered from :data:`COMPACT_SLOT` on, so one slot array
can address both pools (the native kernels use the same constant).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import HogwildError, InvalidRequestError
from ..models.config import ModelConfig
from ..models.rope import Rope, rotate
from ..tensors import huge_empty


#: ``--kv``: how the store keeps keys and values. "auto": in the model's dtype; "fp32",
#: "bf16": in that dtype; "int8": finished blocks (prompt, history) as int8 with a scale per
#: vector, the current steps in the model's dtype.
KV_MODES = ("auto", "fp32", "bf16", "int8")
KV_HELP = ("KV cache: auto (the model's dtype), fp32, bf16, or int8 (prompt and history as int8 "
           "with a scale per vector; the steps being written stay in the model's dtype).")


def check_kv(mode: str) -> None:
    """The one check of a ``--kv`` value (solve, eval, serve, bench, quality, Batch)."""
    if mode not in KV_MODES:
        raise InvalidRequestError(f"unknown KV setting {mode!r} (--kv); choose one of {', '.join(KV_MODES)}")


def kv_setting(mode: str, model_dtype: torch.dtype) -> tuple[torch.dtype, bool]:
    """(dtype of the full-precision pool, whether finished blocks are int8) for ``mode``."""
    check_kv(mode)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(mode, model_dtype)
    return dtype, mode == "int8"


def pool_zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zeroed pool tensor; on the CPU on huge pages (:func:`hogwild.tensors.huge_empty`): a
    pass reads keys and values scattered over tens of megabytes."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    return huge_empty(shape, dtype).zero_()


class PoolFullError(HogwildError):
    """The KV pool would have to grow past its configured maximum."""


#: slots at or above this address the int8 pool (``hogwild_cpu.c``'s COMPACT_SLOT)
COMPACT_SLOT = 1 << 40


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 vectors and fp32 scales of ``x`` [..., d]: scale = max|x| / 127 per vector,
    q = round-half-even(x / scale). The same fp32 steps as the native store (q8_vector in
    hogwild_cpu.c), so a token's stored bits do not depend on which path wrote it."""
    x = x.float()
    scale = x.abs().amax(-1) / 127.0
    nonzero = scale > 0
    q = (x / torch.where(nonzero, scale, torch.ones_like(scale))[..., None]).round().clamp_(-127, 127)
    q = torch.where(nonzero[..., None], q, torch.zeros_like(q))
    return q.to(torch.int8), torch.where(nonzero, scale, torch.zeros_like(scale))


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """fp32 vectors back from :func:`quantize` (q * scale, per vector)."""
    return q.float() * scale[..., None]


@dataclass
class Block:
    start: int
    capacity: int
    length: int = 0
    holders: int = 1
    compact: bool = False  # stored in the int8 pool

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def base(self) -> int:
        """The slot number of local index 0 (int8 pool slots count from COMPACT_SLOT)."""
        return self.start + (COMPACT_SLOT if self.compact else 0)


class Pool:
    """Token storage of one kind: named tensors whose dim 2 counts tokens ([layers, kv_heads,
    capacity, ...]) and the free regions among them. Regions move and the tensors grow;
    :class:`KVStore` owns one for full-precision blocks and, with ``compact=True``, one for
    int8 blocks."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.t = tensors
        capacity = self.capacity
        self.free: list[tuple[int, int]] = [(0, capacity)]  # (start, size), sorted by start

    @property
    def capacity(self) -> int:
        return next(iter(self.t.values())).shape[2]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.t.values())

    def allocate(self, size: int, limit: int | None) -> int:
        """A free region of ``size`` tokens; the pool grows (up to ``limit`` tokens) if needed."""
        for i, (start, free_size) in enumerate(self.free):
            if free_size >= size:
                if free_size == size:
                    del self.free[i]
                else:
                    self.free[i] = (start + size, free_size - size)
                return start
        # a free region at the end merges with the room the pool grows by
        tail = next((n for s, n in self.free if s + n == self.capacity), 0)
        self._grow(size - tail, limit)
        return self.allocate(size, limit)

    def release(self, start: int, size: int) -> None:
        self.free.append((start, size))
        self.free.sort()
        merged: list[tuple[int, int]] = []
        for s, n in self.free:
            if merged and merged[-1][0] + merged[-1][1] == s:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            else:
                merged.append((s, n))
        self.free = merged

    def copy(self, dst: int, src: int, n: int) -> None:
        for t in self.t.values():
            t[:, :, dst : dst + n] = t[:, :, src : src + n]

    def _grow(self, at_least: int, limit: int | None) -> None:
        old = self.capacity
        new = max(2 * old, old + at_least)
        if limit is not None:
            if old + at_least > limit:
                raise PoolFullError(
                    f"the KV pool is full ({old} tokens; its limit is {limit}): "
                    f"wait for running runs to finish or raise the limit")
            new = min(new, limit)
        for name, t in self.t.items():
            bigger = pool_zeros(t.shape[:2] + (new,) + t.shape[3:], t.dtype, t.device)
            bigger[:, :, :old] = t
            self.t[name] = bigger
        self.release(old, new - old)


class KVStore:
    """A pool of blocks. Block ids are small integers, never reused within one store.

    ``max_capacity`` bounds the tokens of both pools together."""

    def __init__(
        self,
        config: ModelConfig,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        capacity: int = 1024,
        max_capacity: int | None = None,
        compact: bool = False,
    ):
        self.config = config
        self.max_capacity = max_capacity
        self.dtype = dtype
        self.device = torch.device(device)
        if compact and max_capacity is not None:  # two pools share the bound: both start small
            capacity = max(1, min(capacity, max_capacity // 4))
        L, H, D = config.num_layers, config.num_kv_heads, config.head_dim

        def zeros(*shape: int, dtype: torch.dtype) -> torch.Tensor:
            return pool_zeros(shape, dtype, self.device)

        self.full = Pool({"k": zeros(L, H, capacity, D, dtype=dtype), "v": zeros(L, H, capacity, D, dtype=dtype)})
        self.compact: Pool | None = None
        if compact:
            self.compact = Pool({
                "k": zeros(L, H, capacity, D, dtype=torch.int8), "v": zeros(L, H, capacity, D, dtype=torch.int8),
                "ks": zeros(L, H, capacity, dtype=torch.float32), "vs": zeros(L, H, capacity, dtype=torch.float32),
            })
        self.blocks: dict[int, Block] = {}
        self._next_id = 0

    # ------------------------------------------------------------------ allocation
    @property
    def k(self) -> torch.Tensor:
        """Keys of the full-precision pool [layers, kv_heads, capacity, d]."""
        return self.full.t["k"]

    @property
    def v(self) -> torch.Tensor:
        return self.full.t["v"]

    @property
    def capacity(self) -> int:
        return self.full.capacity

    def _pools(self) -> list[Pool]:
        return [self.full] if self.compact is None else [self.full, self.compact]

    def _pool(self, block: Block) -> Pool:
        return self.compact if block.compact else self.full  # type: ignore[return-value]

    def _limit(self, pool: Pool) -> int | None:
        """How many tokens ``pool`` may hold: the store's bound less the other pool's size."""
        if self.max_capacity is None:
            return None
        return self.max_capacity - sum(p.capacity for p in self._pools() if p is not pool)

    def new_block(self, capacity: int = 16, compact: bool = False) -> int:
        """A new empty block; ``compact``: in the int8 pool, when the store has one (a finished
        block: prompt or history), else in the full-precision pool."""
        block_id = self._next_id
        self._next_id += 1
        compact = compact and self.compact is not None
        pool = self.compact if compact else self.full
        size = max(1, capacity)
        self.blocks[block_id] = Block(pool.allocate(size, self._limit(pool)), size, compact=compact)
        return block_id

    def length(self, block_id: int) -> int:
        return self.blocks[block_id].length

    def reserve(self, block_id: int, n: int) -> None:
        """Extend a block by ``n`` tokens (slots ``base + length`` on, written per layer by the
        pass that feeds them); the block moves to a bigger region when it is full."""
        block = self.blocks[block_id]
        if block.length + n > block.capacity:
            self._move(block, max(2 * block.capacity, block.length + n))
        block.length += n

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
        self._pool(block).release(block.start, block.capacity)

    def free_tokens(self) -> int | None:
        """Tokens the pools can still take (free regions plus room to grow), or None when
        they may grow without limit."""
        if self.max_capacity is None:
            return None
        pools = self._pools()
        return sum(n for p in pools for _, n in p.free) + self.max_capacity - sum(p.capacity for p in pools)

    # ------------------------------------------------------------------ data
    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store rows ``k``, ``v`` [rows, kv_heads, d] (k already rotated) at ``slots``
        (int8 pool slots are quantized, :func:`quantize`)."""
        if self.compact is not None:
            mask = slots >= COMPACT_SLOT
            if bool(mask.any()):
                at = slots[mask] - COMPACT_SLOT
                t = self.compact.t
                for name, x in (("k", k[mask]), ("v", v[mask])):
                    q, s = quantize(x.transpose(0, 1))
                    t[name][layer].index_copy_(1, at, q)
                    t[name + "s"][layer].index_copy_(1, at, s)
                keep = ~mask
                slots, k, v = slots[keep], k[keep], v[keep]
        self.k[layer].index_copy_(1, slots, k.transpose(0, 1).to(self.dtype))
        self.v[layer].index_copy_(1, slots, v.transpose(0, 1).to(self.dtype))

    def _read(self, layer: int | slice, block_id: int, name: str, n: int | None = None) -> torch.Tensor:
        b = self.blocks[block_id]
        stop = b.end if n is None else b.start + n
        if not b.compact:
            return self.full.t[name][layer, :, b.start : stop]
        t = self.compact.t  # type: ignore[union-attr]
        return dequantize(t[name][layer, :, b.start : stop], t[name + "s"][layer, :, b.start : stop]).to(self.dtype)

    def keys(self, layer: int, block_id: int, n: int | None = None) -> torch.Tensor:
        """[kv_heads, len, d] of a block's stored (locally rotated) keys, its first ``n`` if
        given: a view of the pool, or the dequantized keys of an int8 block."""
        return self._read(layer, block_id, "k", n)

    def values(self, layer: int, block_id: int, n: int | None = None) -> torch.Tensor:
        return self._read(layer, block_id, "v", n)

    def append_block(self, dst_id: int, src_id: int, rope: Rope) -> None:
        """Move ``src``'s tokens to the end of ``dst`` and free ``src``.

        The only re-rotation in the system: keys stored at local positions j of ``src`` become
        keys at local positions ``len(dst) + j`` of ``dst``, a rotation by one fixed angle per
        frequency, applied once per merged token. Into an int8 ``dst`` (the history under
        ``--kv int8``) the rotated keys and the values are quantized here, once.
        """
        src = self.blocks[src_id]
        n = src.length
        offset = self.blocks[dst_id].length
        self.reserve(dst_id, n)
        dst = self.blocks[dst_id]
        cos, sin = rope.cos_sin([offset] * n)
        L, H, _, D = self.k.shape
        everything = slice(None)
        src_k = self._read(everything, src_id, "k")  # [L, H, n, D]
        rows = src_k.permute(2, 0, 1, 3).reshape(n, L * H, D)
        rotated = rotate(rows, cos, sin).reshape(n, L, H, D).permute(1, 2, 0, 3)
        src_v = self._read(everything, src_id, "v")
        lo, hi = dst.end - n, dst.end
        if dst.compact:
            t = self.compact.t  # type: ignore[union-attr]
            for name, x in (("k", rotated), ("v", src_v)):
                t[name][:, :, lo:hi], t[name + "s"][:, :, lo:hi] = quantize(x)
        else:
            self.k[:, :, lo:hi] = rotated
            self.v[:, :, lo:hi] = src_v
        self.free(src_id)

    # ------------------------------------------------------------------ accounting
    def tokens_in_use(self) -> int:
        return sum(b.length for b in self.blocks.values())

    def bytes_per_token(self, compact: bool = False) -> int:
        """K and V bytes of one stored token, all layers (int8: head_dim bytes + an fp32
        scale per layer, kv head and tensor)."""
        c = self.config
        if compact:
            return 2 * c.num_layers * c.num_kv_heads * (c.head_dim + 4)
        return c.kv_bytes_per_token(self.k.element_size())

    def bytes_in_use(self) -> int:
        """Bytes of K and V for the tokens actually stored (each token exactly once)."""
        return sum(b.length * self.bytes_per_token(b.compact) for b in self.blocks.values())

    def bytes_allocated(self) -> int:
        return sum(p.nbytes() for p in self._pools())

    # ------------------------------------------------------------------ internals
    def _move(self, block: Block, capacity: int) -> None:
        pool = self._pool(block)
        start = pool.allocate(capacity, self._limit(pool))
        pool.copy(start, block.start, block.length)
        pool.release(block.start, block.capacity)
        block.start, block.capacity = start, capacity
