"""The quantized-matrix contract shared by the loaders, the encoders and the native kernels.

Why ggml's layouts: the bundled models ship as GGUF files whose tensors are already in these
layouts (Q4_1, Q4_K_M mixes of Q4_K/Q5_K/Q6_K/Q8_0), so keeping them as stored means no
conversion and no second copy; the formats we quantize to ourselves (``--weights q8_0``,
``q4_k``, ``mxfp4``, ``nvfp4``) use the same layouts, so one kernel per format serves both,
and the ``gguf`` package's numpy dequantizers are an independent oracle for tests.

A matrix ``W [n, k]`` (``y = x @ W.T``) is stored row by row: row ``i`` is ``k / block``
consecutive blocks, so ``data`` is ``uint8 [n, k / block * bytes]``. Rows can be sliced,
reordered and concatenated as byte rows (fusing q/k/v needs one format for all three).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import HogwildError


@dataclass(frozen=True)
class BlockFormat:
    """One block format: ``block`` weights in ``bytes`` bytes; ``ggml_type`` is ggml's id."""

    name: str
    ggml_type: int
    block: int
    bytes: int


#: every format the project reads or writes, by the name ``--weights`` uses
FORMATS: dict[str, BlockFormat] = {
    f.name: f
    for f in (
        BlockFormat("q4_0", 2, 32, 18),
        BlockFormat("q4_1", 3, 32, 20),
        BlockFormat("q5_0", 6, 32, 22),
        BlockFormat("q5_1", 7, 32, 24),
        BlockFormat("q8_0", 8, 32, 34),
        BlockFormat("q4_k", 12, 256, 144),
        BlockFormat("q5_k", 13, 256, 176),
        BlockFormat("q6_k", 14, 256, 210),
        BlockFormat("mxfp4", 39, 32, 17),
        # ggml's NVFP4: 64 weights as 4 sub-blocks of 16, each with an unsigned E4M3 scale
        BlockFormat("nvfp4", 40, 64, 36),
    )
}

_BY_TYPE = {f.ggml_type: f for f in FORMATS.values()}


def block_format(key: str | int) -> BlockFormat:
    """The format named ``key`` (``"q4_k"``) or with ggml type id ``key`` (12)."""
    found = _BY_TYPE.get(key) if isinstance(key, int) else FORMATS.get(str(key).lower())
    if found is None:
        raise HogwildError(f"unknown weight format {key!r}; known: {', '.join(FORMATS)}")
    return found


@dataclass
class QuantWeight:
    """A quantized ``[n, k]`` matrix in a ggml block layout.

    ``scale`` multiplies every dequantized weight: 1.0 except for NVFP4 encoded by us, whose
    format keeps one fp32 scale per tensor on top of the E4M3 block scales.

    ``fix_index``/``fix_delta`` are the super-weight guard's exact corrections: for each
    ``(i, j)`` in ``fix_index`` (int32 ``[m, 2]``), ``fix_delta`` (float32 ``[m]``) is the
    original weight minus its dequantized value, so ``y[:, i] += x[:, j] * delta`` after the
    quantized product gives those weights in full precision (None: no corrections).
    """

    fmt: BlockFormat
    data: torch.Tensor  # uint8 [n, k // fmt.block * fmt.bytes], contiguous
    n: int
    k: int
    scale: float = 1.0
    fix_index: torch.Tensor | None = None
    fix_delta: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.k % self.fmt.block:
            raise HogwildError(f"{self.fmt.name}: k={self.k} is not a multiple of its block of {self.fmt.block}")
        row_bytes = self.k // self.fmt.block * self.fmt.bytes
        if self.data.dtype != torch.uint8 or tuple(self.data.shape) != (self.n, row_bytes):
            raise HogwildError(
                f"{self.fmt.name} weight [{self.n}, {self.k}] needs uint8 data of shape [{self.n}, {row_bytes}], "
                f"got {self.data.dtype} {tuple(self.data.shape)}"
            )

    @property
    def nbytes(self) -> int:
        return self.data.numel()
