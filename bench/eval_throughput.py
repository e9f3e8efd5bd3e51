"""Evaluation throughput: units per hour of `hogwild eval`, old sequential runner vs. batched.

Runs the same evaluation (same tasks, strategies, budgets) three ways, one after another,
each in a fresh process with the model load included:

- ``old``: the runner of another checkout (``--old-src DIR``, its ``src`` folder: e.g. a
  ``git worktree`` of the commit before the batched engine), one unit at a time;
- ``c1`` and ``cN``: this checkout at ``--concurrency 1`` and ``--concurrency N``.

It reports units per hour, the speed-up over ``old``, and for hogwild units the share of
wall time spent on forced answers, then writes ``eval_throughput.json``, a README table and
``eval_throughput.png`` into ``--out``. Example (about 15 minutes on 2 cores)::

    git worktree add /tmp/hw-old <commit before the batched engine>
    python bench/eval_throughput.py --old-src /tmp/hw-old/src --limit 4 --out docs/results/eval-throughput
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
RUNNER = "import sys; from hogwild.cli import main; sys.argv = ['hogwild'] + sys.argv[1:]; main()"


def run_eval(src: Path, args: list[str], out: Path, threads: int) -> tuple[float, list[dict]]:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", RUNNER, "eval", *args, "--out", str(out), "--threads", str(threads)],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    return wall, records


def forced_share(records: list[dict]) -> float | None:
    hog = [r for r in records if r["strategy"].startswith("hogwild")]
    total = sum(r["timings"].get("total_s", 0.0) for r in hog)
    return sum(r["timings"].get("forced_s", 0.0) for r in hog) / total if total else None


def essence(records: list[dict]) -> dict:
    return {f"{r['task']}|{r['strategy']}|{r['workers']}": [(x["budget"], x["answer"]) for x in r["results"]]
            for r in records}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old-src", type=Path, required=True, help="src/ of the checkout to compare against")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--dataset", default="gsm_symbolic")
    ap.add_argument("--bundle", type=int, default=2)
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--strategies", default="single,independent,hogwild-combined")
    ap.add_argument("--workers", default="2")
    ap.add_argument("--budgets", default="128,256,512")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    args = ["--model", a.model, "--dtype", a.dtype, "--dataset", a.dataset, "--bundle", str(a.bundle),
            "--limit", str(a.limit), "--strategies", a.strategies, "--workers", a.workers,
            "--budgets", a.budgets, "--seed", "0"]
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, src, extra in [("old", a.old_src, []), ("c1", HERE / "src", ["--concurrency", "1"]),
                                 (f"c{a.concurrency}", HERE / "src", ["--concurrency", str(a.concurrency)])]:
            wall, records = run_eval(src, args + extra, Path(tmp) / name, a.threads)
            rows.append({"runner": name, "units": len(records), "wall_s": round(wall, 1),
                         "units_per_hour": round(3600 * len(records) / wall, 1),
                         "forced_share_hogwild": forced_share(records), "answers": essence(records)})
            print(f"{name}: {len(records)} units in {wall:.0f} s", flush=True)
    base = rows[0]["units_per_hour"]
    for r in rows:
        r["speedup_vs_old"] = round(r["units_per_hour"] / base, 2)
    same = rows[1]["answers"] == rows[2]["answers"]
    report = {"command": " ".join(sys.argv), "settings": vars(a) | {"old_src": str(a.old_src), "out": str(a.out)},
              "new_runner_answers_equal_at_c1_and_cN": same,
              "rows": [{k: v for k, v in r.items() if k != "answers"} for r in rows]}
    (a.out / "eval_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| runner | units | wall (s) | units/hour | × old | forced share (hogwild) |", "|---|---|---|---|---|---|"]
    for r in rows:
        share = "" if r["forced_share_hogwild"] is None else f"{100 * r['forced_share_hogwild']:.0f} %"
        lines.append(f"| {r['runner']} | {r['units']} | {r['wall_s']} | {r['units_per_hour']} | "
                     f"{r['speedup_vs_old']} | {share} |")
    table = "\n".join(lines)
    (a.out / "README.md").write_text(
        f"# Evaluation throughput\n\n`{report['command']}`\n\n{table}\n\n"
        f"Answers of the new runner identical at concurrency 1 and {a.concurrency}: {same}.\n")
    print(table)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar([r["runner"] for r in rows], [r["units_per_hour"] for r in rows], color=["#999", "#4a7", "#27a"])
    ax.set_ylabel("units per hour")
    ax.set_title(f"hogwild eval, {a.model} {a.dtype}, {a.threads} threads")
    fig.tight_layout()
    fig.savefig(a.out / "eval_throughput.png", dpi=120)


if __name__ == "__main__":
    main()
