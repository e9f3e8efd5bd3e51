"""How the native linear kernel scales with the rows of a pass: before vs after, per model shape.

Times ``hw_linear`` over the four projections of one decoder layer (fused q/k/v, o, fused
gate/up, down) for M = 1, 4, 16, 64, 128 rows, fp32 and bf16 weights, with two threads. The
"before" kernel is the committed one (``git show HEAD:src/hogwild/kernels/hogwild_cpu.c``, or
``--base REV``'s),
each fed its weights as KernelLinear keeps them (bf16 reordered into dot pairs where that
kernel has them and they pay, ``hw_linear_pairs``; plain otherwise),
the "after" kernel is this checkout's; both are compiled here into a temporary directory with
the flags of :mod:`hogwild.kernels.build`, so the numbers compare the code, not the build. Each
library picks its instruction set at run time as the engine's does (AVX-512 where the CPU has
it and the code has such a path; ``--isa avx2`` pins "after" to AVX2, for the same code on
both sets).
torch's ``F.linear`` (MKL; a bf16 weight converted to fp32 per call, as ``KernelLinear`` does
above ``MAX_ROWS``) is timed alongside for reference.

Weights are cold as in a real pass: the layer is copied until the copies exceed
``--pool-mb`` and each call takes the next copy, so the caches hold none of it.

Usage::

    python bench/kernel_rows.py                       # both shapes, table on stdout
    python bench/kernel_rows.py --rows 1,16 --out /tmp/rows   # also writes /tmp/rows/kernel_rows.json

It prints one line per (model, dtype, rows) with the four calls summed, then the ms of each
call. "GB/s" is weight bytes read per second (the floor for few rows is memory bandwidth);
"GFLOP/s" is 2 * M * N * K per second (the ceiling for many rows is the FMA rate). Each
number is the best of three rounds, so other work on the machine inflates it less.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
try:
    from hogwild.kernels import build
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(ROOT / "src"))
    from hogwild.kernels import build

#: (hidden, intermediate, heads, kv_heads, head_dim) of the models whose layers are timed
SHAPES = {
    "qwen2.5-0.5b": (896, 4864, 14, 2, 64),
    "smollm2-135m": (576, 1536, 9, 3, 64),
}


def layer_linears(hidden: int, inter: int, heads: int, kv_heads: int, head_dim: int) -> dict[str, tuple[int, int]]:
    """(N, K) of each projection of a layer with fused q/k/v and gate/up, as NativeDecoder runs it."""
    return {
        "qkv": ((heads + 2 * kv_heads) * head_dim, hidden),
        "o": (hidden, heads * head_dim),
        "gate_up": (2 * inter, hidden),
        "down": (hidden, inter),
    }


def compile_library(source: str, out_dir: Path, name: str) -> ctypes.CDLL:
    src = out_dir / f"{name}.c"
    src.write_text(source)
    lib_path = out_dir / f"{name}.so"
    compiler = build._compiler()
    if compiler is None:
        raise SystemExit("no C compiler (set CC)")
    subprocess.run([compiler, *build.FLAGS, str(src), "-o", str(lib_path), "-lm"], check=True)
    lib = ctypes.CDLL(str(lib_path))
    P, I = ctypes.c_void_p, ctypes.c_int
    lib.hw_linear.restype = I  # void before the change: the value is then ignored
    lib.hw_linear.argtypes = [P, P, I, P, P, I, I, I, I, I]
    if hasattr(lib, "hw_pack_pairs"):  # dot pairs (AVX512_BF16), from 2026-12-05
        lib.hw_linear_pairs.restype, lib.hw_linear_pairs.argtypes = I, [I, I]
        lib.hw_pack_pairs.restype, lib.hw_pack_pairs.argtypes = None, [P, P, I, I, I]
    return lib


def pin_isa(lib: ctypes.CDLL, name: str) -> str:
    """Pin the library's instruction set (``hw_isa``) and return the one in effect."""
    names = {1: "avx2", 2: "avx512", 3: "avx512bf16", 4: "amx"}
    if not hasattr(lib, "hw_isa"):  # a kernel from before the run-time choice: AVX2 only
        return "avx2"
    lib.hw_isa.restype, lib.hw_isa.argtypes = ctypes.c_int, [ctypes.c_int]
    request = {"auto": 0, "avx2": 1, "avx512": 2, "avx512bf16": 3, "amx": 4}[name]
    if lib.hw_isa(request) < 0:
        raise SystemExit(f"this CPU cannot run the {name} kernels")
    return names[lib.hw_isa(-1)]


