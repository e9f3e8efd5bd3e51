"""Teamwork analytics: how the workers of one run worked together, from its text alone.

Computed from a saved run (``hogwild solve --save``: :func:`from_saved`), a snapshot of a
run (:func:`from_snapshot`), or any list of steps (:func:`analyze`). Evaluation writes them
per unit into ``results.jsonl`` and ``hogwild report`` pools them per strategy
(:mod:`hogwild.eval.report`); ``hogwild show RUN --analytics`` prints them for one run.

A run's **steps** are, in step layouts (combined, interleaved), its finished steps in
completion order followed by the unfinished ones; the analysis is then *ordered*: "earlier"
means earlier in completion order. In layouts without steps (contiguous, independent, a
plain chain of thought) each worker's text is cut into paragraphs at blank lines; nothing
tells how the workers' paragraphs interleave in time, so "earlier" means earlier in the same
worker's text, and another worker's text counts as a whole. Every measure reads what the
model wrote (:func:`hogwild.protocol.loops.step_body`: without step headers, openings,
check-in questions or redirects).

Measures (word trigrams as in :mod:`hogwild.protocol.loops`):

- **redundancy**: the share of a step's distinct trigrams already written by another worker
  (ordered: in an earlier step; otherwise anywhere in its text), pooled over steps
  (``ngrams_repeated / ngrams``); per worker too. None with one worker.
- **cross-references**: steps that name another worker, or use a number that another worker
  wrote first and the problem does not contain (ordered runs only for numbers).
- **loops**: steps that repeat an earlier step (:mod:`hogwild.protocol.loops`; in unordered
  runs only the worker's own earlier paragraphs count); ``loop_rate = loops / steps``.
- **check-ins**: steps opened by the check-in question; the answer (yes, no, other), and
  after "yes" whether the worker **changed course**: the text that follows the answer (the
  rest of that step, or the worker's next step when the rest is shorter than three words)
  has less than half of its trigrams in what was written before the check-in.
- **copied**: whether the final answer is copied from the prompt
  (:class:`hogwild.answers.CopyGuard`).
- **first correct answer**: tokens each worker had written when the first correct answer
  appeared (needs the gold answer and token counts; with no gold the target is the run's
  final answer). Ordered: up to and including the first step whose box gives it (k answers
  for a bundle, all correct). Unordered: per worker, its tokens up to its own first correct
  answer; ``total`` is then the smallest of these (workers write in lock-step).
- **division of labour** (bundles of k > 1 questions): which worker first answered each
  question. A box with k answers answers all of them; a box with one answer answers the
  question the step last names ("problem 2", "question 2", "#2") before it, else, given
  the gold answers, the one question whose gold it equals. ``split`` is true when two or
  more workers answered first.
- **assignments**: lines of the first worker's first two steps that give a worker a part
  ("Bob: problem 2", "Bob takes the notebooks"; :func:`parse_assignments`); for bundles the
  problem numbers each part names, and ``followed``: the share of assigned questions first
  answered by their assignee.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .answers import CopyGuard, all_boxes, answers_equal, numbers_in
from .answers.lists import answer_from_text, labelled_answers, question_refs, split_answers
from .protocol import texts
from .protocol.loops import MIN_WORDS, ngrams, repeats, step_body, words

#: after "yes", the following text changed course when less than this share of its
#: trigrams was written before the check-in
CHANGE_THRESHOLD = 0.5

_HEADER = re.compile(r"^\s*\*\*[^*\n]{1,80}? \[\d+\]:\*\*")
_CHECK_INS = tuple(t.strip() for t in (texts.CHECK_IN_TEXT, texts.CHECK_IN_TEXT_SOLO))


@dataclass(frozen=True)
class Step:
    """One step of a run: its author, its text as the transcript shows it (header
    included), and how many tokens it took (None: unknown)."""

    worker: int
    text: str
    tokens: int | None = None


# --------------------------------------------------------------------------- pieces

def check_in_answer(text: str) -> tuple[str, str] | None:
    """For a step opened by the check-in question: (answer, rest of the step), the answer
    being "yes", "no" or "other"; None for any other step."""
    body = _HEADER.sub("", text, count=1).lstrip()
    for question in _CHECK_INS:
        if body.startswith(question):
            after = body[len(question):].strip()
            first = words(after[:12])
            answer = first[0] if first and first[0] in ("yes", "no") else "other"
            rest = re.sub(r"^\W*(?:yes|no)\b\W*", "", after, count=1, flags=re.I) if answer != "other" else after
            return answer, rest
    return None


def parse_assignments(text: str, names: Sequence[str]) -> dict[str, str]:
    """Parts given to workers in ``text``: lines such as "Bob: problem 2", "- **Bob**: the
    notebooks", "Bob takes the notebooks" or "Bob will check"; worker name -> its part."""
    out: dict[str, str] = {}
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    if not alternatives:
        return out
    colon = re.compile(rf"^\s*(?:[-*•]|\d+[.)])?\s*\**\s*({alternatives})\s*\**\s*(?:[:\-–—]|->|→)\s*\**\s*(\S.*)$")
    verb = re.compile(rf"\b({alternatives})\s+(?:takes|will take|will do|does|handles|will handle|"
                      rf"works on|will work on|checks|will check|solves|will solve)\s+([^.;\n]+)")
    for line in text.splitlines():
        m = colon.match(line)
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2).strip()
            continue
        for m in verb.finditer(line):
            if m.group(1) not in out:
                out[m.group(1)] = m.group(2).strip()
    return out


