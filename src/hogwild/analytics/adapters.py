"""Teamwork analytics from what a run leaves: a snapshot, a saved run, plain texts; and the
lines a terminal prints (see the package docstring)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..answers import CopyGuard
from ..answers.lists import question_label
from .measures import Step, analyze


def steps_from_texts(workers: Sequence[str]) -> list[Step]:
    """Each worker's whole text cut into paragraphs at blank lines (unordered runs)."""
    out = []
    for w, text in enumerate(workers):
        for para in re.split(r"\n\s*\n", text or ""):
            if para.strip():
                out.append(Step(w, para))
    return out


def ordered_steps(history: Sequence[tuple[int, str]], unfinished: Sequence[tuple[int, str]] = (),
                  history_tokens: Sequence[int] = (), unfinished_tokens: Sequence[int] = ()) -> list[Step]:
    """Finished steps in completion order, then the unfinished ones, with their token counts
    where known (lists as long as the steps)."""
    def counts(values: Sequence[int], n: int) -> list[int | None]:
        return list(values) if len(values) == n else [None] * n

    steps = [Step(int(w), str(t), c) for (w, t), c in zip(history, counts(history_tokens, len(history)))]
    steps += [Step(int(w), str(t), c) for (w, t), c in zip(unfinished, counts(unfinished_tokens, len(unfinished)))]
    return [s for s in steps if s.text.strip()]


def from_snapshot(snapshot: Any, names: Sequence[str], problem: str | Sequence[str], *, steps: bool = True,
                  **kwargs: Any) -> dict[str, Any]:
    """The analytics of a :class:`hogwild.core.events.Snapshot`; ``steps``: whether the
    run's layout cuts work into steps (else its texts are read paragraph by paragraph)."""
    if steps:
        found = ordered_steps(snapshot.history, snapshot.current, snapshot.history_tokens, snapshot.current_tokens)
        return analyze(found, names, problem, ordered=True, **kwargs)
    return analyze(steps_from_texts(snapshot.workers), names, problem, ordered=False, **kwargs)


def from_saved(data: dict[str, Any], steps: bool = True) -> dict[str, Any]:
    """The analytics of a run saved by ``hogwild solve --save`` (a loaded JSON object).
    Without gold, "first correct" means the first appearance of the run's final answer;
    ``copied`` is None for files saved without their prompt."""
    prompt = data.get("prompt")
    guard = CopyGuard(prompt, data["problem"]) if prompt else None
    names = list(data["names"])
    if steps:
        found = ordered_steps(data["history"], data.get("unfinished") or [], data.get("history_tokens") or [],
                              data.get("unfinished_tokens") or [])
        return analyze(found, names, data["problem"], ordered=True, answer=data.get("answer"), guard=guard)
    return analyze(steps_from_texts(data["workers"]), names, data["problem"], ordered=False,
                   answer=data.get("answer"), guard=guard)


def summary_rows(a: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines for a terminal."""
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.0f}%"

    rows = [
        ("steps", f"{a['steps']}" + ("" if a["ordered"] else " (paragraphs; no step order across workers)")),
        ("redundancy", f"{pct(a['redundancy'])} of trigrams already written by another worker"),
        ("cross-references", f"{a['cross_refs']} steps ({pct(a['cross_ref_rate'])}): "
                             f"{a['cross_ref_names']} name another worker, {a['cross_ref_results']} use "
                             f"another's result"),
        ("loops", f"{a['loops']} steps repeat an earlier step (loop rate {pct(a['loop_rate'])})"),
    ]
    c = a["check_ins"]
    rows.append(("check-ins", f"{c['asked']} asked: {c['yes']} yes ({c['changed_after_yes']} changed course), "
                              f"{c['no']} no, {c['other']} other"))
    rows.append(("copied answer", "unknown" if a["copied"] is None else ("yes" if a["copied"] else "no")))
    fc = a["first_correct"]
    if fc is None:
        rows.append(("tokens before the answer", "unknown"))
    elif not fc["reached"]:
        rows.append(("tokens before the answer", "never reached"))
    else:
        each = ", ".join(f"{w} {n if n is not None else '-'}" for w, n in fc["tokens"].items())
        rows.append(("tokens before the answer", f"{fc['total']} ({each})"))
    for who, p in a["per_worker"].items():
        rows.append((f"  {who}", f"{p['steps']} steps, redundancy {pct(p['redundancy'])}, "
                                 f"{p['cross_refs']} cross-references, {p['loops']} loops"
                                 + (f", {p['tokens']} tokens" if p["tokens"] is not None else "")))
    if "first_answer" in a.get("division", {}):
        d = a["division"]
        rows.append(("first answers", ", ".join(f"problem {question_label(i)}: {w or '-'}" for i, w in enumerate(d["first_answer"]))))
    if "assignments" in a:
        parts = "; ".join(f"{w}: {p}" for w, p in a["assignments"]["parts"].items())
        rows.append(("assignments", parts))
    return rows
