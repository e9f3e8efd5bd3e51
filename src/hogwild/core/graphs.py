"""CUDA graphs of decode passes: one capture per pass shape, replayed with a new pass table.

Why: a decode pass of a 7B model is ~30 layers x ~15 launches; launched from Python one by
one, their overhead exceeds the GPU time of a small pass. A graph replays them all with one
call. A graph is fixed in its tensor shapes and addresses, so a pass is captured per
*bucket*: its rows and logit rows exactly, its pairs, kernel items and partials rounded up to
a power of two (the table is padded: :meth:`PassTable.pack`). Everything a pass varies in
(token ids, slots, rotations, items) lives in one int32 buffer per graph, refilled from a
pinned host copy with one transfer before each replay; nothing in the pass waits for the
host. Graphs read the store's K/V tensors by address: when the store grows (a new
allocation), every graph is dropped and recaptured on demand.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import torch

from ..models.llama import CausalLM
from ..models.rope import Rope
from ..tensors import int_tensor
from .attention import GpuPlan, QueryGroup
from .attention.gpu import PassShape, describe_pass, target_items
from .cache import KVStore

#: decode passes up to this many rows are replayed as graphs (larger ones run eagerly)
GRAPH_MAX_ROWS = 512
#: graphs kept per batch (least recently captured dropped first)
MAX_GRAPHS = 64


def bucket(n: int, least: int = 16) -> int:
    """The padded size of a table section: the next power of two, at least ``least``."""
    size = least
    while size < n:
        size *= 2
    return size


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    buffer: torch.Tensor  # device int32: ids, logit rows, then the pass table
    host: torch.Tensor  # pinned int32 copy of the same
    logits: torch.Tensor  # the graph's output
    copied: torch.cuda.Event  # the last host -> device transfer


class PassGraphs:
    """The CUDA graphs of one batch's decode passes (see the module docstring)."""

    def __init__(self, model: CausalLM, store: KVStore, rope: Rope):
        self.model, self.store, self.rope = model, store, rope
        self.graphs: dict[tuple, _Graph] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self.storage: tuple[int, int] | None = None
        self.captures = 0

    def run(self, ids: Sequence[int], groups: Sequence[QueryGroup], logit_rows: Sequence[int]) -> torch.Tensor:
        """The pass's logits [len(logit_rows), vocab] (fp32), from a replay of its graph."""
        store = self.store
        storage = (store.k.data_ptr(), store.v.data_ptr())
        if storage != self.storage:  # the store was reallocated: graphs point at the old one
            self.graphs.clear()
            self.storage = storage
        table = describe_pass(store, groups, target_items(store))
        own = table.shape
        shape = PassShape(own.rows, bucket(own.pairs), bucket(own.items), bucket(own.parts))
        key = (shape, len(logit_rows))
        values = list(ids) + list(logit_rows) + table.pack(shape)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= MAX_GRAPHS:
                self.graphs.pop(next(iter(self.graphs)))
            entry = self._capture(shape, len(ids), len(logit_rows), values)
            self.graphs[key] = entry
        else:
            self._fill(entry, values)
        entry.graph.replay()
        return entry.logits.clone()

    def _fill(self, entry: _Graph, values: list[int]) -> None:
        entry.copied.synchronize()  # the previous transfer has read the host buffer
        entry.host.copy_(int_tensor(values))
        entry.buffer.copy_(entry.host, non_blocking=True)
        entry.copied.record()

    def _capture(self, shape: PassShape, rows: int, logit_rows: int, values: list[int]) -> _Graph:
        device = self.store.device
        buffer = torch.zeros(len(values), dtype=torch.int32, device=device)
        host = torch.zeros(len(values), dtype=torch.int32, pin_memory=True)
        entry = _Graph(torch.cuda.CUDAGraph(), buffer, host, torch.empty(0), torch.cuda.Event())
        entry.copied.record()
        self._fill(entry, values)
        ids_t = buffer[:rows]
        rows_t = buffer[rows : rows + logit_rows]
        plan = GpuPlan.over(self.store, self.rope, buffer[rows + logit_rows :], shape)
        # a warm-up outside the capture (Triton compiles, cuBLAS picks its kernels); it
        # computes this very pass, and the replay that follows the capture rewrites the same
        # K/V, so running it twice changes nothing
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            self.model(ids_t, plan, rows_t)
        torch.cuda.current_stream(device).wait_stream(side)
        with torch.cuda.graph(entry.graph, pool=self.pool):
            entry.logits = self.model(ids_t, plan, rows_t)
        self.captures += 1
        return entry
