"""The GPU path: the Triton plan, CUDA graphs and batched runs on a CUDA device.

Marked ``cuda``; skipped without a CUDA GPU and Triton (CI). The Triton plan's tests also
run on CPU under Triton's interpreter (``TRITON_INTERPRET=1 pytest tests/test_gpu.py``,
with Triton installed), slowly; graph tests need CUDA itself.
"""

from __future__ import annotations

import random

import pytest
import torch

from hogwild import gpu
from hogwild.core import graphs as graphs_mod
from hogwild.core.attention import gpu as gpu_plan
from hogwild.core.batch import Batch
from hogwild.core.engine import Engine
from hogwild.core.layouts import LAYOUTS

from tiny import VOCAB, forced_tokens, lockstep, random_script, tiny_model, toy_decode

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not gpu.available(DEVICE), reason="needs a CUDA GPU with Triton (or TRITON_INTERPRET=1)"),
]
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA device")


def long_script(workers: int, seed: int, prompt: int = 150):
    """A random script whose prompt spans several key chunks."""
    s = random_script(workers, seed=seed, check_in_every=5)
    rng = random.Random(seed)
    s.prompt_ids = [rng.randrange(2, VOCAB) for _ in range(prompt)]
    return s


@pytest.fixture
def small_chunks(monkeypatch):
    """Key chunks of one kernel tile (64 keys), so that blocks are split across items."""
    monkeypatch.setattr(gpu_plan, "MIN_CHUNK", gpu.BLOCK_N)
    monkeypatch.setattr(gpu_plan, "target_items", lambda store: 1 << 20)
    monkeypatch.setattr(graphs_mod, "target_items", lambda store: 1 << 20)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_triton_plan_equals_reference(layout, workers, small_chunks):
    """Every layout, N = 1..8, through step merges: fp32, eager (no graphs)."""
    model = tiny_model(seed=workers).to(DEVICE)
    script = long_script(workers, seed=10 * workers + len(layout))
    fast = Engine(model, layout, decode=toy_decode, batch=Batch(model, "triton", graphs=False)).start(script)
    ref = Engine(model, layout, decode=toy_decode, attention="reference").start(script)
    worst = 0.0
    for pairs in lockstep(fast, ref, forced_tokens(workers, 24, workers)):
        for a, b in pairs:
            worst = max(worst, (a - b).abs().max().item())
        assert [fast.view(w) for w in range(workers)] == [ref.view(w) for w in range(workers)]
    assert worst < 1e-4, worst
    if LAYOUTS[layout].steps:
        assert len(fast.history_order) >= 2, "the test must exercise merges into history"


@pytest.mark.parametrize("groups", [(4, 1, 32), (8, 8, 64), (14, 2, 64), (6, 2, 80), (8, 2, 128)])
def test_head_layouts(groups, small_chunks):
    """GQA ratios 1..7 and head sizes 32..128 (80: not a power of two)."""
    heads, kv_heads, head_dim = groups
    model = tiny_model(seed=1, num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
                       hidden_size=heads * head_dim).to(DEVICE)
    script = long_script(2, seed=heads)
    fast = Engine(model, "combined", decode=toy_decode, batch=Batch(model, "triton", graphs=False)).start(script)
    ref = Engine(model, "combined", decode=toy_decode, attention="reference").start(script)
    worst = 0.0
    for pairs in lockstep(fast, ref, forced_tokens(2, 8, heads)):
        for a, b in pairs:
            worst = max(worst, (a - b).abs().max().item())
    assert worst < 1e-4, worst


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_graphs_replay_the_eager_pass(dtype):
    """Decode passes replayed from CUDA graphs give the eager Triton plan's logits."""
    model = tiny_model(seed=2, dtype=dtype).to(DEVICE)
    scripts = [long_script(3, seed=s) for s in (1, 2)]
    graphed = Batch(model, "triton", reproducible=False)
    eager = Batch(model, "triton", reproducible=False, graphs=False)
    a = [Engine(model, "combined", decode=toy_decode, batch=graphed).start(s) for s in scripts]
    b = [Engine(model, "combined", decode=toy_decode, batch=eager).start(s) for s in scripts]
    forced = forced_tokens(3, 30, 4)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    for f in forced:
        graphed.step(force={r: f for r in a})
        eager.step(force={r: f for r in b})
        for x, y in zip(a, b):
            for p, q in zip(x.logits, y.logits):
                assert (p - q).abs().max().item() <= tol * max(1.0, q.abs().max().item())
    assert graphed.graphs is not None and graphed.graphs.captures >= 1
    assert graphed.graphs.captures <= len(forced) // 2, "most passes must replay a graph"


@needs_cuda
def test_batched_runs_equal_solo_runs():
    """R runs of N workers in one batch produce the tokens each produces alone (greedy, fp32)."""
    model = tiny_model(seed=5).to(DEVICE)
    specs = [("combined", 2, 1), ("interleaved", 3, 2), ("independent", 2, 3), ("combined", 4, 4)]

    def tokens(runs, batch, passes=20):
        for _ in range(passes):
            batch.step()
        return [[r.worker_ids(w) for w in range(r.num_workers)] for r in runs]

    solo = []
    for layout, n, seed in specs:
        batch = Batch(model, "auto")
        run = Engine(model, layout, decode=toy_decode, batch=batch).start(long_script(n, seed))
        solo.append(tokens([run], batch)[0])
    batch = Batch(model, "auto", reproducible=False)
    runs = [Engine(model, layout, decode=toy_decode, batch=batch).start(long_script(n, seed))
            for layout, n, seed in specs]
    assert tokens(runs, batch) == solo
    assert batch.rows_last_pass == sum(n for _, n, _ in specs)  # one call carried them all


