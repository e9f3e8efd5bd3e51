"""Tensors built the cheap way: index tables from Python lists, big buffers on huge pages.

``torch.tensor`` on a list of Python ints walks it element by element: 30-90 us for the 550
entries of a 16-worker pass's tables, most of a millisecond for a big pass's GPU table. The
per-pass plans (:mod:`hogwild.core.attention`) and the rotary tables' lookups
(:mod:`hogwild.models.rope`) build their index tensors here instead (:func:`int_tensor`).

A CPU decode pass streams every weight from memory once (212 MB for SmolLM2 in bf16): on 4 KiB
pages that is a TLB miss every 4 KiB and a stream the hardware prefetchers restart at every
page. The packed weights and the KV pools are therefore allocated on transparent huge pages
where Linux offers them (:func:`huge_empty`).
"""

from __future__ import annotations

import array
import math
import mmap
import os
import threading
from collections.abc import Sequence

import torch

#: The huge page size of x86-64 and most arm64 Linux kernels.
HUGE_PAGE = 2 << 20


def int_tensor(values: Sequence[int], dtype: torch.dtype = torch.int32) -> torch.Tensor:
    """A CPU int32 or int64 tensor of ``values``, through a C array (a tenth of
    ``torch.tensor``'s time on a list of a few hundred ints)."""
    if not values:
        return torch.zeros(0, dtype=dtype)
    return torch.frombuffer(array.array("i" if dtype == torch.int32 else "q", values), dtype=dtype)


def huge_pages_on() -> bool:
    """Whether :func:`huge_empty` asks for huge pages: on Linux, unless ``HOGWILD_HUGE_PAGES=0``
    (for comparisons; the kernel may still decline, its ``transparent_hugepage`` setting decides)."""
    return hasattr(mmap, "MADV_HUGEPAGE") and os.environ.get("HOGWILD_HUGE_PAGES", "1") != "0"


def _huge_mapping(nbytes: int) -> torch.Tensor:
    """Bytes [nbytes rounded up to a huge page] of a fresh private anonymous mapping, aligned to
    a huge page and advised as huge pages. Fresh, so the pages are huge from their first write
    (advising memory already in use, such as the allocator's reused heap, only helps once the
    kernel's background daemon collapses it, if ever); private, since a shared anonymous
    mapping is shmem, which has a huge page setting of its own (usually off)."""
    size = -(-nbytes // HUGE_PAGE) * HUGE_PAGE
    region = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = torch.frombuffer(region, dtype=torch.uint8)  # the tensor keeps the mapping alive
    start = -raw.data_ptr() % HUGE_PAGE
    try:
        region.madvise(mmap.MADV_HUGEPAGE, start, size)
    except OSError:  # a kernel built without transparent huge pages: small pages, as torch.empty
        pass
    return raw[start : start + size]


class _Arena:
    """Huge-page chunks that mid-sized tensors are cut from, one after the other, so that a
    model's weights of a megabyte or two each (most of SmolLM2's) sit on huge pages without
    each rounding up to one. A chunk's untouched tail costs no memory; a chunk is unmapped when
    no tensor cut from it is left."""

    CHUNK = 32 * HUGE_PAGE

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.chunk: torch.Tensor | None = None
        self.used = 0

    def take(self, nbytes: int) -> torch.Tensor:
        with self.lock:
            at = -(-self.used // 64) * 64  # cache-line aligned
            if self.chunk is None or at + nbytes > self.chunk.numel():
                self.chunk, at = _huge_mapping(self.CHUNK), 0
            self.used = at + nbytes
            return self.chunk[at : at + nbytes]


_arena = _Arena()


def huge_empty(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized CPU tensor on transparent huge pages (``madvise(MADV_HUGEPAGE)``, which
    the kernel's default ``madvise`` setting honours): from a shared arena of huge-page chunks
    up to a quarter chunk (16 MiB), above that a mapping of its own, its last huge page rounded
    up. Below 256 KiB, or where huge pages are off (:func:`huge_pages_on`), ``torch.empty``.
    Measured on Zen 4 (2 vCPUs): a 16-row bf16 linear over 212 MB of cold weights 351 ->
    367-376 GFLOP/s."""
    shape = tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < 256 << 10 or not huge_pages_on():
        return torch.empty(shape, dtype=dtype)
    raw = _arena.take(nbytes) if nbytes <= _Arena.CHUNK // 4 else _huge_mapping(nbytes)[:nbytes]
    return raw.view(dtype).view(shape)

