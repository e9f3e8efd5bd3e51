"""The GPU attention plan: the whole per-block attention of a layer in two Triton launches.

The host describes a pass once (:func:`describe_pass`: the rows' store slots, every (row,
view entry) pair with its query rotation and visible keys, the work items of the kernel and
each row's partial results) as ONE int32 table. :class:`GpuPlan` reads everything from that
table on the device, so the same plan object serves an eager pass (a fresh table) and a
CUDA graph (a table in a fixed buffer, refilled before each replay; :mod:`..graphs`). Pairs
that read the same block are adjacent and share tiles, so a block's keys are loaded once per
tile of rows, for the rows of every run that see it (a shared prompt among them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ... import gpu
from ...models.rope import Rope
from ...tensors import int_tensor
from ..cache import KVStore
from .plan import QueryGroup, pass_pairs

#: the shortest key chunk an item takes (shorter ones cost more in the merge than they save)
MIN_CHUNK = 2 * gpu.BLOCK_N


@dataclass(frozen=True)
class PassShape:
    """Sizes of a pass table's sections (padded ones in a CUDA graph's buffer)."""

    rows: int
    pairs: int
    items: int
    parts: int

    @property
    def length(self) -> int:
        return 2 * self.rows + 3 * self.pairs + gpu.ITEM_FIELDS * self.items + (self.rows + 1) + self.parts


@dataclass
class PassTable:
    """One pass, described for :class:`GpuPlan` (host side, plain ints).

    Sections: slots and key positions per row; per pair its row, query rotation and visible
    keys (pairs of one block adjacent); the kernel's items (``gpu.triton_attention``); per
    row the range of its partials in ``part_idx`` (CSR)."""

    slots: list[int]
    k_pos: list[int]
    pair_row: list[int]
    pair_delta: list[int]
    pair_vis: list[int]
    items: list[int]  # gpu.ITEM_FIELDS ints per item
    row_ptr: list[int]
    part_idx: list[int]
    num_parts: int

    @property
    def shape(self) -> PassShape:
        return PassShape(len(self.slots), len(self.pair_row), len(self.items) // gpu.ITEM_FIELDS, self.num_parts)

    def pack(self, shape: PassShape | None = None) -> list[int]:
        """The table as one int32 list, each section padded to ``shape`` (default: its own).
        Padding pairs read row 0 with no keys; padding items have no pairs (skipped)."""
        own = self.shape
        shape = shape or own
        if (shape.rows != own.rows or shape.pairs < own.pairs or shape.items < own.items
                or shape.parts < own.parts):
            raise ValueError(f"pass {own} does not fit the table shape {shape}")
        pad_p = shape.pairs - own.pairs
        return (self.slots + self.k_pos
                + self.pair_row + [0] * pad_p + self.pair_delta + [0] * pad_p + self.pair_vis + [0] * pad_p
                + self.items + [0] * (gpu.ITEM_FIELDS * (shape.items - own.items))
                + self.row_ptr + self.part_idx + [0] * (shape.parts - len(self.part_idx)))


def describe_pass(store: KVStore, groups: Sequence[QueryGroup], target_items: int,
                  chunk: int | None = None) -> PassTable:
    """The pass table of ``groups`` (slots already reserved).

    Key chunks: long enough that the items number about ``target_items`` (per KV head; the
    GPU then has a few programs per multiprocessor), never shorter than :data:`MIN_CHUNK`;
    ``chunk`` fixes the length instead (tests)."""
    c = store.config
    g = c.num_heads // c.num_kv_heads
    per_tile = max(1, gpu.BLOCK_M // g)
    expanded = pass_pairs(store, groups)
    by_block: dict[int, tuple[list[int], list[int], list[int]]] = {}  # block -> rows, deltas, visible
    for r, b, d, visible in expanded.pairs:
        entry = by_block.get(b)
        if entry is None:
            entry = by_block[b] = ([], [], [])
        entry[0].append(r)
        entry[1].append(d)
        entry[2].append(visible)
    pair_row: list[int] = []
    pair_delta: list[int] = []
    pair_vis: list[int] = []
    tiles = []  # (block, first pair, pairs, most visible keys)
    for b, (rs, ds, vs) in by_block.items():
        for i in range(0, len(rs), per_tile):
            j = i + per_tile
            tiles.append((b, len(pair_row), len(rs[i:j]), max(vs[i:j])))
            pair_row += rs[i:j]
            pair_delta += ds[i:j]
            pair_vis += vs[i:j]
    if chunk is None:
        work = sum(t[3] for t in tiles)
        chunk = -(-work // max(1, target_items))
        chunk = max(MIN_CHUNK, -(-chunk // gpu.BLOCK_N) * gpu.BLOCK_N)
    items: list[int] = []
    parts_of_row: list[list[int]] = [[] for _ in range(expanded.num_rows)]
    num_parts = 0
    for b, first, n, most in tiles:
        start = store.blocks[b].start
        for lo in range(0, most, chunk):
            hi = min(most, lo + chunk)
            items += [start, lo, hi, first, n, num_parts]
            for i, (r, v) in enumerate(zip(pair_row[first : first + n], pair_vis[first : first + n])):
                if v > lo:  # a pair that sees none of the chunk adds nothing
                    parts_of_row[r].append(num_parts + i)
            num_parts += n
    row_ptr, part_idx = [0], []
    for parts in parts_of_row:
        part_idx += parts
        row_ptr.append(len(part_idx))
    return PassTable(expanded.slots, expanded.k_locals, pair_row, pair_delta, pair_vis, items,
                     row_ptr, part_idx, num_parts)


_SMS: dict[int, int] = {}


def target_items(store: KVStore) -> int:
    """Items per KV head that give the device about two programs per multiprocessor."""
    device = store.device
    if device.type != "cuda":
        return 4
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SMS:
        _SMS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return max(1, 2 * _SMS[index] // store.config.num_kv_heads)


class GpuPlan:
    """Per-block query rotation on the GPU, three Triton launches per layer
    (:mod:`hogwild.gpu`): the rows' keys are rotated and stored with their values, then every
    pair attends with its query rotated in the kernel, then each row's partials merge."""

    def __init__(self, store: KVStore, rope: Rope, groups: Sequence[QueryGroup], scale: float | None = None,
                 chunk: int | None = None):
        table = describe_pass(store, groups, target_items(store), chunk)
        buffer = int_tensor(table.pack()).to(store.device)
        self.bind(store, rope, buffer, table.shape, scale)

    @classmethod
    def over(cls, store: KVStore, rope: Rope, buffer: torch.Tensor, shape: PassShape,
             scale: float | None = None) -> GpuPlan:
        """A plan reading its pass table from ``buffer`` (refilled by the caller before each
        use, e.g. before a CUDA graph's replay)."""
        plan = cls.__new__(cls)
        plan.bind(store, rope, buffer, shape, scale)
        return plan

    def bind(self, store: KVStore, rope: Rope, buffer: torch.Tensor, shape: PassShape,
             scale: float | None) -> None:
        self.store, self.rope, self.shape = store, rope, shape
        self.scale = scale if scale is not None else 1.0 / math.sqrt(store.config.head_dim)
        sizes = [shape.rows, shape.rows, shape.pairs, shape.pairs, shape.pairs, gpu.ITEM_FIELDS * shape.items,
                 shape.rows + 1, shape.parts]
        (self.slots, self.k_pos, self.pair_row, self.pair_delta, self.visible, self.items,
         self.row_ptr, self.part_idx) = buffer[: shape.length].split(sizes)

    @staticmethod
    def usable(store: KVStore) -> bool:
        c = store.config
        return (gpu.available(store.device) and gpu.supports(c.num_heads, c.num_kv_heads, c.head_dim)
                and store.dtype in (torch.float32, torch.bfloat16, torch.float16) and store.compact is None)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        from ...gpu import triton_attention, triton_ops

        store, shape = self.store, self.shape
        k_pool, v_pool = store.k[layer], store.v[layer]
        triton_ops.rope_store(k, v, self.k_pos, self.slots, self.rope.inv_freq, k_pool, v_pool)
        return triton_attention.attend(
            q, k_pool, v_pool, self.items, self.pair_row, self.pair_delta, self.visible,
            self.rope.inv_freq, shape.items, shape.parts, self.row_ptr, self.part_idx, self.scale,
        )
