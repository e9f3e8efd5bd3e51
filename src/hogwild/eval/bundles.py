"""Bundles: k independent questions in one task, answered as ``\\boxed{a1; a2; ...}``.

The bundle's prompt (:func:`bundle_question`) asks for all answers in one box, in order,
separated by semicolons, without showing an example box. Parsing
(:func:`split_answers`, :func:`answer_from_text`, :func:`is_complete`) lives in
:mod:`hogwild.answers.lists` and is re-exported here.

Scoring (:func:`score_answer`): each position is compared with :func:`answers_equal`;
the score is correct / max(k, answers given). Missing answers count as wrong, and extra
answers lower the score too, so hedging ("3; 5; 7" for two questions) does not pay.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..answers import answers_equal
from ..answers.lists import SEPARATOR, answer_from_text, is_complete, split_answers
from .datasets import Task

__all__ = ["SEPARATOR", "answer_from_text", "bundle_question", "is_complete", "make_bundles",
           "score_answer", "split_answers"]


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
    """The prompt of a bundle. The format line says where the answers go without showing
    any (no placeholder a model could paste into its box)."""
    k = len(questions)
    lines = [f"Solve each of the following {k} problems. They are independent of each other."]
    for i, q in enumerate(questions, 1):
        lines.append(f"Problem {i}: {q.strip()}")
    lines.append(
        f"At the end, write all {k} final answers inside one \\boxed{{}}, in the order of the "
        f"problems, separated by semicolons.")
    return "\n\n".join(lines)


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
