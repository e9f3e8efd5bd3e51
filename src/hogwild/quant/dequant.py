"""Dequantize a :class:`QuantWeight` back to a float matrix.

The block decoding is the ``gguf`` package's (numpy, one function per ggml type): a
well-kept independent implementation of ggml's layouts, so our encoders are checked against
it rather than against themselves. On top of it this module applies what the file format
does not know: the NVFP4 per-tensor scale and the super-weight guard's exact corrections.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import HogwildError
from .weights import QuantWeight


def decode_blocks(data: np.ndarray, ggml_type: int, name: str = "tensor") -> np.ndarray:
    """Float32 values of raw ggml blocks ``uint8 [..., bytes]`` (gguf's dequantizer)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize

    try:
        return gguf_dequantize(np.ascontiguousarray(data), GGMLQuantizationType(ggml_type))
    except (NotImplementedError, ValueError) as error:
        raise HogwildError(f"{name}: cannot decode ggml type {ggml_type}: {error}") from None


def dequantize(q: QuantWeight, dtype: torch.dtype = torch.float32, fixes: bool = True) -> torch.Tensor:
    """The ``[n, k]`` matrix ``q`` stands for, in ``dtype`` (float32 or float64).

    Each weight is its block value times :attr:`QuantWeight.scale`; with ``fixes`` the
    guard's corrections are added (``W[i, j] += delta``), giving the kept weights back. In
    float64 the NVFP4 product ``scale * e4m3 * e2m1`` is exact; in float32 it is rounded once.
    """
    if dtype not in (torch.float32, torch.float64):
        raise HogwildError(f"dequantize to float32 or float64, not {dtype}")
    values = decode_blocks(q.data.cpu().numpy(), q.fmt.ggml_type, q.fmt.name)
    w = torch.from_numpy(np.asarray(values, dtype=np.float32).reshape(q.n, q.k)).to(dtype)
    if q.scale != 1.0:
        w = w * torch.tensor(q.scale, dtype=torch.float64).to(dtype)
    if fixes and q.fix_index is not None and q.fix_delta is not None and len(q.fix_index):
        rows, cols = q.fix_index[:, 0].long(), q.fix_index[:, 1].long()
        w.index_put_((rows, cols), q.fix_delta.to(dtype), accumulate=True)
    return w
