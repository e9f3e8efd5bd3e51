"""When the workers have settled on an answer (the stop rules of a run)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InvalidRequestError
from .boxes import extract_boxed
from .equal import answers_equal


@dataclass
class AnswerAgreement:
    """Decides when the workers have agreed on an answer.

    mode="first": the first boxed answer any worker writes is the answer.
    mode="agree": the answer is settled when ``k`` workers' latest boxed answers are
    equivalent (:func:`hogwild.answers.answers_equal`). With ``num_workers`` given, k is
    capped at it (so one worker can still finish).

    Call :meth:`update` with a worker's new text (a finished step or its whole output so
    far); it returns the agreed answer once there is one, else None.
    """

    mode: str = "first"
    k: int = 2
    num_workers: int | None = None
    latest: dict[int, str] = field(default_factory=dict)
    answer: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("first", "agree"):
            raise InvalidRequestError(
                f"Unknown stopping mode {self.mode!r}; use 'first' or 'agree'.")
        if self.k < 1:
            raise InvalidRequestError(f"k must be at least 1, got {self.k}.")

    @property
    def needed(self) -> int:
        if self.mode == "first":
            return 1
        return min(self.k, self.num_workers) if self.num_workers else self.k

    def update(self, worker: int, text: str) -> str | None:
        if self.answer is not None:
            return self.answer
        found = extract_boxed(text)
        if found is None:
            return None
        self.latest[worker] = found
        agreeing = sum(1 for other in self.latest.values() if answers_equal(found, other))
        if agreeing >= self.needed:
            self.answer = found
        return self.answer

    def reset(self) -> None:
        self.latest.clear()
        self.answer = None
