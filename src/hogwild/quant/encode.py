"""Encoders from float weights to ggml block layouts: q8_0 and q4_k here, the two FP4
formats in :mod:`.fp4`; :func:`quantize` picks one by name. Every value is rounded to the
nearest code its block's scales allow; q4_k also searches those scales
(:func:`fit_subblocks`), the others take them from the block's largest value.

Why our own encoders: ``--weights q8_0|q4_k|mxfp4|nvfp4`` quantizes any checkpoint on load,
and the result must be exactly what the native kernels and the ``gguf`` package's
dequantizers read. Every encoder is vectorised over whole row chunks (no Python loop per
block) and deterministic: the rounding rules are written down in each docstring, and the
tests check hand-computed blocks byte for byte.

Bytes are little-endian (as ggml writes them on every machine it supports); fp16 fields are
IEEE half precision rounded to nearest, ties to even (``torch.Tensor.half``).
"""

from __future__ import annotations

from collections.abc import Callable

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


#: a sub-block fit: (x [R, 32] fp32, nmax) -> (scale [R], offset [R]), see :func:`fit_subblocks`
Fit = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]

#: the inverse scales :func:`fit_subblocks` tries: (nmax + SEARCH_LO + SEARCH_WIDTH * c) / range
#: for c = 0..SEARCH_STEPS, i.e. from 1 code less than the plain scale's to 1 more
SEARCH_LO, SEARCH_WIDTH, SEARCH_STEPS = -1.0, 0.1, 20


