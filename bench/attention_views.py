"""The attention of a team's decode pass, this checkout's kernel against another revision's.

Times ``hw_attend`` over every layer of a model shape for the views a pass of R runs x N
workers has in the combined layout, as the engine builds them: per row its run's prompt of C
tokens, the others' header, each other worker's current step (S tokens) followed by the
3-token "unfinished" marker, its own header and its own step last (2N + 2 blocks). The
"before" kernel is ``--base``'s ``hogwild_cpu.c``, the "after" kernel this checkout's, both
compiled here with the flags of :mod:`hogwild.kernels.build` and run round-robin on the same
tensors, best of ``--rounds`` rounds each (a busy machine only ever slows a round down). Each
layer has its own K/V pool, so a pass reads cold keys as a real one does.

In a bench run the steps grow by one token a pass (``hogwild bench`` times passes a few to a
few dozen tokens into the steps), so ``--steps`` takes several lengths: short steps are the
markers' regime (blocks below 32 keys), longer ones the steps' own.

Usage::

    python bench/attention_views.py --base 543692a                  # 1 x 16, SmolLM2, steps 4,16,40
    python bench/attention_views.py --base 543692a --runs 8 --workers 2 --out /tmp/att
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from kernel_rows import compile_library, pin_isa  # noqa: E402 (a sibling script)

try:
    from hogwild.kernels import build
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(ROOT / "src"))
    from hogwild.kernels import build
from hogwild.models.shapes import SHAPES  # noqa: E402

HEADER_KEYS = MARKER_KEYS = 3  # the combined layout's constant blocks


def team_views(runs: int, workers: int, context: int, step: int) -> tuple[list[list[tuple[int, int]]], int]:
    """Each row's (first slot, keys) blocks in view order, and the slots used: per run a
    prompt, two headers and a marker the run's rows share, and a step block per worker."""
    rows, slot = [], 0
    for _ in range(runs):
        prompt, others, own, marker = slot, slot + context, slot + context + HEADER_KEYS, slot + context + 2 * HEADER_KEYS
        slot = marker + MARKER_KEYS
        steps = [slot + w * step for w in range(workers)]
        slot += workers * step
        for w in range(workers):
            view = [(prompt, context), (others, HEADER_KEYS)]
            for o in range(workers):
                if o != w:
                    view += [(steps[o], step), (marker, MARKER_KEYS)]
            rows.append(view + [(own, HEADER_KEYS), (steps[w], step)])
    return rows, slot


def declare(lib: ctypes.CDLL) -> None:
    P, I = ctypes.c_void_p, ctypes.c_int
    lib.hw_attend.restype = I
    lib.hw_attend.argtypes = [P, P, I, I, I, I, P, P, P, P, P, P, P, ctypes.c_int64, I, P, I, ctypes.c_float, I]


