"""The quantized-weight kernels (hogwild_quant.c): every block format against the gguf
package's dequantizer and a float64 matmul, batch invariance bit for bit, the guard's
corrections, and the native decoder on quantized weights against the PyTorch model holding
the same dequantized weights."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from tiny import forced_tokens, lockstep, random_script, tiny_model, toy_decode

from hogwild import kernels
from hogwild.core.engine import Engine
from hogwild.errors import HogwildError
from hogwild.kernels import QuantLinear, prepare_for_cpu, qlinear
from hogwild.kernels.qlinear import set_isa, set_mode
from hogwild.quant.weights import FORMATS, QuantWeight

pytestmark = pytest.mark.skipif(not kernels.available(), reason=f"native kernels: {kernels.status()}")

ROWS = (1, 2, 3, 4, 5, 8, 16, 17, 64, 128)
EPS32 = 2.0**-24


def _halves(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    return rng.uniform(lo, hi, n).astype(np.float16).view(np.uint8).reshape(n, 2)


def random_blocks(name: str, n: int, k: int, seed: int) -> QuantWeight:
    """A [n, k] matrix of random blocks: every quant byte random (all bit patterns of the
    values, the packed K-quant scales, MXFP4/NVFP4 codes and NVFP4's E4M3 scales), the fp16
    and E8M0 scale fields drawn so that weights have a sane size."""
    fmt = FORMATS[name]
    rng = np.random.default_rng(seed)
    nb = n * k // fmt.block
    b = rng.integers(0, 256, (nb, fmt.bytes), dtype=np.uint8)
    if name in ("q4_0", "q5_0", "q8_0"):
        b[:, 0:2] = _halves(rng, nb, -0.05, 0.05)
    elif name in ("q4_1", "q5_1"):
        b[:, 0:2], b[:, 2:4] = _halves(rng, nb, 0, 0.02), _halves(rng, nb, -0.1, 0.1)
    elif name in ("q4_k", "q5_k"):
        b[:, 0:2], b[:, 2:4] = _halves(rng, nb, 0, 0.003), _halves(rng, nb, 0, 0.003)
    elif name == "q6_k":
        b[:, 208:210] = _halves(rng, nb, -0.002, 0.002)
    elif name == "mxfp4":
        b[:, 0] = rng.integers(118, 126, nb)
    elif name == "nvfp4":
        b[:, 0:4] = rng.integers(0, 0x50, (nb, 4))  # E4M3 scales up to ~1 (0x7f would read as 0)
    return QuantWeight(fmt, torch.from_numpy(b.reshape(n, -1)), n, k)


def dequantized(w: QuantWeight) -> torch.Tensor:
    """The matrix in float64, by the gguf package (independent of our C decoders)."""
    values = gguf_dequantize(w.data.numpy(), GGMLQuantizationType(w.fmt.ggml_type))
    return torch.from_numpy(np.asarray(values, dtype=np.float32)).reshape(w.n, w.k).double() * w.scale


#: bytes that hold the quants of the formats with an additive min: zeroed, a block decodes to its mins
QUANT_BYTES = {"q4_1": slice(4, 20), "q5_1": slice(4, 24), "q4_k": slice(16, 144), "q5_k": slice(16, 176)}


def _mins(w: QuantWeight) -> torch.Tensor:
    """Each weight's additive min (0 for the symmetric formats), in float64."""
    if w.fmt.name not in QUANT_BYTES:
        return torch.zeros(w.n, w.k, dtype=torch.float64)
    blocks = w.data.clone().reshape(-1, w.fmt.bytes)
    blocks[:, QUANT_BYTES[w.fmt.name]] = 0
    return dequantized(QuantWeight(w.fmt, blocks.reshape(w.n, -1), w.n, w.k, w.scale))


KQUANTS = ("q4_k", "q5_k", "q6_k")


def int8_rows(x: torch.Tensor, group: int = 32) -> torch.Tensor:
    """x as the int8 kernel rounds it, exactly: per ``group`` values (32; 256 for the
    K-quants), q = rint(x * (127 / amax)) in fp32 (ties to even), standing for q * (amax / 127)."""
    blocks = x.reshape(x.shape[0], -1, group)
    amax = blocks.abs().amax(-1, keepdim=True)
    inv = torch.where(amax > 0, torch.tensor(127.0) / amax, torch.zeros_like(amax))
    q = torch.round(blocks * inv)
    return (q.double() * (amax / 127.0).double()).reshape(x.shape)


def reference(x: torch.Tensor, w: QuantWeight, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What the kernel computes, in float64, and how far fp32 arithmetic may take it.

    f32 mode: x @ W^T. int8 mode: W times x rounded per 32 values (int8_rows, the same
    rounding as the kernel's, so emulated exactly; the mins too multiply the rounded x, whose
    sum per 32 the kernel keeps as one fp32 product); for the K-quants, W times x rounded
    per 256 (their integer sums take the mins with the rounded x). The activation rounding
    is then no tolerance but part of the expected value (test_int8_rounding_is_bounded
    bounds it against x @ W^T). The tolerance is fp32 accumulation: one rounding per FMA
    step, K/32 chunk steps (int8), 2 K/256 (K-quants) or K/8 (f32), the 8-lane tree, scale,
    bias: (steps + 16) * 2^-24 of the sum of |terms|, doubled for the products and block
    scales rounded on the way (and Q6_K's int32 sums past 2^24 rounded once to fp32)."""
    w64, x64 = dequantized(w), x.double()
    kq = mode == "int8" and w.fmt.name in KQUANTS
    steps = (w.k / 128 if kq else w.k / (32 if mode == "int8" else 8)) + 16
    if mode == "f32":
        return x64 @ w64.T, 2 * steps * EPS32 * (x64.abs() @ w64.abs().T) + 1e-30
    if kq:
        xq = int8_rows(x, 256)
        return xq @ w64.T, 2 * steps * EPS32 * (xq.abs() @ w64.abs().T) + 1e-30
    mins = _mins(w)
    xq = int8_rows(x)
    value = xq @ w64.T
    bound = 2 * steps * EPS32 * (xq.abs() @ (w64 - mins).abs().T + xq.abs() @ mins.abs().T)
    return value, bound + 1e-30


def _k_for(name: str) -> list[int]:
    block = FORMATS[name].block
    return [256, 512] if block == 256 else [3 * block, 10 * 32 if block == 32 else 4 * block]


@pytest.fixture(params=["int8", "f32"])
def mode(request):
    before = set_mode(request.param)
    yield request.param
    set_mode(before)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_matches_dequantized_matmul(name, mode) -> None:
    """Every row count 1..128 (tile shapes 4x2 and their remainders, 1-2-row panels of 4),
    odd N (a narrower last panel), K with a partial octet of chunks; bias and accumulate."""
    for k in _k_for(name):
        w = random_blocks(name, 13, k, seed=k)
        gen = torch.Generator().manual_seed(k)
        for m in ROWS:
            x = torch.randn(m, k, generator=gen) * torch.rand(m, 1, generator=gen) * 3
            expected, bound = reference(x, w, mode)
            err = (qlinear(x, w).double() - expected).abs()
            assert (err <= bound).all(), (name, k, m, (err / bound).max().item())
            b, out = torch.randn(13, generator=gen), torch.randn(m, 13, generator=gen)
            start = out.clone()
            qlinear(x, w, b, out=out, accumulate=True)
            err = (out.double() - (start.double() + expected + b.double())).abs()
            assert (err <= bound + 4 * EPS32 * (start.abs() + b.abs()).double()).all(), (name, k, m)


@pytest.mark.parametrize("name", ["q4_0", "q4_k", "q6_k", "nvfp4"])
def test_int8_rounding_is_bounded(name) -> None:
    """int8 activations against the exact product: rounding x to a grid of amax/127 per 32
    values moves each x by at most half a step (0.51 with the rounding of x * 127/amax), so
    the result moves by at most the sum over blocks of that step times sum |w| there (one
    step per 256 values for the K-quants)."""
    before = set_mode("int8")
    try:
        w = random_blocks(name, 7, 512, seed=4)
        x = torch.randn(9, 512)
        w64 = dequantized(w)
        g = 256 if name in KQUANTS else 32
        step = x.double().abs().reshape(9, -1, g).amax(-1) * (0.51 / 127)
        bound = step @ w64.abs().reshape(7, -1, g).sum(-1).T + reference(x, w, "f32")[1]
        assert ((qlinear(x, w).double() - x.double() @ w64.T).abs() <= bound).all()
    finally:
        set_mode(before)


def test_bound_is_tight_enough_to_fail() -> None:
    """The tolerance above catches a wrong block decode: one weight off by one quant step."""
    w = random_blocks("q4_k", 5, 256, seed=1)
    x = torch.randn(3, 256)
    wrong = torch.zeros(5, 256, dtype=torch.float64)
    wrong[2, 37] = 0.003  # one step of the smallest sub-block scale, about
    for mode in ("int8", "f32"):
        before = set_mode(mode)
        try:
            expected, bound = reference(x, w, mode)
            assert ((qlinear(x, w).double() - expected).abs() <= bound).all()
            assert ((qlinear(x, w).double() - (expected + x.double() @ wrong.T)).abs() > bound).any()
        finally:
            set_mode(before)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_batch_invariant(name, restore_threads) -> None:
    """A row's output is the same bits alone as at any place in calls of 1..128 rows, with 1
    and 2 threads, in both arithmetics, stored or accumulated."""
    k = 512 if FORMATS[name].block != 32 else 320
    w = random_blocks(name, 21, k, seed=3)
    gen = torch.Generator().manual_seed(5)
    pool, base, b = torch.randn(128, k, generator=gen), torch.randn(128, 21, generator=gen), torch.randn(21, generator=gen)
    for mode in ("int8", "f32"):
        before = set_mode(mode)
        try:
            torch.set_num_threads(1)
            alone = torch.cat([qlinear(pool[i : i + 1].contiguous(), w, b) for i in range(128)])
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for m in (1, 2, 3, 4, 5, 16, 17, 64, 128):
                    rows = torch.randperm(128, generator=gen)[:m]
                    assert torch.equal(qlinear(pool[rows], w, b), alone[rows]), (mode, threads, m)
                    out = base[rows].clone()
                    qlinear(pool[rows], w, b, out=out, accumulate=True)
                    assert torch.equal(out, base[rows] + alone[rows]), (mode, threads, m)
        finally:
            set_mode(before)


@pytest.mark.parametrize("name", KQUANTS)
def test_avx512_tiles_give_the_avx2_bits(name, restore_threads) -> None:
    """The K-quants' AVX-512 tiles (8-row tiles, 512-bit steps) give the AVX2 tiles' bits:
    the instruction set changes speed, never a result."""
    before = set_isa(2)
    if before < 0:
        pytest.skip("no AVX-512 here")
    try:
        w = random_blocks(name, 11, 768, seed=9)
        x = torch.randn(37, 768)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            set_isa(2)
            wide = [qlinear(x[:m].contiguous(), w) for m in (1, 2, 3, 4, 8, 9, 37)]
            set_isa(1)
            narrow = [qlinear(x[:m].contiguous(), w) for m in (1, 2, 3, 4, 8, 9, 37)]
            assert all(torch.equal(a, b) for a, b in zip(wide, narrow))
    finally:
        set_isa(before)


def test_environment_caps_the_quantized_kernels_too() -> None:
    """HOGWILD_KERNEL_ISA=avx2 (benchmarks compare instruction sets with it) also keeps the
    quantized kernels on their AVX2 tiles."""
    import subprocess
    import sys

    if set_isa(-1) != 2:
        pytest.skip("no AVX-512 here")
    code = "from hogwild.kernels.qlinear import set_isa; print(set_isa(-1))"
    for cap, isa in (("avx2", "1"), ("avx512", "2")):
        env = {**os.environ, "HOGWILD_KERNEL_ISA": cap}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0 and done.stdout.split()[-1] == isa, (cap, done.stdout, done.stderr)


def test_corrections_and_scale(mode) -> None:
    """The guard's corrections land where fix_index says, after the product, in order (two
    on one weight add up); the per-tensor scale multiplies every block value."""
    base = random_blocks("nvfp4", 9, 128, seed=7)
    index = torch.tensor([[2, 5], [7, 100], [2, 5], [0, 127]], dtype=torch.int32)
    delta = torch.tensor([40.0, -25.0, 3.0, 11.0])
    w = QuantWeight(base.fmt, base.data, 9, 128, scale=0.37, fix_index=index, fix_delta=delta)
    fixes = torch.zeros(9, 128, dtype=torch.float64)
    for (i, j), d in zip(index.tolist(), delta.tolist()):
        fixes[i, j] += d
    x = torch.randn(6, 128)
    got = QuantLinear(w)(x).double()
    expected, bound = reference(x, w, mode)
    bound = bound + 8 * EPS32 * (x.double().abs() @ (dequantized(w).abs() + fixes.abs()).T)
    assert ((got - (expected + x.double() @ fixes.T)).abs() <= bound).all()
    plain = qlinear(x, QuantWeight(base.fmt, base.data, 9, 128, scale=0.37)).double()
    assert ((got - plain)[:, [1, 3, 4, 5, 6, 8]] == 0).all()  # columns without corrections untouched


def test_quant_linear_module() -> None:
    w = random_blocks("q8_0", 10, 64, seed=2)
    bias = torch.randn(10)
    layer = QuantLinear(w, bias)
    x = torch.randn(2, 3, 64)
    y = layer(x)
    assert y.shape == (2, 3, 10) and y.dtype == torch.float32
    assert torch.equal(y.reshape(6, 10), qlinear(x.reshape(6, 64), w, bias))
    assert "q8_0" in repr(layer)
    assert kernels.format_supported(FORMATS["q4_k"].ggml_type) and not kernels.format_supported(1)


def test_bad_input_is_a_clear_error() -> None:
    w = random_blocks("q4_0", 4, 64, seed=0)
    with pytest.raises(HogwildError, match="multiple"):
        QuantWeight(FORMATS["q4_k"], torch.zeros(4, 144, dtype=torch.uint8), 4, 300)
    with pytest.raises(HogwildError, match="shape"):
        QuantWeight(FORMATS["q4_0"], torch.zeros(4, 35, dtype=torch.uint8), 4, 64)
    with pytest.raises(ValueError, match="features"):
        qlinear(torch.randn(2, 32), w)
    with pytest.raises(HogwildError, match="outside"):
        QuantLinear(QuantWeight(w.fmt, w.data, 4, 64, fix_index=torch.tensor([[4, 0]]), fix_delta=torch.ones(1)))
    with pytest.raises(HogwildError, match="bias"):
        QuantLinear(w, torch.zeros(5))


# ------------------------------------------------------------------ the native decoder

def _quantize_like(model, plan: dict[str, str], fuse: bool, seed: int):
    """(plain, quantized): plain holds the dequantized values of random blocks in every
    projection (the PyTorch oracle); quantized is the same model with QuantLinear modules
    over those blocks, q/k/v and gate/up fused (one format each) or separate."""
    plain = copy.deepcopy(model)
    quant = copy.deepcopy(model)
    for li, (pl, ql) in enumerate(zip(plain.model.layers, quant.model.layers)):
        groups = {"qkv": (pl.self_attn, ("q_proj", "k_proj", "v_proj")), "o": (pl.self_attn, ("o_proj",)),
                  "gate_up": (pl.mlp, ("gate_proj", "up_proj")), "down": (pl.mlp, ("down_proj",))}
        for group, (owner, names) in groups.items():
            parts, scale = [], None
            for pi, name in enumerate(names):
                lin = getattr(owner, name)
                fmt = plan.get(name, plan.get(group))
                qw = random_blocks(fmt, lin.out_features, lin.in_features, seed=seed + 100 * li + 10 * pi + len(group))
                # the per-tensor scale gives every matrix a gain near 1 (random blocks' values are
                # far larger and would make the tiny model chaotic); one scale per fused group
                scale = scale or float(0.8 / lin.in_features**0.5 / dequantized(qw).std())
                qw = QuantWeight(qw.fmt, qw.data, qw.n, qw.k, scale=scale)
                with torch.no_grad():
                    lin.weight.copy_(dequantized(qw).float())
                parts.append((name, qw, lin.bias))
            q_owner = ql.self_attn if owner is pl.self_attn else ql.mlp
            if fuse and len(parts) > 1:
                first = parts[0][1]
                data = torch.cat([p[1].data for p in parts])
                bias = None if parts[0][2] is None else torch.cat([p[2].detach() for p in parts])
                fused = QuantLinear(QuantWeight(first.fmt, data, data.shape[0], first.k, scale=first.scale), bias)
                setattr(q_owner, group + "_proj", fused)
                for name, _, _ in parts:
                    delattr(q_owner, name)
            else:
                for name, qw, bias in parts:
                    setattr(q_owner, name, QuantLinear(qw, None if bias is None else bias.detach()))
    if fuse:
        plain.fuse_projections()
    return plain, prepare_for_cpu(quant)


DECODER_CASES = {
    # Q4_K_M-like: v and down in Q6_K, q/k/v and gate/up separate (formats differ)
    "q4_k_m": ({"qkv": "q4_k", "v_proj": "q6_k", "o": "q4_k", "gate_up": "q4_k", "down": "q6_k"}, False, {}),
    "q4_1 fused, biases": ({"qkv": "q4_1", "o": "q8_0", "gate_up": "q5_1", "down": "q4_1"}, True,
                           {"model_type": "qwen2", "qkv_bias": True}),
    "fp4, separate": ({"qkv": "mxfp4", "o": "nvfp4", "gate_up": "q5_0", "down": "q4_0"}, False, {}),
}


@pytest.mark.parametrize("case", sorted(DECODER_CASES))
def test_decoder_on_quantized_weights(case, mode) -> None:
    """All layers in C over quantized weights against the plain model holding the same
    dequantized weights (dense reference attention). K is a multiple of 256 (hidden 256,
    intermediate 512) so every format fits. With fp32 arithmetic the two differ by fp32
    rounding only (1e-4 as for fp32 weights); with int8 activations each projection adds
    its activation rounding (about 0.3% of a typical output, see test_int8_rounding_is_bounded),
    so logits may move by a few percent of their range."""
    plan, fuse, arch = DECODER_CASES[case]
    model = tiny_model(seed=11, hidden_size=256, intermediate_size=512, num_heads=4, num_kv_heads=2, head_dim=64, **arch)
    plain, quant = _quantize_like(model, plan, fuse, seed=11)
    assert quant.stack is not None
    script = random_script(3, seed=11, check_in_every=4)
    fast = Engine(quant, "combined", decode=toy_decode).start(script)
    ref = Engine(plain, "combined", decode=toy_decode, attention="reference").start(script)
    worst = 0.0
    for pairs in lockstep(fast, ref, forced_tokens(3, 10, seed=11)):
        for a, b in pairs:
            worst = max(worst, ((a - b).abs().max() / b.abs().max()).item())
    assert worst < (1e-4 if mode == "f32" else 5e-2), worst


def test_native_subblock_fit_matches_the_reference():
    """hw_fit_subblocks against hogwild.quant.encode.fit_subblocks: the same search, sums in
    another order, so equal up to fp32 rounding (where two candidates' errors tie within it,
    either may win: both reach the same error)."""
    from hogwild.kernels.qlinear import fit_subblocks as native_fit
    from hogwild.quant.encode import fit_subblocks

    g = torch.Generator().manual_seed(11)
    x = torch.randn(6000, 32, generator=g) * torch.rand(6000, 1, generator=g)
    x[:40] = 0.25  # equal values: positive, negative, zero
    x[40:80] = -0.5
    x[80:120] = 0.0
    x[120:160, 7] *= 40  # one outlier
    ref, ours = fit_subblocks(x, 15), native_fit(x, 15)
    for a, b in zip(ref, ours):
        close = torch.isclose(a, b, rtol=1e-4, atol=1e-6)
        assert float(close.float().mean()) > 0.98
    assert torch.equal(ours[0][:120], ref[0][:120]) and torch.equal(ours[1][:120], ref[1][:120])

    def weighted(scale, offset):
        levels = torch.where(scale[:, None] > 0, ((x - offset[:, None]) / scale[:, None].clamp(min=1e-30)).round(), 0)
        w = x.pow(2).mean(-1, keepdim=True).sqrt() + x.abs()
        return (w * (scale[:, None] * levels.clamp(0, 15) + offset[:, None] - x).pow(2)).sum(-1).double()

    e_ref, e_ours = weighted(*ref), weighted(*ours)
    lo = x.amin(-1).clamp(max=0.0)
    e_plain = weighted((x.amax(-1) - lo) / 15, lo)  # c = 10 of the search: never beaten by it
    assert bool((e_ours <= e_plain * (1 + 1e-4) + 1e-9).all()) and bool((e_ref <= e_plain * (1 + 1e-4) + 1e-9).all())
    assert abs(float(e_ours.sum() / e_ref.sum()) - 1) < 0.01  # ties flip both ways
    with pytest.raises(ValueError, match="rows of 32"):
        native_fit(torch.zeros(4, 16), 15)
