"""Speed benchmark: our engine vs. transformers decoding vs. the hardware floor (issue 4).

One call of :func:`run_bench` measures, in ONE process and interleaved so that the ratios are
fair on a noisy shared machine:

- **ours**: time per forward pass of :class:`~hogwild.engine.Run` (combined layout, greedy) for
  N workers over a shared prompt of C tokens;
- **transformers**: time per decoding step of the transformers implementation of the same
  model and dtype with batch N, the same prompt replicated N times. This is what
  ``generate`` does per step (a forward of one new token per row over a ``DynamicCache``,
  then the greedy pick), written as an explicit loop so that prefill is not mixed in. The
  prompt is prefilled once at batch 1 and the cache is repeated N times
  (``batch_repeat_interleave``, as ``generate`` does for ``num_return_sequences``), so every
  row holds its own copy of the prompt's K/V, as it does under ``generate``;
- **floor**: max(bytes read per pass / measured memory bandwidth, FLOPs per pass / measured
  matmul rate), per variant.

Variants of one (dtype, context) group are set up together, then timed round-robin: each
round times ``passes`` consecutive passes of every variant in turn; the reported time is the
median over all timed passes. See ``docs/bench.md`` for what every column means.
"""

from __future__ import annotations

import copy
import cProfile
import io
import json
import math
import platform
import pstats
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import kernels
from .errors import InvalidRequestError
from .models.config import ModelConfig
from .models.llama import CausalLM

FORMAT = "hogwild-bench"
VERSION = 1

#: Named model shapes for --random-weights (random weights, real sizes).
SHAPES: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        model_type="llama", vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, rms_eps=1e-6, rope_theta=10000.0,
        max_positions=32768, tie_embeddings=True,
    ),
    "smollm2-135m": ModelConfig(
        model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
        num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64, rms_eps=1e-5,
        rope_theta=100000.0, max_positions=8192, tie_embeddings=True,
    ),
    "qwen2.5-0.5b": ModelConfig(
        model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
        num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64, rms_eps=1e-6,
        rope_theta=1000000.0, max_positions=32768, tie_embeddings=True, qkv_bias=True,
    ),
    "qwen2.5-7b": ModelConfig(
        model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
        num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128, rms_eps=1e-6,
        rope_theta=1000000.0, max_positions=32768, tie_embeddings=False, qkv_bias=True,
    ),
}

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name.strip().lower()]
    except KeyError:
        raise InvalidRequestError(f"unknown dtype {name!r}; use float32, bfloat16 or float16") from None


@dataclass
class BenchConfig:
    """Everything one benchmark run depends on (stored in the JSON as ``settings``)."""

    model: str = "smollm2-135m"
    random_weights: bool = False
    shape: str | None = None  # a key of SHAPES; with random_weights
    workers: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    contexts: list[int] = field(default_factory=lambda: [256, 1024, 4096])
    dtypes: list[str] = field(default_factory=lambda: ["float32", "bfloat16"])
    passes: int = 8  # timed passes per variant per round
    rounds: int = 3  # round-robin repeats
    warmup: int = 3  # untimed passes per variant before the first round
    threads: int = 2
    device: str = "cpu"
    transformers: bool = True  # time the transformers baseline
    bandwidth_mb: int = 512  # size of the tensor copied to measure memory bandwidth
    matmul_size: int = 2048  # n of the n x n x n matmul that measures the compute rate
    profile: bool = True  # profile a few passes of one engine variant
    profile_workers: int = 4
    profile_context: int = 1024
    seed: int = 0

    def validate(self) -> None:
        if not self.workers or min(self.workers) < 1:
            raise InvalidRequestError("--workers: give worker counts >= 1, e.g. 1,2,4,8")
        if not self.contexts or min(self.contexts) < 2:
            raise InvalidRequestError("--contexts: give context lengths >= 2 tokens, e.g. 256,1024,4096")
        if self.passes < 1 or self.rounds < 1 or self.warmup < 0:
            raise InvalidRequestError("--passes and --rounds must be >= 1, --warmup >= 0")
        if self.threads < 1:
            raise InvalidRequestError(f"--threads must be at least 1 (got {self.threads})")
        for d in self.dtypes:
            parse_dtype(d)
        if self.random_weights and (self.shape or self.model) not in SHAPES:
            raise InvalidRequestError(
                f"--config {self.shape!r}: unknown shape; choose one of {', '.join(SHAPES)}"
            )
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise InvalidRequestError("--device cuda: no CUDA device is available on this machine")


