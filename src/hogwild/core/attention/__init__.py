"""Attention over views of the shared store.

A forward pass carries rows (new tokens) grouped by the view they attend through. For each
row and each block of its view, the *query* is rotated by (row position - block offset) and
scored against the block's stored keys; per-block softmaxes are merged with log-sum-exp
(docs/architecture.md, "Query rotation"). Everything that depends only on the pass (which
rows see which blocks, the rotation angles, the masks) is computed once in
:class:`PassLayout` and reused by every layer.

Four plans share these semantics: :class:`FastPlan` (PyTorch ops; CPU prefill, and any
device without the others), :class:`KernelPlan` (the CPU decode path: one native call per
layer, or per pass with a prepared model), :class:`GpuPlan` (CUDA: two Triton launches per
layer for all rows, prefill and decode) and :class:`ReferencePlan`, the deliberately simple oracle: it
re-rotates every key to its view position, concatenates the view and runs dense masked
attention, one row at a time.
"""

from .fast import FastPlan, PassLayout
from .gpu import GpuPlan
from .kernel import KernelPlan
from .plan import PassPairs, QueryGroup, pass_pairs, row_position, view_offsets
from .reference import ReferencePlan

__all__ = ["FastPlan", "GpuPlan", "KernelPlan", "PassLayout", "PassPairs", "QueryGroup", "ReferencePlan",
           "pass_pairs", "row_position", "view_offsets"]
