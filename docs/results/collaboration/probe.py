"""Issue 12 probes: protocol variants on the demo problem and the first bundles of the screen.

Cheaper than a screen directory (one process, one model load, every problem of a variant in
one batch), and it keeps the transcripts, which ``results.jsonl`` does not: each variant
writes ``probe/<model>-<variant>-p<passes>.json`` (answer, score, passes and every finished
step of each problem) and prints one line with the answers, the loop rate and the share of
steps that compute something (:func:`hogwild.analytics.measures.computes`).

Usage:  python docs/results/collaboration/probe.py [--model M] [--passes 256] [--bundles 3]
            VARIANT [VARIANT ...]

Variants are settings of :class:`hogwild.protocol.Protocol` (through :class:`SolveSettings`)
except ``direct``, which replaces the openings of the two workers for the probe only (the
product's openings stay in ``hogwild/protocol/texts.py``): both start computing at once and
compare results, instead of planning and splitting the work.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from hogwild import solve as S
from hogwild.analytics.measures import computes
from hogwild.eval.bundles import make_bundles, score_answer
from hogwild.eval.datasets import load_tasks
from hogwild.loader import load_model
from hogwild.protocol import team
from hogwild.protocol.loops import loop_rate, step_body

DEMO = ("Alice has 3 apples and buys 5 more. Bob has twice as many apples as Alice. How many apples "
        "do they have together?")
DIRECT_LEAD = "Hi, I'm {me}. I start solving right away, one calculation per step:"
DIRECT_OTHERS = ("Hi, I'm {me}. I solve it on my own as well, one calculation per step, and compare my "
                 "results with {lead}'s:",)

#: name -> (protocol fields, few_shot, direct openings)
VARIANTS: dict[str, tuple[dict, bool | None, bool]] = {
    "base": ({}, None, False),
    "nofs": ({}, False, False),
    "min160": ({"min_step_chars": 160}, None, False),
    "direct-nofs": ({}, False, True),
    "nr10": ({"no_repeat_ngram": 10}, None, False),
    "nr10-nofs": ({"no_repeat_ngram": 10}, False, False),
    "direct-nr10-nofs": ({"no_repeat_ngram": 10}, False, True),
    "nr0-nofs": ({"no_repeat_ngram": 0}, False, False),
    "direct-nr0-nofs": ({"no_repeat_ngram": 0}, False, True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--weights", default="bf16")
    ap.add_argument("--passes", type=int, default=256)
    ap.add_argument("--bundles", type=int, default=3, help="first bundles of 2 of the screen (seed 0)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("probe"))
    args = ap.parse_args()
    loaded = load_model(args.model, dtype=args.weights)
    tasks = make_bundles(load_tasks("gsm_symbolic", limit=2 * args.bundles, seed=0), 2) if args.bundles else []
    problems = [("demo", DEMO, "24")] + [(t.id, t.question, t.answer) for t in tasks]
    plain_protocol, openings = S.make_protocol, (team.OPENING_LEAD, team.OPENINGS_OTHERS)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.variants:
        fields, few_shot, direct = VARIANTS[name]
        team.OPENING_LEAD, team.OPENINGS_OTHERS = (DIRECT_LEAD, DIRECT_OTHERS) if direct else openings
        S.make_protocol = lambda settings, problem=None, f=fields: replace(plain_protocol(settings, problem), **f)
        settings = S.SolveSettings(workers=2, max_passes=args.passes, few_shot=few_shot)
        started = time.time()
        runs = [(pid, gold, S.start_solve(loaded, text, settings)) for pid, text, gold in problems]
        rows = []
        for pid, gold, solving in runs:
            r = solving.result()
            rows.append({"id": pid, "gold": gold, "answer": r.answer, "score": score_answer(r.answer, gold),
                         "passes": r.passes, "forced": r.forced, "history": r.history})
        steps = [(w, step_body(t)) for row in rows for w, t in row["history"]]
        summary = {
            "variant": name, "model": args.model, "passes": args.passes, "problems": len(rows),
            "mean_score": sum(r["score"] for r in rows) / len(rows), "steps": len(steps),
            "loop_rate": loop_rate(steps), "computing_rate": sum(computes(b) for _, b in steps) / max(1, len(steps)),
            "wall_s": round(time.time() - started, 1),
        }
        path = args.out / f"{args.model}-{name}-p{args.passes}.json"
        path.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
        print(json.dumps(summary), [(r["id"][-9:], r["answer"], r["gold"]) for r in rows], flush=True)
    S.make_protocol = plain_protocol
    team.OPENING_LEAD, team.OPENINGS_OTHERS = openings


if __name__ == "__main__":
    main()