def fit_subblocks(x: torch.Tensor, nmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale ``s >= 0`` and offset ``m <= 0`` per row of ``x [R, 32]`` for codes
    ``x ~ s * l + m``, ``l`` in 0..nmax: the reference of the search q4_k's encoder runs.

    Why search: plain round-to-nearest fixes the scale from the block's extremes, so every
    value but those two pays for them; on Qwen2.5-Coder-1.5B it cost 1.6 x the KL divergence
    of llama.cpp's searched Q4_K (docs/quantization.md). For each of ``SEARCH_STEPS + 1``
    inverse scales ``t`` around ``nmax / (max - mn)`` (``mn = min(min x, 0)``) the codes
    ``l = clamp(round(t * (x - mn)), 0, nmax)`` are fitted by weighted least squares, scale
    and offset together (the offset forced to 0 when the free fit puts it above 0), with
    weights ``w = rms(x) + |x|`` (errors on large weights cost more: they move the output
    more); the fit with the smallest weighted squared error wins (the first of equals). A
    row of equal values (``max = mn``): ``s = 0``, ``m = mn``, exact.

    The native kernels' ``fit_subblocks`` (``hw_fit_subblocks``) is this computation
    vectorised in C; their sums differ in order only. This one runs in chunks of rows to
    keep its temporaries in cache."""
    x = x.float()
    scale, offset = torch.empty(x.shape[0]), torch.empty(x.shape[0])
    for i in range(0, x.shape[0], 4096):
        scale[i : i + 4096], offset[i : i + 4096] = _fit_chunk(x[i : i + 4096], nmax)
    return scale, offset


def _fit_chunk(x: torch.Tensor, nmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    mn = x.amin(-1).clamp(max=0.0)
    rng = x.amax(-1) - mn
    flat = rng <= 0
    safe = torch.where(flat, 1.0, rng)
    w = x.pow(2).mean(-1).sqrt().unsqueeze(-1) + x.abs()
    sw, sx = w.sum(-1), (w * x).sum(-1)
    xm = x - mn.unsqueeze(-1)
    best = torch.full_like(mn, float("inf"))
    bs, bm = rng / nmax, mn.clone()
    for c in range(SEARCH_STEPS + 1):
        t = (nmax + SEARCH_LO + SEARCH_WIDTH * c) / safe
        l = torch.round(xm * t.unsqueeze(-1)).clamp_(0, nmax)
        wl = w * l
        sl, sl2, sxl = wl.sum(-1), (wl * l).sum(-1), (wl * x).sum(-1)
        det = sw * sl2 - sl * sl
        ok = det > 0
        det = torch.where(ok, det, 1.0)
        s = (sw * sxl - sx * sl) / det
        m = (sl2 * sx - sl * sxl) / det
        above = m > 0
        s = torch.where(above, sxl / torch.where(sl2 > 0, sl2, 1.0), s)
        m = torch.where(above, 0.0, m)
        err = (w * (s.unsqueeze(-1) * l + m.unsqueeze(-1) - x).pow(2)).sum(-1)
        better = ok & (err < best)
        best = torch.where(better, err, best)
        bs, bm = torch.where(better, s, bs), torch.where(better, m, bm)
    return torch.where(flat, 0.0, bs), torch.where(flat, mn, bm)


def encode_q4_k(w: torch.Tensor, search: bool = True, fit: Fit | None = None) -> torch.Tensor:
    """q4_k bytes ``[n, k / 256 * 144]`` of ``w [n, k]``.

    A super-block of 256 is 8 sub-blocks of 32; a weight decodes as
    ``d * sc_j * q - dmin * m_j`` with ``q`` in 0..15 and 6-bit ``sc_j``, ``m_j``. In fp32:

    1. per sub-block a scale ``s_j`` and min ``m_j``: with ``search`` (the default) the
       weighted least-squares fit of :func:`fit_subblocks` (``fit``: a faster implementation
       of it, the native kernels' ``fit_subblocks``), ``s_j = scale``, ``m_j = -offset``;
       without (plain round-to-nearest), ``lo = min(0, min x)``, ``s_j = (max x - lo) / 15``,
       ``m_j = -lo``;
    2. ``d = max_j s_j / 63`` and ``dmin = max_j m_j / 63``, each rounded to fp16;
    3. ``sc_j = round(s_j / d)``, ``mq_j = round(m_j / dmin)`` (0 where the divisor is 0),
       clamped to 0..63;
    4. ``q = round((x + dmin * mq_j) / (d * sc_j))`` clamped to 0..15 (0 where
       ``d * sc_j`` is 0): rounded against the scales the decoder will use.

    ``round`` is to nearest with ties to even (ggml's ``nearest_int``). The search is ours
    (llama.cpp's quantizer searches too, in its own way), so a file we write decodes with any
    Q4_K reader but its bytes differ from llama.cpp's.

    Layout (ggml's ``block_q4_K``): fp16 ``d``, fp16 ``dmin``, 12 bytes of packed 6-bit
    scales and mins (sub-blocks 0..3 in the low 6 bits of bytes 0..3 / 4..7; sub-blocks 4..7
    split into a low nibble in bytes 8..11 and two high bits in the top of bytes 0..7), then
    128 bytes: byte ``32 i + l`` holds sub-block ``2 i`` value ``l`` in its low nibble and
    sub-block ``2 i + 1`` value ``l`` in its high nibble.
    """
    n, k = w.shape
    nb = k // 256
    x = w.float().reshape(n, nb, 8, 32)
    if search:
        scale, offset = (fit or fit_subblocks)(x.reshape(-1, 32), 15)
        s, m = scale.reshape(n, nb, 8), -offset.reshape(n, nb, 8)
    else:
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


def quantize(w: torch.Tensor, fmt: str, fit: Fit | None = None) -> QuantWeight:
    """Encode ``w [n, k]`` (any float dtype) in format ``fmt`` (``q8_0``, ``q4_k``, ``mxfp4``,
    ``nvfp4``) in chunks of :data:`CHUNK_ROWS` rows; ``fit``: the sub-block search q4_k
    uses (default :func:`fit_subblocks`).

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
        encoder = {"q8_0": encode_q8_0, "q4_k": lambda part: encode_q4_k(part, fit=fit),  # noqa: E731
                   "mxfp4": encode_mxfp4}.get(form.name)
        if encoder is None:
            raise HogwildError(f"no encoder for {form.name}: quantize to q8_0, q4_k, mxfp4 or nvfp4")
    parts = [encoder(w[i : i + CHUNK_ROWS]) for i in range(0, n, CHUNK_ROWS)]
    data = torch.cat(parts) if parts else torch.empty(0, k // form.block * form.bytes, dtype=torch.uint8)
    return QuantWeight(form, data.contiguous(), n, k, scale=scale)


#: the formats :func:`quantize` can write
ENCODABLE = ("q8_0", "q4_k", "mxfp4", "nvfp4")
