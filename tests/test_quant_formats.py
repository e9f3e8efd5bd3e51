"""Encoders to q8_0, q4_k, mxfp4 and nvfp4: hand-computed blocks byte for byte, gguf's
encoders and decoders as independent oracles, and round-to-nearest on random matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from gguf.quants import Q4_K
from gguf.quants import quantize as gguf_quantize

from hogwild.errors import HogwildError
from hogwild.quant import FORMATS, QuantWeight
from hogwild.quant.weights import block_format
from hogwild.quant.dequant import dequantize
from hogwild.quant.encode import encode_q4_k, fit_subblocks, quantize, round_half_away
from hogwild.quant.fp4 import round_e4m3

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def _bytes(q: QuantWeight) -> list[int]:
    return q.data.reshape(-1).tolist()


def test_round_half_away_is_exact():
    v = torch.tensor([0.5, -0.5, 1.5, 2.5, -2.5, 0.49999997, -0.49999997, 3.0, 0.0])
    assert round_half_away(v).tolist() == [1.0, -1.0, 2.0, 3.0, -3.0, 0.0, -0.0, 3.0, 0.0]


def test_q8_0_hand_block():
    # amax 63.5 -> d = 0.5 (fp16 0x3800), id = 2; x * id = 127, -127, 0.5 -> 1 (half away),
    # 1.5 -> 2, -0.5 -> -1, 2, 0...
    x = torch.zeros(1, 32)
    x[0, :6] = torch.tensor([63.5, -63.5, 0.25, 0.75, -0.25, 1.0])
    q = quantize(x, "q8_0")
    assert _bytes(q) == [0x00, 0x38, 0x7F, 0x81, 0x01, 0x02, 0xFF, 0x02] + [0] * 26
    assert dequantize(q)[0, :6].tolist() == [63.5, -63.5, 0.5, 1.0, -0.5, 1.0]


def test_mxfp4_hand_block():
    # amax 6: floor(log2 6) - 2 = 0 -> E8M0 byte 127, values / 1. 6 -> code 7; -0.25 (tie
    # 0 / 0.5) -> 0; 0.75 (tie 0.5 / 1) -> 0.5 = code 1; -5 (tie 4 / 6) -> -4 = 0xE;
    # 2.4 -> 2 = code 4; 1.3 -> 1.5 = code 3; x16 = 3 -> code 5; x17 = -1 -> 0xA.
    x = torch.zeros(1, 32)
    x[0, :6] = torch.tensor([6.0, -0.25, 0.75, -5.0, 2.4, 1.3])
    x[0, 16:18] = torch.tensor([3.0, -1.0])
    q = quantize(x, "mxfp4")
    assert _bytes(q) == [0x7F, 0x57, 0xA0, 0x01, 0x0E, 0x04, 0x03] + [0] * 10
    assert dequantize(q)[0, :6].tolist() == [6.0, 0.0, 0.5, -4.0, 2.0, 1.5]


def _nvfp4_hand_matrix() -> torch.Tensor:
    x = torch.zeros(1, 64, dtype=torch.float64)
    # sub-block 0: amax 2688 -> tensor scale 2688 / 2688 = 1, E4M3 448 (0x7E), step 448;
    # 6 -> 7; -0.25 (tie) -> 0; 0.75 (tie) -> 1.0 = code 2 (even); -2.5 (tie) -> -2 = 0xC;
    # x8 = 5 (tie 4 / 6) -> 4 = code 6; x9 = 1.75 (tie 1.5 / 2) -> 2 = code 4
    x[0, :4] = torch.tensor([6.0, -0.25, 0.75, -2.5]) * 448
    x[0, 8:10] = torch.tensor([5.0, 1.75]) * 448
    # sub-block 1: amax 3 -> E4M3 0.5 (0x30); 3 / 0.5 = 6 -> 7; -1.25 / 0.5 = -2.5 -> -2 = 0xC
    x[0, 16:18] = torch.tensor([3.0, -1.25])
    # sub-block 2: amax 0.001 -> 1.67e-4 rounds to E4M3 0: the block is zeros
    x[0, 32] = 0.001
    # sub-block 3: amax 7 -> 7 / 6 = 1.1667 -> 1.125 (0x39); 7 / 1.125 = 6.2 -> 6 = code 7;
    # 0.5625 -> 0.5 = code 1; -3.375 -> -3 = 0xD
    x[0, 48:51] = torch.tensor([7.0, 0.5625, -3.375])
    return x


NVFP4_HAND = (
    [0x7E, 0x30, 0x00, 0x39]
    + [0x67, 0x40, 0x02, 0x0C, 0, 0, 0, 0]
    + [0x07, 0x0C, 0, 0, 0, 0, 0, 0]
    + [0] * 8
    + [0x07, 0x01, 0x0D, 0, 0, 0, 0, 0]
)


def test_nvfp4_hand_block():
    x = _nvfp4_hand_matrix()
    q = quantize(x, "nvfp4")
    assert q.scale == 1.0
    assert _bytes(q) == NVFP4_HAND
    expected = torch.zeros(64, dtype=torch.float64)
    expected[:4] = torch.tensor([6.0, 0.0, 1.0, -2.0]) * 448
    expected[8:10] = torch.tensor([4.0, 2.0]) * 448
    expected[16:18] = torch.tensor([3.0, -1.0])
    expected[48:51] = torch.tensor([6.75, 0.5625, -3.375])
    assert torch.equal(dequantize(q, torch.float64)[0], expected)


def test_nvfp4_tensor_scale_is_relative():
    # the same matrix divided by 4: the same blocks, a tensor scale of 0.25
    q = quantize(_nvfp4_hand_matrix() / 4, "nvfp4")
    assert q.scale == 0.25 and _bytes(q) == NVFP4_HAND


def test_q4_k_hand_block():
    x = torch.zeros(1, 256)
    lane = torch.arange(32) % 16
    x[0, 0:32] = lane * 3.9375  # lo 0, s 3.9375 = 63 * 0.0625: sc 63, m 0, q = lane
    x[0, 32:64] = -3.9375 + lane.float()  # lo -3.9375 (m 63 * 0.0625), s 1 = sc 16, q = lane
    sub2 = torch.full((32,), -1.0)  # lo -1 (m 16), s 0.5 (sc 8)
    sub2[1], sub2[2], sub2[3], sub2[4] = 6.5, -0.75, -0.25, 0.3  # q 15, 0.5 -> 0, 1.5 -> 2, 2.6 -> 3
    x[0, 64:96] = sub2
    x[0, 160:192] = -1.25 + 2.5 * lane.float()  # sub-block 5: m 1.25 (20), s 2.5 (40), q = lane
    q = QuantWeight(block_format("q4_k"), encode_q4_k(x, search=False), 1, 256)  # plain round-to-nearest
    header = [0x00, 0x2C, 0x00, 0x2C]  # d = dmin = 0.0625 in fp16
    scales = [63, 16 | (2 << 6), 8, 0, 0, 63 | (1 << 6), 16, 0, 0, 8 | (4 << 4), 0, 0]
    qs = [v * 0x11 for v in lane.tolist()]  # sub-blocks 0 and 1
    qs += [0, 15, 0, 2, 3] + [0] * 27  # sub-blocks 2 and 3
    qs += [v << 4 for v in lane.tolist()]  # sub-blocks 4 and 5
    qs += [0] * 32
    assert _bytes(q) == header + scales + qs
    back = dequantize(q)[0]
    assert torch.equal(back[0:64], x[0, 0:64]) and torch.equal(back[160:192], x[0, 160:192])
    assert back[64:69].tolist() == [-1.0, 6.5, -1.0, 0.0, 0.5]
    # the searched scales (the default) keep the sub-blocks that lie on a grid exact
    searched = dequantize(quantize(x, "q4_k"))[0]
    assert torch.equal(searched[0:64], x[0, 0:64]) and torch.equal(searched[160:192], x[0, 160:192])


def _weighted_error(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, nmax: int = 15) -> torch.Tensor:
    """Per row of x [R, 32]: the weighted squared error fit_subblocks minimises for a given
    (scale, offset), each value at its best code (float64)."""
    x, s, m = x.double(), scale.double().unsqueeze(-1), offset.double().unsqueeze(-1)
    levels = torch.where(s > 0, ((x - m) / torch.where(s > 0, s, 1.0)).round().clamp(0, nmax), 0.0)
    w = x.pow(2).mean(-1, keepdim=True).sqrt() + x.abs()
    return (w * (s * levels + m - x).pow(2)).sum(-1)


def test_q4_k_search_beats_round_to_nearest():
    """fit_subblocks: never worse than the plain scale on its own objective, and much better
    on the whole matrix, where round-to-nearest lets each sub-block's extremes set its scale."""
    g = torch.Generator().manual_seed(6)
    w = torch.randn(64, 512, generator=g) * 0.05 * torch.rand(64, 1, generator=g)
    w[::7, ::13] *= 6  # outliers, as trained weights have
    x = w.reshape(-1, 32)
    scale, offset = fit_subblocks(x, 15)
    lo = x.amin(-1).clamp(max=0.0)
    plain = _weighted_error(x, (x.amax(-1) - lo) / 15, lo)
    assert bool((_weighted_error(x, scale, offset) <= plain * (1 + 1e-6)).all())
    assert bool((offset <= 0).all() and (scale >= 0).all())
    rtn = QuantWeight(block_format("q4_k"), encode_q4_k(w, search=False), 64, 512)
    err = lambda q: float((dequantize(q) - w).norm() / w.norm())  # noqa: E731
    assert err(quantize(w, "q4_k")) < 0.95 * err(rtn)  # 0.088 against 0.094 here


