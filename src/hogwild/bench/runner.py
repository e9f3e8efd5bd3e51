"""The benchmark run: set up every variant of a (dtype, context) group, time them round-robin.

Variants of one group are set up together, then timed in rounds: each round times ``passes``
consecutive passes of every variant in turn, and the reported time is the median over all
timed passes. A burst of load on a shared machine thus hits all variants alike, which keeps
the ratios fair even when absolute times are noisy. The memory bandwidth the floor uses is
measured between the rounds for the same reason (``docs/bench.md``, "What is measured").

A variant is N workers x R runs: R independent runs (own prompts, a declared shared prefix)
in one batch, so one pass advances every run by one token per worker in as few model calls
as the native row limit allows; transformers' counterpart is a batch of R x N sequences.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .. import kernels
from .config import FORMAT, VERSION, BenchConfig, bench_weights, dtype_name, log
from .measure import (
    available_memory, compute_rate, floor, measure_bandwidth, median, memory_now, peak_memory,
    peak_rss_bytes, profile_passes, sync, weight_bytes_read,
)
from .variants import Models, OursVariant, TransformersVariant, Variant, hf_prefill, load_models, run_prompts


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
    skipped: list[dict[str, Any]] = []
    profile: dict[str, Any] | None = None
    profile_n = min(cfg.workers, key=lambda n: (abs(n - cfg.profile_workers), -n))
    profile_r = min(cfg.runs, key=lambda r: (abs(r - cfg.profile_runs), r))
    profile_c = min(cfg.contexts, key=lambda c: abs(c - cfg.profile_context))
    model_name = None
    for dname in cfg.dtypes:
        label, dtype = bench_weights(dname)
        rate = compute_rate(device, dtype, cfg.matmul_size, hardware["matmul_flops_per_s"], console)
        models = load_models(cfg, dtype, device, weights=dname)
        model_name = models.name
        wbytes = weight_bytes_read(models.ours)
        for context in cfg.contexts:
            if context + max(cfg.workers) * (cfg.warmup + cfg.rounds * cfg.passes + 16) > models.config.max_positions:
                log(console, f"skipping context {context}: beyond the model's {models.config.max_positions} positions")
                continue
            variants = _set_up(cfg, models, context, device, skipped, console)
            log(console, f"{label} context {context}: {len(variants)} variants set up; timing")
            bandwidths = _time_rounds(cfg, variants, device)
            peak = peak_memory(device)
            for v in variants:
                s = v.stats()
                sec = median(v.times)
                results.append(dict(
                    impl=v.impl, workers=v.workers, runs=v.runs, context=context, dtype=label,
                    ms_per_pass=sec * 1e3, ms_min=min(v.times) * 1e3, ms_max=max(v.times) * 1e3,
                    samples=len(v.times), tokens_per_s=s["rows"] / sec, passes_per_s=1 / sec,
                    rows_per_pass=s["rows_per_pass"], model_calls=s["model_calls"],
                    setup_s=v.setup_s, setup_mem_bytes=v.setup_mem, peak_mem_bytes=peak,
                    kv_bytes_in_use=s["kv_bytes_in_use"], kv_bytes_min=s["kv_bytes_min"],
                    kv_bytes_allocated=s["kv_bytes_allocated"], kv_bytes_read=s["kv_bytes_read"],
                    **floor(models.ours, s, wbytes, median(bandwidths), rate),
                    bandwidth_bytes_per_s=median(bandwidths), bandwidth_samples=bandwidths,
                ))
            if cfg.profile and profile is None and context == profile_c:
                target = next(v for v in variants
                              if v.impl.startswith("ours") and (v.workers, v.runs) == (profile_n, profile_r))
                log(console, f"profiling ours N={profile_n} R={profile_r} context {context} {label}")
                profile = dict(workers=profile_n, runs=profile_r, context=context, dtype=label,
                               **profile_passes(target.step, max(2, min(cfg.passes, 5)), device))
            for v in variants:
                v.close()
            del variants
        del models
    llama = _time_llama_cpp(cfg, console) if cfg.llama_cpp else None
    add_ratios(results, llama)
    return dict(
        format=FORMAT, version=VERSION, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        model=model_name, weights="random" if cfg.random_weights else "real",
        settings=asdict(cfg), hardware=hardware, peak_rss_bytes=peak_rss_bytes(),
        gpu_run=device.type == "cuda", wall_s=time.perf_counter() - started,
        results=results, skipped=skipped, profile=profile, llama_cpp=llama,
    )


def _time_llama_cpp(cfg: BenchConfig, console: Any) -> list[dict[str, Any]]:
    """llama.cpp's ms per pass on the model's GGUF for every context and N (one shared
    prompt, N sequences: the R = 1 rows), with the bench's threads."""
    from .llama_cpp import batched_bench, model_gguf

    gguf = model_gguf(cfg.model)
    out = []
    for context in cfg.contexts:
        log(console, f"llama.cpp: llama-batched-bench on {gguf.name}, context {context}, N = {cfg.workers}")
        timed = batched_bench(Path(cfg.llama_cpp), gguf, cfg.workers, context, cfg.threads, cfg.llama_tg)
        out.append(dict(context=context, gguf=gguf.name, cmd=timed["cmd"], ms=timed["ms"], note=timed["note"]))
    return out