# ---------------------------------------------------------------------------- hardware
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_bandwidth(device: torch.device, megabytes: int = 512, repeats: int = 5) -> float:
    """Memory bandwidth in bytes/s: best of ``repeats`` copies of a ``megabytes`` tensor.

    A copy reads and writes every byte, so it moves 2 x size bytes.
    """
    n = max(1, megabytes * 2**20 // 4)
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch the pages once
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    size = src.numel() * src.element_size()
    del src, dst
    return 2 * size / best


def measure_matmul(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 3) -> float:
    """Dense matmul rate in FLOP/s for ``dtype``: best of ``repeats`` n x n @ n x n products.

    A dtype the hardware only emulates (bf16 on CPUs without bf16 instructions) would take
    minutes at n = 2048; a 256 probe comes first, and when an n-sized product would take over
    2 s the rate is measured at the largest power-of-two size that fits (rates barely depend
    on n at that point: emulation is compute-bound at every size)."""

    def best_of(size: int, reps: int) -> float:
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        torch.matmul(a, b)
        best = math.inf
        for _ in range(reps):
            _sync(device)
            t0 = time.perf_counter()
            torch.matmul(a, b)
            _sync(device)
            best = min(best, time.perf_counter() - t0)
        return 2 * size**3 / best

    probe = min(n, 256)
    rate = best_of(probe, 1)
    size = n
    while size > probe and 2 * size**3 / rate > 2.0:
        size //= 2
    return best_of(size, repeats) if size > probe else rate


def compute_rate(device: torch.device, dtype: torch.dtype, n: int, rates: dict[str, float], console: Any) -> float:
    """The compute rate the floor divides FLOPs by: the best of ``dtype``'s matmul rate and,
    on CPU, fp32's. On CPU our kernels do bf16 passes in fp32 arithmetic (bf16 weights, fp32
    math), so a CPU without bf16 instructions is bounded by its fp32 rate, not by the crawl of
    its emulated bf16 matmul. Measured rates are recorded in ``rates`` (by dtype name)."""
    names = [dtype] + ([torch.float32] if device.type == "cpu" and dtype != torch.float32 else [])
    for d in names:
        if dtype_name(d) not in rates:
            rates[dtype_name(d)] = measure_matmul(device, d, n)
            _log(console, f"matmul rate {dtype_name(d)}: {rates[dtype_name(d)] / 1e9:.1f} GFLOP/s")
    return max(rates[dtype_name(d)] for d in names)


def rss_bytes() -> int:
    """Current resident set size (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss_bytes() -> int:
    """Peak RSS of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _memory_now(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else rss_bytes()


# ---------------------------------------------------------------------------- models
@dataclass
class Models:
    """Our model and the transformers model of the same weights and dtype."""

    name: str
    config: ModelConfig
    ours: CausalLM
    hf: Any | None
    weights: str  # "real" or "random"


def hf_config_for(c: ModelConfig) -> Any:
    """A transformers config with the same architecture as ``c`` (llama or qwen2 family)."""
    import transformers

    kinds = {"llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config"}
    cls = getattr(transformers, kinds[c.model_type])
    kwargs: dict[str, Any] = dict(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim, rms_norm_eps=c.rms_eps,
        max_position_embeddings=c.max_positions, tie_word_embeddings=c.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
    )
    if c.model_type in ("llama", "qwen3"):
        kwargs["attention_bias"] = c.qkv_bias
    if c.model_type == "llama":
        kwargs["mlp_bias"] = c.mlp_bias
    return cls(**kwargs)


def random_model(shape: str, dtype: torch.dtype, device: torch.device, seed: int = 0) -> CausalLM:
    """Our model with random weights (std 0.02, norms 1) at a named shape, built on ``device``."""
    config = SHAPES[shape]
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = CausalLM(config)
    # no full-size fp32 copy: allocate directly in the target dtype on the target device
    model = model.to(dtype).to_empty(device=device)
    if config.tie_embeddings:  # to_empty gives every parameter its own storage: tie again
        model.lm_head.weight = model.model.embed_tokens.weight
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02)
    return model.eval()


def load_models(cfg: BenchConfig, dtype: torch.dtype, device: torch.device) -> Models:
    """Our model plus (if cfg.transformers) the transformers model with the same weights."""
    if cfg.random_weights:
        shape = cfg.shape or cfg.model
        ours = random_model(shape, dtype, device, cfg.seed)
        hf = None
        if cfg.transformers:
            from transformers import AutoModelForCausalLM

            with torch.device(device):
                hf = AutoModelForCausalLM.from_config(hf_config_for(ours.config), dtype=dtype)
            # the same random weights (ours makes fused copies below)
            hf.load_state_dict(ours.state_dict(), strict=False, assign=True)
            if ours.config.tie_embeddings:
                hf.tie_weights()
            hf.eval()
        # the product path, as load_model prepares it (fused, native CPU kernels)
        ours.fuse_projections().prepare_for_cpu()
        return Models(f"{shape} (random weights)", ours.config, ours, hf, "random")
    from .models.loading import load_model

    loaded = load_model(cfg.model, dtype=dtype, device=device)
    hf = None
    if cfg.transformers:
        from transformers import AutoModelForCausalLM

        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            hf = AutoModelForCausalLM.from_pretrained(loaded.source, dtype=dtype).to(device).eval()
        finally:
            hf_logging.enable_progress_bar()
    return Models(loaded.name, loaded.config, loaded.model, hf, "real")


def weight_bytes_read(model: CausalLM) -> int:
    """Parameter bytes one pass reads: every weight once; the embedding table only if tied
    (then it is the output projection; an untied table is read a few rows at a time).
    Counted from the config, since packed linear layers hold no plain parameters."""
    element = torch.empty((), dtype=model.dtype).element_size()
    return model.config.weight_params_read() * element


def matmul_params(model: CausalLM) -> tuple[int, int]:
    """(weights of the layers' linear maps, weights of the output projection)."""
    return model.config.layer_linear_params(), model.config.head_params()


def pass_flops(model: CausalLM, rows: int, logit_rows: int, attended: int) -> int:
    """FLOPs of one pass: 2 per weight per row, plus QK^T and PV over ``attended`` keys in total."""
    c = model.config
    layer_w, head_w = matmul_params(model)
    attention = 4 * c.num_layers * c.num_heads * c.head_dim * attended
    return 2 * layer_w * rows + 2 * head_w * logit_rows + attention


# ---------------------------------------------------------------------------- variants
def prompt_ids(vocab: int, length: int, seed: int) -> list[int]:
    """Random token ids (away from the ends of the vocabulary, where special tokens live)."""
    rng = random.Random(seed)
    lo, hi = min(100, vocab // 4), max(min(100, vocab // 4) + 1, vocab - 100)
    return [rng.randrange(lo, hi) for _ in range(length)]


class Variant:
    """One timed configuration: setup() once, then step() is one forward pass."""

    impl: str = ""

    def __init__(self, models: Models, workers: int, context: int, prompt: list[int], device: torch.device):
        self.models, self.workers, self.context, self.prompt, self.device = models, workers, context, prompt, device
        self.times: list[float] = []
        self.setup_s = 0.0
        self.setup_mem = 0

    @property
    def label(self) -> str:
        return f"{self.impl} N={self.workers}"

    def setup(self) -> None:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class OursVariant(Variant):
    impl = "ours"

    def setup(self) -> None:
        from .engine import Engine
        from .script import OTHERS_HEADER, OWN_HEADER, UNFINISHED, Script

        vocab = self.models.config.vocab_size
        extra = prompt_ids(vocab, 3 * 3 + self.workers, seed=len(self.prompt) + 1)
        self.script = Script(
            prompt_ids=self.prompt,
            opening_ids=[[extra[9 + w]] for w in range(self.workers)],
            constants={OTHERS_HEADER: extra[0:3], OWN_HEADER: extra[3:6], UNFINISHED: extra[6:9]},
        )
        self.run = Engine(self.models.ours, "combined").start(self.script)

    def step(self) -> None:
        self.run.step()

    def stats(self) -> dict[str, Any]:
        run = self.run
        kvbpt = self.models.config.kv_bytes_per_token(run.store.k.element_size())
        fed = sum(len(w.all_ids) - sum(len(t) for _, t in w.pending) for w in run.workers)
        distinct = len(self.script.prompt_ids) + sum(len(c) for c in self.script.constants.values()) + fed
        views = [run.view(w.index) for w in run.workers]
        blocks = {b for view in views for b in view}
        read_tokens = sum(run.store.length(b) for b in blocks)  # each block is read once per layer
        attended = sum(run.view_length(w.index) + 1 for w in run.workers)
        return dict(
            kv_bytes_in_use=run.store.bytes_in_use(),
            kv_bytes_min=distinct * kvbpt,
            kv_bytes_allocated=run.store.bytes_allocated(),
            kv_bytes_read=(read_tokens + self.workers) * kvbpt,
            attended_keys=attended,
            rows=self.workers,
        )


class TransformersVariant(Variant):
    """``generate``'s decoding step, as an explicit loop over a DynamicCache (greedy)."""

    impl = "transformers"

    def __init__(self, *args: Any, base_cache: Any = None, first_token: torch.Tensor | None = None):
        super().__init__(*args)
        self.base_cache, self.first_token = base_cache, first_token

    def setup(self) -> None:
        cache = copy.deepcopy(self.base_cache)
        if self.workers > 1:
            cache.batch_repeat_interleave(self.workers)
        self.cache = cache
        self.next = self.first_token.repeat(self.workers)[:, None]

    @torch.inference_mode()
    def step(self) -> None:
        kwargs = {_cache_kwarg(self.models.hf): self.cache}
        out = self.models.hf(input_ids=self.next, use_cache=True, **kwargs)
        self.next = out.logits[:, -1, :].argmax(-1, keepdim=True)
        _sync(self.device)

    def stats(self) -> dict[str, Any]:
        c = self.models.config
        seq = self.cache.get_seq_length()
        held = 0
        for layer in self.cache.layers:
            for t in (layer.keys, layer.values):
                held += t.numel() * t.element_size()
        kvbpt = c.kv_bytes_per_token(torch.empty((), dtype=self.models.ours.dtype).element_size())
        generated = seq - len(self.prompt)
        return dict(
            kv_bytes_in_use=held,
            kv_bytes_min=(len(self.prompt) + self.workers * generated) * kvbpt,  # prompt once
            kv_bytes_allocated=held,
            kv_bytes_read=self.workers * (seq + 1) * kvbpt,
            attended_keys=self.workers * (seq + 1),
            rows=self.workers,
        )

    def close(self) -> None:
        self.cache = None


def _cache_kwarg(hf: Any) -> str:
    """transformers >= 5.2x names the cache argument ``cache``; older ones ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"


def hf_prefill(models: Models, prompt: list[int], device: torch.device) -> tuple[Any, torch.Tensor, float]:
    """Prefill the prompt once at batch 1; return (cache, greedy first token, seconds)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    kwargs = {_cache_kwarg(models.hf): cache}
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = models.hf(input_ids=torch.tensor([prompt], device=device), use_cache=True,
                        logits_to_keep=1, **kwargs)
    _sync(device)
    return cache, out.logits[:, -1, :].argmax(-1), time.perf_counter() - t0


# ---------------------------------------------------------------------------- profiling
def profile_passes(step: Callable[[], None], passes: int, device: torch.device) -> dict[str, Any]:
    """Where a pass spends its time: torch.profiler op summary and a cProfile Python summary.

    ``overhead_share`` = 1 - (time inside torch ops) / (wall time of the passes), from the
    torch.profiler run: the share of a pass spent in Python and dispatch outside tensor ops.
    The profiler's own per-op cost lands outside the ops, so this is an upper bound.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    step()  # settle
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(passes):
            step()
        _sync(device)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    ops = [e for e in events if "::" in e.key]
    in_ops = sum(e.self_cpu_time_total for e in ops) / 1e6
    top = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    top_ops = [
        dict(op=e.key, calls_per_pass=e.count / passes, ms_per_pass=e.self_cpu_time_total / 1e3 / passes,
             share=(e.self_cpu_time_total / 1e6) / wall)
        for e in top
    ]
    # Python-level view, without the torch profiler's cost
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    for _ in range(passes):
        step()
    pr.disable()
    wall_py = time.perf_counter() - t0
    st = pstats.Stats(pr, stream=io.StringIO())
    rows = []
    for (filename, line, func), (cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append(dict(function=f"{Path(filename).name}:{line}({func})", calls_per_pass=nc / passes,
                         self_ms_per_pass=tt * 1e3 / passes, cum_ms_per_pass=ct * 1e3 / passes))
    rows.sort(key=lambda r: r["self_ms_per_pass"], reverse=True)
    return dict(
        passes=passes,
        wall_ms_per_pass=wall * 1e3 / passes,
        ops_ms_per_pass=in_ops * 1e3 / passes,
        overhead_share=max(0.0, 1.0 - in_ops / wall),
        top_ops=top_ops,
        cprofile_wall_ms_per_pass=wall_py * 1e3 / passes,
        top_python=rows[:10],
    )


# ---------------------------------------------------------------------------- the run
def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def _log(console: Any, text: str) -> None:
    if console is not None:
        console.print(text, style="dim", highlight=False)


def run_bench(cfg: BenchConfig, console: Any = None) -> dict[str, Any]:
    """Run the whole benchmark and return its result (the JSON document)."""
    cfg.validate()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, console)
    finally:
        torch.set_num_threads(previous_threads)  # a library call leaves the process as it was


def _run(cfg: BenchConfig, console: Any) -> dict[str, Any]:
    device = torch.device(cfg.device)
    started = time.perf_counter()
    _log(console, f"threads: {torch.get_num_threads()} · device: {device}")
    bandwidth = measure_bandwidth(device, cfg.bandwidth_mb)
    _log(console, f"memory bandwidth (copy of {cfg.bandwidth_mb} MB): {bandwidth / 1e9:.1f} GB/s")
    hardware: dict[str, Any] = dict(
        device=str(device), threads=torch.get_num_threads(), bandwidth_bytes_per_s=bandwidth,
        bandwidth_copy_mb=cfg.bandwidth_mb, matmul_flops_per_s={}, matmul_size=cfg.matmul_size,
        cpu=platform.processor() or platform.machine(), python=platform.python_version(),
        torch=torch.__version__,
        native_kernels=kernels.status() if device.type == "cpu" else "not used on this device",
    )
    if device.type == "cuda":
        hardware["gpu"] = torch.cuda.get_device_name(device)
    try:
        import transformers

        hardware["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        cfg.transformers = False
    results: list[dict[str, Any]] = []
    profile: dict[str, Any] | None = None
    profile_n = min(cfg.workers, key=lambda n: (abs(n - cfg.profile_workers), -n))
    profile_c = min(cfg.contexts, key=lambda c: abs(c - cfg.profile_context))
    model_name = None
    for dname in cfg.dtypes:
        dtype = parse_dtype(dname)
        rate = compute_rate(device, dtype, cfg.matmul_size, hardware["matmul_flops_per_s"], console)
        models = load_models(cfg, dtype, device)
        model_name = models.name
        wbytes = weight_bytes_read(models.ours)
        for context in cfg.contexts:
            if context + max(cfg.workers) * (cfg.warmup + cfg.rounds * cfg.passes + 16) > models.config.max_positions:
                _log(console, f"skipping context {context}: beyond the model's {models.config.max_positions} positions")
                continue
            prompt = prompt_ids(models.config.vocab_size, context, cfg.seed + context)
            variants: list[Variant] = []
            hf_setup = 0.0
            base_cache = first = None
            if cfg.transformers and models.hf is not None:
                base_cache, first, hf_setup = hf_prefill(models, prompt, device)
            for n in cfg.workers:
                variants.append(OursVariant(models, n, context, prompt, device))
                if base_cache is not None:
                    variants.append(TransformersVariant(models, n, context, prompt, device,
                                                        base_cache=base_cache, first_token=first))
            for v in variants:
                before = _memory_now(device)
                t0 = time.perf_counter()
                v.setup()
                _sync(device)
                v.setup_s = time.perf_counter() - t0 + (hf_setup if v.impl == "transformers" else 0.0)
                v.setup_mem = max(0, _memory_now(device) - before)
                for _ in range(cfg.warmup):
                    v.step()
            base_cache = None
            _log(console, f"{dtype_name(dtype)} context {context}: {len(variants)} variants set up; timing")
            bandwidths = []  # measured between rounds, under the same load as the timings
            for _ in range(cfg.rounds):
                bandwidths.append(measure_bandwidth(device, cfg.bandwidth_mb, repeats=3))
                for v in variants:
                    for _ in range(cfg.passes):
                        _sync(device)
                        t0 = time.perf_counter()
                        v.step()
                        _sync(device)
                        v.times.append(time.perf_counter() - t0)
            peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_bytes()
            for v in variants:
                s = v.stats()
                flops = pass_flops(models.ours, s["rows"], s["rows"], s["attended_keys"])
                bytes_read = wbytes + s["kv_bytes_read"]
                floor_bw = bytes_read / _median(bandwidths)
                floor_flops = flops / rate
                sec = _median(v.times)
                results.append(dict(
                    impl=v.impl, workers=v.workers, context=context, dtype=dtype_name(dtype),
                    ms_per_pass=sec * 1e3, ms_min=min(v.times) * 1e3, ms_max=max(v.times) * 1e3,
                    samples=len(v.times), tokens_per_s=v.workers / sec, passes_per_s=1 / sec,
                    setup_s=v.setup_s, setup_mem_bytes=v.setup_mem, peak_mem_bytes=peak,
                    kv_bytes_in_use=s["kv_bytes_in_use"], kv_bytes_min=s["kv_bytes_min"],
                    kv_bytes_allocated=s["kv_bytes_allocated"], kv_bytes_read=s["kv_bytes_read"],
                    weight_bytes_read=wbytes, bytes_read=bytes_read, flops=flops,
                    floor_ms=max(floor_bw, floor_flops) * 1e3, floor_bandwidth_ms=floor_bw * 1e3,
                    floor_compute_ms=floor_flops * 1e3,
                    floor_bound="bandwidth" if floor_bw >= floor_flops else "compute",
                    bandwidth_bytes_per_s=_median(bandwidths), bandwidth_samples=bandwidths,
                ))
            if cfg.profile and profile is None and context == profile_c:
                target = next(v for v in variants if v.impl == "ours" and v.workers == profile_n)
                _log(console, f"profiling ours N={profile_n} context {context} {dtype_name(dtype)}")
                profile = dict(workers=profile_n, context=context, dtype=dtype_name(dtype),
                               **profile_passes(target.step, max(2, min(cfg.passes, 5)), device))
            for v in variants:
                v.close()
            del variants
        del models
    add_ratios(results)
    return dict(
        format=FORMAT, version=VERSION, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        model=model_name, weights="random" if cfg.random_weights else "real",
        settings=asdict(cfg), hardware=hardware, peak_rss_bytes=peak_rss_bytes(),
        gpu_run=device.type == "cuda", wall_s=time.perf_counter() - started,
        results=results, profile=profile,
    )


def add_ratios(results: list[dict[str, Any]]) -> None:
    """vs_n1 = ours(N)/ours(1); vs_transformers = ours(N)/transformers(N); vs_floor = ms/floor."""
    index = {(r["impl"], r["workers"], r["context"], r["dtype"]): r for r in results}
    for r in results:
        one = index.get((r["impl"], 1, r["context"], r["dtype"]))
        r["vs_n1"] = r["ms_per_pass"] / one["ms_per_pass"] if one else None
        hf = index.get(("transformers", r["workers"], r["context"], r["dtype"]))
        r["vs_transformers"] = r["ms_per_pass"] / hf["ms_per_pass"] if hf and r["impl"] == "ours" else None
        r["vs_floor"] = r["ms_per_pass"] / r["floor_ms"] if r["floor_ms"] > 0 else None
        r["kv_vs_min"] = r["kv_bytes_in_use"] / r["kv_bytes_min"] if r["kv_bytes_min"] else None


# ---------------------------------------------------------------------------- output
def _mb(x: float) -> str:
    return f"{x / 2**20:.1f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def results_table(doc: dict[str, Any]) -> Any:
    """A rich Table of every variant."""
    from rich.table import Table

    hw = doc["hardware"]
    title = (f"hogwild bench · {doc['model']} · {hw['device']} · {hw['threads']} threads · "
             f"bandwidth {hw['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s at start")
    if hw.get("native_kernels"):
        title += f" · native kernels: {hw['native_kernels']}"
    if not doc.get("gpu_run"):
        title += " · CPU run (GPU not run)"
    table = Table(title=title, title_justify="left")
    for name, justify in [
        ("dtype", "left"), ("ctx", "right"), ("N", "right"), ("impl", "left"), ("ms/pass", "right"),
        ("tok/s", "right"), ("pass/s", "right"), ("floor ms", "right"), ("x floor", "right"),
        ("x N=1", "right"), ("x transf.", "right"), ("KV use MB", "right"), ("KV min MB", "right"),
        ("KV alloc MB", "right"), ("setup MB", "right"),
    ]:
        table.add_column(name, justify=justify, no_wrap=True)
    order = {d: i for i, d in enumerate(dict.fromkeys(r["dtype"] for r in doc["results"]))}
    rows = sorted(doc["results"], key=lambda r: (order[r["dtype"]], r["context"], r["workers"], r["impl"] != "ours"))
    for r in rows:
        table.add_row(
            r["dtype"], str(r["context"]), str(r["workers"]), r["impl"], f"{r['ms_per_pass']:.2f}",
            f"{r['tokens_per_s']:.1f}", f"{r['passes_per_s']:.1f}",
            f"{r['floor_ms']:.2f}{'b' if r['floor_bound'] == 'bandwidth' else 'c'}",
            _ratio(r["vs_floor"]), _ratio(r["vs_n1"]), _ratio(r["vs_transformers"]),
            _mb(r["kv_bytes_in_use"]), _mb(r["kv_bytes_min"]), _mb(r["kv_bytes_allocated"]),
            _mb(r["setup_mem_bytes"]),
        )
    return table


def profile_table(doc: dict[str, Any]) -> Any | None:
    from rich.table import Table

    p = doc.get("profile")
    if not p:
        return None
    table = Table(
        title=(f"profile: ours N={p['workers']} ctx {p['context']} {p['dtype']} · "
               f"{p['wall_ms_per_pass']:.2f} ms/pass under the profiler, {p['ops_ms_per_pass']:.2f} ms in "
               f"torch ops · outside ops: {100 * p['overhead_share']:.0f}%"),
        title_justify="left",
    )
    table.add_column("torch op", no_wrap=True)
    table.add_column("calls/pass", justify="right")
    table.add_column("ms/pass", justify="right")
    table.add_column("share", justify="right")
    for row in p["top_ops"]:
        table.add_row(row["op"], f"{row['calls_per_pass']:.0f}", f"{row['ms_per_pass']:.3f}",
                      f"{100 * row['share']:.1f}%")
    return table


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_png(doc: dict[str, Any], path: Path) -> None:
    """Time per pass vs. context (log-log), one panel per dtype, one line per (impl, N);
    dotted: ours' floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = doc["results"]
    dtypes = list(dict.fromkeys(r["dtype"] for r in results))
    fig, axes = plt.subplots(1, max(1, len(dtypes)), figsize=(6.5 * max(1, len(dtypes)), 4.8), squeeze=False)
    workers = sorted({r["workers"] for r in results})
    colors = plt.get_cmap("viridis")
    for ax, dt in zip(axes[0], dtypes):
        for i, n in enumerate(workers):
            color = colors(i / max(1, len(workers) - 1) * 0.85)
            for impl, style in (("ours", "-"), ("transformers", "--")):
                pts = sorted((r["context"], r["ms_per_pass"]) for r in results
                             if r["dtype"] == dt and r["workers"] == n and r["impl"] == impl)
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", color=color, label=f"{impl} N={n}")
            floor = sorted((r["context"], r["floor_ms"]) for r in results
                           if r["dtype"] == dt and r["workers"] == n and r["impl"] == "ours")
            if floor:
                ax.plot(*zip(*floor), ":", marker="x", color=color, alpha=0.7, label=f"floor (ours) N={n}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        contexts = sorted({r["context"] for r in results})
        ax.set_xticks(contexts, [str(c) for c in contexts])
        ax.minorticks_off()
        ax.set_xlabel("context (prompt tokens)")
        ax.set_ylabel("ms per forward pass")
        ax.set_title(f"{doc['model']} · {dt} · {doc['hardware']['device']} · {doc['hardware']['threads']} threads")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_report(doc: dict[str, Any], console: Any) -> None:
    if not console.is_terminal:  # piped or captured: never squeeze the columns
        from rich.console import Console

        console = Console(file=console.file, width=200, highlight=False)
    console.print(results_table(doc))
    prof = profile_table(doc)
    if prof is not None:
        console.print(prof)
    if not doc.get("gpu_run"):
        console.print("GPU: not run in this benchmark (CPU only).", style="yellow")
    console.print(
        "x floor = ms/pass over max(bytes read / bandwidth measured between the timing rounds, FLOPs / matmul rate) "
        "(b = bandwidth-bound, c = compute-bound); x N=1 = same impl, N=1; "
        "x transf. = ours / transformers at the same N, context, dtype.", style="dim",
    )


def bench_main(cfg: BenchConfig, out: Path | None, console: Any) -> dict[str, Any]:
    """Run, print, and write ``out/bench.json`` and ``out/bench.png`` (the CLI's body)."""
    doc = run_bench(cfg, console)
    print_report(doc, console)
    if out is not None:
        write_json(doc, out / "bench.json")
        write_png(doc, out / "bench.png")
        console.print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}", highlight=False)
    return doc
