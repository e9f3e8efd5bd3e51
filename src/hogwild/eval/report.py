"""Results file, summary, table and plot of an evaluation directory.

``results.jsonl`` holds one JSON line per finished unit (task x strategy x workers) with
the answers at every budget. :func:`read_results` tolerates a corrupt last line (a run
killed mid-write) and can cut it off so that appending continues cleanly. :func:`summarize`
gives accuracy per strategy x workers x budget with a 95% interval: Wilson for 0/1 scores,
a percentile bootstrap (fixed seed) when bundles give fractional scores.

:func:`teamwork` pools the units' teamwork analytics (:mod:`hogwild.analytics`) per
strategy x workers: redundancy, cross-references, loop rate, copy rate, check-in answers,
tokens before the first correct answer, division of labour and assignments; they go into
``summary.json`` (``teamwork``), a second table, and :data:`TEAMWORK_PLOT` (redundancy
against accuracy at the largest budget, one point per strategy).
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import HogwildError

RESULTS = "results.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.json"
PLOT = "accuracy_vs_budget.png"
TEAMWORK_PLOT = "redundancy_vs_accuracy.png"
Z95 = 1.959963984540054


def unit_key(record: dict) -> tuple[str, str, int]:
    return (str(record["task"]), str(record["strategy"]), int(record["workers"]))


def read_results(path: str | Path, repair: bool = False) -> list[dict]:
    """Records of a results file, first of each unit kept; a corrupt line is skipped.

    With ``repair``, a corrupt or unterminated last line is cut off the file (so the next
    append starts on a fresh line).
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    records, seen, good_end, pos = [], set(), 0, 0
    for raw in data.splitlines(keepends=True):
        pos += len(raw)
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
            key = unit_key(rec)
        except (ValueError, KeyError, TypeError):
            continue
        if not raw.endswith(b"\n"):
            continue  # unterminated: written partially, treat as corrupt
        good_end = pos
        if key not in seen:
            seen.add(key)
            records.append(rec)
    if repair and good_end < len(data):
        tail = data[good_end:]
        if b"\n" not in tail.rstrip(b"\n"):  # only the last line is bad: drop it
            with open(path, "r+b") as f:
                f.truncate(good_end)
    return records


def append_result(path: str | Path, record: dict) -> None:
    """Append one record as a line, flushed and fsynced."""
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------- statistics

def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap(scores: list[float], iters: int = 2000, seed: int = 0) -> tuple[float, float]:
    if not scores:
        return (0.0, 1.0)
    rng = random.Random(seed)
    n = len(scores)
    means = sorted(sum(rng.choice(scores) for _ in range(n)) / n for _ in range(iters))
    return (means[int(0.025 * iters)], means[min(iters - 1, int(0.975 * iters))])


def interval(scores: list[float]) -> tuple[float, float]:
    if all(s in (0.0, 1.0) for s in scores):
        return wilson(sum(scores), len(scores))
    return bootstrap(scores)


def series_name(strategy: str, workers: int) -> str:
    return strategy if strategy in ("single", "early-stop") else f"{strategy} x{workers}"


