"""Issue 12: how much of the team's loss is the step format, and how much is teamwork?

Runs the first 8 bundles of the screen (gsm_symbolic, bundles of 2, seed 0) on
Qwen2.5-Coder-1.5B (bf16, greedy, 512 passes) through the eval strategies, all bundles of a
variant in one batch, and keeps the transcripts (``results.jsonl`` of an eval does not):

- ``single``: the plain chain of thought (the eval's ``single``).
- ``solo``: ONE worker in the team's format (step headers "**Alice [3]:**", short steps,
  check-ins) with the product's solo opening ("Let's solve this step by step.");
  ``solo-restate``: the same with the opening used before this probe ("First, let me
  restate what the problem asks:").
- ``team``: the product's 2-worker ``hogwild-combined``; the other team variants replace
  its texts for this probe only (the product's texts stay in
  ``src/hogwild/protocol/texts.py``): a short system prompt that starts with the plain
  instruction (``lean``), openings without the greeting (``*-open``), openings worded like
  a chain of thought (``team-plain-opening``), steps of at least 200 characters (``-min200``).

Each variant writes ``format-probe/<variant>-p<passes>.json`` (summary, answers, every step)
and prints its summary: mean score, forced answers, steps, loop rate, share of steps that
compute (:func:`hogwild.analytics.measures.computes`) and redundancy.

Usage:  python docs/results/collaboration/format_probe.py VARIANT [VARIANT ...] [--tasks 8]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hogwild.analytics.measures import computes
from hogwild.eval import strategies as ST
from hogwild.eval.bundles import make_bundles, score_answer
from hogwild.eval.datasets import load_tasks
from hogwild.loader import load_model
from hogwild.protocol import team
from hogwild.protocol.loops import loop_rate, step_body

PRODUCT = {k: getattr(team, k) for k in ("OPENING_SOLO", "SYSTEM_TEAM", "OPENING_LEAD", "OPENINGS_OTHERS")}

LEAN_SYSTEM = """\
Please reason step by step, and put your final answer within \\boxed{}.

You are not alone: {count} copies of you, {names}, solve this together at the same time and \
see each other's work as it is written. Each paragraph starts with its author's name, like \
"{example_header}". Share the work: when the problem has several parts, each of you takes a \
different part, and you use each other's results instead of redoing them.

{view}"""
NO_GREETING = {"OPENING_LEAD": "I start with the first part:",
               "OPENINGS_OTHERS": ("I start with a different part than {lead}:",)}

#: name -> (workers, texts replaced in hogwild.protocol.team, Protocol fields)
VARIANTS: dict[str, tuple[int, dict, dict]] = {
    "single": (1, {}, {}),
    "solo": (1, {}, {}),
    "solo-restate": (1, {"OPENING_SOLO": "First, let me restate what the problem asks:"}, {}),
    "team": (2, {}, {}),
    "team-open": (2, NO_GREETING, {}),
    "team-plain-opening": (2, {"OPENING_LEAD": "Let's solve this step by step.",
                               "OPENINGS_OTHERS": ("Let's solve this step by step, starting with a "
                                                   "different part than {lead}:",)}, {}),
    "lean": (2, {"SYSTEM_TEAM": LEAN_SYSTEM}, {}),
    "lean-open": (2, {"SYSTEM_TEAM": LEAN_SYSTEM, **NO_GREETING}, {}),
    "lean-open-min200": (2, {"SYSTEM_TEAM": LEAN_SYSTEM, **NO_GREETING}, {"min_step_chars": 200}),
}


def strategy(name: str) -> ST.Strategy:
    workers, texts, fields = VARIANTS[name]
    for key, value in {**PRODUCT, **texts}.items():
        setattr(team, key, value)
    if name == "single":
        return ST.Single()
    made = ST.Hogwild("combined", workers=workers, few_shot=False)
    if fields:
        from dataclasses import replace
        made.protocol = replace(made.protocol, **fields)
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--weights", default="bf16")
    ap.add_argument("--tasks", type=int, default=8, help="first bundles of 2 of the screen (seed 0)")
    ap.add_argument("--passes", type=int, default=512)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("format-probe"))
    args = ap.parse_args()
    loaded = load_model(args.model, dtype=args.weights)
    tasks = make_bundles(load_tasks("gsm_symbolic", limit=2 * args.tasks, seed=0), 2)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.variants:
        strat = strategy(name)
        started = time.time()
        handles = [(task, strat.submit(loaded, task, [args.passes])) for task in tasks]
        rows = []
        for task, handle in handles:
            outcome = handle.result()
            run = strat.answers(loaded, task, outcome)
            final = run.results[-1]
            snap = outcome.final
            steps = list(snap.history) if snap.history else list(enumerate(snap.workers))
            rows.append({"id": task.id, "gold": task.answer, "answer": final.answer, "forced": final.forced,
                         "score": score_answer(final.answer, task.answer), "passes": outcome.passes,
                         "history": steps, "analytics": run.analytics})
        steps = [(w, step_body(text)) for row in rows for w, text in row["history"]]
        summary = {
            "variant": name, "model": args.model, "passes": args.passes, "tasks": len(rows),
            "mean_score": sum(r["score"] for r in rows) / len(rows), "forced": sum(r["forced"] for r in rows),
            "steps": len(steps), "loop_rate": round(loop_rate(steps), 3),
            "computing_rate": round(sum(computes(b) for _, b in steps) / max(1, len(steps)), 3),
            "redundancy": round(sum(r["analytics"].get("redundancy") or 0 for r in rows) / len(rows), 3),
            "wall_s": round(time.time() - started),
        }
        path = args.out / f"{name}-p{args.passes}.json"
        path.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1, default=str) + "\n")
        print(json.dumps(summary), [(r["answer"], "; ".join(r["gold"])) for r in rows], flush=True)
    for key, value in PRODUCT.items():
        setattr(team, key, value)


if __name__ == "__main__":
    main()
