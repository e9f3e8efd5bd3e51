"""Collect the collaboration screen (issue 12, part 5) into docs/results/collaboration/.

For every run directory given (default: the screen directories under runs-collab/ that
exist), this copies ``config.json`` and ``results.jsonl`` into ``screen/<name>/``, rebuilds
that copy's ``summary.json`` and plots with ``hogwild report``, and then writes one
``summary.json`` and two plots for the whole screen here:

- ``variants``: one entry per strategy x workers x run directory, named after the
  strategy and the settings its directory changes (``hogwild-combined x2 [no few-shot]``),
  with ``n`` (finished units), ``complete`` (n equals the directory's ``limit``),
  ``accuracy`` per budget, and from ``hogwild report``'s teamwork pooling ``copy_rate``,
  ``loop_rate``, ``redundancy``, ``cross_ref_rate``, check-ins and division of labour;
- ``common``: the same numbers restricted to the tasks that every variant has finished,
  so that partial directories are still compared on the same tasks;
- ``partial``: true while any variant is incomplete.

Nothing is estimated: a variant without finished units is listed under ``missing``.

Usage: .venv/bin/python docs/results/collaboration/collect.py [RUN_DIR ...]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from hogwild.eval import report as rep

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SCREEN = ("screen-base", "screen-nofewshot", "screen-checkin128", "screen-patterns",
          "screen-layouts", "screen-noredirect", "screen-nr10-nofewshot", "screen-nr10")
DEFAULTS = {"few_shot": None, "check_in_every": 1024, "redirect_loops": True}


def settings_label(config: dict) -> str:
    """The settings of a directory that differ from the defaults, in words."""
    parts = []
    if config.get("few_shot") is False:
        parts.append("no few-shot")
    elif config.get("few_shot") is True:
        parts.append("few-shot")
    if config.get("check_in_every", 1024) != DEFAULTS["check_in_every"]:
        parts.append(f"check-in {config['check_in_every']}")
    if config.get("redirect_loops", True) is not True:
        parts.append("no redirects")
    if config.get("no_repeat_ngram", 0):  # absent: the directory predates the setting (0)
        parts.append(f"no-repeat {config['no_repeat_ngram']}-grams")
    return ", ".join(parts)


def variant_name(strategy: str, workers: int, config: dict) -> str:
    name = rep.series_name(strategy, workers)
    if strategy in ("single", "early-stop", "independent"):
        return name  # the hogwild settings do not change the plain prompt
    label = settings_label(config)
    return f"{name} [{label}]" if label else name


def describe(records: list[dict], config: dict, run: str) -> list[dict]:
    """One entry per strategy x workers of ``records``."""
    accuracy = {}
    for row in rep.summarize(records):
        accuracy.setdefault((row["strategy"], row["workers"]), {})[str(row["budget"])] = {
            k: row[k] for k in ("n", "accuracy", "ci95", "mean_passes", "forced", "answered", "copied")}
    out = []
    for team in rep.teamwork(records):
        key = (team["strategy"], team["workers"])
        out.append({
            "variant": variant_name(team["strategy"], team["workers"], config),
            "run": run, "strategy": team["strategy"], "workers": team["workers"],
            "n": team["n"], "complete": config.get("limit") is not None and team["n"] >= config["limit"],
            "tasks": sorted({r["task"] for r in records
                             if (r["strategy"], int(r["workers"])) == key}),
            "accuracy": accuracy.get(key, {}),
            **{k: team[k] for k in ("copy_rate", "loop_rate", "steps", "redundancy", "cross_ref_rate",
                                    "check_ins", "changed_after_yes", "reached_correct",
                                    "tokens_before_correct", "split_share", "assignments_followed")},
        })
    return out


def plot_variants(entries: list[dict], stem: str, title: str) -> None:
    """Accuracy vs budget and redundancy vs accuracy, one series (point) per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    budgets = sorted({int(b) for e in entries for b in e["accuracy"]})
    for e in entries:
        cells = sorted(((int(b), c) for b, c in e["accuracy"].items()), key=lambda x: x[0])
        xs = [b for b, _ in cells]
        line, = ax.plot(xs, [c["accuracy"] for _, c in cells], marker="o",
                        label=f"{e['variant']} (n={e['n']})")
        ax.fill_between(xs, [c["ci95"][0] for _, c in cells], [c["ci95"][1] for _, c in cells],
                        color=line.get_color(), alpha=0.08)
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("forward passes (budget)")
    ax.set_ylabel("accuracy (shaded: 95% interval)")
    ax.set_title(f"accuracy vs budget ({title})", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / f"{stem}accuracy_vs_budget.png", dpi=120)
    plt.close(fig)

    points = [e for e in entries if e["redundancy"] is not None and e["accuracy"]]
    if not points:
        return
    fig, ax = plt.subplots(figsize=(7, 5))
    for e in points:
        top = e["accuracy"][max(e["accuracy"], key=int)]["accuracy"]
        ax.scatter([e["redundancy"]], [top], s=40, label=f"{e['variant']} (n={e['n']})")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("redundancy (share of trigrams another worker already wrote)")
    ax.set_ylabel("accuracy at the largest budget")
    ax.set_title(f"redundancy vs accuracy ({title})", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / f"{stem}redundancy_vs_accuracy.png", dpi=120)
    plt.close(fig)


def main(argv: list[str]) -> None:
    runs = [Path(a) for a in argv] or [ROOT / "runs-collab" / s for s in SCREEN]
    entries, records_by_run, missing = [], {}, []
    for run in runs:
        results = run / rep.RESULTS
        records = rep.read_results(results)
        if not records:
            missing.append(run.name)
            continue
        config = json.loads((run / rep.CONFIG).read_text())
        copy = HERE / "screen" / run.name
        copy.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / rep.CONFIG, copy / rep.CONFIG)
        shutil.copyfile(results, copy / rep.RESULTS)
        rep.report(copy)  # summary.json (with teamwork) and both plots of that directory
        records_by_run[run.name] = (records, config)
        entries += describe(records, config, run.name)

    # Tasks every variant has finished: the fair comparison while the screen is partial.
    common = set.intersection(*(set(e["tasks"]) for e in entries)) if entries else set()
    common_entries = []
    for name, (records, config) in records_by_run.items():
        mine = [r for r in records if r["task"] in common]
        if mine:
            common_entries += describe(mine, config, name)
    for e in common_entries:
        e.pop("tasks")
    partial = bool(missing) or not all(e["complete"] for e in entries)
    for e in entries:
        e["tasks"] = len(e["tasks"])
    summary = {
        "what": "issue 12, part 5: screen of collaboration variants, gsm_symbolic bundles of 2, "
                "Qwen2.5-Coder-1.5B bf16, greedy, CPU",
        "partial": partial,
        "missing": missing,
        "variants": entries,
        "common": {"tasks": sorted(common), "variants": common_entries},
    }
    (HERE / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    tag = "partial, " if partial else ""
    plot_variants(entries, "", f"{tag}finished units of each variant")
    if common_entries:
        plot_variants(common_entries, "common_", f"{tag}the {len(common)} tasks every variant finished")
    for e in entries:
        acc = "  ".join(f"{b}: {c['accuracy']:.2f} (n={c['n']})" for b, c in sorted(e["accuracy"].items(), key=lambda x: int(x[0])))
        print(f"{e['variant']:<42} {acc}  copy {e['copy_rate']:.2f}  loops {e['loop_rate'] if e['loop_rate'] is None else round(e['loop_rate'], 2)}")
    print(f"common tasks: {len(common)}; partial: {partial}; missing: {missing}")


if __name__ == "__main__":
    main(sys.argv[1:])