def _correct(answer: str | None, gold: Any, k: int) -> bool:
    if answer is None or gold is None:
        return False
    if k == 1:
        target = gold[0] if isinstance(gold, (list, tuple)) else gold
        return answers_equal(answer, target)
    parts = split_answers(answer)
    return len(parts) == k and all(answers_equal(a, g) for a, g in zip(parts, gold))


def _gives(text: str, gold: Any, k: int) -> bool:
    """Does a step (or a worker's text) give the correct answer in one of its boxes?"""
    if k == 1:
        return any(_correct(box, gold, 1) for box in all_boxes(text))
    return _correct(answer_from_text(text, k), gold, k)


def _answered_questions(text: str, k: int, gold: Any) -> list[int]:
    """The questions (0-based) a step answers with its boxes (see the module docstring)."""
    found = [q for q, _ in labelled_answers(text, k)]
    for box in all_boxes(text):
        parts = split_answers(box)
        if len(parts) >= k:
            found += range(k)
        elif gold is not None and len(parts) == 1 and box not in {a for _, a in labelled_answers(text, k)}:
            hits = [i for i, g in enumerate(gold) if answers_equal(parts[0], g)]
            if len(hits) == 1:
                found.append(hits[0])
    return sorted(set(found))


# --------------------------------------------------------------------------- the analysis

