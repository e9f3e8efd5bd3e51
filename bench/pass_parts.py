"""Where a batched decode pass spends its time on the native CPU kernels: linear vs attention.

A pass of R runs x N workers (R x N rows, each run with its own prompt of C tokens) through
every layer of a model shape is replayed kernel by kernel: per layer the four projections
(``hw_linear``: fused q/k/v, o, fused gate/up, down) and the per-block attention
(``hw_attend``), then the output projection (the tied embedding, ``hw_linear``). Weights are
random at the model's true shape, one copy per layer, so each layer's weights are cold as in
a real pass; the K/V pool holds every run's prompt and each worker's step, laid out as the
combined layout's views are (``[prompt, header, other workers' steps..., header, own step]``).

What it leaves out (norms, the SiLU gate, storing keys, Python around the pass) is the
"rest": ``hogwild bench`` times the whole pass, so rest = pass - the parts here.

Each instruction set the library can run (``hw_isa``: AVX2, and AVX-512, AVX-512 BF16 and AMX where
the CPU has it) is timed in the same build, round-robin, best of ``--rounds`` rounds, so a burst of other
work on this shared machine hits both alike.

Usage::

    python bench/pass_parts.py --shape smollm2-135m --runs 8 --workers 2 --context 1024
    python bench/pass_parts.py --shape smollm2-135m --runs 1 --workers 16 --out /tmp/parts
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    from hogwild.kernels import build, ops  # noqa: F401 (ops declares the kernels it wraps)
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(ROOT / "src"))
    from hogwild.kernels import build, ops  # noqa: F401 (ops declares the kernels it wraps)
from hogwild.models.shapes import SHAPES

ISA_NAMES = {1: "avx2", 2: "avx512", 3: "avx512bf16", 4: "amx"}
STEP_KEYS = 8  # keys in each worker's current step block (the bench's passes are a few tokens in)
HEADER_KEYS = 3  # the combined layout's constant blocks


def cpu_clock(threads: int):
    """Wall time, or with one thread the CPU time of this thread (OpenMP runs a one-thread
    region on the caller): on a machine shared with other work, time spent waiting for a core
    then does not count, so kernels can be compared while others run."""
    return time.thread_time if threads == 1 else time.perf_counter


def load_library() -> ctypes.CDLL:
    lib = build.library()
    if lib is None:
        raise SystemExit(f"native kernels unavailable: {build.status()}")
    build.declare({"hw_isa": (ctypes.c_int, [ctypes.c_int])})  # the rest as hogwild.kernels.ops declares them
    return lib


def views(runs: int, workers: int, context: int) -> tuple[list[list[tuple[int, int]]], int]:
    """Each row's (first slot, keys) pairs and the slots used: per run its prompt, one header
    block all its rows share, and a step block per worker that every worker of the run sees."""
    pairs, slot = [], 0
    for _ in range(runs):
        prompt, slot = slot, slot + context
        header, slot = slot, slot + HEADER_KEYS
        steps = []
        for _ in range(workers):
            steps.append(slot)
            slot += STEP_KEYS
        for w in range(workers):
            others = [(s, STEP_KEYS) for i, s in enumerate(steps) if i != w]
            pairs.append([(prompt, context), (header, HEADER_KEYS), *others, (header, HEADER_KEYS), (steps[w], STEP_KEYS)])
    return pairs, slot


class Pass:
    """The tensors of one replayed pass of a model shape (weights of every layer, K/V, rows)."""

    def __init__(self, shape: str, runs: int, workers: int, context: int, dtype: torch.dtype):
        c = SHAPES[shape]
        self.c, self.dtype = c, dtype
        self.rows = runs * workers
        qd, kd = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        self.linears = {"qkv": (qd + 2 * kd, c.hidden_size), "o": (c.hidden_size, qd),
                        "gate_up": (2 * c.intermediate_size, c.hidden_size), "down": (c.hidden_size, c.intermediate_size)}
        gen = torch.Generator().manual_seed(0)
        self.weights = [{name: (torch.randn(n, k, generator=gen) * 0.05).to(dtype) for name, (n, k) in self.linears.items()}
                        for _ in range(c.num_layers)]
        self.head = (torch.randn(c.vocab_size, c.hidden_size, generator=gen) * 0.05).to(dtype)
        self.x = {name: torch.randn(self.rows, k, generator=gen) for name, (_, k) in self.linears.items()}
        self.y = {name: torch.empty(self.rows, n) for name, (n, _) in self.linears.items()}
        self.head_x, self.head_y = torch.randn(self.rows, c.hidden_size, generator=gen), torch.empty(self.rows, c.vocab_size)
        pairs, used = views(runs, workers, context)
        self.keys_attended = sum(n for row in pairs for _, n in row)
        self.pool_k = [torch.randn(c.num_kv_heads, used, c.head_dim, generator=gen).to(dtype) for _ in range(c.num_layers)]
        self.pool_v = [torch.randn(c.num_kv_heads, used, c.head_dim, generator=gen).to(dtype) for _ in range(c.num_layers)]
        flat = [p for row in pairs for p in row]
        self.row_start = torch.tensor([0, *torch.tensor([len(r) for r in pairs]).cumsum(0).tolist()], dtype=torch.int32)
        self.pair_slot = torch.tensor([s for s, _ in flat], dtype=torch.int64)
        self.pair_len = torch.tensor([n for _, n in flat], dtype=torch.int32)
        angles = torch.rand(len(flat), c.head_dim // 2, generator=gen) * 6
        self.cos = torch.cat((angles.cos(),) * 2, -1).contiguous()
        self.sin = torch.cat((angles.sin(),) * 2, -1).contiguous()
        self.q = torch.randn(self.rows, c.num_heads, c.head_dim, generator=gen)
        self.paired: dict[int, ops.PairedBF16] = {}  # weights in dot pairs, by id of the plain one
        self.att = torch.empty_like(self.q)

    def linear(self, lib, x, w, y, threads) -> None:
        """One projection, its weight as KernelLinear keeps it on the set in effect: in dot
        pairs where they pay (``ops.pairs_pay``, reordered once and kept), plain otherwise."""
        n, k = w.shape
        data, fmt = w, int(w.dtype == torch.bfloat16)
        if ops.pairs_pay(w):
            if id(w) not in self.paired:
                self.paired[id(w)] = ops.PairedBF16.pack(w)
            data, fmt = self.paired[id(w)].data, 2
        rc = lib.hw_linear(x.data_ptr(), data.data_ptr(), fmt, None, y.data_ptr(), x.shape[0], n, k, 0, threads)
        if rc != 0:
            raise MemoryError("hw_linear failed")

    def attend(self, lib, layer, threads) -> None:
        c, k = self.c, self.pool_k[layer]
        rc = lib.hw_attend(self.q.data_ptr(), self.att.data_ptr(), self.rows, c.num_heads, c.num_kv_heads, c.head_dim,
                           self.row_start.data_ptr(), self.pair_slot.data_ptr(), self.pair_len.data_ptr(),
                           self.cos.data_ptr(), self.sin.data_ptr(), k.data_ptr(), self.pool_v[layer].data_ptr(),
                           k.shape[1] * k.shape[2], int(k.dtype == torch.bfloat16), None, 0, 1 / math.sqrt(c.head_dim),
                           threads)
        if rc != 0:
            raise RuntimeError(f"hw_attend failed ({rc})")

    def once(self, lib, threads) -> dict[str, float]:
        """Seconds of each part over one pass through every layer."""
        clock = cpu_clock(threads)
        t = {"linear": 0.0, "attention": 0.0, "head": 0.0}
        for layer, ws in enumerate(self.weights):
            start = clock()
            for name, w in ws.items():
                self.linear(lib, self.x[name], w, self.y[name], threads)
            mid = clock()
            self.attend(lib, layer, threads)
            t["linear"] += mid - start
            t["attention"] += clock() - mid
        start = clock()
        self.linear(lib, self.head_x, self.head, self.head_y, threads)
        t["head"] = clock() - start
        return t

    def flops(self) -> dict[str, float]:
        c, r = self.c, self.rows
        return {"linear": 2.0 * r * c.num_layers * sum(n * k for n, k in self.linears.values()),
                "attention": 4.0 * c.num_layers * c.num_heads * c.head_dim * self.keys_attended,
                "head": 2.0 * r * c.vocab_size * c.hidden_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7, help="best of this many passes per instruction set")
    ap.add_argument("--out", type=Path, help="folder to write pass_parts.json into")
    args = ap.parse_args()

    lib = load_library()
    isas = [1] + [i for i in (2, 3, 4) if lib.hw_isa(i) == i]
    p = Pass(args.shape, args.runs, args.workers, args.context, getattr(torch, args.dtype))
    best = {i: {} for i in isas}
    load = os.getloadavg()[0]
    try:
        for _ in range(args.rounds):
            for isa in isas:
                lib.hw_isa(isa)
                t = p.once(lib, args.threads)
                for part, s in t.items():
                    best[isa][part] = min(best[isa].get(part, math.inf), s)
    finally:
        lib.hw_isa(0)
    flops = p.flops()
    clock = "thread CPU time" if args.threads == 1 else "wall time"
    print(f"{args.shape} {args.dtype}, {args.runs} runs x {args.workers} workers = {p.rows} rows, context "
          f"{args.context}, {args.threads} threads; {clock}, best of {args.rounds} (load average {load:.2f} at start)")
    print(f"{'isa':<7} {'part':<10} {'ms/pass':>8} {'GFLOP/s':>8}")
    result = {}
    for isa in isas:
        name = ISA_NAMES[isa]
        result[name] = {part: {"ms": s * 1e3, "gflop_s": flops[part] / s / 1e9} for part, s in best[isa].items()}
        total = sum(best[isa].values())
        result[name]["total_ms"] = total * 1e3
        for part, s in best[isa].items():
            print(f"{name:<7} {part:<10} {s * 1e3:8.2f} {flops[part] / s / 1e9:8.1f}")
        print(f"{name:<7} {'sum':<10} {total * 1e3:8.2f} {sum(flops.values()) / total / 1e9:8.1f}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in vars(args).items() if k != "out"}
        meta.update(rows=p.rows, keys_attended=p.keys_attended, flops=flops, flags=build.FLAGS,
                    load_average=[load, os.getloadavg()[0]])
        path = args.out / f"pass_parts-{args.shape}-{args.runs}x{args.workers}.json"
        path.write_text(json.dumps({"meta": meta, "results": result}, indent=1))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
