"""Tensors from Python lists, built the cheap way.

``torch.tensor`` on a list of Python ints walks it element by element: 30-90 us for the 550
entries of a 16-worker pass's tables, most of a millisecond for a big pass's GPU table. The
per-pass plans (:mod:`hogwild.core.attention`) and the rotary tables' lookups
(:mod:`hogwild.models.rope`) build their index tensors here instead.
"""

from __future__ import annotations

import array
from collections.abc import Sequence

import torch


def int_tensor(values: Sequence[int], dtype: torch.dtype = torch.int32) -> torch.Tensor:
    """A CPU int32 or int64 tensor of ``values``, through a C array (a tenth of
    ``torch.tensor``'s time on a list of a few hundred ints)."""
    if not values:
        return torch.zeros(0, dtype=dtype)
    return torch.frombuffer(array.array("i" if dtype == torch.int32 else "q", values), dtype=dtype)
