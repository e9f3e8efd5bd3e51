"""The native CPU kernels: each against PyTorch, the native decoder against the reference
engine, and the fallback when they are turned off."""

from __future__ import annotations

import copy
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from hogwild import kernels
from hogwild.core.engine import Engine
from hogwild.core.layouts import LAYOUTS
from hogwild.kernels import KernelLinear, PackedLinear, prepare_for_cpu
from hogwild.kernels.build import cpu_supported

from kernel_isa import AMX, ISAS, isa, restore_threads  # noqa: F401 (fixtures used by name)
from tiny import forced_tokens, lockstep, random_script, tiny_model, toy_decode


def _buildable() -> bool:
    return cpu_supported() and shutil.which("cc") is not None


needs_kernels = pytest.mark.skipif(not kernels.available(), reason=f"native kernels: {kernels.status()}")


def test_kernels_build_where_they_can() -> None:
    """Where a compiler and AVX2 exist, the kernels must build (a broken build is a failure,
    not a silent fallback)."""
    if not _buildable():
        pytest.skip("no C compiler or no AVX2 here")
    assert kernels.available(), kernels.status()


def test_turned_off_by_environment(monkeypatch) -> None:
    monkeypatch.setenv(kernels.ENV, "0")
    kernels.reset()
    try:
        assert not kernels.available()
        assert "HOGWILD_KERNELS" in kernels.status()
        model = prepare_for_cpu(copy.deepcopy(tiny_model(seed=2)).fuse_projections())
        assert model.stack is None
        assert not any(isinstance(m, KernelLinear) for m in model.modules())
        assert isinstance(model.lm_head, (PackedLinear, torch.nn.Linear))
    finally:
        monkeypatch.delenv(kernels.ENV)
        kernels.reset()
    if _buildable():  # back on once the variable is gone
        assert kernels.available(), kernels.status()