@needs_cuda
def test_auto_picks_triton_on_cuda():
    model = tiny_model(seed=1).to(DEVICE)
    assert Batch(model).plan_class(4) is gpu_plan.GpuPlan


def sequence_logits(model, ids: list[int], attention: str, split: int) -> torch.Tensor:
    """Logits of every position of ``ids`` through one block of a batch's store, fed in two
    model calls (a prefill of ``split`` rows, then the rest), as the engine feeds a block."""
    from hogwild.core.attention import QueryGroup

    batch = Batch(model, attention, graphs=False)
    block = batch.store.new_block(len(ids))
    out = []
    for lo, hi in ((0, split), (split, len(ids))):
        batch.store.reserve(block, hi - lo)
        group = QueryGroup([block], [block] * (hi - lo), list(range(lo, hi)))
        out.append(batch.forward(ids[lo:hi], [group], list(range(hi - lo))))
    return torch.cat(out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["llama", "llama3-rope", "llama-bias", "mistral", "qwen2", "qwen3", "qwen2-tied"])
def test_tiny_architectures_match_transformers_on_the_device(kind, dtype, tmp_path):
    from hogwild.models.loading import load_model

    if dtype == torch.bfloat16 and not CUDA:
        pytest.skip("Triton's interpreter computes bf16 dot products wrongly (triton 3.6)")

    from test_models import _hf_logits, _tiny_hf

    hf = _tiny_hf(kind)
    hf.save_pretrained(tmp_path)
    hf = hf.to(device=DEVICE, dtype=dtype)
    loaded = load_model(str(tmp_path), dtype=dtype, device=DEVICE)
    torch.manual_seed(1)
    ids = torch.randint(0, 128, (40,)).tolist()
    ref = _hf_logits(hf, torch.tensor(ids, device=DEVICE))
    ours = sequence_logits(loaded.model, ids, "triton", split=29)
    scale = ref.abs().max().item()
    tol = 1e-4 * max(1.0, scale) if dtype == torch.float32 else 4e-2 * scale
    assert (ours - ref).abs().max().item() <= tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_kernels_match_the_plain_ops(dtype):
    """The fused norm, SiLU gate and rope-store give the plain ops' results (fp32 to 1e-5;
    bf16 within one rounding)."""
    if dtype == torch.bfloat16 and not CUDA:
        pytest.skip("Triton's interpreter computes bf16 wrongly (triton 3.6)")
    from hogwild.gpu import triton_ops
    from hogwild.models.llama import rms_norm, silu_mul
    from hogwild.models.rope import Rope, rotate
    from tiny import tiny_config

    torch.manual_seed(0)
    x = torch.randn(5, 3, 80, device=DEVICE).to(dtype)
    w = (1 + 0.1 * torch.randn(80, device=DEVICE)).to(dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert torch.allclose(triton_ops.rmsnorm(x, w, 1e-6).float(), rms_norm(x, w, 1e-6).float(), atol=tol, rtol=tol)
    gu = torch.randn(4, 2 * 300, device=DEVICE).to(dtype)
    assert torch.allclose(triton_ops.silu_mul(gu).float(), silu_mul(gu).float(), atol=tol, rtol=tol)
    config = tiny_config(head_dim=32)
    rope = Rope(config, DEVICE)
    k = torch.randn(6, 2, 32, device=DEVICE).to(dtype)
    v = torch.randn(6, 2, 32, device=DEVICE).to(dtype)
    pos = torch.tensor([0, 3, 9, 100, 4000, 7], dtype=torch.int32, device=DEVICE)
    slots = torch.tensor([5, 0, 7, 2, 3, 11], dtype=torch.int32, device=DEVICE)
    k_pool = torch.full((2, 12, 32), float("nan"), device=DEVICE).to(dtype)
    v_pool = k_pool.clone()
    triton_ops.rope_store(k, v, pos, slots, rope.inv_freq, k_pool, v_pool)
    cos, sin = rope.cos_sin(pos.tolist())
    want = rotate(k, cos, sin)
    got = k_pool[:, slots.long()].transpose(0, 1)
    assert torch.allclose(got.float(), want.float(), atol=10 * tol, rtol=tol)
    assert torch.equal(v_pool[:, slots.long()].transpose(0, 1), v)
    assert torch.isnan(k_pool[:, 1]).all(), "slots not in the pass stay untouched"


@needs_cuda
def test_the_loaded_model_takes_the_fused_kernels(tmp_path):
    from hogwild.gpu import TritonRMSNorm
    from hogwild.loader import load_model
    from hogwild.models.sequence import SequencePlan

    from test_models import _tiny_hf

    _tiny_hf("qwen3").save_pretrained(tmp_path)
    plain = load_model(str(tmp_path), device=DEVICE, optimize=False).model
    fused = load_model(str(tmp_path), device=DEVICE).model
    assert isinstance(fused.model.norm, TritonRMSNorm) and not isinstance(plain.model.norm, TritonRMSNorm)
    ids = torch.arange(3, 40, device=DEVICE)
    a = plain(ids, SequencePlan(plain.config, DEVICE))
    b = fused(ids, SequencePlan(fused.config, DEVICE))
    assert (a - b).abs().max().item() <= 1e-4 * max(1.0, a.abs().max().item())
