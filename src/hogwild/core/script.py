"""Everything the engine needs from a protocol, as token ids and two small rules.

The protocol (``hogwild.protocol``) renders text and tokenizes it into a :class:`Script`; the
engine only ever sees this object, so prompt wording, the step-end rule and the check-in
policy can change without touching the engine, and researchers can drive the engine from
explicit ids (see ``docs/low-level-api.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


def never_ends_step(step_text: str) -> bool:
    return False


@dataclass
class Script:
    """Token ids for one collaborative run.

    prompt_ids:   the shared prompt (chat template, system text, problem), stored once.
    opening_ids:  per worker, the tokens its first step starts with (e.g. "**Alice [1]:** ").
    header_ids:   (worker, step number starting at 1, check_in) -> ids that open a later step.
    constants:    named constant blocks used by layouts (section headers, "unfinished" marker;
                  names in :mod:`hogwild.core.layouts`); each is stored once and may appear in
                  many views at many positions.
    is_step_end:  decoded text of a worker's current step (generated part) -> True when the
                  step is finished.
    step_end_chars: a step can only end on a token whose text contains one of these
                  characters; the engine decodes the step and asks ``is_step_end`` only then.
    check_in_every: a check-in is attached to the next step header after this many generated
                  tokens (summed over workers); 0 turns check-ins off (:meth:`check_in_due`).
    stop_ids:     token ids that end a worker (end of sequence / end of turn).
    shared_prefix: how many leading prompt tokens other runs are likely to share (the system
                  text and examples), or several increasing counts (then also the whole
                  problem): each part is stored as a read-only block the batch can cache and
                  reuse; 0 = none.
    forced_suffix: (the transcript ends with a newline) -> ids of the forced-answer text that
                  follows it, ending inside an open box; None = no forced answers.
    forced_marker: the constant block that closes each unfinished step in a forced answer's
                  view of the team's transcript (None: nothing closes them).
    step_observer: None, or a factory called once per run; what it returns is called with
                  ``(worker, number of its next step, generated text of the step it just
                  finished)`` for every finished step, in completion order (a worker's last
                  step too), and returns the ids that open that worker's next step in place
                  of ``header_ids`` (e.g. a redirect after a repeated step), or None for the
                  usual header. A protocol keeps per-run state (the steps seen so far) in
                  the object the factory makes.
    no_repeat_ngram: n > 0: a worker never writes a token that completes an n-gram of token
                  ids already in a step of the run (:class:`hogwild.core.repeats.NgramBan`,
                  against copy loops); 0 = off.
    """

    prompt_ids: Sequence[int]
    opening_ids: Sequence[Sequence[int]]
    header_ids: Callable[[int, int, bool], Sequence[int]] = lambda worker, step, check_in: ()
    constants: dict[str, Sequence[int]] = field(default_factory=dict)
    is_step_end: Callable[[str], bool] = never_ends_step
    step_end_chars: str = "\n"
    check_in_every: int = 0
    stop_ids: Sequence[int] = ()
    shared_prefix: int | Sequence[int] = 0
    forced_suffix: Callable[[bool], Sequence[int]] | None = None
    forced_marker: str | None = None
    step_observer: Callable[[], Callable[[int, int, str], Sequence[int] | None]] | None = None
    no_repeat_ngram: int = 0

    @property
    def num_workers(self) -> int:
        return len(self.opening_ids)

    def may_end_step(self, token_text: str) -> bool:
        """Can the token just written end a step? (A cheap test before decoding the step.)"""
        return any(ch in token_text for ch in self.step_end_chars)

    def check_in_due(self, tokens_since_last: int) -> bool:
        """Should the next step header carry a check-in, after this many generated tokens
        (all workers) since the last one?"""
        return self.check_in_every > 0 and tokens_since_last >= self.check_in_every
