"""The GPU benchmark: random weights at Qwen2.5-7B and -32B shapes, bf16, in one process.

Run by ``bench/gpu-check.sh`` on a CUDA machine (see docs/bench.md, "On a GPU"); a small
dry run on CPU checks the script itself (``--device cpu --small``). Three parts, each one
``hogwild.bench.run_bench`` call, in order of importance, so that a time budget cuts the
least important part first:

1. ``7b``: Qwen2.5-7B shape, contexts 1k/8k/16k, N = 1, 2, 4, 8 workers, R = 1, 8, 32 runs
   sharing all but their last 64 prompt tokens; the default path (Triton plan, CUDA graphs);
   transformers' decoding step where it fits (R x N <= 8, context <= 8k); a profile of
   N = 4, R = 1 at 1k.
2. ``32b``: Qwen2.5-32B / QwQ-32B shape, contexts 1k/8k, N = 1, 4, R = 1, 8 (no transformers:
   two copies of 65 GB of weights do not fit).
3. ``7b-torch``: the plain-ops attention plan without graphs, for comparison (N = 1, 4;
   R = 1, 8; 1k/8k), with its profile.
4. ``7b-r32``: N = 4, R = 1 and 32 at 1k again, with a profile of the 32-run pass (where
   its time goes).

Writes ``OUT/bench.json`` (every part's document, the merged results, the device name as
torch reports it, the issue's targets checked), ``OUT/README.md`` (tables) and one PNG per
part.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from hogwild.bench import BenchConfig, run_bench  # noqa: E402
from hogwild.bench.report import write_png  # noqa: E402


def parts(device: str, small: bool) -> list[tuple[str, BenchConfig]]:
    common = dict(random_weights=True, dtypes=["bfloat16"], device=device, unique_suffix=64,
                  passes=5, rounds=3, warmup=3, bandwidth_mb=2048 if device == "cuda" else 64,
                  matmul_size=8192 if device == "cuda" else 256, threads=2)
    if small:  # the dry run: tiny shapes, the same code paths
        common.update(passes=2, rounds=1, warmup=1, unique_suffix=16)
        return [
            ("7b", BenchConfig(shape="tiny", workers=[1, 2], runs=[1, 3], contexts=[64, 128],
                               transformers_max_rows=2, transformers_max_context=64, profile_context=64,
                               **common)),
            ("32b", BenchConfig(shape="tiny", workers=[1, 2], runs=[1, 2], contexts=[64],
                                transformers=False, profile=False, **common)),
            ("7b-torch", BenchConfig(shape="tiny", workers=[1, 2], runs=[1], contexts=[64], attention="torch",
                                     graphs=False, transformers=False, profile_context=64, **common)),
            ("7b-r32", BenchConfig(shape="tiny", workers=[2], runs=[1, 4], contexts=[64], transformers=False,
                                   profile_workers=2, profile_runs=4, profile_context=64, **common)),
        ]
    return [
        ("7b", BenchConfig(shape="qwen2.5-7b", workers=[1, 2, 4, 8], runs=[1, 8, 32],
                           contexts=[1024, 8192, 16384], transformers_max_rows=8,
                           transformers_max_context=8192, profile_workers=4, profile_runs=1,
                           profile_context=1024, **common)),
        ("32b", BenchConfig(shape="qwen2.5-32b", workers=[1, 4], runs=[1, 8], contexts=[1024, 8192],
                            transformers=False, profile=False, **common)),
        ("7b-torch", BenchConfig(shape="qwen2.5-7b", workers=[1, 4], runs=[1, 8], contexts=[1024, 8192],
                                 attention="torch", graphs=False, transformers=False, profile_workers=4,
                                 profile_runs=1, profile_context=1024, **common)),
        ("7b-r32", BenchConfig(shape="qwen2.5-7b", workers=[4], runs=[1, 32], contexts=[1024],
                               transformers=False, profile_workers=4, profile_runs=32, profile_context=1024,
                               **common)),
    ]


def find(results: list[dict[str, Any]], **where: Any) -> dict[str, Any] | None:
    for r in results:
        if all(r.get(k) == v for k, v in where.items()):
            return r
    return None


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured ratio (None: not measured)."""
    def ratio(part: str, key: str, **where: Any) -> float | None:
        r = find(results, part=part, impl="ours", dtype="bfloat16", **where)
        return None if r is None else r.get(key)

    rows = [
        ("7B, N=1, 1k: pass / bandwidth floor", ratio("7b", "vs_floor", workers=1, runs=1, context=1024), 1.3),
        ("7B, 8k: N=4 pass / N=1 pass", ratio("7b", "vs_n1", workers=4, runs=1, context=8192), 1.1),
        ("32B, 8k: N=4 pass / N=1 pass", ratio("32b", "vs_n1", workers=4, runs=1, context=8192), 1.1),
        ("7B, 1k: 32 runs x 4 workers / 1 run x 4 workers", ratio("7b", "vs_r1", workers=4, runs=32, context=1024), 2.0),
        ("7B, 8k, batch 4: ours / transformers", ratio("7b", "vs_transformers", workers=4, runs=1, context=8192), 0.5),
    ]
    return [dict(target=name, measured=value, limit=limit, met=None if value is None else value <= limit)
            for name, value, limit in rows]


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# GPU benchmark: {doc['device_name']}", "",
             f"torch {doc['torch']}, {doc['wall_s']:.0f} s in all. Command: `{doc['command']}`", "",
             "## Targets", "", "| target | measured | limit | met |", "|---|---|---|---|"]
    for t in doc["targets"]:
        m = "n/a" if t["measured"] is None else f"{t['measured']:.2f}"
        lines.append(f"| {t['target']} | {m} | {t['limit']} | {t['met']} |")
    for name, part in doc["parts"].items():
        if "error" in part:
            lines += ["", f"## {name}: not measured ({part['error']})"]
            continue
        bw = part["results"][0]["bandwidth_bytes_per_s"] / 1e12 if part["results"] else 0
        lines += ["", f"## {name}: {part['model']} (copy bandwidth {bw:.2f} TB/s)", "",
                  "| impl | N | R | context | ms/pass | tokens/s | x floor | x N=1 | x R=1 | x transformers |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(part["results"], key=lambda r: (r["impl"], r["context"], r["runs"], r["workers"])):
            def f(x: Any) -> str:
                return "" if x is None else f"{x:.2f}"
            lines.append(f"| {r['impl']} | {r['workers']} | {r['runs']} | {r['context']} | {r['ms_per_pass']:.2f} | "
                         f"{r['tokens_per_s']:.0f} | {f(r['vs_floor'])} | {f(r['vs_n1'])} | {f(r['vs_r1'])} | "
                         f"{f(r['vs_transformers'])} |")
        prof = part.get("profile")
        if prof:
            lines += ["", f"Profile (N={prof['workers']}, R={prof['runs']}, context {prof['context']}): "
                      f"{prof['wall_ms_per_pass']:.2f} ms per pass, GPU kernels "
                      f"{prof.get('kernel_ms_per_pass') or 0:.2f} ms (busy share {prof.get('gpu_busy_share') or 0:.2f}), "
                      f"time in torch ops on the host {prof['ops_ms_per_pass']:.2f} ms."]
            if prof.get("top_kernels"):
                lines += ["", "| kernel | calls/pass | ms/pass |", "|---|---|---|"]
                lines += [f"| `{k['kernel'][:70]}` | {k['calls_per_pass']:.0f} | {k['ms_per_pass']:.3f} |"
                          for k in prof["top_kernels"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny shapes (the CPU dry run)")
    ap.add_argument("--out", type=Path, default=Path("bench-gpu-out"))
    ap.add_argument("--budget-s", type=float, default=390.0, help="start no part after this many seconds")
    ap.add_argument("--attention", default="", help="replace the default path (auto) by this one (dry runs: triton)")
    ap.add_argument("--only", default="", help="comma list of parts to run (default: all)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    wanted = {p for p in args.only.split(",") if p}
    docs: dict[str, Any] = {}
    merged: list[dict[str, Any]] = []
    for name, cfg in parts(args.device, args.small):
        if wanted and name not in wanted:
            continue
        elapsed = time.perf_counter() - started
        if elapsed > args.budget_s:
            docs[name] = dict(error=f"time budget: {elapsed:.0f} s spent before it started")
            continue
        print(f"== part {name} ({elapsed:.0f} s so far)", flush=True)
        try:
            if args.attention and cfg.attention == "auto":
                cfg = replace(cfg, attention=args.attention)
            doc = run_bench(replace(cfg))
        except Exception as e:  # record it and go on: the other parts still count
            import traceback

            traceback.print_exc()
            docs[name] = dict(error=f"{type(e).__name__}: {e}")
            continue
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        docs[name] = doc
        for r in doc["results"]:
            merged.append(dict(r, part=name))
        if doc["results"]:
            write_png(doc, args.out / f"bench-{name}.png")
        print(f"   part {name}: {len(doc['results'])} rows in {doc['wall_s']:.0f} s", flush=True)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (dry run)"
    out = dict(format="hogwild-bench-gpu", device_name=device_name, torch=torch.__version__,
               command=" ".join(["python", *sys.argv]), wall_s=time.perf_counter() - started,
               targets=targets(merged), results=merged, parts=docs)
    (args.out / "bench.json").write_text(json.dumps(out, indent=1, default=str))
    (args.out / "README.md").write_text(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