def test_q4_k_search_finds_a_grid_the_values_lie_on():
    """Weights that are q4_k values already (a dequantized Q4_K file, as the bundled GGUFs
    give): exact again when each sub-block spans its grid (codes 0 and 15 present), and
    otherwise far closer than round-to-nearest, whose scale then comes from the extremes
    present rather than the grid."""
    g = torch.Generator().manual_seed(7)
    n, k = 32, 512
    raw = torch.randint(0, 256, (n, k // 256, 144), generator=g, dtype=torch.uint8)
    raw[..., 0:2] = torch.tensor([0x00, 0x24], dtype=torch.uint8)  # d = 2^-6
    raw[..., 2:4] = torch.tensor([0x00, 0x20], dtype=torch.uint8)  # dmin = 2^-7
    raw[..., 4] = (raw[..., 4] & 0xC0) | 63  # a largest scale and min of 63 per super-block,
    raw[..., 8] = (raw[..., 8] & 0xC0) | 63  # as a quantizer that set d = max / 63 writes
    err = lambda q, w: float((dequantize(q) - w).norm() / w.norm())  # noqa: E731
    w = dequantize(QuantWeight(block_format("q4_k"), raw.reshape(n, -1), n, k))
    rtn = QuantWeight(block_format("q4_k"), encode_q4_k(w, search=False), n, k)
    assert err(quantize(w, "q4_k"), w) < 0.5 * err(rtn, w)  # 0.0041 against 0.0143
    raw[..., 16::32] = 0x00  # codes 0 and 15 in every sub-block
    raw[..., 17::32] = 0xFF
    w = dequantize(QuantWeight(block_format("q4_k"), raw.reshape(n, -1), n, k))
    assert err(quantize(w, "q4_k"), w) == 0.0


def test_e4m3_rounding_matches_torch_float8():
    s = torch.cat([torch.rand(20000, dtype=torch.float64) * 500, torch.rand(5000, dtype=torch.float64) * 0.02])
    ours = round_e4m3(s)
    oracle = s.float().clamp(max=448).to(torch.float8_e4m3fn).double()
    assert torch.equal(ours, oracle)


def _random(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    w[0, 3] = 1.7  # an outlier block
    w[1, :64] = 0.0  # an all-zero block
    return w


@pytest.mark.parametrize("fmt,qtype", [("q8_0", T.Q8_0), ("mxfp4", T.MXFP4)])
def test_bit_exact_with_gguf_encoders(fmt, qtype):
    w = _random(96, 512, 1)
    assert np.array_equal(quantize(w, fmt).data.numpy(), gguf_quantize(w.numpy(), qtype))


@pytest.mark.parametrize("fmt", ["q8_0", "mxfp4"])
def test_encode_decode_encode_is_stable(fmt):
    q = quantize(_random(32, 256, 2), fmt)
    assert torch.equal(quantize(dequantize(q), fmt).data, q.data)


def _nearest_error(w: torch.Tensor, candidates: torch.Tensor, got: torch.Tensor) -> float:
    """How much farther the decoded value is than the nearest candidate (0: round to nearest)."""
    best = (w.double().unsqueeze(-1) - candidates).abs().amin(-1)
    return float(((w.double() - got).abs() - best).max())


def test_fp4_and_q4_k_pick_the_nearest_value():
    w = _random(16, 512, 3)
    # mxfp4: candidates 2^(e - 127) * E2M1 with the block's stored exponent
    q = quantize(w, "mxfp4")
    e = q.data.reshape(16, 16, 17)[..., 0].double()
    grid = torch.cat([E2M1, -E2M1]).double()
    cand = (2.0 ** (e - 127)).unsqueeze(-1).unsqueeze(-1) * grid  # [n, nb, 1, 16]
    got = dequantize(q, torch.float64).reshape(16, 16, 32)
    assert _nearest_error(w.reshape(16, 16, 32), cand, got) <= 0
    # nvfp4: candidates scale * e4m3 * E2M1 (saturation aside, the block's amax maps within 6)
    q = quantize(w, "nvfp4")
    sc = q.data.reshape(16, 8, 36)[..., :4].contiguous().view(torch.float8_e4m3fn).double()
    cand = (sc * q.scale).unsqueeze(-1).unsqueeze(-1) * grid  # [n, nb, 4, 1, 16]
    got = dequantize(q, torch.float64).reshape(16, 8, 4, 16)
    assert _nearest_error(w.double().reshape(16, 8, 4, 16), cand, got) <= 1e-12
    # q4_k: candidates d * sc * q - dmin * m for q in 0..15
    q = quantize(w, "q4_k")
    blocks = q.data.reshape(-1, 144).numpy()
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float64)
    dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float64)
    sc, m = Q4_K.get_scale_min(blocks[:, 4:16].copy())
    levels = np.arange(16, dtype=np.float64)
    cand = d[:, :, None] * sc[:, :, None] * levels - dmin[:, :, None] * m[:, :, None]  # [blocks, 8, 16]
    got = dequantize(q, torch.float64).reshape(-1, 8, 32)
    assert _nearest_error(w.reshape(-1, 8, 32), torch.from_numpy(cand).unsqueeze(2), got) <= 1e-6


@pytest.mark.parametrize("fmt", ["q8_0", "q4_k", "mxfp4", "nvfp4"])
def test_quantize_error_is_small_and_chunks_agree(fmt, monkeypatch):
    w = _random(40, 512, 4)
    whole = quantize(w, fmt)
    rel = float((dequantize(whole) - w).norm() / w.norm())
    assert rel < {"q8_0": 0.01, "q4_k": 0.12, "mxfp4": 0.2, "nvfp4": 0.15}[fmt]
    import hogwild.quant.encode as encode

    monkeypatch.setattr(encode, "CHUNK_ROWS", 7)
    assert torch.equal(quantize(w, fmt).data, whole.data)


def test_fixes_apply_in_dequantize():
    w = _random(8, 256, 5)
    q = quantize(w, "q4_k")
    plain = dequantize(q)
    q.fix_index = torch.tensor([[0, 3], [5, 100]], dtype=torch.int32)
    q.fix_delta = (w[[0, 5], [3, 100]] - plain[[0, 5], [3, 100]]).float()
    fixed = dequantize(q)
    assert fixed[0, 3] == w[0, 3] and fixed[5, 100] == w[5, 100]
    assert torch.equal(dequantize(q, fixes=False), plain)


def test_bad_input_is_a_clear_error():
    with pytest.raises(HogwildError, match="multiple"):
        quantize(torch.zeros(2, 48), "q4_k")
    with pytest.raises(HogwildError, match="non-finite"):
        quantize(torch.full((1, 32), float("nan")), "q8_0")
    with pytest.raises(HogwildError, match="unknown weight format"):
        quantize(torch.zeros(1, 32), "q3_x")
    with pytest.raises(HogwildError, match="no encoder"):
        quantize(torch.zeros(1, 32), "q4_0")
    assert set(FORMATS) >= {"q8_0", "q4_k", "mxfp4", "nvfp4"}
