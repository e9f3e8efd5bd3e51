"""The two FP4 formats: MXFP4 (OCP microscaling) and NVFP4, in ggml's block layouts.

Both store E2M1 values: a sign and the magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 (codes 0..7,
sign in bit 3). They differ in their scales:

- **MXFP4**: blocks of 32 share one power-of-two scale (an E8M0 byte).
- **NVFP4**: blocks of 16 share an E4M3 scale, and the whole tensor one fp32 scale on top
  (:attr:`QuantWeight.scale`), so the E4M3 scales use their full range whatever the
  tensor's magnitude.

The encoders round each value to the nearest representable one; they differ on exact
ties, each following its reference so that its output matches that reference bit for bit
(see the docstrings).
"""

from __future__ import annotations

import torch

#: midpoints between consecutive E2M1 magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6
_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)
#: for ties to even: at these midpoints the upper neighbour has the even code (2, 4, 6)
_TIES_UP = (False, True, False, True, False, True, False)
#: NVIDIA's recipe: the per-tensor scale maps the tensor's amax to E2M1's max (6) times E4M3's (448)
NVFP4_RANGE = 6.0 * 448.0


def _e2m1_codes(a: torch.Tensor, ties_to_even: bool) -> torch.Tensor:
    """The E2M1 magnitude code (0..7) nearest to ``a >= 0``; above 6 saturates to 6.

    Ties go to the smaller magnitude, or with ``ties_to_even`` to the even code."""
    code = torch.zeros(a.shape, dtype=torch.uint8)
    for mid, up in zip(_MIDPOINTS, _TIES_UP):
        code += ((a >= mid) if (ties_to_even and up) else (a > mid)).to(torch.uint8)
    return code


def _signed(code: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Set the sign bit (8) for negative ``x``; a value rounded to zero is always code 0."""
    return code | (((x < 0) & (code > 0)).to(torch.uint8) << 3)


def encode_mxfp4(w: torch.Tensor) -> torch.Tensor:
    """MXFP4 bytes ``[n, k / 32 * 17]`` of ``w [n, k]``, bit-exact with ggml's reference encoder.

    Per block of 32: the shared exponent is ``e = floor(log2(amax)) - 2`` (so the block's
    largest value lands in [4, 8) and E2M1's largest magnitude 6 is used), stored as the
    E8M0 byte ``e + 127`` (0 for an all-zero block). Each value ``x / 2^e`` goes to the
    nearest E2M1 value, ties to the smaller magnitude, above 6 to 6 (ggml compares errors in
    that order and keeps the first). ``floor(log2(amax))`` is taken from the float's
    exponent bits, exact where ``floorf(log2f(.))`` could round up a value within an ulp
    below a power of two. Layout (ggml's ``block_mxfp4``): the E8M0 byte, then 16 bytes,
    byte ``j`` holding value ``j`` in its low nibble and value ``16 + j`` in its high one.
    """
    n, k = w.shape
    nb = k // 32
    x = w.float().reshape(n, nb, 32)
    amax = x.abs().amax(-1)
    _, exp = torch.frexp(amax)  # amax = m * 2^exp, m in [0.5, 1): floor(log2 amax) = exp - 1
    e = torch.where(amax > 0, (exp - 1 - 2 + 127).clamp(0, 254), torch.zeros_like(exp))
    scaled = torch.ldexp(x, -(e - 127).unsqueeze(-1).to(torch.float32))  # exact: a power of two
    code = _signed(_e2m1_codes(scaled.abs(), ties_to_even=False), x)
    qs = code[..., :16] | (code[..., 16:] << 4)
    return torch.cat([e.to(torch.uint8).unsqueeze(-1), qs], dim=-1).reshape(n, nb * 17)


def nvfp4_tensor_scale(w: torch.Tensor) -> float:
    """The per-tensor fp32 scale of NVIDIA's NVFP4 recipe: ``amax / (6 * 448)`` rounded to
    fp32 (1.0 for an all-zero tensor), so the block of the largest weight gets scale 448."""
    amax = float(w.abs().max()) if w.numel() else 0.0
    scale = float(torch.tensor(amax / NVFP4_RANGE, dtype=torch.float64).float())
    return scale if scale > 0 else 1.0


def round_e4m3(s: torch.Tensor) -> torch.Tensor:
    """``s >= 0`` (float64) rounded to the nearest E4M3 value, ties to even, saturating at 448.

    E4M3 has 3 mantissa bits and exponent bias 7: normal values ``1.m * 2^(E-7)`` down to
    2^-6, subnormals ``m * 2^-9`` below. The quantum of ``s`` is ``2^(floor(log2 s) - 3)``
    for normals and 2^-9 below 2^-6; ``torch.round`` on ``s / quantum`` is ties to even.
    """
    _, exp = torch.frexp(s)
    quantum_exp = torch.where(s >= 2.0**-6, exp - 1 - 3, torch.full_like(exp, -9))
    rounded = torch.ldexp(torch.round(torch.ldexp(s, -quantum_exp.double())), quantum_exp.double())
    return rounded.clamp(max=448.0)


def encode_nvfp4(w: torch.Tensor, scale: float) -> torch.Tensor:
    """NVFP4 bytes ``[n, k / 64 * 36]`` of ``w [n, k]`` under the per-tensor ``scale``
    (:func:`nvfp4_tensor_scale` of the whole matrix).

    NVIDIA's recipe, computed in float64: per block of 16, the E4M3 scale is
    ``amax / (6 * scale)`` rounded by :func:`round_e4m3` (nearest, ties to even, at most 448);
    each value ``x / (e4m3 * scale)`` goes to the nearest E2M1 value, ties to even (as the
    hardware's ``cvt.rn`` conversion), above 6 to 6; a block whose E4M3 scale is 0 is all
    zeros. A weight decodes as ``scale * e4m3 * e2m1``.

    Layout (ggml's ``block_nvfp4``, 64 weights): 4 unsigned E4M3 bytes, one per sub-block of
    16, then 32 bytes: sub-block ``s`` owns bytes ``8 s .. 8 s + 7``, byte ``8 s + j`` holding
    its value ``j`` in the low nibble and value ``8 + j`` in the high one.
    """
    n, k = w.shape
    nb = k // 64
    x = w.double().reshape(n, nb, 4, 16)
    block_scale = round_e4m3(x.abs().amax(-1) / (6.0 * scale))  # [n, nb, 4]
    step = (block_scale * scale).unsqueeze(-1)
    scaled = torch.where(step > 0, x.abs() / torch.where(step > 0, step, 1.0), 0.0)
    code = _signed(_e2m1_codes(scaled, ties_to_even=True), x)  # [n, nb, 4, 16]
    qs = (code[..., :8] | (code[..., 8:] << 4)).reshape(n, nb, 32)
    scale_bytes = block_scale.float().to(torch.float8_e4m3fn).view(torch.uint8)  # exact: representable
    return torch.cat([scale_bytes, qs], dim=-1).reshape(n, nb * 36)
