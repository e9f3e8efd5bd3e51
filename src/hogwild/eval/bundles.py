"""Bundles: k independent questions in one task, answered as ``\\boxed{a1; a2; ...}``.

The bundle's prompt (:func:`bundle_question`) asks for all answers in ONE box, in order,
separated by semicolons. Parsing is forgiving (:func:`split_answers`): semicolons, then
line breaks, then ", " (comma + space, so "1,200" stays one number), then " and "; labels
such as "1)", "(2)", "Problem 1:", "Q1 =" or "a_1 =" are dropped. When no single box holds
k answers but the text has k or more separate boxes, the last k boxes are read in order
(:func:`answer_from_text`).

Scoring (:func:`score_answer`): each position is compared with :func:`answers_equal`;
the score is correct / max(k, answers given). Missing answers count as wrong, and extra
answers lower the score too, so hedging ("3; 5; 7" for two questions) does not pay.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..answers import all_boxes, answers_equal, extract_boxed
from .datasets import Task

SEPARATOR = "; "
_LABEL = re.compile(
    r"^\s*(?:\(?\d{1,2}[.)]\s+|(?:problem|question|q|answer|a)[\s_]*\{?\d{1,2}\}?\s*[:=.)]\s*)",
    re.I)


def make_bundles(tasks: Sequence[Task], k: int) -> list[Task]:
    """Join consecutive runs of ``k`` tasks into one task each (a leftover tail is dropped)."""
    if k < 1:
        raise ValueError(f"bundle size must be at least 1 (got {k})")
    if k == 1:
        return list(tasks)
    out = []
    for start in range(0, len(tasks) - k + 1, k):
        group = tasks[start : start + k]
        out.append(Task(
            id="+".join(t.id for t in group),
            question=bundle_question([t.question for t in group]),
            answer=[str(t.answer) for t in group],
            parts=tuple(t.question for t in group),
        ))
    return out


def bundle_question(questions: Sequence[str]) -> str:
    k = len(questions)
    example = SEPARATOR.join(f"answer {i}" for i in range(1, k + 1))
    lines = [f"Solve each of the following {k} problems. They are independent of each other."]
    for i, q in enumerate(questions, 1):
        lines.append(f"Problem {i}: {q.strip()}")
    lines.append(
        f"At the end, write all {k} final answers in ONE box, in the order of the problems, "
        f"separated by semicolons: \\boxed{{{example}}}.")
    return "\n\n".join(lines)


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside braces and parentheses."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth = max(0, depth - 1)
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(text[start:])
    return parts


def _strip_label(part: str) -> str:
    part = part.strip()
    stripped = _LABEL.sub("", part, count=1).strip()
    return stripped if stripped else part


def split_answers(content: str | None, k: int | None = None) -> list[str]:
    """The answers in one box's content, in order (empty parts dropped)."""
    if content is None:
        return []
    for sep in (";", "\n", ", ", " and "):
        parts = [p for p in (_strip_label(p) for p in _split_top(content, sep)) if p]
        if len(parts) > 1:
            return parts
    single = _strip_label(content)
    return [single] if single else []


def answer_from_text(text: str | None, k: int = 1) -> str | None:
    """The answer a text gives for a task of ``k`` questions, as one string (or None).

    k = 1: the last boxed answer. k > 1: the last box holding at least k answers; else, if
    there are k or more boxes, the last k joined with "; "; else the last box (partial).
    """
    if not text:
        return None
    if k == 1:
        return extract_boxed(text)
    boxes = all_boxes(text)
    if not boxes:
        return None
    for content in reversed(boxes):
        if len(split_answers(content)) >= k:
            return content
    if len(boxes) >= k:
        return SEPARATOR.join(boxes[-k:])
    return boxes[-1]


def is_complete(answer: str | None, k: int = 1) -> bool:
    """Does ``answer`` give all k answers (used by stop rules)?"""
    return answer is not None and len(split_answers(answer) if k > 1 else [answer]) >= k


def score_answer(answer: str | None, gold: str | Sequence[str]) -> float:
    """1.0/0.0 for one question; the fraction correct for a bundle (see module docstring)."""
    if isinstance(gold, str):
        return 1.0 if answers_equal(answer, gold) else 0.0
    k = len(gold)
    given = split_answers(answer, k)
    if k == 1 and answer is not None:
        given = [answer]
    correct = sum(1 for g, a in zip(gold, given) if answers_equal(a, g))
    return correct / max(k, len(given)) if k else 0.0
