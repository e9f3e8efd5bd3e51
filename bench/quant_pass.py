"""Time per decode pass of the engine with each weight format, and llama.cpp's on the same GGUF.

For each ``--weights`` setting (``native``: the GGUF's blocks as stored, through the quantized
kernels; ``bf16``/``fp32``: float weights, as before) the model is loaded with
:func:`hogwild.loader.load_model`, a shared prompt of ``--context`` tokens is prefilled and N
workers decode; a pass is one ``batch.step()`` (N new tokens), timed ``--passes`` times after
``--warmup`` untimed ones, median reported (the engine of ``hogwild bench``: ``OursVariant``).

With ``--llama-cpp DIR`` (the folder ``bench/build_llama_cpp.sh`` prints) the
same GGUF runs in ``llama-batched-bench -pps`` (shared prompt, N parallel sequences, the same
threads), and its time per pass is T_TG / TG; the ratio column is ours over llama.cpp's.

Usage::

    python bench/quant_pass.py -m smollm2-135m --workers 1,4,8 --weights native,bf16 \\
        --llama-cpp ~/.cache/hogwild/llama.cpp/build/bin --out docs/results/quant

Other work on the machine slows both sides; compare ratios from one run and note the load.
On a busy machine ``--clock cpu --threads 1`` measures CPU time instead of wall time (work
done, not time spent waiting for a core; OpenMP calls of several threads lose whole
scheduler slices there): ours per pass, llama.cpp's as the CPU time of a run generating
``--tg`` tokens per sequence minus that of a run generating one, over ``tg - 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    import hogwild  # noqa: F401
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(ROOT / "src"))
from hogwild.bench.llama_cpp import batched_bench, batched_bench_cmd
from hogwild.bench.variants import Models, OursVariant, prompt_ids
from hogwild.loader import load_model
from hogwild.models.registry import gguf_path


def _clock(kind: str):
    return time.process_time if kind == "cpu" else time.perf_counter


def time_ours(name: str, weights: str, workers: list[int], context: int, passes: int, warmup: int,
              clock: str = "wall") -> dict:
    start = time.perf_counter()
    loaded = load_model(name, weights=weights)
    load_s = time.perf_counter() - start
    models = Models(loaded.name, loaded.config, loaded.model, None, "real")
    prompt = prompt_ids(loaded.config.vocab_size, context, seed=context)
    out = {"weights": weights, "note": loaded.weights_note, "load_s": load_s, "ms": {}}
    for n in workers:
        variant = OursVariant(models, n, context, [prompt], torch.device("cpu"), shared_prefix=0)
        variant.setup()
        for _ in range(warmup):
            variant.step()
        times, now = [], _clock(clock)
        for _ in range(passes):
            t0 = now()
            variant.step()
            times.append(now() - t0)
        variant.close()
        out["ms"][n] = 1e3 * statistics.median(times)
        print(f"ours {weights:<7} N={n}: {out['ms'][n]:7.2f} ms/pass  ({loaded.weights_note})", flush=True)
    return out


def time_llama_cpu(bin_dir: Path, gguf: Path, workers: list[int], context: int, threads: int, tg: int) -> dict:
    """CPU ms per pass: (run generating tg tokens) - (run generating 1), over tg - 1."""
    ms, cmds = {}, []
    for n in workers:
        long, short = (batched_bench_cmd(bin_dir, gguf, [n], context, threads, t) for t in (tg, 1))
        ms[n] = 1e3 * (_child_cpu(long) - _child_cpu(short)) / (tg - 1)
        cmds.append(" ".join(long))
        print(f"llama.cpp N={n}: {ms[n]:7.2f} CPU ms/pass", flush=True)
    return {"cmd": cmds, "ms": ms, "clock": "cpu"}


def _child_cpu(cmd: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def time_llama(bin_dir: Path, gguf: Path, workers: list[int], context: int, threads: int, tg: int) -> dict:
    """Wall ms per pass (``hogwild bench --llama-cpp`` uses the same function)."""
    timed = batched_bench(bin_dir, gguf, workers, context, threads, tg)
    for n in workers:
        print(f"llama.cpp N={n}: {timed['ms'][n]:7.2f} ms/pass", flush=True)
    return timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default="smollm2-135m")
    ap.add_argument("--weights", default="native,bf16")
    ap.add_argument("--workers", default="1,4,8")
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--passes", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--llama-cpp", type=Path, help="folder with llama-batched-bench")
    ap.add_argument("--tg", type=int, default=32, help="llama.cpp: tokens generated per sequence")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="cpu: CPU time (needs --threads 1)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        raise SystemExit("--clock cpu measures one thread's work: use --threads 1")
    torch.set_num_threads(args.threads)
    workers = [int(w) for w in args.workers.split(",")]
    load = [os.getloadavg()[0]]
    doc = {"model": args.model, "context": args.context, "threads": args.threads, "workers": workers,
           "clock": args.clock, "ours": []}
    for weights in filter(None, args.weights.split(",")):  # --weights "": llama.cpp only
        doc["ours"].append(time_ours(args.model, weights, workers, args.context, args.passes, args.warmup, args.clock))
    if args.llama_cpp:
        timer = time_llama_cpu if args.clock == "cpu" else time_llama
        doc["llama_cpp"] = timer(args.llama_cpp, gguf_path(args.model), workers, args.context, args.threads, args.tg)
    load.append(os.getloadavg()[0])
    doc["load_average"] = load
    print(f"\n{args.clock} ms per pass, {args.model}, shared {args.context}-token prompt, {args.threads} threads "
          f"(load average {load[0]:.1f} -> {load[1]:.1f})")
    llama = doc.get("llama_cpp", {}).get("ms", {})
    if llama:
        print("llama.cpp " + "  ".join(f"N={n} {llama[n]:.2f}" for n in workers if n in llama))
    for row in doc["ours"]:
        cells = []
        for n in workers:
            ratio = f" ({row['ms'][n] / llama[n]:.2f}x llama.cpp)" if n in llama else ""
            cells.append(f"N={n} {row['ms'][n]:.2f}{ratio}")
        print(f"{row['weights']:<7} " + "  ".join(cells))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"quant_pass_{args.model}_{args.clock}.json"
        path.write_text(json.dumps(doc, indent=1))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
