"""The whole engine pass in CPU time, on each instruction set of the native kernels.

``hogwild bench`` times passes by the wall clock with 2 threads: right for a quiet machine,
useless on a busy one (every OpenMP barrier of a pass then waits for a descheduled thread).
This script runs the bench's own ``ours`` variant (R runs of N workers in one batch, greedy,
the combined layout; ``hogwild.bench.variants.OursVariant``) on ONE thread and measures the
CPU time of that thread per ``batch.step()``: the native kernels then run on the calling
thread, so time spent waiting for a core does not count. Each instruction set the kernels
can use (``hw_isa``: AVX2, and AVX-512 where the CPU has it) is timed on the same runs,
round-robin, best of ``--rounds`` rounds of ``--passes`` passes. With ``bench/pass_parts.py``
(the kernels alone) it gives the share of a pass outside the linear and attention kernels.

The CPU time of one thread is not the wall time of a 2-thread pass on a quiet machine; it is
a fair before/after of the kernels under load, not a number to hold against the floor.

Usage::

    python bench/pass_cpu_time.py --model smollm2-135m --runs 8 --workers 2 --context 1024
    python bench/pass_cpu_time.py --model qwen2.5-coder-0.5b --runs 8 --workers 2 --out /tmp/cpu
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    from hogwild import kernels
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(ROOT / "src"))
    from hogwild import kernels
from hogwild.bench.config import BenchConfig
from hogwild.bench.variants import OursVariant, load_models, run_prompts

ISA_NAMES = {1: "avx2", 2: "avx512"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="installed model (short name), as for hogwild bench")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--passes", type=int, default=4, help="passes per round per instruction set")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, help="folder to write pass_cpu_time-*.json into")
    args = ap.parse_args()

    torch.set_num_threads(1)
    lib = kernels.library()
    if lib is None:
        raise SystemExit(f"native kernels unavailable: {kernels.status()}")
    isas = [1] + ([2] if lib.hw_isa(2) == 2 else [])
    lib.hw_isa(0)
    device, dtype = torch.device("cpu"), getattr(torch, args.dtype)
    cfg = BenchConfig(model=args.model, transformers=False)
    lib.hw_isa(1)  # load on AVX2 so the linears keep plain weights, which every compared set computes
    try:
        models = load_models(cfg, dtype, device)
    finally:
        lib.hw_isa(0)
    prompts = run_prompts(models.config.vocab_size, args.context, args.runs, 0, cfg.seed)
    variant = OursVariant(models, args.workers, args.context, prompts, device)
    start = time.perf_counter()
    variant.setup()
    setup_s = time.perf_counter() - start
    best = {i: math.inf for i in isas}
    load = os.getloadavg()[0]
    try:
        for isa in isas:  # warm up each set's code once
            lib.hw_isa(isa)
            variant.step()
        for _ in range(args.rounds):
            for isa in isas:
                lib.hw_isa(isa)
                t = time.thread_time()
                for _ in range(args.passes):
                    variant.step()
                best[isa] = min(best[isa], (time.thread_time() - t) / args.passes)
    finally:
        lib.hw_isa(0)
        variant.close()
    print(f"{models.name} {args.dtype}, {args.runs} runs x {args.workers} workers, context {args.context}: "
          f"CPU ms per pass on 1 thread, best of {args.rounds} x {args.passes} (load average {load:.2f}; "
          f"setup {setup_s:.0f} s)")
    result = {ISA_NAMES[i]: best[i] * 1e3 for i in isas}
    for name, ms in result.items():
        print(f"  {name:<7} {ms:8.2f} ms")
    if len(isas) > 1:
        print(f"  avx2 / avx512: {result['avx2'] / result['avx512']:.2f}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in vars(args).items() if k != "out"}
        meta.update(model_name=models.name, load_average=[load, os.getloadavg()[0]], setup_s=setup_s)
        path = args.out / f"pass_cpu_time-{args.model}-{args.runs}x{args.workers}.json"
        path.write_text(json.dumps({"meta": meta, "cpu_ms_per_pass": result}, indent=1))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
