"""Copied answers: a final answer that the prompt shows but the problem does not.

A model that cannot solve a problem may paste a number from the prompt's few-shot examples
or format line into its box (``\\boxed{23}`` from an example, ``\\boxed{answer 1; answer 2}``
from a bundle instruction). :class:`CopyGuard` recognises such answers:

    an answer is **copied** when it equals a number or an answer that appears in the prompt
    (its examples and instructions) but not in the problem.

Numbers are compared by value (``23``, ``23.0``, ``$23`` and ``23 dollars`` are one number;
``1,024`` is 1024); an answer that is not a number is copied when its text occurs, as whole
words, in the prompt but not in the problem, or when it equals a boxed answer the prompt
shows. An answer the problem itself contains is never copied, whatever the prompt says.

The guard has no notion of correctness: a correct answer that happens to equal an example's
number and is absent from the problem counts as copied. Evaluation strategies use it to
keep a copied answer from ending a run (:mod:`hogwild.eval.strategies`), and the analytics
report the copy rate (:mod:`hogwild.analytics`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .boxes import all_boxes
from .equal import answers_equal, parse_number

# An unsigned number (with thousands separators or a decimal part), or a signed one when
# the minus sign starts a word ("-3", not the "-" of "50 - 27" or "x-3").
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\w)")
_SPACES = re.compile(r"\s+")


def numbers_in(text: str) -> set[float]:
    """The values of the numbers written in ``text`` ("2^10" gives 2 and 10, "1,024" 1024)."""
    out: set[float] = set()
    for m in _NUMBER.finditer(text):
        raw = m.group(0).replace(",", "")
        try:
            value = float(raw)
        except ValueError:  # pragma: no cover - the regex admits only numbers
            continue
        if math.isfinite(value):
            out.add(value)
    return out


def _has(values: Iterable[float], x: float) -> bool:
    return any(math.isclose(x, v, rel_tol=1e-9, abs_tol=1e-12) for v in values)


def _flat(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def _contains_words(haystack: str, needle: str) -> bool:
    """Does ``needle`` occur in ``haystack`` as whole words (both already flattened)?"""
    if not needle:
        return False
    pattern = r"(?<!\w)" + re.escape(needle) + r"(?!\w)"
    return re.search(pattern, haystack) is not None


@dataclass
class CopyGuard:
    """Tells copied answers from others, for one prompt and the problem(s) in it.

    prompt:  everything the model read before writing (system text, examples, format line
             and the problem itself; the problem's numbers are subtracted anyway).
    problem: the problem's text, or the texts of a bundle's questions (then the bundle's
             own wording, "Problem 1: ...", counts as instruction).
    """

    prompt: str
    problem: str | Sequence[str]
    prompt_numbers: set[float] = field(init=False, repr=False)
    problem_numbers: set[float] = field(init=False, repr=False)
    prompt_answers: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        problems = [self.problem] if isinstance(self.problem, str) else list(self.problem)
        self._problem_text = _flat("\n".join(problems))
        self._prompt_text = _flat(self.prompt)
        self.problem_numbers = numbers_in("\n".join(problems))
        self.prompt_answers = all_boxes(self.prompt)
        boxed = {v for v in (parse_number(a) for a in self.prompt_answers) if v is not None}
        self.prompt_numbers = numbers_in(self.prompt) | boxed

    def copied_one(self, answer: str | None) -> bool:
        """Is this one answer (not a bundle's list) copied from the prompt?"""
        if answer is None or not str(answer).strip():
            return False
        answer = str(answer).strip()
        value = parse_number(answer)
        if value is not None:
            return _has(self.prompt_numbers, value) and not _has(self.problem_numbers, value)
        flat = _flat(answer)
        if not any(ch.isalnum() for ch in flat) or _contains_words(self._problem_text, flat):
            return False
        if _contains_words(self._prompt_text, flat):
            return True
        return any(answers_equal(answer, shown) for shown in self.prompt_answers)

    def copied(self, answer: str | None, parts: Sequence[str] | None = None) -> bool:
        """Is ``answer`` copied? For a bundle, give its ``parts`` (one answer per question):
        the answer is copied when the whole of it or any part is."""
        if self.copied_one(answer):
            return True
        return any(self.copied_one(p) for p in parts or ())

    def accepts(self, answer: str | None, parts: Sequence[str] | None = None) -> bool:
        """The guard's verdict: an answer is accepted unless it is copied."""
        return not self.copied(answer, parts)
