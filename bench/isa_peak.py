"""The per-core arithmetic peak of the instructions the CPU kernels could use.

Times, on one thread, twelve independent chains of each of: AVX2 FMA (8 fp32 lanes), AVX-512
FMA (16 lanes) and AVX512_BF16 ``vdpbf16ps`` (16 lanes, each a pair of bf16 products added
to an fp32 accumulator), with operands in registers. This is the ceiling the linear kernel's
GFLOP/s (``bench/kernel_rows.py``, ``bench/pass_parts.py``) is judged against, and it says
whether the bf16 dot-product instruction would pay: it only helps where it retires as many
instructions per cycle as the fp32 FMA does, since each does twice the products but needs
its activations rounded to bf16.

The CPU time of the thread is measured (not wall time), so other work on a shared machine
does not lower the numbers much; best of ``--rounds``. Sets the CPU lacks are skipped.

Usage::

    python bench/isa_peak.py
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    from hogwild.kernels import build
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(ROOT / "src"))
    from hogwild.kernels import build

SOURCE = r"""
#include <immintrin.h>
#include <time.h>
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
/* each returns seconds for n steps of 12 chained instructions; sink keeps the results alive */
double fma256(long n, float *sink) {
    __m256 a[12], b = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-4f);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps(i * 1e-3f);
    double t = cpu_now();
    for (long k = 0; k < n; k++)
        for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
    t = cpu_now() - t;
    for (int i = 0; i < 12; i++) sink[i] = _mm256_cvtss_f32(a[i]);
    return t;
}
__attribute__((target("avx512f"))) double fma512(long n, float *sink) {
    __m512 a[12], b = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(1e-4f);
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps(i * 1e-3f);
    double t = cpu_now();
    for (long k = 0; k < n; k++)
        for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], b, c);
    t = cpu_now() - t;
    for (int i = 0; i < 12; i++) sink[i] = _mm512_cvtss_f32(a[i]);
    return t;
}
__attribute__((target("avx512f,avx512bf16"))) double dpbf16(long n, float *sink) {
    __m512 a[12];
    __m512bh b = (__m512bh)_mm512_set1_epi16(0x3f80), c = (__m512bh)_mm512_set1_epi16(0x3a80);
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps(i * 1e-3f);
    double t = cpu_now();
    for (long k = 0; k < n; k++)
        for (int i = 0; i < 12; i++) a[i] = _mm512_dpbf16_ps(a[i], b, c);
    t = cpu_now() - t;
    for (int i = 0; i < 12; i++) sink[i] = _mm512_cvtss_f32(a[i]);
    return t;
}
int has(int which) {
    __builtin_cpu_init();
    return which == 0 ? __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
         : which == 1 ? __builtin_cpu_supports("avx512f")
                      : __builtin_cpu_supports("avx512bf16");
}
"""

#: name, C function, FLOPs per instruction (a product and an add per fp32 lane; two of each
#: per lane for vdpbf16ps), index for has()
KINDS = [("avx2 fma", "fma256", 16, 0), ("avx512 fma", "fma512", 32, 1), ("avx512 vdpbf16ps", "dpbf16", 64, 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20_000_000, help="loop steps of 12 instructions per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, help="folder to write isa_peak.json into")
    args = ap.parse_args()
    compiler = build._compiler()
    if compiler is None:
        raise SystemExit("no C compiler (set CC)")
    with tempfile.TemporaryDirectory() as tmp:
        src, lib_path = Path(tmp) / "peak.c", Path(tmp) / "peak.so"
        src.write_text(SOURCE)
        subprocess.run([compiler, "-O3", "-mavx2", "-mfma", "-fPIC", "-shared", str(src), "-o", str(lib_path)], check=True)
        lib = ctypes.CDLL(str(lib_path))
        sink = (ctypes.c_float * 12)()
        results = {}
        for name, fn, flops, which in KINDS:
            if not lib.has(which):
                print(f"{name:<18} not supported here")
                continue
            f = getattr(lib, fn)
            f.restype, f.argtypes = ctypes.c_double, [ctypes.c_long, ctypes.c_void_p]
            best = min(f(args.steps, ctypes.addressof(sink)) for _ in range(args.rounds))
            instr = args.steps * 12 / best
            results[name] = {"gflop_s": instr * flops / 1e9, "g_instructions_s": instr / 1e9}
            print(f"{name:<18} {instr * flops / 1e9:7.1f} GFLOP/s per core ({instr / 1e9:.2f} G instructions/s)")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "isa_peak.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
