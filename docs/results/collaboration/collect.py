"""Collect the collaboration measurements (issue 12, part 5) into docs/results/collaboration/.

Four groups of evaluation directories (``hogwild eval`` outputs, one per setting because
few-shot, check-in interval and the loop responses are settings of a whole directory; the
commands are in ``screen.sh``):

- ``final``: the 32-task comparison with today's defaults and prompt (``run32-1024``, and the
  best layout of the screen, ``run32-interleaved``);
- ``screen``: the 8-task screen at 1024 passes with today's defaults, one setting changed per
  directory (``screen1024-*``), made with the earlier prompt (numbered questions) and compared
  with the 32-task run of that prompt (``numbered/run32-1024``) on the same tasks;
- ``letters``: the agent patterns and the baselines of the screen again with today's prompt
  (lettered questions) and kernels (``letters/screen1024-nofewshot``), compared with
  ``run32-1024`` on the same tasks;
- ``history``: the runs made with earlier defaults (few-shot on, no n-gram ban) or an
  earlier prompt (``numbered/``: bundle questions labelled "Problem 1", "Problem 2" and a
  system text with a numbered list and a step-header example), which give the copy and loop
  rates "before".

For every directory found (in ``runs-collab/<path>``, else the copy already here at ``<path>``), this copies
``config.json`` and ``results.jsonl`` here, rebuilds that copy's ``summary.json`` and plots
with ``hogwild report``, and writes one ``summary.json`` for all groups, with, per
variant (strategy x workers x directory, named after the settings its directory changes):
``n`` (finished units), ``complete``, ``accuracy`` per budget, and the teamwork pooling of
``hogwild report`` (``copy_rate``, ``loop_rate``, ``computing_rate``, ``redundancy``,
``cross_ref_rate``, check-ins, division of labour). Plots per group: accuracy vs budget and
redundancy vs accuracy. Nothing is estimated: a directory without finished units is listed
under ``missing``.

Usage: .venv/bin/python docs/results/collaboration/collect.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from hogwild.eval import report as rep

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
GROUPS = {
    "final": ("run32-1024", "run32-interleaved"),
    "screen": ("screen1024-nofewshot", "screen1024-layouts", "screen1024-checkin128",
               "screen1024-fewshot", "screen1024-noguard"),
    "letters": ("letters/screen1024-nofewshot",),
    "history": ("screen/screen-base", "screen/screen-nofewshot", "screen/screen-checkin128",
                "screen/screen-nr10-nofewshot", "run32-nofewshot", "numbered/run32-1024",
                "numbered/run32-interleaved"),
}
# Directories made with an earlier prompt than today's, and how it differed (named in each
# variant, plain strategies included: the bundle's wording is theirs too).
PROMPTS = {name: "questions numbered" for group in ("screen", "history") for name in GROUPS[group]}
# The kernels each directory ran on, where known: greedy results depend on the rounding of the
# instruction set (hogwild_cpu.c), so variants compare within one machine's runs.
KERNELS = {
    "letters/screen1024-nofewshot": "AVX-512 BF16 dot tiles and dot attention (AMD EPYC Zen 4, 2 cores)",
    "numbered/run32-1024": "AVX-512 BF16 dot tiles, FMA attention (AMD EPYC Zen 4, 2 cores)",
    "numbered/run32-interleaved": "AVX-512 BF16 dot tiles, FMA attention (AMD EPYC Zen 4, 2 cores)",
    "run32-nofewshot": "AMX tiles (Intel Xeon, 2 cores)",
    "screen1024-nofewshot": "AMX tiles (Intel Xeon, 2 cores)",
    "run32-1024": "AVX-512 BF16 dot tiles and dot attention (AMD EPYC Zen 4, 2 cores)",
    "run32-interleaved": "AVX-512 BF16 dot tiles and dot attention (AMD EPYC Zen 4, 2 cores)",
    "screen1024-layouts": "AVX-512 BF16 dot tiles, FMA attention (AMD EPYC Zen 4, 2 cores)",
    "screen1024-checkin128": "AVX-512 BF16 dot tiles, FMA attention (AMD EPYC Zen 4, 2 cores)",
    "screen1024-fewshot": "AVX-512 BF16 dot tiles, FMA attention (AMD EPYC Zen 4, 2 cores)",
    "screen1024-noguard": "AVX-512 BF16 dot tiles, FMA attention (AMD EPYC Zen 4, 2 cores)",
}
# Each screen group's same-machine reference: (the 32-task run made with its prompt and
# kernels, a directory of the group whose tasks it is restricted to).
REFERENCES = {"screen": ("numbered/run32-1024", "screen1024-layouts"),
              "letters": ("run32-1024", "letters/screen1024-nofewshot")}
# Where each group's plots go (the final comparison keeps the plain names).
STEMS = {"final": "", "screen": "screen_", "letters": "letters_", "history": "history_"}
# Today's defaults of the team protocol (hogwild.protocol); a directory's label names what differs.
DEFAULTS = {"few_shot": False, "check_in_every": 1024, "redirect_loops": True, "no_repeat_ngram": 10}


def settings_label(config: dict) -> str:
    """The settings of a directory that differ from today's defaults, in words."""
    parts = []
    few = config.get("few_shot")
    if few is None:
        parts.append("few-shot auto (on)")
    elif few:
        parts.append("few-shot")
    if config.get("check_in_every", 1024) != DEFAULTS["check_in_every"]:
        parts.append(f"check-in {config['check_in_every']}")
    if config.get("redirect_loops", True) is not True:
        parts.append("no redirects")
    ngram = config.get("no_repeat_ngram", 0)  # absent: the directory predates the setting (off)
    if ngram != DEFAULTS["no_repeat_ngram"]:
        parts.append("repeated n-grams allowed" if not ngram else f"no repeated {ngram}-grams")
    return ", ".join(parts)