def summarize(records: list[dict]) -> list[dict]:
    """One row per strategy x workers x budget: n, accuracy, 95% interval, passes, forced."""
    groups: dict[tuple[str, int, int], list[dict]] = defaultdict(list)
    for rec in records:
        for r in rec["results"]:
            groups[(rec["strategy"], int(rec["workers"]), int(r["budget"]))].append(r)
    rows = []
    for (strategy, workers, budget), rs in groups.items():
        scores = [float(r["score"]) for r in rs]
        lo, hi = interval(scores)
        rows.append({
            "strategy": strategy, "workers": workers, "budget": budget, "n": len(rs),
            "accuracy": sum(scores) / len(scores), "ci95": [lo, hi],
            "mean_passes": sum(r["passes"] for r in rs) / len(rs),
            "forced": sum(bool(r["forced"]) for r in rs) / len(rs),
            "answered": sum(r["answer"] is not None for r in rs) / len(rs),
            "copied": sum(bool(r.get("copied")) for r in rs) / len(rs),
        })
    order = {"single": 0, "early-stop": 1, "independent": 2}
    rows.sort(key=lambda r: (order.get(r["strategy"], 3), r["strategy"], r["workers"], r["budget"]))
    return rows


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def teamwork(records: list[dict]) -> list[dict]:
    """Per strategy x workers: the units' analytics pooled (docs/eval.md, "Teamwork").

    Rates pool counts over units (``loop_rate`` = all repeating steps / all steps, and so
    on); ``copy_rate`` and ``accuracy`` are read at the largest budget of each unit;
    ``tokens_before_correct`` is the mean over the units that reached a correct answer."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for rec in records:
        groups[(rec["strategy"], int(rec["workers"]))].append(rec)
    out = []
    for (strategy, workers), recs in groups.items():
        tops = [max(rec["results"], key=lambda r: r["budget"]) for rec in recs if rec["results"]]
        an = [rec["analytics"] for rec in recs if rec.get("analytics")]
        steps = sum(a["steps"] for a in an)
        check = {k: sum(a["check_ins"][k] for a in an) for k in ("asked", "yes", "no", "other", "changed_after_yes")}
        reached = [a["first_correct"]["total"] for a in an
                   if a.get("first_correct") and a["first_correct"]["reached"]]
        known = [a for a in an if a.get("first_correct") is not None]
        divided = [a["division"] for a in an if "first_answer" in a.get("division", {})]
        followed = [a["assignments"]["followed"] for a in an if "followed" in a.get("assignments", {})]
        multi = [a for a in an if a["redundancy"] is not None]
        out.append({
            "strategy": strategy, "workers": workers, "n": len(recs), "analysed": len(an),
            "accuracy": _ratio(sum(float(r["score"]) for r in tops), len(tops)),
            "copy_rate": _ratio(sum(bool(r.get("copied")) for r in tops), len(tops)),
            "steps": steps,
            "loop_rate": _ratio(sum(a["loops"] for a in an), steps),
            # older results.jsonl rows lack it: pooled over the units that have it
            "computing_rate": _ratio(sum(a["computing_steps"] for a in an if "computing_steps" in a),
                                     sum(a["steps"] for a in an if "computing_steps" in a)),
            "redundancy": _ratio(sum(a["ngrams_repeated"] for a in multi), sum(a["ngrams"] for a in multi)),
            "cross_ref_rate": _ratio(sum(a["cross_refs"] for a in multi), sum(a["steps"] for a in multi)),
            "check_ins": check,
            "changed_after_yes": _ratio(check["changed_after_yes"], check["yes"]),
            "reached_correct": _ratio(len(reached), len(known)),
            "tokens_before_correct": _ratio(sum(reached), len(reached)),
            "split_share": _ratio(sum(bool(d["split"]) for d in divided), len(divided)),
            "assignments_followed": _ratio(sum(followed), len(followed)),
            "units_with_assignments": sum(1 for a in an if "assignments" in a),
        })
    order = {"single": 0, "early-stop": 1, "independent": 2}
    out.sort(key=lambda r: (order.get(r["strategy"], 3), r["strategy"], r["workers"]))
    return out


def write_summary(out: str | Path, rows: list[dict], config: dict | None, tasks: int,
                  team: list[dict] | None = None) -> Path:
    path = Path(out) / SUMMARY
    data = {"config": config, "tasks": tasks, "rows": rows}
    if team is not None:
        data["teamwork"] = team
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def table(rows: list[dict], title: str = "accuracy (95% interval)") -> Any:
    """A rich Table: one row per strategy x workers, one column per budget."""
    from rich.table import Table

    budgets = sorted({r["budget"] for r in rows})
    t = Table(title=title)
    t.add_column("strategy")
    t.add_column("n", justify="right")
    for b in budgets:
        t.add_column(f"{b} passes", justify="right")
    by_series: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in rows:
        by_series[series_name(r["strategy"], r["workers"])][r["budget"]] = r
    for name, cells in by_series.items():
        n = max(c["n"] for c in cells.values())
        values = []
        for b in budgets:
            c = cells.get(b)
            values.append("-" if c is None else
                          f"{c['accuracy']:.2f} [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]")
        t.add_row(name, str(n), *values)
    return t


def teamwork_table(team: list[dict], title: str = "teamwork (largest budget; rates pooled over units)") -> Any:
    """A rich Table of :func:`teamwork` rows."""
    from rich.table import Table

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.0f}%"

    t = Table(title=title)
    for col in ("strategy", "n", "accuracy", "copied", "loops", "computing", "redundancy", "cross-refs",
                "check-ins yes/no (changed)", "tokens to correct", "split"):
        t.add_column(col, justify="left" if col == "strategy" else "right")
    for r in team:
        c = r["check_ins"]
        tokens = "-" if r["tokens_before_correct"] is None else f"{r['tokens_before_correct']:.0f}"
        t.add_row(series_name(r["strategy"], r["workers"]), str(r["n"]), pct(r["accuracy"]), pct(r["copy_rate"]),
                  pct(r["loop_rate"]), pct(r["computing_rate"]), pct(r["redundancy"]), pct(r["cross_ref_rate"]),
                  f"{c['yes']}/{c['no']} ({c['changed_after_yes']})", tokens, pct(r["split_share"]))
    return t


def plot_teamwork(team: list[dict], path: str | Path, title: str = "") -> Path | None:
    """Redundancy (x) against accuracy at the largest budget (y), one point per strategy x
    workers that has a redundancy (two or more workers). None when no strategy has one."""
    points = [r for r in team if r["redundancy"] is not None and r["accuracy"] is not None]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in points:
        name = series_name(r["strategy"], r["workers"])
        ax.scatter([r["redundancy"]], [r["accuracy"]], s=40)
        ax.annotate(name, (r["redundancy"], r["accuracy"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("redundancy (share of trigrams another worker already wrote)")
    ax.set_ylabel("accuracy at the largest budget")
    n = max((r["n"] for r in points), default=0)
    ax.set_title(title or f"redundancy vs accuracy (n = {n} tasks)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Accuracy vs forward passes (log x), one line per strategy (and worker count)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        series[series_name(r["strategy"], r["workers"])].append(r)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rs in series.items():
        rs.sort(key=lambda r: r["budget"])
        xs = [r["budget"] for r in rs]
        ys = [r["accuracy"] for r in rs]
        line, = ax.plot(xs, ys, marker="o", label=name)
        ax.fill_between(xs, [r["ci95"][0] for r in rs], [r["ci95"][1] for r in rs],
                        color=line.get_color(), alpha=0.12)
    ax.set_xscale("log", base=2)
    budgets = sorted({r["budget"] for r in rows})
    if budgets:
        ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("forward passes (budget)")
    ax.set_ylabel("accuracy")
    n = max((r["n"] for r in rows), default=0)
    ax.set_title(title or f"accuracy vs budget (n = {n} tasks, shaded: 95% interval)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def report(out: str | Path, console: Any = None) -> list[dict]:
    """Rebuild summary.json, the table and the plot of ``out`` from its results.jsonl."""
    out = Path(out)
    results = out / RESULTS
    if not results.exists():
        raise HogwildError(f"no {RESULTS} in {out}: run `hogwild eval --out {out}` first")
    records = read_results(results)
    if not records:
        raise HogwildError(f"{results} holds no finished results yet")
    config = json.loads((out / CONFIG).read_text()) if (out / CONFIG).exists() else None
    return write_all(out, records, config, console)


def write_all(out: Path, records: list[dict], config: dict | None, console: Any = None) -> list[dict]:
    """summary.json (with ``teamwork``), both plots, and the tables on ``console``."""
    rows = summarize(records)
    team = teamwork(records)
    write_summary(out, rows, config, len({r["task"] for r in records}), team)
    plot(rows, out / PLOT)
    team_plot = plot_teamwork(team, out / TEAMWORK_PLOT)
    if console is not None:
        console.print(table(rows))
        if any(r["analysed"] for r in team):
            console.print(teamwork_table(team))
        plots = f"{out / PLOT}" + (f" and {team_plot}" if team_plot else "")
        console.print(f"wrote {out / SUMMARY}, {plots}")
    return rows