class Views:
    """The tensors of one pass's attention: every layer's K/V pool, the rows' queries, and the
    (row, block) pairs with their query rotations."""

    def __init__(self, shape: str, runs: int, workers: int, context: int, step: int):
        c = SHAPES[shape]
        self.layers, self.heads, self.kv_heads, self.d = c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim
        rows, used = team_views(runs, workers, context, step)
        gen = torch.Generator().manual_seed(0)
        self.cap = used
        self.k = [torch.randn(self.kv_heads, used, self.d, generator=gen).to(torch.bfloat16) for _ in range(self.layers)]
        self.v = [torch.randn(self.kv_heads, used, self.d, generator=gen).to(torch.bfloat16) for _ in range(self.layers)]
        self.rows = len(rows)
        self.q = torch.randn(self.rows, self.heads, self.d, generator=gen)
        self.out = torch.empty_like(self.q)
        flat = [p for view in rows for p in view]
        self.row_start = torch.tensor([0] + list(torch.tensor([len(v) for v in rows]).cumsum(0)), dtype=torch.int32)
        self.slots = torch.tensor([s for s, _ in flat], dtype=torch.int64)
        self.lens = torch.tensor([n for _, n in flat], dtype=torch.int32)
        angles = torch.rand(len(flat), self.d // 2, generator=gen) * 6
        self.cos = torch.cat((angles.cos(),) * 2, -1).contiguous()
        self.sin = torch.cat((angles.sin(),) * 2, -1).contiguous()
        self.keys = sum(n for _, n in flat)

    def attend(self, lib: ctypes.CDLL, threads: int) -> torch.Tensor:
        for layer in range(self.layers):
            rc = lib.hw_attend(self.q.data_ptr(), self.out.data_ptr(), self.rows, self.heads, self.kv_heads, self.d,
                               self.row_start.data_ptr(), self.slots.data_ptr(), self.lens.data_ptr(),
                               self.cos.data_ptr(), self.sin.data_ptr(), self.k[layer].data_ptr(),
                               self.v[layer].data_ptr(), self.cap * self.d, 1, None, layer,
                               1 / math.sqrt(self.d), threads)
            if rc != 0:
                raise RuntimeError(f"hw_attend failed ({rc})")
        return self.out.clone()

    def flops(self) -> float:
        return 4.0 * self.layers * self.heads * self.d * self.keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--steps", default="4,16,40", help="comma-separated step lengths (tokens of each worker's step)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--base", default="HEAD", help="git revision of the before kernel")
    ap.add_argument("--isa", choices=["auto", "avx2", "avx512", "avx512bf16", "amx"], default="auto")
    ap.add_argument("--out", type=Path, help="folder to write attention_views.json into")
    args = ap.parse_args()

    before_src = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.base}:src/hogwild/kernels/hogwild_cpu.c"],
                                check=True, capture_output=True, text=True).stdout
    after_src = (ROOT / "src/hogwild/kernels/hogwild_cpu.c").read_text()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        libs = {"before": compile_library(before_src, Path(tmp), "before"),
                "after": compile_library(after_src, Path(tmp), "after")}
        isas = {}
        for name, lib in libs.items():
            declare(lib)
            isas[name] = pin_isa(lib, args.isa)
        load = os.getloadavg()[0]
        print(f"hw_attend, {args.shape}, {args.runs} runs x {args.workers} workers, context {args.context}, "
              f"{args.threads} threads; before {args.base} on {isas['before']}, after on {isas['after']}; best of "
              f"{args.rounds} (load average {load:.2f})")
        print(f"{'step':>5} {'keys/row':>8} | {'before ms':>9} {'GFLOP/s':>7} | {'after ms':>8} {'GFLOP/s':>7} | "
              f"{'speedup':>7} {'max |diff|':>10}")
        for step in [int(s) for s in args.steps.split(",")]:
            views = Views(args.shape, args.runs, args.workers, args.context, step)
            outs = {name: views.attend(lib, args.threads) for name, lib in libs.items()}  # warm up
            best = {name: math.inf for name in libs}
            for _ in range(args.rounds):
                for name, lib in libs.items():
                    start = time.perf_counter()
                    views.attend(lib, args.threads)
                    best[name] = min(best[name], time.perf_counter() - start)
            diff = float((outs["before"] - outs["after"]).abs().max())
            row = dict(step=step, keys_per_row=views.keys / views.rows, before_ms=best["before"] * 1e3,
                       after_ms=best["after"] * 1e3, before_gflop_s=views.flops() / best["before"] / 1e9,
                       after_gflop_s=views.flops() / best["after"] / 1e9, speedup=best["before"] / best["after"],
                       max_abs_diff=diff)
            results.append(row)
            print(f"{step:>5} {row['keys_per_row']:>8.0f} | {row['before_ms']:>9.2f} {row['before_gflop_s']:>7.1f} | "
                  f"{row['after_ms']:>8.2f} {row['after_gflop_s']:>7.1f} | {row['speedup']:>7.2f} {diff:>10.2e}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"}
        meta.update(isa=isas, flags=build.FLAGS, load_average=[load, os.getloadavg()[0]])
        path = args.out / f"attention_views-{args.shape}-{args.runs}x{args.workers}.json"
        path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