class Clock:
    """Seconds per call of one measurement: the best of a few rounds (a busy machine only ever
    slows a round down), each at least ``min_seconds`` long. The weight copy advances across
    rounds, so every call finds its weights cold."""

    def __init__(self, copies: int, min_seconds: float, rounds: int = 3):
        self.copies, self.min_seconds, self.rounds = copies, min_seconds, rounds
        self.next = 0

    def __call__(self, call) -> float:
        call(self.next % self.copies)  # warm up code paths and the thread pool
        self.next += 1
        best = float("inf")
        for _ in range(self.rounds):
            done, start = 0, time.perf_counter()
            while done < 2 or time.perf_counter() - start < self.min_seconds:
                call(self.next % self.copies)
                self.next += 1
                done += 1
            best = min(best, (time.perf_counter() - start) / done)
        return best


def weight_as_kept(lib: ctypes.CDLL, w: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The weight as KernelLinear keeps it for this library: reordered into dot pairs where
    the library has them and says they pay (format 2), else plain (1 bf16, 0 fp32)."""
    n, k = w.shape
    if w.dtype == torch.bfloat16 and hasattr(lib, "hw_linear_pairs") and lib.hw_linear_pairs(n, k):
        packed = torch.empty(-(-n // 16) * 16 * k, dtype=torch.bfloat16)
        lib.hw_pack_pairs(w.data_ptr(), packed.data_ptr(), n, k, 1)
        return packed, 2
    return w, int(w.dtype == torch.bfloat16)


def bench_shape(name, dims, dtype, rows_list, libs, threads, pool_mb, min_seconds, with_torch):
    shapes = layer_linears(*dims)
    es = 2 if dtype == torch.bfloat16 else 4
    layer_bytes = sum(n * k * es for n, k in shapes.values())
    copies = max(2, int(pool_mb * 2**20 // layer_bytes) + 1)
    clock = Clock(copies, min_seconds)
    torch.manual_seed(0)
    weights = [{p: (torch.randn(n, k) * 0.05).to(dtype) for p, (n, k) in shapes.items()} for _ in range(copies)]
    held = {label: [{p: weight_as_kept(lib, w) for p, w in copy.items()} for copy in weights] for label, lib in libs.items()}
    results = []
    for rows in rows_list:
        row = {"model": name, "dtype": str(dtype).replace("torch.", ""), "rows": rows, "layer_mb": layer_bytes / 2**20,
               "calls": {}}
        for proj, (n, k) in shapes.items():
            x, y = torch.randn(rows, k), torch.empty(rows, n)
            call_ms = {}
            for label, lib in libs.items():
                def call(i, lib=lib, mine=held[label], proj=proj, n=n, k=k, x=x, y=y):
                    w, fmt = mine[i][proj]
                    lib.hw_linear(x.data_ptr(), w.data_ptr(), fmt, None, y.data_ptr(), rows, n, k, 0, threads)
                call_ms[label] = 1e3 * clock(call)
            if with_torch:
                call_ms["torch"] = 1e3 * clock(lambda i, proj=proj, x=x: F.linear(x, weights[i][proj].float()))
            gb = n * k * es / 1e9
            call_ms["after_gb_s"] = gb / (call_ms["after"] / 1e3)
            row["calls"][proj] = {"n": n, "k": k, **call_ms}
        for label in (*libs, *(("torch",) if with_torch else ())):
            row[f"{label}_ms"] = sum(c[label] for c in row["calls"].values())
        after = row["after_ms"] / 1e3
        row["after_gb_s"] = layer_bytes / after / 1e9
        row["after_gflop_s"] = sum(2 * n * k for n, k in shapes.values()) * rows / after / 1e9
        if "before_ms" in row:
            row["before_gb_s"] = layer_bytes / (row["before_ms"] / 1e3) / 1e9
            row["speedup"] = row["before_ms"] / row["after_ms"]
        results.append(row)
        print(format_row(row), flush=True)
    return results


HEADER = (f"{'model':<14} {'dtype':<9} {'rows':>4} | {'before ms':>9} {'GB/s':>6} | {'after ms':>8} {'GB/s':>6} "
          f"{'GFLOP/s':>7} | {'speedup':>7} | {'torch ms':>8}")


def format_row(r: dict) -> str:
    def num(key, fmt):
        return format(r[key], fmt) if key in r else "-"

    return (f"{r['model']:<14} {r['dtype']:<9} {r['rows']:>4} | {num('before_ms', '9.3f')} {num('before_gb_s', '6.1f')} | "
            f"{num('after_ms', '8.3f')} {num('after_gb_s', '6.1f')} {num('after_gflop_s', '7.1f')} | "
            f"{num('speedup', '7.2f')} | {num('torch_ms', '8.3f')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1,4,16,64,128", help="comma-separated rows per call")
    ap.add_argument("--models", default=",".join(SHAPES), help=f"comma-separated, from {', '.join(SHAPES)}")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pool-mb", type=float, default=768, help="weight copies cycled through (defeats the caches)")
    ap.add_argument("--seconds", type=float, default=0.15, help="least time per round (best of 3 rounds)")
    ap.add_argument("--no-before", action="store_true", help="skip the committed kernel")
    ap.add_argument("--no-torch", action="store_true", help="skip torch's F.linear")
    ap.add_argument("--base", default="HEAD", help="git revision of the before kernel")
    ap.add_argument("--isa", choices=["auto", "avx2", "avx512", "avx512bf16", "amx"], default="auto",
                    help="instruction set of the after kernel (hw_isa; auto: the best the CPU has)")
    ap.add_argument("--out", type=Path, help="folder to write kernel_rows.json into")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    rows_list = [int(r) for r in args.rows.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        libs = {}
        if not args.no_before:
            old = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.base}:src/hogwild/kernels/hogwild_cpu.c"],
                                 capture_output=True, text=True, check=True).stdout
            libs["before"] = compile_library(old, Path(tmp), "before")
        libs["after"] = compile_library(build.SOURCE.read_text(), Path(tmp), "after")
        isa = pin_isa(libs["after"], args.isa)
        load_before = os.getloadavg()[0]
        print(f"hw_linear, {args.threads} threads, after on {isa}: ms for one layer's four projections (qkv, o, gate_up, down; "
              f"one call each), GB/s of weights read, GFLOP/s (load average {load_before:.2f}: other work "
              f"on the machine slows OpenMP calls by whole scheduler slices)")
        print(HEADER)
        results = []
        for model in args.models.split(","):
            for dt in args.dtypes.split(","):
                results += bench_shape(model, SHAPES[model], getattr(torch, dt), rows_list, libs, args.threads,
                                       args.pool_mb, args.seconds, not args.no_torch)
    print("\nms per call (after; before in brackets):")
    for r in results:
        calls = "  ".join(f"{p} {c['after']:.3f}" + (f" [{c['before']:.3f}]" if "before" in c else "")
                          for p, c in r["calls"].items())
        print(f"{r['model']:<14} {r['dtype']:<9} {r['rows']:>4}  {calls}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = {"threads": args.threads, "flags": build.FLAGS, "torch": torch.__version__, "after_isa": isa,
                "load_average": [load_before, os.getloadavg()[0]],
                "shapes": {m: layer_linears(*SHAPES[m]) for m in SHAPES}}
        (args.out / "kernel_rows.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
        print(f"wrote {args.out / 'kernel_rows.json'}")


if __name__ == "__main__":
    main()
