"""GPU kernels (Triton) for the per-block attention of a pass.

Why our own kernel: a pass attends every row over every block of its view, each block with
the query rotated by its own offset. With plain PyTorch ops that is a Python loop over
blocks per layer, a dozen launches each; here it is two launches per layer for every row of
every run (:mod:`.triton_attention`): one computes a partial softmax per (tile of rows that
read the same block, chunk of that block's keys) and one merges each row's partials by
log-sum-exp.

Triton is imported lazily, only when a kernel runs: the package (and the whole engine)
imports with torch alone. :func:`available` says whether the kernels can run on a device:
a CUDA device with Triton installed, or any device under Triton's interpreter
(``TRITON_INTERPRET=1``, how the kernels are checked on a machine without a GPU).
"""

from __future__ import annotations

import importlib.util
import os

import torch

#: query rows (pairs x query heads of one KV head) per program of the attention kernel
BLOCK_M = 64
#: keys per inner iteration of the attention kernel
BLOCK_N = 64
#: ints per work item in a pass table: block start, lo, hi, first pair, pairs, first partial
ITEM_FIELDS = 6
#: head sizes the kernel takes (it pads the head to a power of two internally)
MAX_HEAD_DIM = 256


def interpreting() -> bool:
    """Whether Triton runs in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def available(device: torch.device) -> bool:
    """Whether the Triton kernels can run on ``device``."""
    if not triton_installed():
        return False
    if device.type == "cuda":
        return torch.cuda.is_available()
    return interpreting()


def supports(num_heads: int, num_kv_heads: int, head_dim: int) -> bool:
    """Whether the kernel takes this head layout (any GQA ratio up to BLOCK_M query heads
    per KV head, head sizes up to :data:`MAX_HEAD_DIM`)."""
    return (num_heads % num_kv_heads == 0 and num_heads // num_kv_heads <= BLOCK_M
            and 1 <= head_dim <= MAX_HEAD_DIM)


from .layers import TritonRMSNorm, prepare_for_gpu  # noqa: E402  (after available())

__all__ = ["TritonRMSNorm", "prepare_for_gpu", "BLOCK_M", "BLOCK_N", "ITEM_FIELDS", "MAX_HEAD_DIM", "available", "interpreting", "supports", "triton_installed"]
