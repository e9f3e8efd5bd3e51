"""Round-to-nearest encoders from float weights to ggml block layouts: q8_0 and q4_k here,
the two FP4 formats in :mod:`.fp4`; :func:`quantize` picks one by name.

Why our own encoders: ``--weights q8_0|q4_k|mxfp4|nvfp4`` quantizes any checkpoint on load,
and the result must be exactly what the native kernels and the ``gguf`` package's
dequantizers read. Every encoder is vectorised over whole row chunks (no Python loop per
block) and deterministic: the rounding rules are written down in each docstring, and the
tests check hand-computed blocks byte for byte.

Bytes are little-endian (as ggml writes them on every machine it supports); fp16 fields are
IEEE half precision rounded to nearest, ties to even (``torch.Tensor.half``).
"""

from __future__ import annotations

import torch

from ..errors import HogwildError
from .weights import QuantWeight, block_format

#: rows encoded at once: bounds the temporaries (a few float64 copies of a chunk) for large
#: matrices such as a 150k-row output projection
CHUNK_ROWS = 2048


def round_half_away(v: torch.Tensor) -> torch.Tensor:
    """C's ``roundf``: nearest integer, halves away from zero, exact for every float.

    (``floor(|v| + 0.5)`` is not: ``0.49999997 + 0.5`` rounds up to 1 in fp32.)"""
    a = v.abs()
    whole = a.floor()
    whole = whole + ((a - whole) >= 0.5).to(v.dtype)  # a - floor(a) is exact
    return torch.copysign(whole, v)


