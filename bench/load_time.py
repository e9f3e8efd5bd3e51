"""Load time and peak memory of a model per weight format, each in a fresh process.

For every (model, ``--weights``) pair a new Python process imports hogwild, loads the model
with :func:`hogwild.loader.load_model` (kernels prepared, as ``solve`` does) and reports the
wall time of the load alone and the process's peak resident memory (``ru_maxrss``), then
both again after one 16-token forward pass: weights mapped from a ready file
(``hogwild.models.ready``) are read, and become resident, only when a pass reads them. Fresh
processes, so one load's memory does not hide another's; ``--repeats`` loads per pair, the
fastest kept (the file is then in the page cache, as it is for a model already installed).

Usage::

    python bench/load_time.py --models smollm2-135m,qwen2.5-coder-1.5b --weights native,bf16 \
        --out docs/results/quant/load
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, sys, time
from hogwild.loader import load_model
t = time.perf_counter()
loaded = load_model(sys.argv[1], weights=sys.argv[2])
load_s = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
# one 16-token forward: mapped weights (bf16 ready files) are read, hence resident, only now
import torch
from hogwild.models.sequence import SequencePlan
t = time.perf_counter()
loaded.model(torch.arange(16) + 100, SequencePlan(loaded.config))
pass_s = time.perf_counter() - t
print(json.dumps({"load_s": load_s, "peak_rss_gb": peak, "first_pass_s": pass_s,
                  "peak_rss_pass_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                  "weights": loaded.weights, "note": loaded.weights_note}))
"""


def measure(model: str, weights: str, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", CHILD, model, weights], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    ap.add_argument("--weights", default="native,bf16")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="directory for load_time.json and README.md")
    args = ap.parse_args()
    rows = []
    for model in args.models.split(","):
        for weights in args.weights.split(","):
            runs = [measure(model, weights, args.threads) for _ in range(args.repeats)]
            best = min(runs, key=lambda r: r["load_s"])
            row = {"model": model, "weights": weights, "load_s": round(best["load_s"], 2),
                   "load_s_all": [round(r["load_s"], 2) for r in runs],
                   "peak_rss_gb": round(max(r["peak_rss_gb"] for r in runs), 2),
                   "first_pass_s": round(best["first_pass_s"], 2),
                   "peak_rss_pass_gb": round(max(r["peak_rss_pass_gb"] for r in runs), 2), "note": best["note"]}
            rows.append(row)
            print(f"{model:<20} {weights:<7} load {row['load_s']:6.2f} s (all: {row['load_s_all']})  "
                  f"peak RSS {row['peak_rss_gb']:.2f} GB; first pass {row['first_pass_s']:.2f} s, "
                  f"peak RSS with it {row['peak_rss_pass_gb']:.2f} GB  {row['note']}", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        doc = {"command": "python bench/load_time.py " + " ".join(sys.argv[1:]), "load_average": os.getloadavg(),
               "rows": rows}
        (args.out / "load_time.json").write_text(json.dumps(doc, indent=1) + "\n")
        lines = ["| model | --weights | load (s, best of runs) | all runs (s) | peak RSS (GB) | first 16-token pass (s) "
                 "| peak RSS after it (GB) |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['weights']} | {r['load_s']} | {r['load_s_all']} | {r['peak_rss_gb']} "
                  f"| {r['first_pass_s']} | {r['peak_rss_pass_gb']} |" for r in rows]
        (args.out / "README.md").write_text(f"# Load time and peak memory\n\n`{doc['command']}`\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