@needs_kernels
def test_argmax_rows_matches_torch(restore_threads) -> None:
    """Greedy's pick: torch's max(-1).indices (first of ties, first NaN) for any row length,
    ties everywhere (small integers), infinities and NaNs, on 1 or 2 threads."""
    gen = torch.Generator().manual_seed(0)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for n in (1, 5, 8, 9, 16, 17, 31, 1000, 49152):
            x = torch.randint(-3, 4, (7, n), generator=gen).float()
            if n > 3:
                x[1, n // 2] = math.nan
                x[2, :] = -math.inf
                x[3, n - 1] = math.inf
                x[4, 0], x[4, n - 1] = math.nan, math.nan
            assert kernels.argmax_rows(x) == x.max(-1).indices.tolist(), n
    # many wide rows on 2 and 3 threads: ties and NaNs far apart, a tie across the rows' middle
    for threads in (2, 3):
        torch.set_num_threads(threads)
        x = torch.randint(-3, 4, (140, 8195), generator=gen).float()
        x[0, :] = 0.0  # ties everywhere: the first column
        x[1, 6000], x[1, 7000] = 9.0, 9.0  # the largest late in the row, tied there
        x[2, 10], x[2, 8000] = 9.0, math.nan  # a NaN long after the largest
        x[3, 5000], x[3, 8194] = math.nan, math.nan  # two NaNs: the first one
        x[4, 4095], x[4, 4096] = 9.0, 9.0  # a tie across the middle
        x[5, :] = -math.inf
        assert kernels.argmax_rows(x) == x.max(-1).indices.tolist(), threads
    view = torch.randn(4, 10, generator=gen)[:, ::2]  # strided: copied first
    assert kernels.argmax_rows(view) == view.max(-1).indices.tolist()
    with pytest.raises(ValueError):
        kernels.argmax_rows(torch.zeros(2, 0))
    with pytest.raises(ValueError):
        kernels.argmax_rows(torch.zeros(2, 3, dtype=torch.bfloat16))


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 13, 16, 37, 128])
# (96, 64), (48, 1120): shapes the AMX path takes (rows % 16, columns % 32)
@pytest.mark.parametrize("shape", [(17, 5), (96, 64), (40, 72), (33, 150), (70, 1100), (48, 1120)])
def test_linear(dtype, rows, shape, isa) -> None:
    torch.manual_seed(rows)
    n, k = shape
    x, w, b = torch.randn(rows, k), torch.randn(n, k).to(dtype), torch.randn(n)
    xe = x.to(torch.bfloat16) if kernels.linear_rounds_input(w) else x  # the AMX path's input
    expected = F.linear(xe.double(), w.double(), b.double())
    assert torch.allclose(kernels.linear(x, w, b).double(), expected, atol=1e-4 * math.sqrt(k))
    assert torch.allclose(kernels.linear(x, w).double(), expected - b.double(), atol=1e-4 * math.sqrt(k))
    out = torch.randn(rows, n)
    start = out.clone()
    kernels.linear(x, w, b, out=out, accumulate=True)
    assert torch.allclose(out.double(), start.double() + expected, atol=1e-4 * math.sqrt(k))


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# K % 8, % 16 and % 32 tails; 4101 is cut into K blocks (AVX2 at 37+ rows, AVX-512 from 4); 576
# (SmolLM2's hidden size) has no tail; 52 columns leave a narrower last panel for every panel
# width (3, 4, 6, 8)
# 48 x 576 and 64 x 4096: shapes of the AMX path (3 or 2 weight tiles per step)
@pytest.mark.parametrize("n,k", [(52, 37), (52, 576), (52, 4101), (48, 576), (64, 4096)])
def test_linear_is_batch_invariant(dtype, n, k, restore_threads, isa) -> None:
    """A row's output is the same bits whatever the other rows of the call, its position in
    it, the number of rows (1 .. 128: other tile shapes, K blocking) and the thread count."""
    torch.manual_seed(k)
    pool, w, b = torch.randn(128, k), torch.randn(n, k).to(dtype), torch.randn(n)
    base = torch.randn(128, n)
    torch.set_num_threads(1)  # one thread: quick even on a busy machine (and another split)
    alone = torch.cat([kernels.linear(pool[i : i + 1].contiguous(), w, b) for i in range(128)])
    gen = torch.Generator().manual_seed(k)
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        for m in (1, 3, 5, 8, 16, 37, 128):
            for _ in range(2):
                rows = torch.randperm(128, generator=gen)[:m]
                assert torch.equal(kernels.linear(pool[rows], w, b), alone[rows]), (threads, m)
                out = base[rows].clone()
                kernels.linear(pool[rows], w, b, out=out, accumulate=True)
                assert torch.equal(out, base[rows] + alone[rows]), (threads, m)


@needs_kernels
def test_elementwise_kernels() -> None:
    torch.manual_seed(0)
    x, w = torch.randn(5, 77) * 3, torch.randn(77)
    assert torch.allclose(kernels.rmsnorm(x, w, 1e-6), F.rms_norm(x, (77,), w, 1e-6), atol=1e-5)
    gate_up = torch.randn(3, 2 * 45) * 8  # large |gate| exercises both branches of silu
    gate, up = gate_up.chunk(2, dim=-1)
    assert torch.allclose(kernels.silu_mul(gate_up), F.silu(gate) * up, rtol=1e-5, atol=1e-5)