def encode_q8_0(w: torch.Tensor) -> torch.Tensor:
    """q8_0 bytes ``[n, k / 32 * 34]`` of ``w [n, k]``, identical to ggml's reference encoder.

    Per block of 32, in fp32 as ggml computes it: ``d = amax / 127``, ``id = 1 / d`` (0 when
    ``d`` is 0), ``q = roundf(x * id)`` (halves away from zero) as int8; the block stores
    ``d`` as fp16 (2 bytes) then the 32 int8 values.
    """
    n, k = w.shape
    x = w.float().reshape(n, k // 32, 32)
    d = x.abs().amax(-1) / 127
    inv = torch.where(d == 0, torch.zeros_like(d), 1.0 / torch.where(d == 0, torch.ones_like(d), d))
    q = round_half_away(x * inv.unsqueeze(-1)).to(torch.int8)
    d16 = d.half().unsqueeze(-1).view(torch.uint8)  # [n, nb, 2]
    return torch.cat([d16, q.view(torch.uint8)], dim=-1).reshape(n, k // 32 * 34)


def encode_q4_k(w: torch.Tensor) -> torch.Tensor:
    """q4_k bytes ``[n, k / 256 * 144]`` of ``w [n, k]``, round-to-nearest.

    A super-block of 256 is 8 sub-blocks of 32; a weight decodes as
    ``d * sc_j * q - dmin * m_j`` with ``q`` in 0..15 and 6-bit ``sc_j``, ``m_j``. In fp32:

    1. per sub-block: ``lo = min(0, min x)``, ``s_j = (max x - lo) / 15``, ``m_j = -lo``;
    2. ``d = max_j s_j / 63`` and ``dmin = max_j m_j / 63``, each rounded to fp16;
    3. ``sc_j = round(s_j / d)``, ``mq_j = round(m_j / dmin)`` (0 where the divisor is 0),
       clamped to 0..63;
    4. ``q = round((x + dmin * mq_j) / (d * sc_j))`` clamped to 0..15 (0 where
       ``d * sc_j`` is 0): rounded against the scales the decoder will use.

    ``round`` is to nearest with ties to even (ggml's ``nearest_int``). This is plain RTN,
    not ggml's iterative scale search (``make_qkx2_quants``), so a file we write decodes
    with any Q4_K reader but its bytes differ from llama.cpp's quantizer.

    Layout (ggml's ``block_q4_K``): fp16 ``d``, fp16 ``dmin``, 12 bytes of packed 6-bit
    scales and mins (sub-blocks 0..3 in the low 6 bits of bytes 0..3 / 4..7; sub-blocks 4..7
    split into a low nibble in bytes 8..11 and two high bits in the top of bytes 0..7), then
    128 bytes: byte ``32 i + l`` holds sub-block ``2 i`` value ``l`` in its low nibble and
    sub-block ``2 i + 1`` value ``l`` in its high nibble.
    """
    n, k = w.shape
    nb = k // 256
    x = w.float().reshape(n, nb, 8, 32)
    lo = x.amin(-1).clamp(max=0.0)
    s = (x.amax(-1) - lo) / 15
    m = -lo
    d16 = (s.amax(-1) / 63).half()
    dmin16 = (m.amax(-1) / 63).half()
    d, dmin = d16.float().unsqueeze(-1), dmin16.float().unsqueeze(-1)
    sc = torch.where(d > 0, torch.round(s / torch.where(d > 0, d, 1.0)), 0.0).clamp(0, 63)
    mq = torch.where(dmin > 0, torch.round(m / torch.where(dmin > 0, dmin, 1.0)), 0.0).clamp(0, 63)
    step = (d * sc).unsqueeze(-1)
    offset = (dmin * mq).unsqueeze(-1)
    q = torch.where(step > 0, torch.round((x + offset) / torch.where(step > 0, step, 1.0)), 0.0)
    q = q.clamp(0, 15).to(torch.uint8)  # [n, nb, 8, 32]
    qs = (q[:, :, 0::2] | (q[:, :, 1::2] << 4)).reshape(n, nb, 128)
    sc, mq = sc.to(torch.uint8), mq.to(torch.uint8)
    scales = torch.cat(
        [
            (sc[..., :4] & 63) | ((sc[..., 4:] >> 4) << 6),
            (mq[..., :4] & 63) | ((mq[..., 4:] >> 4) << 6),
            (sc[..., 4:] & 15) | ((mq[..., 4:] & 15) << 4),
        ],
        dim=-1,
    )
    head = torch.cat([d16.unsqueeze(-1).view(torch.uint8), dmin16.unsqueeze(-1).view(torch.uint8)], dim=-1)
    return torch.cat([head, scales, qs], dim=-1).reshape(n, nb * 144)


def quantize(w: torch.Tensor, fmt: str) -> QuantWeight:
    """Encode ``w [n, k]`` (any float dtype) in format ``fmt`` (``q8_0``, ``q4_k``, ``mxfp4``,
    ``nvfp4``), round-to-nearest, in chunks of :data:`CHUNK_ROWS` rows.

    NVFP4 gets its per-tensor scale from the whole matrix first (every chunk shares it).
    Raises :class:`HogwildError` for a shape the format cannot hold or non-finite weights.
    """
    from .fp4 import encode_mxfp4, encode_nvfp4, nvfp4_tensor_scale

    form = block_format(fmt)
    if w.dim() != 2:
        raise HogwildError(f"{form.name}: only matrices are quantized, got shape {tuple(w.shape)}")
    n, k = w.shape
    if k % form.block:
        raise HogwildError(f"{form.name}: rows of {k} weights are not a multiple of its block of {form.block}")
    w = w.detach().to("cpu")
    if not bool(torch.isfinite(w).all()):
        raise HogwildError(f"{form.name}: the matrix [{n}, {k}] has non-finite weights; cannot quantize it")
    scale = 1.0
    if form.name == "nvfp4":
        scale = nvfp4_tensor_scale(w)
        encoder = lambda part: encode_nvfp4(part, scale)  # noqa: E731
    else:
        encoder = {"q8_0": encode_q8_0, "q4_k": encode_q4_k, "mxfp4": encode_mxfp4}.get(form.name)
        if encoder is None:
            raise HogwildError(f"no encoder for {form.name}: quantize to q8_0, q4_k, mxfp4 or nvfp4")
    parts = [encoder(w[i : i + CHUNK_ROWS]) for i in range(0, n, CHUNK_ROWS)]
    data = torch.cat(parts) if parts else torch.empty(0, k // form.block * form.bytes, dtype=torch.uint8)
    return QuantWeight(form, data.contiguous(), n, k, scale=scale)


#: the formats :func:`quantize` can write
ENCODABLE = ("q8_0", "q4_k", "mxfp4", "nvfp4")
