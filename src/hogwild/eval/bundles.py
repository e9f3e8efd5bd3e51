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
from ..answers.lists import (
    MAX_QUESTIONS, SEPARATOR, answer_from_text, is_complete, question_label, split_answers,
)
from .datasets import Task

__all__ = ["SEPARATOR", "answer_from_text", "bundle_question", "is_complete", "make_bundles",
           "score_answer", "split_answers"]


def make_bundles(tasks: Sequence[Task], k: int) -> list[Task]:
    """Join consecutive runs of ``k`` tasks into one task each (a leftover tail is dropped)."""
    if not 1 <= k <= MAX_QUESTIONS:
        raise ValueError(f"bundle size must be between 1 and {MAX_QUESTIONS} (got {k})")
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
    any (no placeholder a model could paste into its box), and the bundle's own wording has
    no number in it: the questions are labelled with letters ("Problem A") and their count
    is not written, so every number in the prompt is one of the problems' (a model that
    answers "1" for a question labelled "Problem 1" pasted the label)."""
    lines = ["Solve each of the following problems. They are independent of each other."]
    for i, q in enumerate(questions):
        lines.append(f"Problem {question_label(i)}: {q.strip()}")
    lines.append(
        "At the end, write all final answers inside one \\boxed{}, one for each problem, in the "
        "order of the problems, separated by semicolons.")
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