def _set_up(cfg: BenchConfig, models: Models, context: int, device: torch.device,
            skipped: list[dict[str, Any]], console: Any) -> list[Variant]:
    """Every variant of one (dtype, context) group, set up (time and memory recorded) and
    warmed up. For each R, transformers' R prompts are prefilled once as one batch and that
    time is charged to each of its variants, which copy that cache. A transformers variant
    whose cache would not fit in half the memory available (what the group's other
    transformers caches leave of it) is skipped and listed in ``skipped``."""
    shared = cfg.shared_for(context)
    prompts = run_prompts(models.config.vocab_size, context, max(cfg.runs), shared, cfg.seed + context)
    kvbpt = models.kv_bytes_per_token()
    grown = context + cfg.warmup + cfg.rounds * cfg.passes + 1
    budget = available_memory(device) / 2
    variants: list[Variant] = []
    for r in cfg.runs:
        base = None
        hf_wanted = cfg.transformers and models.hf is not None and (
            not cfg.transformers_max_context or context <= cfg.transformers_max_context)
        if hf_wanted and r * context * kvbpt <= budget:
            base = hf_prefill(models, prompts[:r], device)
            budget -= r * context * kvbpt
        for n in cfg.workers:
            variants.append(OursVariant(models, n, context, prompts[:r], device, shared_prefix=shared,
                                        attention=cfg.attention, graphs=cfg.graphs, kv=cfg.kv))
            if cfg.transformers_max_rows and r * n > cfg.transformers_max_rows:
                continue  # beyond the baseline's batch limit: not measured, not a skip
            need = 2 * r * n * grown * kvbpt  # the cache, and its copy while torch.cat grows it
            if base is not None and need <= budget:
                budget -= need
                variants.append(TransformersVariant(models, n, context, prompts[:r], device,
                                                    shared_prefix=shared, base_cache=base[0],
                                                    first_token=base[1]))
                variants[-1].setup_s = base[2]
            elif hf_wanted:
                skipped.append(dict(impl="transformers", workers=n, runs=r, context=context,
                                    dtype=dtype_name(models.ours.dtype), reason="memory"))
                log(console, f"skipping transformers N={n} R={r} context {context}: its cache would not fit")
    for v in variants:
        before = memory_now(device)
        t0 = time.perf_counter()
        v.setup()
        sync(device)
        v.setup_s += time.perf_counter() - t0  # transformers: plus its share of the prefill
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


def add_ratios(results: list[dict[str, Any]], llama: list[dict[str, Any]] | None = None) -> None:
    """vs_n1 = ours(N, R) / ours(1, R); vs_r1 = ours(N, R) / ours(N, 1) (per pass: what
    batching R runs costs); vs_transformers = ours(N, R) / transformers(N, R); vs_floor =
    ms / floor; kv_vs_min = KV in use / KV minimum; vs_llama_cpp = ours(N, 1) / llama.cpp(N)
    on the same GGUF and context (every weight setting of ours against the file as llama.cpp
    reads it). A row without ``runs`` (an older JSON) counts as R = 1."""
    theirs = {(t["context"], int(n)): ms for t in llama or [] for n, ms in t["ms"].items()}
    def key(impl: str, n: int, r: int, row: dict[str, Any]) -> tuple:
        return impl, n, r, row["context"], row["dtype"]

    index = {key(r["impl"], r["workers"], r.get("runs", 1), r): r for r in results}
    for r in results:
        n, runs = r["workers"], r.get("runs", 1)
        one = index.get(key(r["impl"], 1, runs, r))
        r["vs_n1"] = r["ms_per_pass"] / one["ms_per_pass"] if one else None
        single = index.get(key(r["impl"], n, 1, r))
        r["vs_r1"] = r["ms_per_pass"] / single["ms_per_pass"] if single else None
        hf = index.get(key("transformers", n, runs, r))
        r["vs_transformers"] = r["ms_per_pass"] / hf["ms_per_pass"] if hf and r["impl"] == "ours" else None
        r["vs_floor"] = r["ms_per_pass"] / r["floor_ms"] if r["floor_ms"] > 0 else None
        r["kv_vs_min"] = r["kv_bytes_in_use"] / r["kv_bytes_min"] if r["kv_bytes_min"] else None
        llama_ms = theirs.get((r["context"], n)) if r["impl"] == "ours" and runs == 1 else None
        r["vs_llama_cpp"] = r["ms_per_pass"] / llama_ms if llama_ms else None