def variant_name(strategy: str, workers: int, config: dict, prompt: str = "") -> str:
    name = rep.series_name(strategy, workers)
    plain = strategy in ("single", "early-stop", "independent")  # the hogwild settings do not change their prompt
    label = ", ".join(x for x in (prompt, "" if plain else settings_label(config)) if x)
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
            "variant": variant_name(team["strategy"], team["workers"], config, PROMPTS.get(run, "")),
            "run": run, "strategy": team["strategy"], "workers": team["workers"],
            "n": team["n"], "complete": config.get("limit") is not None and team["n"] >= config["limit"],
            "tasks": sorted({r["task"] for r in records
                             if (r["strategy"], int(r["workers"])) == key}),
            "accuracy": accuracy.get(key, {}),
            **{k: team[k] for k in ("copy_rate", "loop_rate", "computing_rate", "steps", "redundancy", "cross_ref_rate",
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


def collect(path: str) -> tuple[list[dict], str | None]:
    """One directory's variants (copied here and reported), or ``([], name)`` when it has
    no finished unit yet."""
    name = Path(path).name
    source = ROOT / "runs-collab" / path
    copy = HERE / path
    if not rep.read_results(source / rep.RESULTS):
        source = copy
    records = rep.read_results(source / rep.RESULTS)
    if not records:
        return [], name
    if source != copy:
        copy.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rep.CONFIG, copy / rep.CONFIG)
        shutil.copyfile(source / rep.RESULTS, copy / rep.RESULTS)
    rep.report(copy)  # summary.json (with teamwork) and both plots of that directory
    config = json.loads((copy / rep.CONFIG).read_text())
    entries = describe(records, config, path)
    for e in entries:
        e["tasks"] = len(e["tasks"])
        e["kernel"] = KERNELS.get(path, "not recorded")
    return entries, None


def reference(big_name: str, small_name: str) -> list[dict]:
    """The 32-task run ``big_name``'s variants on the tasks of the screen directory
    ``small_name`` (empty until both have units), named ``... [32-task run, screen tasks]``."""
    big, small = HERE / big_name, HERE / small_name
    tasks = {r["task"] for r in rep.read_results(small / rep.RESULTS)}
    records = [r for r in rep.read_results(big / rep.RESULTS) if r["task"] in tasks]
    if not records:
        return []
    entries = describe(records, json.loads((big / rep.CONFIG).read_text()), big_name)
    for e in entries:
        e["variant"] += " [32-task run, screen tasks]"
        e["complete"] = len(e["tasks"]) >= len(tasks)
        e["tasks"] = len(e["tasks"])
        e["kernel"] = KERNELS[big_name]
    return entries


def before_after(groups: dict) -> dict:
    """The copy and loop rates of a team before and after a change: the few-shot examples
    turned off (copy rate of the combined team; the first screen against the 32-task run), the
    bundle's questions labelled with letters (copy rate of the interleaved team, which pasted
    a label; 32 tasks each), and the loop responses (loop rate of the combined team; today's
    defaults without them against the 32-task run on the same 8 tasks, one machine)."""
    def find(group: str, run: str, strategy: str) -> dict | None:
        return next((e for e in groups[group]["variants"] if e["run"] == run and e["strategy"] == strategy), None)

    pairs = {
        "copy_rate": ("copy_rate", "hogwild-combined", ("history", "screen/screen-base"), ("final", "run32-1024")),
        "copy_rate_labels": ("copy_rate", "hogwild-interleaved", ("history", "numbered/run32-interleaved"),
                             ("final", "run32-interleaved")),
        "loop_rate": ("loop_rate", "hogwild-combined", ("screen", "screen1024-noguard"),
                      ("screen", "numbered/run32-1024")),
    }
    out = {}
    for name, (key, strategy, before, after) in pairs.items():
        b, a = find(*before, strategy), find(*after, strategy)
        out[name] = {"before": b and {"run": b["run"], "variant": b["variant"], key: b[key]},
                     "after": a and {"run": a["run"], "variant": a["variant"], key: a[key]}}
    return out


def markdown(entries: list[dict]) -> str:
    """The variants as the README's tables: accuracy per budget (95 % interval), then the
    teamwork analytics at the largest budget."""
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.0f} %"

    budgets = sorted({int(b) for e in entries for b in e["accuracy"]})
    head = ["variant", "directory", "n", *map(str, budgets), "forced @max", "copy", "loops", "computing", "redundancy",
            "cross-refs", "steps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        cells = [e["variant"], f"`{e['run']}`", str(e["n"])]
        for b in budgets:
            c = e["accuracy"].get(str(b))
            cells.append("-" if c is None else f"{c['accuracy']:.2f} [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]")
        top = e["accuracy"].get(str(budgets[-1])) if budgets else None
        cells += [pct(top and top["forced"]), pct(e["copy_rate"]), pct(e["loop_rate"]), pct(e["computing_rate"]),
                  pct(e["redundancy"]), pct(e["cross_ref_rate"]), str(e["steps"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    groups, missing = {}, []
    for group, paths in GROUPS.items():
        entries = []
        for path in paths:
            found, absent = collect(path)
            entries += found
            missing += [absent] if absent else []
        if group in REFERENCES:
            entries += reference(*REFERENCES[group])
        groups[group] = {"runs": list(paths), "complete": all(e["complete"] for e in entries),
                         "variants": entries}
        if entries:
            plot_variants(entries, STEMS[group], f"{group}: " + ", ".join(sorted({str(e['n']) for e in entries}))
                          + " units per variant")
        for e in entries:
            acc = "  ".join(f"{b}: {c['accuracy']:.2f}" for b, c in sorted(e["accuracy"].items(), key=lambda x: int(x[0])))
            loops = "-" if e["loop_rate"] is None else f"{e['loop_rate']:.2f}"
            print(f"{group:<8} {e['variant']:<58} n={e['n']:<3} {acc}  copy {e['copy_rate']:.2f}  loops {loops}")
    summary = {
        "what": "issue 12, part 5: collaboration variants on gsm_symbolic bundles of 2 (seed 0), "
                "Qwen2.5-Coder-1.5B bf16, greedy, CPU; commands in screen.sh",
        "defaults": DEFAULTS,
        "partial": bool(missing) or not all(g["complete"] for g in groups.values()),
        "missing": missing,
        "before_after": before_after(groups),
        "groups": groups,
    }
    (HERE / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for group, g in groups.items():
        print(f"\n{group}:\n" + markdown(g["variants"]))
    print(f"partial: {summary['partial']}; missing: {missing}")


if __name__ == "__main__":
    main()