@needs_kernels
def test_instruction_set_choice() -> None:
    """Unpinned, the kernels use the widest set the CPU has; a set it lacks is refused and
    changes nothing. The sets round differently (their own reduction orders) but agree."""
    lib = kernels.library()
    assert lib.hw_isa(-1) == max(ISAS)
    if 2 not in ISAS:
        assert lib.hw_isa(2) == -1 and lib.hw_isa(-1) == 1
    torch.manual_seed(5)
    x, w = torch.randn(16, 300), torch.randn(40, 300).to(torch.bfloat16)
    outs = []
    try:
        for i in ISAS:
            assert lib.hw_isa(i) == i
            outs.append(kernels.linear(x, w))
    finally:
        lib.hw_isa(0)
    for out in outs[1:]:
        assert torch.allclose(out, outs[0], atol=1e-4 * math.sqrt(300))
    # the dot tiles (AVX512_BF16) take bf16 weights with K % 32 == 0, AMX those that also have
    # N % 16 == 0; both read x as bf16: the same as the AVX-512 path given the rounded x, up
    # to the order of the fp32 sums
    fits, odd = torch.randn(48, 320).to(torch.bfloat16), torch.randn(40, 320).to(torch.bfloat16)
    ragged = torch.randn(48, 300).to(torch.bfloat16)  # K % 32 != 0: no set rounds x
    x = torch.randn(16, 320)
    for level in (3, AMX):
        if level not in ISAS:
            continue
        try:
            assert lib.hw_isa(level) == level
            assert kernels.linear_rounds_input(fits) and kernels.linear_rounds_input(odd)
            assert not kernels.linear_rounds_input(fits.float()) and not kernels.linear_rounds_input(ragged)
            on_tiles = kernels.linear(x, fits), kernels.linear(x, odd)
            assert lib.hw_isa(2) == 2 and not kernels.linear_rounds_input(fits)
            rounded_first = kernels.linear(x.to(torch.bfloat16).float(), fits), kernels.linear(
                x.to(torch.bfloat16).float(), odd)
        finally:
            lib.hw_isa(0)
        for got, want in zip(on_tiles, rounded_first):
            assert torch.allclose(got, want, atol=1e-4 * math.sqrt(320))
        assert not torch.allclose(on_tiles[0], kernels.linear(x, fits.float()), atol=1e-6)


