"""Quantized-weight linears (``hw_qlinear``) against the bf16 linear, per format and rows.

Times the four projections of one decoder layer (fused q/k/v, o, fused gate/up, down) of a
model shape for each block format and M rows, in both of the kernel's arithmetics (``int8``:
activations rounded to int8 per 32 values, integer dot products; ``f32``: blocks widened to
fp32 in registers, FMA), next to ``hw_linear`` on the same shapes in bf16. Weights are cold as
in a real pass: the layer is copied until the copies exceed ``--pool-mb`` and each call takes
the next copy. Block contents are random (speed does not depend on them).

Usage::

    python bench/quant_linear.py                              # table on stdout
    python bench/quant_linear.py --formats q4_k,q6_k --rows 1,4,8 --out docs/results/quant

"GB/s" is weight bytes read per second (the floor for few rows is memory bandwidth), "x bf16"
the bf16 kernel's time over this one's. Each number is the best of three rounds, so other work
on the machine inflates it less; on a shared machine compare ratios from one run. On a busy
machine ``--clock cpu --threads 1`` times the calling thread's CPU time instead (work done,
not time spent waiting for a core: a call of several OpenMP threads loses whole scheduler
slices there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    from hogwild import kernels
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(ROOT / "src"))
    from hogwild import kernels
from hogwild.kernels.qlinear import qlinear, set_mode
from hogwild.quant.weights import FORMATS, QuantWeight
from kernel_rows import layer_linears  # bench/kernel_rows.py: one layer's projections

#: (hidden, intermediate, heads, kv_heads, head_dim)
SHAPES = {
    "qwen2.5-1.5b": (1536, 8960, 12, 2, 128),
    "smollm2-135m": (576, 1536, 9, 3, 64),
}


def random_weight(fmt: str, n: int, k: int, rng: np.random.Generator) -> QuantWeight:
    """Random blocks with sane scale fields (random scale bits would make subnormal floats,
    which the CPU computes with slowly; the quants are random bits)."""
    f = FORMATS[fmt]
    blocks = rng.integers(0, 256, (n * k // f.block, f.bytes), dtype=np.uint8)
    half = np.full(blocks.shape[0], 0.01, dtype=np.float16).view(np.uint8).reshape(-1, 2)
    if fmt == "mxfp4":
        blocks[:, 0] = rng.integers(118, 126, blocks.shape[0])  # E8M0: 2^-9 .. 2^-2
    elif fmt == "nvfp4":
        blocks[:, 0:4] = rng.integers(0x20, 0x50, (blocks.shape[0], 4))  # E4M3 scales 2^-3 .. 2^2
    else:
        for a in {"q6_k": [208], "q4_k": [0, 2], "q5_k": [0, 2], "q4_1": [0, 2], "q5_1": [0, 2]}.get(fmt, [0]):
            blocks[:, a : a + 2] = half
    return QuantWeight(f, torch.from_numpy(blocks.reshape(n, -1)), n, k)


class Clock:
    """Best of a few rounds of at least ``min_seconds`` each; calls cycle through copies."""

    def __init__(self, copies: int, min_seconds: float, rounds: int = 3, cpu: bool = False):
        self.copies, self.min_seconds, self.rounds, self.next = copies, min_seconds, rounds, 0
        self.now = time.thread_time if cpu else time.perf_counter

    def __call__(self, call) -> float:
        call(self.next % self.copies)
        self.next += 1
        best = float("inf")
        for _ in range(self.rounds):
            done, start = 0, self.now()
            while done < 2 or self.now() - start < self.min_seconds:
                call(self.next % self.copies)
                self.next += 1
                done += 1
            best = min(best, (self.now() - start) / done)
        return best


def layer_time(weights: list[dict], shapes: dict, rows: int, clock: Clock, call_one) -> float:
    xs = {p: torch.randn(rows, k) for p, (n, k) in shapes.items()}
    outs = {p: torch.empty(rows, n) for p, (n, k) in shapes.items()}

    def call(i: int) -> None:
        for p in shapes:
            call_one(xs[p], weights[i][p], outs[p])

    return clock(call)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="qwen2.5-1.5b", choices=sorted(SHAPES))
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--rows", default="1,4,8,16,64,128")
    ap.add_argument("--modes", default="int8,f32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pool-mb", type=float, default=256)
    ap.add_argument("--seconds", type=float, default=0.1, help="least time per round (best of 3 rounds)")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="cpu: thread CPU time (--threads 1)")
    ap.add_argument("--out", type=Path, help="folder to write quant_linear.json into")
    args = ap.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        raise SystemExit("--clock cpu times the calling thread: use --threads 1")
    cpu = args.clock == "cpu"
    if not kernels.available():
        raise SystemExit(f"native kernels unavailable: {kernels.status()}")
    torch.set_num_threads(args.threads)
    shapes = layer_linears(*SHAPES[args.shape])
    rows_list = [int(r) for r in args.rows.split(",")]
    rng = np.random.default_rng(0)
    load_before = os.getloadavg()[0]
    print(f"{args.shape}, one layer's four projections, {args.threads} threads, {args.clock} time, "
          f"load average {load_before:.2f}")
    print(f"{'format':<7} {'mode':<5} {'rows':>4} | {'ms':>8} {'GB/s':>6} | {'bf16 ms':>8} {'x bf16':>6}")
    bf16_bytes = sum(n * k * 2 for n, k in shapes.values())
    bf16_copies = max(2, int(args.pool_mb * 2**20 // bf16_bytes) + 1)
    bf16 = [{p: torch.randn(n, k).to(torch.bfloat16) for p, (n, k) in shapes.items()} for _ in range(bf16_copies)]
    bf16_ms = {rows: 1e3 * layer_time(bf16, shapes, rows, Clock(bf16_copies, args.seconds, cpu=cpu),
                                      lambda x, w, y: kernels.linear(x, w, out=y)) for rows in rows_list}
    del bf16
    results = []
    for fmt in args.formats.split(","):
        f = FORMATS[fmt]
        if any(k % f.block for _, k in shapes.values()):
            print(f"{fmt:<7} skipped: K not a multiple of its block of {f.block}")
            continue
        layer_bytes = sum(n * k // f.block * f.bytes for n, k in shapes.values())
        copies = max(2, int(args.pool_mb * 2**20 // layer_bytes) + 1)
        weights = [{p: random_weight(fmt, n, k, rng) for p, (n, k) in shapes.items()} for _ in range(copies)]
        for mode in args.modes.split(","):
            before = set_mode(mode)
            for rows in rows_list:
                ms = 1e3 * layer_time(weights, shapes, rows, Clock(copies, args.seconds, cpu=cpu),
                                      lambda x, w, y: qlinear(x, w, out=y))
                row = {"format": fmt, "mode": mode, "rows": rows, "ms": ms, "gb_s": layer_bytes / ms / 1e6,
                       "bf16_ms": bf16_ms[rows], "vs_bf16": bf16_ms[rows] / ms, "layer_mb": layer_bytes / 2**20}
                results.append(row)
                print(f"{fmt:<7} {mode:<5} {rows:>4} | {ms:8.3f} {row['gb_s']:6.1f} | {bf16_ms[rows]:8.3f} "
                      f"{row['vs_bf16']:6.2f}", flush=True)
            set_mode(before)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = {"shape": args.shape, "linears": shapes, "threads": args.threads, "clock": args.clock,
                "torch": torch.__version__,
                "load_average": [load_before, os.getloadavg()[0]], "cpu": _cpu()}
        path = args.out / f"quant_linear_{args.shape}_{args.clock}.json"
        path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
        print(f"wrote {path}")


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()
