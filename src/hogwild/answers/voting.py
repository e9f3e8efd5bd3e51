"""Votes over several workers' answers (the independent-sampling baseline)."""

from __future__ import annotations

from collections.abc import Sequence

from .equal import answers_equal
from .lists import SEPARATOR, split_answers


def majority_vote(answers: Sequence[str | None], equal=answers_equal) -> str | None:
    """The most common answer, grouping equivalent ones (``equal``); None answers abstain.

    Ties go to the group whose first member came earliest (lowest worker index); the
    group's first member is returned as its representative.
    """
    groups: list[list[str]] = []
    for ans in answers:
        if ans is None or not str(ans).strip():
            continue
        for group in groups:
            if equal(group[0], ans):
                group.append(ans)
                break
        else:
            groups.append([ans])
    if not groups:
        return None
    best = max(range(len(groups)), key=lambda i: (len(groups[i]), -i))
    return groups[best][0]


def bundle_vote(answers: Sequence[str | None], k: int) -> str | None:
    """Majority vote per question for a bundle (questions are independent of each other)."""
    if k == 1:
        return majority_vote(answers)
    split = [split_answers(a) for a in answers]
    out = []
    for i in range(k):
        winner = majority_vote([parts[i] if len(parts) > i else None for parts in split])
        out.append(winner if winner is not None else "")
    return SEPARATOR.join(out) if any(out) else None