def _dot_pairs_order(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """The AVX-512 BF16 linear's documented order in plain fp32 arithmetic (hogwild_cpu.c,
    pairs_linear): x rounded to bf16; per element, one VDPBF16PS step per key pair, in order,
    each adding the odd key's product and then the even key's (products of two bf16 are
    exact in fp32, each sum rounds); then the bias."""
    xs, ws = x.to(torch.bfloat16).float(), w.float()
    acc = torch.zeros(x.shape[0], w.shape[0])
    for k in range(0, x.shape[1], 2):
        acc = acc + xs[:, k + 1 : k + 2] * ws[:, k + 1]
        acc = acc + xs[:, k : k + 1] * ws[:, k]
    return acc if b is None else acc + b


@needs_kernels
@pytest.mark.skipif(3 not in ISAS, reason="the CPU has no AVX512_BF16")
def test_dot_pairs_follow_their_order_in_either_layout() -> None:
    """On AVX512_BF16 a bf16 weight is computed in one order per element, the same bits
    whether reordered once into dot pairs (PairedBF16, as KernelLinear keeps it) or plain
    (reordered per call), for any number of rows and ragged column counts. A KernelLinear
    keeps only the pairs, gives the plain weight back, and computes prefill-sized calls the
    same way; pinned below AVX512_BF16 afterwards, the pairs are refused with a clear error."""
    lib = kernels.library()
    torch.manual_seed(11)
    try:
        assert lib.hw_isa(3) == 3
        for n, k in ((20, 96), (52, 576), (16, 32), (33, 160)):
            w, b = torch.randn(n, k).to(torch.bfloat16), torch.randn(n)
            x = torch.randn(128, k)
            assert kernels.pairs_pay(w) and not kernels.pairs_pay(w.float())
            paired = kernels.PairedBF16.pack(w)
            assert torch.equal(paired.unpack(), w) and kernels.linear_rounds_input(paired)
            want = _dot_pairs_order(x, w, b)
            for rows in (1, 2, 3, 5, 8, 16, 37, 128):
                assert torch.equal(kernels.linear(x[:rows].contiguous(), w, b), want[:rows]), (n, k, rows)
                assert torch.equal(kernels.linear(x[:rows].contiguous(), paired, b), want[:rows]), (n, k, rows)
            out = torch.randn(16, n)
            start = out.clone()
            kernels.linear(x[:16].contiguous(), paired, out=out, accumulate=True)
            assert torch.equal(out, start + _dot_pairs_order(x[:16], w, None))
        linear = torch.nn.Linear(576, 52).to(torch.bfloat16)
        layer = KernelLinear(linear)
        assert layer.paired is not None and layer.plain is None
        assert torch.equal(layer.weight, linear.weight.detach())
        xs = torch.randn(300, 576)  # above MAX_ROWS: a prefill chunk
        assert torch.equal(layer(xs)[:7], layer(xs[:7])) and torch.equal(layer(xs.view(3, 100, 576))[1], layer(xs[100:200]))
        assert lib.hw_isa(2) == 2 and not kernels.pairs_pay(w)
        with pytest.raises(RuntimeError, match="prepare the model again"):
            layer(xs[:2])
        assert KernelLinear(linear).paired is None  # prepared on AVX-512: plain bf16
    finally:
        lib.hw_isa(0)


@needs_kernels
def test_dot_pairs_threads_share_every_column_once(restore_threads) -> None:
    """Each thread takes its share of a call's column groups in order, then its mate's last
    ones while the mate is still at work (pairs_linear): however the groups come out split,
    every column is computed once (an accumulating call would add a column twice, a missed
    one keeps its old value), in its order, with 1 to 5 threads, with the weights in dot
    pairs or plain."""
    lib = kernels.library()
    torch.manual_seed(12)
    try:
        if lib.hw_isa(3) != 3:
            pytest.skip("no AVX512_BF16 on this CPU")
        n, k = 1000, 64  # 63 panels: many groups for every row tile shape
        w, b = torch.randn(n, k).to(torch.bfloat16), torch.randn(n)
        paired = kernels.PairedBF16.pack(w)
        x = torch.randn(16, k)
        for threads in (1, 2, 3, 4, 5):
            torch.set_num_threads(threads)
            for rows in (1, 5, 16):
                want = _dot_pairs_order(x[:rows], w, b)
                for weight in (paired, w):
                    for _ in range(3):
                        assert torch.equal(kernels.linear(x[:rows].contiguous(), weight, b), want), (threads, rows)
                        out = torch.randn(rows, n)
                        start = out.clone()
                        kernels.linear(x[:rows].contiguous(), weight, b, out=out, accumulate=True)
                        assert torch.equal(out, start + want), (threads, rows)
    finally:
        lib.hw_isa(0)


@needs_kernels
def test_wrappers_refuse_bad_tensors() -> None:
    with pytest.raises(ValueError, match="fp32"):
        kernels.linear(torch.randn(2, 4, dtype=torch.float64), torch.randn(3, 4))
    with pytest.raises(ValueError, match="mismatch"):
        kernels.linear(torch.randn(2, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="contiguous"):
        kernels.linear(torch.randn(4, 2).t(), torch.randn(3, 4))


@needs_kernels
def test_store_kv_rotates_and_rounds_like_torch() -> None:
    from hogwild.models.rope import rotate

    torch.manual_seed(1)
    for dtype in (torch.float32, torch.bfloat16):
        k, v = torch.randn(3, 2, 16), torch.randn(3, 2, 16)
        angles = torch.rand(3, 8)
        cos, sin = torch.cat((angles.cos(),) * 2, -1), torch.cat((angles.sin(),) * 2, -1)
        k_pool, v_pool = torch.zeros(2, 10, 16, dtype=dtype), torch.zeros(2, 10, 16, dtype=dtype)
        slots = torch.tensor([7, 2, 5])
        kernels.store_kv(k, v, slots, cos, sin, k_pool, v_pool)
        assert torch.equal(v_pool[:, slots].transpose(0, 1), v.to(dtype))
        expected = rotate(k, cos, sin).to(dtype)
        assert (k_pool[:, slots].transpose(0, 1).float() - expected.float()).abs().max().item() <= 1e-5 * (dtype == torch.float32) + 1e-2 * (dtype == torch.bfloat16)
        with pytest.raises(ValueError, match="slot"):
            kernels.store_kv(k, v, torch.tensor([1, 2, 10]), cos, sin, k_pool, v_pool)


def _prepared(model):
    prepared = prepare_for_cpu(copy.deepcopy(model).fuse_projections())
    assert prepared.stack is not None
    return prepared


@needs_kernels
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_native_decoder_equals_reference(layout: str, workers: int) -> None:
    """The whole native decode (all layers in C) against the dense oracle on the plain model."""
    plain = tiny_model(seed=workers)
    fast = Engine(_prepared(plain), layout, decode=toy_decode).start(random_script(workers, seed=workers, check_in_every=5))
    ref = Engine(plain, layout, decode=toy_decode, attention="reference").start(random_script(workers, seed=workers, check_in_every=5))
    worst = 0.0
    for pairs in lockstep(fast, ref, forced_tokens(workers, 30, seed=workers)):
        for a, b in pairs:
            worst = max(worst, (a - b).abs().max().item())
    assert worst < 1e-4, worst


@needs_kernels
@pytest.mark.parametrize(
    "arch",
    [
        {"head_dim": 64, "num_heads": 6, "num_kv_heads": 2, "hidden_size": 128},  # the 64-lane value path
        {"head_dim": 128, "num_heads": 2, "num_kv_heads": 1, "hidden_size": 96},
        {"model_type": "qwen3", "qk_norm": True},
        {"model_type": "qwen2", "qkv_bias": True},
        {"model_type": "llama", "qkv_bias": True, "o_bias": True, "mlp_bias": True},
    ],
)
def test_native_decoder_architectures(arch) -> None:
    plain = tiny_model(seed=4, **arch)
    script = random_script(3, seed=4)
    fast = Engine(_prepared(plain), "combined", decode=toy_decode).start(script)
    ref = Engine(plain, "combined", decode=toy_decode, attention="reference").start(script)
    for pairs in lockstep(fast, ref, forced_tokens(3, 12, seed=4)):
        for a, b in pairs:
            assert (a - b).abs().max().item() < 1e-4


@needs_kernels
def test_native_decoder_bf16_weights() -> None:
    """bf16 weights and store, fp32 math: close to the fp32 oracle on the same rounded weights
    (the only other rounding is the bf16 key/value store)."""
    bf16 = tiny_model(seed=6, dtype=torch.bfloat16)
    as_fp32 = copy.deepcopy(bf16).float()
    script = random_script(2, seed=6)
    fast = Engine(_prepared(bf16), "combined", decode=toy_decode).start(script)
    ref = Engine(as_fp32, "combined", decode=toy_decode, attention="reference").start(script)
    assert fast.store.dtype == torch.bfloat16
    for pairs in lockstep(fast, ref, forced_tokens(2, 12, seed=6)):
        for a, b in pairs:
            assert (a - b).abs().max().item() < 0.03 * b.abs().max().item()


@needs_kernels
@pytest.mark.parametrize("workers", [3, 16])
def test_native_decoder_equals_its_modules(workers: int) -> None:
    """bf16 weights (in dot pairs where the CPU has AVX512_BF16): all layers in one native call
    give the same bits as the same kernels called module by module. On the dot pairs the
    decoder fetches each next projection's weights ahead and runs a short row tile first;
    neither may change a value. 16 workers make three row tiles per group (6 + 6 + 4 rows),
    3 workers one."""
    bf16 = tiny_model(seed=11, dtype=torch.bfloat16)
    native = _prepared(bf16)
    modules = _prepared(bf16)
    modules.stack = None  # the module path: KernelLinear, ops.silu_mul, KernelRMSNorm, KernelPlan
    script = random_script(workers, seed=11)
    a = Engine(native, "combined", decode=toy_decode).start(script)
    b = Engine(modules, "combined", decode=toy_decode).start(script)
    for pairs in lockstep(a, b, forced_tokens(workers, 8, seed=11)):
        for x, y in pairs:
            assert torch.equal(x, y)


class _GivenPass:
    """A NativePassSource that hands the decoder a pass built by the test."""

    def __init__(self, native: kernels.NativePass):
        self.native = native

    def native_pass(self) -> kernels.NativePass:
        return self.native


class _BatchedPasses:
    """A universe of 128 rows of many runs, as a batched engine would pass them: every row sees
    a prompt block (some rows the same keys, some more of it), a shared marker, and its own step
    block, whose last key it writes in this pass. :meth:`run` sends any subset, in any order,
    through the native decoder on a fresh copy of the store, with every block moved by
    ``shift`` slots, and returns each row's output and the key and value it stored."""

    ROWS, SPAN = 128, 3072  # universe rows; the slots the universe uses

    def __init__(self, model, seed: int):
        c = model.config
        self.model, self.d = model, c.head_dim
        gen = torch.Generator().manual_seed(seed)
        self.own_len = [1 + r % 9 for r in range(self.ROWS)]
        self.own_start = [1024 + 16 * r for r in range(self.ROWS)]
        self.pairs = [[(0, 300 + r % 5), (900, 3), (self.own_start[r], self.own_len[r])] for r in range(self.ROWS)]
        shape = (c.num_layers, c.num_kv_heads, 2 * self.SPAN + 3, c.head_dim)
        self.k = torch.randn(shape, generator=gen).to(model.dtype)
        self.v = torch.randn(shape, generator=gen).to(model.dtype)
        self.x = torch.randn(self.ROWS, c.hidden_size, generator=gen)
        self.key_angles = torch.rand(self.ROWS, c.head_dim // 2, generator=gen) * 6
        self.query_angles = torch.rand(self.ROWS, 3, c.head_dim // 2, generator=gen) * 6

    @staticmethod
    def _cos_sin(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat((angles.cos(),) * 2, -1).contiguous(), torch.cat((angles.sin(),) * 2, -1).contiguous()

    def run(self, order: list[int], shift: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k, v = self.k.clone(), self.v.clone()
        if shift:
            k[:, :, shift : shift + self.SPAN] = self.k[:, :, : self.SPAN]
            v[:, :, shift : shift + self.SPAN] = self.v[:, :, : self.SPAN]
        slots = torch.tensor([self.own_start[r] + self.own_len[r] - 1 + shift for r in order])
        # rotation tables holding the rows' key angles, then their pairs' query angles, in
        # reverse so that an index, not the row order, must pick them
        k_cos, k_sin = self._cos_sin(self.key_angles[order])
        q_cos, q_sin = self._cos_sin(self.query_angles[order].reshape(-1, self.d // 2))
        cos, sin = torch.cat((k_cos, q_cos)).flip(0).contiguous(), torch.cat((k_sin, q_sin)).flip(0).contiguous()
        top = cos.shape[0] - 1
        native = kernels.NativePass(
            slots=slots, rope_cos=cos, rope_sin=sin,
            k_at=torch.tensor([top - r for r in range(len(order))], dtype=torch.int32),
            row_start=torch.arange(0, 3 * len(order) + 1, 3, dtype=torch.int32),
            pair_slot=torch.tensor([start + shift for r in order for start, _ in self.pairs[r]]),
            pair_len=torch.tensor([n for r in order for _, n in self.pairs[r]], dtype=torch.int32),
            pair_at=torch.tensor([top - len(order) - p for p in range(3 * len(order))], dtype=torch.int32),
            pair_key=torch.tensor([start + shift for r in order for start, _ in self.pairs[r]]),
            k=k, v=v, scale=1 / math.sqrt(self.d),
        )
        x = self.x[order].clone()
        assert self.model.stack.run(x, _GivenPass(native))
        return x, k[:, :, slots].clone(), v[:, :, slots].clone()


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_native_decoder_is_batch_invariant(dtype, restore_threads, isa) -> None:
    """All layers in C: each row's output and stored key/value are the same bits alone as in
    passes of up to 128 rows, in any order, with any thread count and with the store's
    blocks elsewhere in the pool."""
    model = _prepared(tiny_model(seed=8, dtype=dtype, head_dim=32, num_heads=6, num_kv_heads=2, hidden_size=96))
    universe = _BatchedPasses(model, seed=8)
    torch.set_num_threads(1)
    alone = [universe.run([r]) for r in range(universe.ROWS)]
    gen = torch.Generator().manual_seed(8)
    for threads, size, shift in ((2, 128, 0), (1, 128, 0), (2, 37, 3075), (2, 16, 0)):
        torch.set_num_threads(threads)
        order = torch.randperm(universe.ROWS, generator=gen)[:size].tolist()
        x, k, v = universe.run(order, shift)
        for i, r in enumerate(order):
            ax, ak, av = alone[r]
            assert torch.equal(x[i], ax[0]), (threads, size, shift, r)
            assert torch.equal(k[:, :, i], ak[:, :, 0]) and torch.equal(v[:, :, i], av[:, :, 0])


@needs_kernels
def test_native_decoder_big_passes_equal_reference(monkeypatch) -> None:
    """Passes of many rows (40 workers, up to MAX_ROWS rows) on the native decoder against the
    dense oracle: the 128-row limit is an accuracy-checked path, not only a fast one."""
    native_rows: list[int] = []
    run = kernels.NativeDecoder.run

    def spy(self, x, plan):
        took = run(self, x, plan)
        if took:
            native_rows.append(x.shape[0])
        return took

    monkeypatch.setattr(kernels.NativeDecoder, "run", spy)
    workers = 40
    plain = tiny_model(seed=9)
    script = random_script(workers, seed=9)
    fast = Engine(_prepared(plain), "combined", decode=toy_decode).start(script)
    ref = Engine(plain, "combined", decode=toy_decode, attention="reference").start(script)
    worst = 0.0
    for pairs in lockstep(fast, ref, forced_tokens(workers, 6, seed=9)):
        for a, b in pairs:
            worst = max(worst, (a - b).abs().max().item())
    assert worst < 1e-4, worst
    assert max(native_rows) > 40 and max(native_rows) <= kernels.MAX_ROWS, native_rows


@needs_kernels
def test_prepared_model_cannot_be_copied() -> None:
    prepared = _prepared(tiny_model(seed=1))
    with pytest.raises(TypeError, match="copy"):
        copy.deepcopy(prepared)


def test_broken_compiler_falls_back(monkeypatch, tmp_path) -> None:
    """A compiler that fails leaves a clear reason and the PyTorch path, never a crash."""
    if not cpu_supported():
        pytest.skip("no AVX2 here")
    monkeypatch.setenv("CC", shutil.which("false") or "/bin/false")
    monkeypatch.setenv("HOGWILD_CACHE", str(tmp_path))
    kernels.reset()
    try:
        assert not kernels.available()
        assert kernels.status().startswith("build failed")
        plain = tiny_model(seed=3)
        model = prepare_for_cpu(copy.deepcopy(plain).fuse_projections())
        assert model.stack is None
        script = random_script(2, seed=3)
        run = Engine(model, "combined", decode=toy_decode).start(script)
        ref = Engine(plain, "combined", decode=toy_decode, attention="reference").start(script)
        *_, pairs = lockstep(run, ref, forced_tokens(2, 5, seed=3))
        assert max((a - b).abs().max().item() for a, b in pairs) < 1e-4
    finally:
        monkeypatch.undo()
        kernels.reset()
