"""Issue 12, part 6: which problem, model, worker count and kernel let ``make demo`` succeed.

Runs every problem of :data:`PROBLEMS` (the old demo, decomposable word problems, and
optionally the first gsm_symbolic bundles of the screen) with the given worker counts in one
batch, greedy, and prints one line per run (answer, gold, score, passes, forced, loop rate);
with ``--openings`` it instead compares opening wordings (:data:`OPENINGS`, patched in for
the probe only; the product's openings stay in ``hogwild/protocol/texts.py``) on 2 workers.
Each call writes ``demo-probe/<model>-<weights>-<isa>-w<workers>-p<passes>[-<layout>][-<opening>].json``
(the layout named when it is not combined).
The kernel is chosen as in the product; ``HOGWILD_KERNEL_ISA=avx512|avx2`` caps it.

Usage:  python docs/results/collaboration/demo_probe.py --model M --passes P --workers 2,4
            [--weights bf16] [--only garden,shops] [--bundles 3] [--layout interleaved]
            [--openings base,noname]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from hogwild import solve as S
from hogwild.analytics.measures import computes
from hogwild.eval.bundles import make_bundles, score_answer
from hogwild.eval.datasets import load_tasks
from hogwild.loader import load_model
from hogwild.protocol import team
from hogwild.protocol.loops import loop_rate, step_body

PROBLEMS = [
    ("garden2", "A garden has 4 rows of 5 tulips and 3 rows of 6 roses. How many flowers are in the garden in all?", "38"),
    ("class", "A school has 3 classes of 24 students and 2 classes of 30 students. How many students does the school have?", "132"),
    ("party", "For a party, Mia buys 3 packs of 8 cups and 4 packs of 6 plates. How many cups and plates does she buy in all?", "48"),
    ("farm", "A farm has 7 cows with 4 legs each and 9 chickens with 2 legs each. How many legs do the animals have in total?", "46"),
    ("apples-orig", "Alice has 3 apples and buys 5 more. Bob has twice as many apples as Alice. How many apples do they have together?", "24"),
    ("apples-par", "Alice has 3 apples and buys 5 more. Bob has 4 bags with 6 apples in each bag. How many apples do they have together?", "32"),
    ("shops", "One shop sells 12 pencils in the morning and 15 pencils in the afternoon. Another shop sells 3 boxes of 10 pencils. How many pencils do the two shops sell in all?", "57"),
    ("expr", "Compute (12 + 15) + (3 * 10).", "57"),
    ("two-q", "Answer both questions. Question 1: What is 17 + 26? Question 2: What is 6 * 7?", "43; 42"),
    ("garden", "A garden has 4 rows of 5 tulips and 3 rows of 6 roses. How many flowers are in the garden?", "38"),
]

#: opening wordings compared with --openings: (lead's opening, the others' openings); None = the product's
OPENINGS: dict[str, tuple[str, tuple[str, ...]] | None] = {
    "base": None,
    "noname": ("Here is how I suggest we split the work:", ("While {lead} writes the plan, I will start by",)),
    "split-compute": ("We split the work: I compute the first part, and the others take the rest. My part:",
                      ("While {lead} computes the first part, I compute the next part:",)),
    "direct-noname": ("I start solving right away, one calculation per step:",
                      ("I solve it on my own as well, one calculation per step, and compare my results with {lead}'s:",)),
}


def run_all(loaded, problems, workers: list[int], passes: int, layout: str = "combined") -> list[dict]:
    """Every (worker count, problem) in one batch; the rows in submission order."""
    runs = [(w, pid, gold, S.start_solve(loaded, text, S.SolveSettings(workers=w, max_passes=passes,
                                                                         layout=layout)))
            for w in workers for pid, text, gold in problems]
    rows = []
    for w, pid, gold, solving in runs:
        r = solving.result()
        steps = [(k, step_body(t)) for k, t in r.history]
        rows.append({"workers": w, "id": pid, "gold": gold, "answer": r.answer, "score": score_answer(r.answer, gold),
                     "passes": r.passes, "forced": r.forced, "loop_rate": loop_rate(steps),
                     "computing_rate": sum(computes(b) for _, b in steps) / max(1, len(steps)), "history": r.history})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--weights", default="bf16")
    ap.add_argument("--passes", type=int, default=256)
    ap.add_argument("--workers", default="2")
    ap.add_argument("--only", default="", help="comma-separated problem ids (default: all)")
    ap.add_argument("--bundles", type=int, default=0, help="also the first gsm_symbolic bundles of 2 (seed 0)")
    ap.add_argument("--layout", default="combined", help="the team's layout (hogwild solve --layout)")
    ap.add_argument("--openings", default="", help="comma-separated OPENINGS to compare (2 workers)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("demo-probe"))
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    problems = [p for p in PROBLEMS if not only or p[0] in only]
    if args.bundles:
        tasks = make_bundles(load_tasks("gsm_symbolic", limit=2 * args.bundles, seed=0), 2)
        problems += [(t.id[-9:], t.question, t.answer) for t in tasks]
    loaded = load_model(args.model, dtype=args.weights)
    isa = os.environ.get("HOGWILD_KERNEL_ISA", "best")
    workers = [int(w) for w in args.workers.split(",")]
    product = (team.OPENING_LEAD, team.OPENINGS_OTHERS)
    args.out.mkdir(parents=True, exist_ok=True)
    for opening in args.openings.split(",") if args.openings else [""]:
        wording = OPENINGS[opening] if opening else None
        team.OPENING_LEAD, team.OPENINGS_OTHERS = wording or product
        started = time.time()
        rows = run_all(loaded, problems, workers, args.passes, args.layout)
        team.OPENING_LEAD, team.OPENINGS_OTHERS = product
        for r in rows:
            print(isa, opening, r["workers"], r["id"], repr(r["answer"]), r["gold"], r["score"], r["passes"],
                  "forced" if r["forced"] else "", "loop=%.2f" % (r["loop_rate"] or 0), flush=True)
        mean = sum(r["score"] for r in rows) / len(rows)
        print(f"{isa} {opening} mean score {mean:.2f}, {time.time() - started:.0f} s", flush=True)
        name = (f"{args.model}-{args.weights}-{isa}-w{args.workers}-p{args.passes}"
                + (f"-{args.layout}" if args.layout != "combined" else "") + (f"-{opening}" if opening else ""))
        (args.out / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