def analyze(
    steps: Sequence[Step],
    names: Sequence[str],
    problem: str | Sequence[str] = "",
    *,
    ordered: bool = True,
    answer: str | None = None,
    gold: Any = None,
    k: int = 1,
    guard: CopyGuard | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> dict[str, Any]:
    """The analytics of one run (the module docstring defines every field).

    steps:   in completion order when ``ordered``, else each worker's paragraphs in order.
    answer:  the run's final answer (for ``copied``, and the target when no ``gold``).
    gold:    the correct answer (a list of k for a bundle), or None.
    guard:   tells whether ``answer`` is copied (None: ``copied`` is None).
    count_tokens: text -> tokens, for steps whose ``tokens`` is None.
    """
    names = list(names)
    workers = sorted({s.worker for s in steps} | set(range(len(names))))
    name = {w: (names[w] if w < len(names) else f"Worker {w + 1}") for w in workers}
    multi = len(workers) > 1
    problem_text = problem if isinstance(problem, str) else "\n".join(problem)
    problem_numbers = numbers_in(problem_text)
    bodies = [step_body(s.text) for s in steps]
    grams = [ngrams(words(b)) for b in bodies]

    per = {w: {"steps": 0, "ngrams": 0, "ngrams_repeated": 0, "cross_refs": 0, "loops": 0} for w in workers}
    totals = {"ngrams": 0, "ngrams_repeated": 0, "cross_refs": 0, "cross_ref_names": 0, "cross_ref_results": 0}

    # redundancy and cross-references
    union_by_worker: dict[int, set] = {w: set() for w in workers}
    if not ordered:
        for s, g in zip(steps, grams):
            union_by_worker[s.worker] |= g
    seen_by_worker: dict[int, set] = {w: set() for w in workers}
    first_writer: dict[float, int] = {}
    for s, body, g in zip(steps, bodies, grams):
        w = s.worker
        if ordered:
            others = set().union(*(seen_by_worker[o] for o in workers if o != w)) if multi else set()
        else:
            others = set().union(*(union_by_worker[o] for o in workers if o != w)) if multi else set()
        repeated = len(g & others)
        per[w]["steps"] += 1
        per[w]["ngrams"] += len(g)
        per[w]["ngrams_repeated"] += repeated
        seen_by_worker[w] |= g
        by_name = any(re.search(rf"(?<!\w){re.escape(name[o])}(?!\w)", body) for o in workers if o != w)
        by_result = False
        if ordered:
            for value in numbers_in(body):
                writer = first_writer.setdefault(value, w)
                if writer != w and value not in problem_numbers:
                    by_result = True
        if multi and (by_name or by_result):
            per[w]["cross_refs"] += 1
            totals["cross_refs"] += 1
            totals["cross_ref_names"] += by_name
            totals["cross_ref_results"] += by_result
    totals["ngrams"] = sum(p["ngrams"] for p in per.values())
    totals["ngrams_repeated"] = sum(p["ngrams_repeated"] for p in per.values())

    # loops
    hits = repeats([(s.worker, b) for s, b in zip(steps, bodies)], own_only=not ordered)
    for s, hit in zip(steps, hits):
        if hit is not None:
            per[s.worker]["loops"] += 1
    loops = sum(h is not None for h in hits)

    out: dict[str, Any] = {
        "steps": len(steps),
        "ordered": ordered,
        "ngrams": totals["ngrams"],
        "ngrams_repeated": totals["ngrams_repeated"],
        "redundancy": (totals["ngrams_repeated"] / totals["ngrams"]) if multi and totals["ngrams"] else None,
        "cross_refs": totals["cross_refs"],
        "cross_ref_names": totals["cross_ref_names"],
        "cross_ref_results": totals["cross_ref_results"],
        "cross_ref_rate": (totals["cross_refs"] / len(steps)) if multi and steps else None,
        "loops": loops,
        "loop_rate": loops / len(steps) if steps else None,
        "check_ins": _check_ins(steps, bodies, grams),
        "copied": None,
        "first_correct": None,
        "per_worker": {},
    }
    if guard is not None and answer is not None:
        out["copied"] = guard.copied(answer, split_answers(answer) if k > 1 else None)

    tokens = [s.tokens if s.tokens is not None else (count_tokens(s.text) if count_tokens else None)
              for s in steps]
    target = gold if gold is not None else (answer if k == 1 else (split_answers(answer) if answer else None))
    if target is not None and all(t is not None for t in tokens):
        out["first_correct"] = _first_correct(steps, tokens, target, k, ordered, name)

    for w in workers:
        p = per[w]
        out["per_worker"][name[w]] = {
            **p,
            "redundancy": (p["ngrams_repeated"] / p["ngrams"]) if multi and p["ngrams"] else None,
            "tokens": sum(t for s, t in zip(steps, tokens) if s.worker == w and t is not None)
            if all(t is not None for t in tokens) else None,
        }

    if k > 1:
        out["division"] = _division(steps, k, gold, ordered, name)
    lead_steps = [s.text for s in steps if s.worker == workers[0]][:2] if workers else []
    assigned = parse_assignments("\n".join(step_body(t) for t in lead_steps), [name[w] for w in workers])
    if assigned:
        record: dict[str, Any] = {"parts": assigned}
        if k > 1:
            problems = {who: sorted({r for r in question_refs(part) if 1 <= r <= k}) for who, part in assigned.items()}
            record["problems"] = problems
            first = out["division"].get("first_answer")
            pairs = [(who, q) for who, qs in problems.items() for q in qs]
            if pairs and first is not None:
                record["followed"] = sum(first[q - 1] == who for who, q in pairs) / len(pairs)
        out["assignments"] = record
    return out


def _check_ins(steps: Sequence[Step], bodies: list[str], grams: list[set]) -> dict[str, int]:
    counts = {"asked": 0, "yes": 0, "no": 0, "other": 0, "changed_after_yes": 0}
    for i, s in enumerate(steps):
        found = check_in_answer(s.text)
        if found is None:
            continue
        answer, rest = found
        counts["asked"] += 1
        counts[answer] += 1
        if answer != "yes":
            continue
        follow = rest
        if len(words(follow)) < MIN_WORDS:
            later = [j for j in range(i + 1, len(steps)) if steps[j].worker == s.worker]
            follow = bodies[later[0]] if later else follow
        before = set().union(*grams[:i]) if i else set()
        g = ngrams(words(follow))
        share = len(g & before) / len(g) if g else 1.0
        if g and share < CHANGE_THRESHOLD:
            counts["changed_after_yes"] += 1
    return counts


def _first_correct(steps: Sequence[Step], tokens: list[int | None], target: Any, k: int, ordered: bool,
                   name: dict[int, str]) -> dict[str, Any]:
    written = {w: 0 for w in name}
    if ordered:
        for s, t in zip(steps, tokens):
            written[s.worker] += t or 0
            if _gives(step_body(s.text), target, k):
                return {"reached": True, "tokens": {name[w]: n for w, n in written.items()},
                        "total": sum(written.values())}
        return {"reached": False, "tokens": {name[w]: None for w in name}, "total": None}
    reached: dict[int, int | None] = {w: None for w in name}
    for w in name:
        count, text = 0, ""
        for s, t in zip(steps, tokens):
            if s.worker != w:
                continue
            count += t or 0
            text += "\n\n" + s.text
            if _gives(text, target, k):
                reached[w] = count
                break
    got = [n for n in reached.values() if n is not None]
    return {"reached": bool(got), "tokens": {name[w]: n for w, n in reached.items()},
            "total": min(got) if got else None}


def _division(steps: Sequence[Step], k: int, gold: Any, ordered: bool, name: dict[int, str]) -> dict[str, Any]:
    first: list[str | None] = [None] * k
    answered: dict[str, list[int]] = {name[w]: [] for w in name}
    for s in steps:
        for q in _answered_questions(step_body(s.text), k, gold):
            if q + 1 not in answered[name[s.worker]]:
                answered[name[s.worker]].append(q + 1)
            if ordered and first[q] is None:
                first[q] = name[s.worker]
    out: dict[str, Any] = {"answered": answered}
    if ordered:  # without an order across workers, nobody answered "first"
        out["first_answer"] = first
        out["split"] = len({f for f in first if f is not None}) > 1
    return out


# --------------------------------------------------------------------------- adapters

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
        rows.append(("first answers", ", ".join(f"problem {i + 1}: {w or '-'}" for i, w in enumerate(d["first_answer"]))))
    if "assignments" in a:
        parts = "; ".join(f"{w}: {p}" for w, p in a["assignments"]["parts"].items())
        rows.append(("assignments", parts))
    return rows
