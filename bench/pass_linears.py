"""The linears of a decode pass on the dot pairs, this checkout's kernel against another revision's.

Replays the projections of every layer of a model shape in the native decoder's order (fused
q/k/v, o, fused gate/up, the SiLU gate, down, then the next layer), each weight its own copy in dot pairs so
the weights stream from memory as in a real pass, on ``pairs_linear`` (the AVX512_BF16 dot
tiles) of two builds: ``--base``'s ``hogwild_cpu.c`` and this checkout's, each compiled here
into a driver with the flags of :mod:`hogwild.kernels.build`. Where a build's kernel takes the
call that follows (``PairsNext``: o -> gate/up -> down -> the next layer's q/k/v, as
``decode_layer`` passes them), the driver passes it too. The two run in turn, round by round,
best of ``--rounds`` each, so a burst of other work on a shared machine slows both alike: on
these machines two runs of the same code minutes apart differ by more than most kernel
changes, while interleaved rounds repeat within 1 %.

Needs a CPU with AVX512_BF16 (the only set that computes dot pairs).

Usage::

    python bench/pass_linears.py --base HEAD~1                 # SmolLM2, 16 rows
    python bench/pass_linears.py --base HEAD~1 --shape qwen2.5-0.5b --rows 16 --out /tmp/lin
    python bench/pass_linears.py --base HEAD --hot        # the weights from cache: what is left
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
from hogwild.models.shapes import SHAPES  # noqa: E402

KERNEL = "src/hogwild/kernels/hogwild_cpu.c"

# The driver: SOURCE is the kernel file of one revision; HAS_NEXT whether its pairs_linear
# takes the call that follows. Weights hold bf16 values near 1 (their values do not change
# the time); each layer's four matrices are separate allocations, as a model's are.
DRIVER = r"""
#include SOURCE
#include <time.h>
static double now_s(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static uint16_t *W[256][4];
static float *X, *Y, *Z;
static int NS[4], KS[4], L_, M_;
static int HOT;
int setup(int layers, int rows, const int *ns, const int *ks, int hot) {
    HOT = hot; /* every layer reads layer 0's weights: they stay in the last-level cache */
    L_ = layers; M_ = rows;
    int widest = 0;
    for (int c = 0; c < 4; c++) { NS[c] = ns[c]; KS[c] = ks[c]; widest = ns[c] > widest ? ns[c] : widest; widest = ks[c] > widest ? ks[c] : widest; }
    X = aligned_alloc(64, sizeof(float) * (size_t)rows * widest);
    Y = aligned_alloc(64, sizeof(float) * (size_t)rows * widest);
    Z = aligned_alloc(64, sizeof(float) * (size_t)rows * widest);
    if (!X || !Y || !Z) return -1;
    for (size_t i = 0; i < (size_t)rows * widest; i++) X[i] = 0.01f * (float)(i % 7);
    for (int l = 0; l < layers; l++)
        for (int c = 0; c < 4; c++) {
            size_t n = (size_t)((ns[c] + 15) / 16) * 16 * ks[c];
            if (hot && l > 0) { W[l][c] = W[0][c]; continue; }
            if (!(W[l][c] = aligned_alloc(64, n * 2))) return -1;
            for (size_t i = 0; i < n; i++) W[l][c][i] = (uint16_t)(0x3f80 + (i & 7));
        }
    return 0;
}
/* seconds for one pass over every layer's four linears */
double pass_once(int threads) {
    double t = now_s();
    for (int l = 0; l < L_; l++)
        for (int c = 0; c < 4; c++) {
#if HAS_NEXT
            int nl = c == 3 ? l + 1 : l, nc = (c + 1) % 4;
            PairsNext after = {nl < L_ ? W[nl][nc] : NULL, NS[nc], KS[nc]};
            /* q/k/v -> o has the attention between them: no fetching ahead there */
            pairs_linear(X, W[l][c], 1, NULL, Y, M_, NS[c], KS[c], 0, threads, c != 0 && nl < L_ ? &after : NULL);
#else
            pairs_linear(X, W[l][c], 1, NULL, Y, M_, NS[c], KS[c], 0, threads);
#endif
            if (c == 2) silu_mul_par(Y, Z, M_, NS[c] / 2, threads); /* the SiLU gate between gate/up and down */
        }
    return now_s() - t;
}
"""


def compile_driver(source_text: str, out_dir: Path, name: str) -> ctypes.CDLL:
    compiler = build._compiler()
    if compiler is None:
        raise SystemExit("no C compiler (set CC)")
    src = out_dir / f"{name}_kernel.c"
    src.write_text(source_text)
    driver = out_dir / f"{name}.c"
    driver.write_text(DRIVER)
    so = out_dir / f"{name}.so"
    has_next = int("PairsNext" in source_text)
    subprocess.run([compiler, *build.FLAGS, f'-DSOURCE="{src}"', f"-DHAS_NEXT={has_next}", str(driver), "-o", str(so),
                    "-lm"], check=True)
    lib = ctypes.CDLL(str(so))
    lib.setup.restype = ctypes.c_int
    lib.setup.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int),
                          ctypes.c_int]
    lib.pass_once.restype = ctypes.c_double
    lib.pass_once.argtypes = [ctypes.c_int]
    return lib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="HEAD", help="git revision of the before kernel")
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--hot", action="store_true",
                    help="every layer reads the first layer's weights (in the last-level cache): the same "
                         "arithmetic without the weight stream from memory, what hiding that stream could reach")
    ap.add_argument("--out", type=Path, help="folder to write pass_linears.json into")
    args = ap.parse_args()
    lib = build.library()
    if lib is None or lib.hw_isa(3) != 3:
        raise SystemExit("needs the native kernels on a CPU with AVX512_BF16")
    lib.hw_isa(0)
    c = SHAPES[args.shape]
    qd, kd = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    ns = [qd + 2 * kd, c.hidden_size, 2 * c.intermediate_size, c.hidden_size]
    ks = [c.hidden_size, qd, c.hidden_size, c.intermediate_size]
    base = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.base}:{KERNEL}"], capture_output=True, text=True,
                          check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        libs = {"before": compile_driver(base, Path(tmp), "before"),
                "after": compile_driver((ROOT / KERNEL).read_text(), Path(tmp), "after")}
        for name, d in libs.items():
            if d.setup(c.num_layers, args.rows, (ctypes.c_int * 4)(*ns), (ctypes.c_int * 4)(*ks), int(args.hot)) != 0:
                raise SystemExit(f"{name}: out of memory")
        best = {name: float("inf") for name in libs}
        for _ in range(args.rounds):
            for name, d in libs.items():
                best[name] = min(best[name], d.pass_once(args.threads))
    flops = 2.0 * args.rows * c.num_layers * sum(n * k for n, k in zip(ns, ks))
    for name, s in best.items():
        print(f"{name:>6}: {s * 1e3:7.3f} ms per pass of linears, {flops / s / 1e9:6.1f} GFLOP/s")
    ratio = best["before"] / best["after"]
    print(f"{args.shape}, {args.rows} rows, {args.threads} threads, base {args.base}: before / after {ratio:.3f} "
          f"(best of {args.rounds} interleaved rounds)")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"pass_linears-{args.shape}-{args.rows}{'-hot' if args.hot else ''}.json"
        path.write_text(json.dumps({"meta": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                                             if k != "out"} | {"flags": build.FLAGS},
                                    "ms": {k: v * 1e3 for k, v in best.items()}, "ratio": ratio}, indent=1))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
