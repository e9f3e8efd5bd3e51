"""The hardware side of the benchmark: what the machine can do, and what a pass must cost.

- probes: memory bandwidth (a tensor copy) and the dense matmul rate per dtype;
- memory: resident set size now and at peak (CUDA: allocated memory);
- the floor model: bytes read and FLOPs of one pass, and the time they take at the measured
  bandwidth and matmul rate (``docs/bench.md``, "How the floor is computed");
- the profile: where a pass spends its time (torch ops vs. Python around them).
"""

from __future__ import annotations

import cProfile
import io
import math
import pstats
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..models.llama import CausalLM
from .config import dtype_name, log


def sync(device: torch.device) -> None:
    """Wait for the device, so that a wall-clock time covers the work it queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else math.nan


# ---------------------------------------------------------------------------- probes
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
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
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
            sync(device)
            t0 = time.perf_counter()
            torch.matmul(a, b)
            sync(device)
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
            log(console, f"matmul rate {dtype_name(d)}: {rates[dtype_name(d)] / 1e9:.1f} GFLOP/s")
    return max(rates[dtype_name(d)] for d in names)


# ---------------------------------------------------------------------------- memory
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


def memory_now(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else rss_bytes()


def peak_memory(device: torch.device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_bytes()


def available_memory(device: torch.device) -> float:
    """Bytes free now: CUDA free memory, or Linux ``MemAvailable`` (inf where unknown)."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return math.inf


# ---------------------------------------------------------------------------- the floor
def weight_bytes_read(model: CausalLM) -> int:
    """Parameter bytes one pass reads: every weight once; the embedding table only if tied
    (then it is the output projection; an untied table is read a few rows at a time).
    Counted from the config, since packed linear layers hold no plain parameters."""
    element = torch.empty((), dtype=model.dtype).element_size()
    total = model.config.weight_params_read() * element
    for module in model.modules():  # quantized linears (hogwild.kernels.QuantLinear): their blocks' bytes
        q = getattr(module, "qweight", None)
        if q is not None and hasattr(q, "nbytes"):
            total += q.nbytes - q.n * q.k * element
    return total


def matmul_params(model: CausalLM) -> tuple[int, int]:
    """(weights of the layers' linear maps, weights of the output projection)."""
    return model.config.layer_linear_params(), model.config.head_params()


def pass_flops(model: CausalLM, rows: int, logit_rows: int, attended: int) -> int:
    """FLOPs of one pass: 2 per weight per row, plus QK^T and PV over ``attended`` keys in total."""
    c = model.config
    layer_w, head_w = matmul_params(model)
    attention = 4 * c.num_layers * c.num_heads * c.head_dim * attended
    return 2 * layer_w * rows + 2 * head_w * logit_rows + attention


def floor(model: CausalLM, stats: dict[str, Any], weight_bytes: int, bandwidth: float, rate: float) -> dict[str, Any]:
    """The floor of one variant's pass: max(bytes read / bandwidth, FLOPs / matmul rate).

    ``stats`` is the variant's accounting (rows of all its runs, attended keys, K/V bytes
    read); the weights are read once per pass however many runs it carries. The result is
    the part of a result row that describes the floor, in the JSON's order."""
    flops = pass_flops(model, stats["rows"], stats["rows"], stats["attended_keys"])
    bytes_read = weight_bytes + stats["kv_bytes_read"]
    by_bandwidth = bytes_read / bandwidth
    by_compute = flops / rate
    return dict(
        weight_bytes_read=weight_bytes, bytes_read=bytes_read, flops=flops,
        floor_ms=max(by_bandwidth, by_compute) * 1e3, floor_bandwidth_ms=by_bandwidth * 1e3,
        floor_compute_ms=by_compute * 1e3,
        floor_bound="bandwidth" if by_bandwidth >= by_compute else "compute",
    )


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
        sync(device)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    kernel_ms, top_kernels = None, None
    if device.type == "cuda":  # GPU time inside kernels, against the wall time of the passes
        from torch.autograd import DeviceType

        kernels = [e for e in events if getattr(e, "device_type", None) == DeviceType.CUDA]
        kernel_ms = sum(getattr(e, "self_device_time_total", 0) for e in kernels) / 1e3 / passes
        kernels.sort(key=lambda e: getattr(e, "self_device_time_total", 0), reverse=True)
        top_kernels = [dict(kernel=e.key[:120], calls_per_pass=e.count / passes,
                            ms_per_pass=getattr(e, "self_device_time_total", 0) / 1e3 / passes)
                       for e in kernels[:12]]
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
        kernel_ms_per_pass=kernel_ms,  # CUDA only: time the GPU spent in kernels
        top_kernels=top_kernels,  # CUDA only: the kernels that took longest
        gpu_busy_share=None if kernel_ms is None else min(1.0, kernel_ms * passes / 1e3 / wall),
        top_ops=top_ops,
        cprofile_wall_ms_per_pass=wall_py * 1e3 / passes,
        top_python=rows[:10],
    )
