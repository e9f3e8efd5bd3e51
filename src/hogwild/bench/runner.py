"""The benchmark run: set up every variant of a (dtype, context) group, time them round-robin.

Variants of one group are set up together, then timed in rounds: each round times ``passes``
consecutive passes of every variant in turn, and the reported time is the median over all
timed passes. A burst of load on a shared machine thus hits all variants alike, which keeps
the ratios fair even when absolute times are noisy. The memory bandwidth the floor uses is
measured between the rounds for the same reason (``docs/bench.md``, "What is measured").
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict
from typing import Any

import torch

from .. import kernels
from .config import FORMAT, VERSION, BenchConfig, bench_dtype, dtype_name, log
from .measure import (
    compute_rate, floor, measure_bandwidth, median, memory_now, peak_memory, peak_rss_bytes,
    profile_passes, sync, weight_bytes_read,
)
from .variants import Models, OursVariant, TransformersVariant, Variant, hf_prefill, load_models, prompt_ids


def run_bench(cfg: BenchConfig, console: Any = None) -> dict[str, Any]:
    """Run the whole benchmark and return its result (the JSON document)."""
    cfg.validate()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, console)
    finally:
        torch.set_num_threads(previous_threads)  # a library call leaves the process as it was


def _hardware(cfg: BenchConfig, device: torch.device, console: Any) -> dict[str, Any]:
    """The machine: threads, start-of-run bandwidth, versions, native kernels (matmul rates
    are added per dtype as they are measured). Without transformers its baseline is skipped."""
    log(console, f"threads: {torch.get_num_threads()} · device: {device}")
    bandwidth = measure_bandwidth(device, cfg.bandwidth_mb)
    log(console, f"memory bandwidth (copy of {cfg.bandwidth_mb} MB): {bandwidth / 1e9:.1f} GB/s")
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
    return hardware


def _run(cfg: BenchConfig, console: Any) -> dict[str, Any]:
    device = torch.device(cfg.device)
    started = time.perf_counter()
    hardware = _hardware(cfg, device, console)
    results: list[dict[str, Any]] = []
    profile: dict[str, Any] | None = None
    profile_n = min(cfg.workers, key=lambda n: (abs(n - cfg.profile_workers), -n))
    profile_c = min(cfg.contexts, key=lambda c: abs(c - cfg.profile_context))
    model_name = None
    for dname in cfg.dtypes:
        dtype = bench_dtype(dname)
        rate = compute_rate(device, dtype, cfg.matmul_size, hardware["matmul_flops_per_s"], console)
        models = load_models(cfg, dtype, device)
        model_name = models.name
        wbytes = weight_bytes_read(models.ours)
        for context in cfg.contexts:
            if context + max(cfg.workers) * (cfg.warmup + cfg.rounds * cfg.passes + 16) > models.config.max_positions:
                log(console, f"skipping context {context}: beyond the model's {models.config.max_positions} positions")
                continue
            variants = _set_up(cfg, models, context, device)
            log(console, f"{dtype_name(dtype)} context {context}: {len(variants)} variants set up; timing")
            bandwidths = _time_rounds(cfg, variants, device)
            peak = peak_memory(device)
            for v in variants:
                s = v.stats()
                sec = median(v.times)
                results.append(dict(
                    impl=v.impl, workers=v.workers, context=context, dtype=dtype_name(dtype),
                    ms_per_pass=sec * 1e3, ms_min=min(v.times) * 1e3, ms_max=max(v.times) * 1e3,
                    samples=len(v.times), tokens_per_s=v.workers / sec, passes_per_s=1 / sec,
                    setup_s=v.setup_s, setup_mem_bytes=v.setup_mem, peak_mem_bytes=peak,
                    kv_bytes_in_use=s["kv_bytes_in_use"], kv_bytes_min=s["kv_bytes_min"],
                    kv_bytes_allocated=s["kv_bytes_allocated"], kv_bytes_read=s["kv_bytes_read"],
                    **floor(models.ours, s, wbytes, median(bandwidths), rate),
                    bandwidth_bytes_per_s=median(bandwidths), bandwidth_samples=bandwidths,
                ))
            if cfg.profile and profile is None and context == profile_c:
                target = next(v for v in variants if v.impl == "ours" and v.workers == profile_n)
                log(console, f"profiling ours N={profile_n} context {context} {dtype_name(dtype)}")
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


def _set_up(cfg: BenchConfig, models: Models, context: int, device: torch.device) -> list[Variant]:
    """Every variant of one (dtype, context) group, set up (time and memory recorded) and
    warmed up. transformers' prompt is prefilled once and its time charged to each of its
    variants, which copy that cache."""
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
        before = memory_now(device)
        t0 = time.perf_counter()
        v.setup()
        sync(device)
        v.setup_s = time.perf_counter() - t0 + (hf_setup if v.impl == "transformers" else 0.0)
        v.setup_mem = max(0, memory_now(device) - before)
        for _ in range(cfg.warmup):
            v.step()
    return variants


def _time_rounds(cfg: BenchConfig, variants: list[Variant], device: torch.device) -> list[float]:
    """Time ``cfg.rounds`` rounds of ``cfg.passes`` passes of every variant in turn (into
    ``v.times``); return the bandwidth measured before each round, under the same load."""
    bandwidths = []
    for _ in range(cfg.rounds):
        bandwidths.append(measure_bandwidth(device, cfg.bandwidth_mb, repeats=3))
        for v in variants:
            for _ in range(cfg.passes):
                sync(device)
                t0 = time.perf_counter()
                v.step()
                sync(device)
                v.times.append(time.perf_counter() - t0)
    return bandwidths


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
