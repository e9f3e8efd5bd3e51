"""Results file, summary, table and plot of an evaluation directory.

``results.jsonl`` holds one JSON line per finished unit (task x strategy x workers) with
the answers at every budget. :func:`read_results` tolerates a corrupt last line (a run
killed mid-write) and can cut it off so that appending continues cleanly. :func:`summarize`
gives accuracy per strategy x workers x budget with a 95% interval: Wilson for 0/1 scores,
a percentile bootstrap (fixed seed) when bundles give fractional scores.
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
        })
    order = {"single": 0, "early-stop": 1, "independent": 2}
    rows.sort(key=lambda r: (order.get(r["strategy"], 3), r["strategy"], r["workers"], r["budget"]))
    return rows


def write_summary(out: str | Path, rows: list[dict], config: dict | None, tasks: int) -> Path:
    path = Path(out) / SUMMARY
    path.write_text(json.dumps({"config": config, "tasks": tasks, "rows": rows}, indent=2) + "\n")
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
    rows = summarize(records)
    write_summary(out, rows, config, len({r["task"] for r in records}))
    plot(rows, out / PLOT)
    if console is not None:
        console.print(table(rows))
        console.print(f"wrote {out / SUMMARY} and {out / PLOT}")
    return rows
