"""Answers to k questions in one text: ``\\boxed{a1; a2; ...}`` (bundles, see
:mod:`hogwild.eval.bundles`).

Parsing is forgiving (:func:`split_answers`): semicolons, then line breaks, then ", "
(comma + space, so "1,200" stays one number), then " and "; labels such as "1)", "(B)",
"Problem A:", "Problem 1:", "Q1 =" or "a_1 =" are dropped. When no single box holds k
answers but the text has k or more separate boxes, the last k boxes are read in order
(:func:`answer_from_text`). Answers given one at a time to named questions ("Problem B: ...
\\boxed{7}"), possibly by different workers, are put in question order by
:func:`answers_by_question`.

A bundle labels its questions with capital letters (:func:`question_label`: "Problem A",
"Problem B", ...), so that no number in its prompt is the bundle's own; a text may name a
question by its letter or by its position ("problem 2", "question 1", "#2").
"""

from __future__ import annotations

import re

from .boxes import all_boxes, closing_brace, extract_boxed

SEPARATOR = "; "
#: The most questions a bundle may have: one capital letter each.
MAX_QUESTIONS = 26
_LABEL = re.compile(
    r"^\s*(?:\(?\d{1,2}[.)]\s+|\(?[a-z]\)\s*"
    r"|(?:problem|question|q|answer|a)[\s_]*\{?\d{1,2}\}?\s*[:=.)]\s*"
    r"|(?:problem|question|answer)\s+[a-z]\s*[:=.)]\s*)",
    re.I)


def question_label(index: int) -> str:
    """The label of a bundle's question (0-based ``index``): "A", "B", ..."""
    if not 0 <= index < MAX_QUESTIONS:
        raise ValueError(f"a bundle has at most {MAX_QUESTIONS} questions (index {index})")
    return chr(ord("A") + index)


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


# A question named by position ("problem 2", "#2"; any case) or by its capital letter
# ("Problem B", "problem B"; the letter must be a capital, so that "the problem a bit
# differently" names nothing).
_QUESTION_REF = re.compile(
    r"\b(?i:problem|question|part|task)\s*#?\s*(\d{1,2})\b|#(\d{1,2})\b"
    r"|\b(?i:problem|question|part|task)\s+([A-Z])\b")
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def question_refs(text: str) -> list[int]:
    """The questions a text names ("Problem B", "problem 2", "question 1", "#2"), in order,
    as 1-based positions (B is 2)."""
    return [int(a or b) if a or b else ord(letter) - ord("A") + 1
            for a, b, letter in _QUESTION_REF.findall(text)]


def labelled_answers(text: str, k: int) -> list[tuple[int, str]]:
    """Single answers that a text gives to named questions of a bundle of ``k``: each box
    holding one answer, paired with the last question (0-based) the text names before it
    ("Problem B: ... \\boxed{7}"), in order. Boxes with no such name, or with several
    answers, are left out."""
    out: list[tuple[int, str]] = []
    for match in _BOX.finditer(text):
        end = closing_brace(text, match.end())
        content = extract_boxed(text[match.start(): end + 1]) if end is not None else None
        if content is None or len(split_answers(content)) != 1:
            continue
        refs = [r for r in question_refs(text[: match.start()]) if 1 <= r <= k]
        if refs:
            out.append((refs[-1] - 1, content))
    return out


def answers_by_question(texts: list[str], k: int) -> str | None:
    """One answer per question of a bundle assembled from labelled single answers spread
    over several texts (steps or workers, in order; a later answer to a question replaces
    an earlier one), joined in question order; None unless all ``k`` questions have one."""
    found: dict[int, str] = {}
    for text in texts:
        for question, answer in labelled_answers(text, k):
            found[question] = answer
    if k < 2 or len(found) < k:
        return None
    return SEPARATOR.join(found[q] for q in range(k))
