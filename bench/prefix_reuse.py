"""Shared prefixes across solves: prefill time of a first and a second `solve` in one process.

Both problems get the same protocol preamble (system text, view description, examples when
the context allows); the second `solve` finds it in the batch's prefix cache and prefills only
its problem. Prints a table and writes ``prefix_reuse.json`` into ``--out``::

    python bench/prefix_reuse.py --model smollm2-135m --out docs/results/prefix-reuse
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from hogwild.loader import load_model
from hogwild.solve import SolveSettings, solve

PROBLEMS = [
    "Alice has 3 apples and buys 5 more. Bob has twice as many apples as Alice. How many apples do they have together?",
    "A train travels 60 km in the first hour and 45 km in the second hour. How far does it travel in total?",
    "Tom has 3 boxes with 4 pens each. He gives away 5 pens. How many pens are left?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--passes", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    loaded = load_model(a.model, dtype=a.dtype)
    settings = SolveSettings(workers=a.workers, max_passes=a.passes, few_shot=True, stop="none",
                             forced_answer=False)
    rows = []
    for i, problem in enumerate(PROBLEMS):
        result = solve(loaded, problem, settings)
        rows.append({"solve": i + 1, "prefill_s": round(result.timings["prefill_s"], 3),
                     "decode_s": round(result.timings["decode_s"], 3)})
        print(f"solve {i + 1}: prefill {result.timings['prefill_s']:.2f} s", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(sys.argv), "model": a.model, "dtype": a.dtype, "workers": a.workers,
              "rows": rows, "second_over_first": round(rows[1]["prefill_s"] / rows[0]["prefill_s"], 3)}
    (a.out / "prefix_reuse.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
