"""The measures of teamwork analytics over a list of steps (see the package docstring)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..answers import CopyGuard, all_boxes, answers_equal, numbers_in
from ..answers.lists import answer_from_text, labelled_answers, question_refs, split_answers
from ..protocol import texts
from ..protocol.loops import MIN_WORDS, ngrams, repeats, step_body, words

#: after "yes", the following text changed course when less than this share of its
#: trigrams was written before the check-in
CHANGE_THRESHOLD = 0.5

_HEADER = re.compile(r"^\s*\*\*[^*\n]{1,80}? \[\d+\]:\*\*")
#: a calculation: two numbers joined by an operator ("3 + 5", "2 * 8", "4 \\times 12") or
#: an equals sign followed by a number ("= 16", "= \\$24"); a step without one only talks
#: about the work (plans, announcements, agreement)
_CALCULATION = re.compile(
    r"\d\s*(?:[-+*/×÷^x]|\\times|\\cdot|\\div)\s*[($\\]*\s*\d|=\s*[($\\]*\s*-?\d")


def computes(text: str) -> bool:
    """Does this step body contain a calculation (see :data:`_CALCULATION`)?"""
    return _CALCULATION.search(text) is not None
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
    """Parts given to workers in ``text``: lines such as "Bob: problem B", "- **Bob**: the
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
    calculating = sum(computes(b) for b in bodies)

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
        "computing_steps": calculating,
        "computing_rate": calculating / len(steps) if steps else None,
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
