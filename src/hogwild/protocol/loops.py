"""Loops: does a worker's new step repeat an earlier step? Pure text functions, no model.

A step *repeats* an earlier step (its author's own or another worker's) when, after
:func:`normalize` (lower case, words and numbers only), the two texts are equal, or when at
least :data:`THRESHOLD` of the new step's word :data:`N`-grams occur in that one earlier
step (:func:`overlap`). Steps of fewer than :data:`MIN_WORDS` words (a bare "Yes.") never
count, and the n-gram rule needs at least :data:`MIN_NGRAMS` n-grams in the new step.

What is compared is what the model wrote: the text the protocol fed (the step header, an
opening, a check-in question, a redirect) is not part of it. The engine hands the protocol
the generated text of each finished step (:attr:`hogwild.core.script.Script.step_observer`);
a transcript's steps are cut down to it with :func:`step_body`.

Used twice: the protocol answers a repeat with a redirecting header for the repeating
worker's next step (:class:`hogwild.protocol.team.Protocol`, ``redirect_loops``), and
:mod:`hogwild.analytics` reports the loop rate (:func:`loop_rate`) of a finished run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from . import texts

#: n-gram length (words) of :func:`overlap`
N = 3
#: share of a new step's n-grams found in one earlier step that makes it a repeat
THRESHOLD = 0.7
#: shorter steps are never repeats ("Yes.", "No.", "Agreed.")
MIN_WORDS = 3
#: the n-gram rule needs at least this many n-grams in the new step
MIN_NGRAMS = 4

_WORD = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
_HEADER = re.compile(r"^\s*\*\*[^*\n]{1,80}? \[\d+\]:\*\*")


def words(text: str) -> list[str]:
    """Lower-case words and numbers of ``text`` ("3.5" and "don't" stay one word)."""
    return _WORD.findall(text.lower())


def normalize(text: str) -> str:
    """``text`` as its words joined by single spaces (punctuation and case dropped)."""
    return " ".join(words(text))


def ngrams(tokens: Sequence[str], n: int = N) -> set[tuple[str, ...]]:
    """The distinct word n-grams of ``tokens`` (a text shorter than n has none)."""
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def overlap(new: set, old: set) -> float:
    """The share of ``new``'s n-grams that are also in ``old`` (0 when ``new`` is empty)."""
    return len(new & old) / len(new) if new else 0.0


@lru_cache(maxsize=1)
def _fed_patterns() -> tuple[re.Pattern, ...]:
    """Regexes of every text the protocol feeds after a step header (openings, check-ins,
    redirects, pattern headers), with their ``{fields}`` matching any short name."""
    templates = [
        texts.CHECK_IN_TEXT, texts.CHECK_IN_TEXT_SOLO, texts.REDIRECT_OWN, texts.REDIRECT_OTHER,
        texts.REDIRECT_SOLO, texts.FOLLOW_ASSIGNMENT, texts.CHECK_RESULT, texts.OPENING_SOLO,
        texts.OPENING_LEAD, texts.OPENING_ORCHESTRATOR, texts.OPENING_ORCHESTRATED,
        texts.OPENING_CHECKER, texts.OPENING_SOLVER, *texts.OPENINGS_OTHERS,
    ]
    out = []
    for template in sorted(set(templates), key=len, reverse=True):  # longest first
        parts = re.split(r"(\{\w+\})", template.strip())
        body = "".join(r"[^\n:.]{1,40}?" if re.fullmatch(r"\{\w+\}", p) else re.escape(p) for p in parts)
        out.append(re.compile(r"^\s*" + body))
    return tuple(out)


def step_body(text: str) -> str:
    """What the model wrote in a step of a transcript: the text without its step header
    ("**Bob [4]:**") and without the protocol's fed text that follows it (an opening, a
    check-in question, a redirect), repeatedly, so a check-in after a redirect goes too."""
    body = _HEADER.sub("", text, count=1)
    changed = True
    while changed:
        changed = False
        for pattern in _fed_patterns():
            cut = pattern.sub("", body, count=1)
            if cut != body:
                body, changed = cut, True
                break
    return body.strip()


@dataclass(frozen=True)
class Repeat:
    """A step repeats ``earlier`` (index among the steps seen), written by ``worker``."""

    earlier: int
    worker: int
    share: float  # share of the new step's n-grams in that step (1.0 for equal texts)

    def own(self, worker: int) -> bool:
        return self.worker == worker


@dataclass
class _Seen:
    worker: int
    text: str  # normalized
    grams: set


@dataclass
class RepeatTracker:
    """The steps seen so far; :meth:`add` tells whether a new one repeats one of them.

    ``own_only``: compare a step with its author's earlier steps only (workers that cannot
    see each other, such as independent samples)."""

    own_only: bool = False
    seen: list[_Seen] = field(default_factory=list)

    def check(self, worker: int, text: str) -> Repeat | None:
        """Does ``text`` (what ``worker`` wrote in a step) repeat a step seen so far? The
        most recent such step is reported."""
        ws = words(text)
        if len(ws) < MIN_WORDS:
            return None
        norm, grams = " ".join(ws), ngrams(ws)
        for index in range(len(self.seen) - 1, -1, -1):
            old = self.seen[index]
            if self.own_only and old.worker != worker:
                continue
            if norm == old.text:
                return Repeat(index, old.worker, 1.0)
            if len(grams) >= MIN_NGRAMS:
                share = overlap(grams, old.grams)
                if share >= THRESHOLD:
                    return Repeat(index, old.worker, round(share, 4))
        return None

    def add(self, worker: int, text: str) -> Repeat | None:
        """Check ``text`` and then remember it as a step of ``worker``."""
        found = self.check(worker, text)
        ws = words(text)
        self.seen.append(_Seen(worker, " ".join(ws), ngrams(ws)))
        return found


def repeats(steps: Iterable[tuple[int, str]], own_only: bool = False) -> list[Repeat | None]:
    """For each (worker, text) step in order: the earlier step it repeats, or None."""
    tracker = RepeatTracker(own_only)
    return [tracker.add(worker, text) for worker, text in steps]


def loop_rate(steps: Sequence[tuple[int, str]], own_only: bool = False) -> float | None:
    """The share of steps that repeat an earlier step (None when there are no steps)."""
    if not steps:
        return None
    return sum(r is not None for r in repeats(steps, own_only)) / len(steps)
