"""The collaboration protocol of N named workers: prompt, openings, headers, forced answer.

:meth:`Protocol.script` renders the wording of :mod:`.texts` through the model's chat
template and tokenizes it into a :class:`hogwild.core.script.Script`, the only thing the
engine sees.

Two rules look at the finished steps while a run goes on (the Script's ``step_observer``,
one per run): a worker whose step repeats an earlier step (:mod:`.loops`) opens its next
step with a redirect instead of the bare header; and in the ``verified`` pattern, the
checker's next step after a solver's boxed result opens with "... I check it".

Patterns (``pattern``): ``team`` (everyone plans and splits the work), ``orchestrated``
(the first worker writes an assignment, one line per worker, and the others follow it;
their second step opens with "my part, as Alice assigned it") and ``verified`` (the last
worker checks the others' results and alone writes the final answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from ..core import layouts
from ..core.script import Script
from ..errors import ContextLengthError, InvalidRequestError
from .chat import encoder, prefix_ends, render_chat, stop_ids, thinking_open, with_bos
from .examples import DEFAULT_FEW_SHOT, FEW_SHOT_MIN_CONTEXT, few_shot_examples
from .loops import Repeat
from .observer import step_observer
from .step_end import LIST_STEP_CHARS, STEP_END_CHARS, header_lines, is_step_end
from .texts import (
    CHECK_IN_TEXT, CHECK_RESULT, CHECK_IN_TEXT_SOLO, FOLLOW_ASSIGNMENT, FORCED_ANSWER_LEAD,
    FORCED_ANSWER_TEXT, FORCED_ANSWER_TEXT_SOLO, FORCED_ANSWER_TEXT_VERIFIED,
    OPENINGS_OTHERS, OPENING_CHECKER, OPENING_LEAD, OPENING_ORCHESTRATED,
    OPENING_ORCHESTRATOR, OPENING_SOLO, OPENING_SOLVER, OTHERS_HEADER_TEXT, OTHERS_TITLE,
    OWN_HEADER_TEXT, OWN_TITLE, PATTERN_ORCHESTRATED, PATTERN_VERIFIED, REDIRECT_OTHER,
    REDIRECT_OWN, REDIRECT_SOLO, STEP_HEADER, SYSTEM_SOLO, SYSTEM_TEAM, UNFINISHED_TEXT,
    UNFINISHED_WORD, USER_TEXT, VIEW_DESCRIPTIONS, VIEW_OTHER, default_names, fill, number_words,
    join_names,
)

#: The default of :attr:`Protocol.no_repeat_ngram` (and of every setting that feeds it).
DEFAULT_NO_REPEAT_NGRAM = 10

#: The collaboration patterns (:attr:`Protocol.pattern`).
PATTERNS = ("team", "orchestrated", "verified")


@dataclass
class Protocol:
    """The collaboration protocol for ``num_workers`` workers.

    names:          worker names; default :data:`DEFAULT_NAMES` (then "Worker 17", ...),
                    skipping the names a problem mentions (:meth:`for_problem`).
    check_in_every: a check-in question opens a worker's next step after this many
                    generated tokens, summed over workers (the engine counts); 0 = off.
    few_shot:       False = never (default, :data:`DEFAULT_FEW_SHOT`), None = auto (on when
                    the context is at least FEW_SHOT_MIN_CONTEXT tokens and the prompt with
                    examples takes at most half of it), True = always (a prompt that does
                    not fit is refused). N=1 has none.
    layout:         the layout the engine will use; only changes how the system prompt
                    describes the view ("combined", "interleaved", "contiguous" or another).
    thinking:       for reasoning models whose template knows a thinking section: None =
                    auto (make sure the assistant turn starts inside an open ``<think>``),
                    True = same, False = leave the template's generation prompt as it is.
    list_step_chars: see :func:`is_step_end`.
    min_step_chars: a step ends only once the worker has written at least this many
                    characters in it (:func:`is_step_end`'s ``min_chars``), so a step holds
                    work, not only an announcement of it; 0 = any length.
    no_repeat_ngram: n > 0: no worker writes an n-gram of tokens already written in a step
                    of the run (:mod:`hogwild.core.repeats`: breaks copy loops where they
                    happen); 0 = off.
    pattern:        "team" (default), "orchestrated" or "verified" (module docstring); the
                    last two need at least two workers.
    redirect_loops: open the next step of a worker whose step repeated an earlier step
                    (:mod:`hogwild.protocol.loops`) with a redirect instead of the bare header.
    """

    num_workers: int = 2
    names: Sequence[str] | None = None
    check_in_every: int = 1024
    few_shot: bool | None = DEFAULT_FEW_SHOT
    layout: str = "combined"
    thinking: bool | None = None
    list_step_chars: int = LIST_STEP_CHARS
    min_step_chars: int = 0
    no_repeat_ngram: int = DEFAULT_NO_REPEAT_NGRAM
    pattern: str = "team"
    redirect_loops: bool = True
    worker_names: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.num_workers, int) or self.num_workers < 1:
            raise InvalidRequestError(
                f"The number of workers must be at least 1, got {self.num_workers!r}.")
        if self.check_in_every is None or self.check_in_every < 0:
            raise InvalidRequestError(
                f"check_in_every must be 0 (off) or a positive number of tokens, "
                f"got {self.check_in_every!r}.")
        if self.names is None:
            names = default_names(self.num_workers)
        else:
            names = [str(n).strip() for n in self.names]
            if len(names) < self.num_workers:
                raise InvalidRequestError(
                    f"{self.num_workers} workers need {self.num_workers} names, "
                    f"got {len(names)}: {', '.join(names) or '(none)'}.")
            names = names[: self.num_workers]
            if any(not n for n in names):
                raise InvalidRequestError("Worker names must not be empty.")
            if len(set(names)) != len(names):
                raise InvalidRequestError(f"Worker names must differ: {', '.join(names)}.")
        self.worker_names = names
        if self.no_repeat_ngram is None or self.no_repeat_ngram < 0 or self.no_repeat_ngram == 1:
            raise InvalidRequestError(
                f"no_repeat_ngram must be 0 (off) or an n-gram length of at least 2, got {self.no_repeat_ngram!r}.")
        if self.pattern not in PATTERNS:
            raise InvalidRequestError(
                f"Unknown collaboration pattern {self.pattern!r}; use {', '.join(PATTERNS)}.")
        if self.pattern != "team" and self.num_workers < 2:
            raise InvalidRequestError(
                f"The {self.pattern} pattern needs at least two workers, got {self.num_workers}.")

    def for_problem(self, problem: str) -> Protocol:
        """This protocol for ``problem``: with default names, the workers take the first
        names of :data:`DEFAULT_NAMES` that the problem does not mention. A worker called Bob
        reads "Bob has twice as many apples as Alice" as a statement about itself and
        computes from there (the demo's transcripts on Qwen2.5-Coder-1.5B: "Hi, I'm Bob. I
        have twice as many apples as Alice"). Names given explicitly are kept as they are."""
        if self.names is not None:
            return self
        names = default_names(self.num_workers, problem)
        return self if names == self.worker_names else replace(self, names=names)

    # ------------------------------------------------------------------ texts

    @property
    def solo(self) -> bool:
        return self.num_workers == 1

    def step_header(self, worker: int, step: int, check_in: bool = False) -> str:
        """The text that opens step ``step`` (1-based) of ``worker``, e.g. "**Bob [4]:**"."""
        text = STEP_HEADER.format(name=self.worker_names[worker], step=step)
        if check_in:
            text += CHECK_IN_TEXT_SOLO if self.solo else CHECK_IN_TEXT
        return text

    @property
    def checker(self) -> int | None:
        """The worker who checks the others' results (the ``verified`` pattern: the last)."""
        return self.num_workers - 1 if self.pattern == "verified" else None

    def header_text(self, worker: int, step: int, check_in: bool = False) -> str:
        """The text that opens a later step in a run: the step header, with the check-in
        question or, in the ``orchestrated`` pattern, the "my part" line of step 2."""
        text = self.step_header(worker, step, check_in)
        if self.pattern == "orchestrated" and worker != 0 and step == 2 and not check_in:
            text += fill(FOLLOW_ASSIGNMENT, lead=self.worker_names[0])
        return text

    def redirect_header(self, worker: int, step: int, repeat: Repeat) -> str:
        """The header of ``worker``'s next step after it repeated an earlier step."""
        text = self.step_header(worker, step)
        if self.solo:
            return text + REDIRECT_SOLO
        if repeat.own(worker):
            return text + REDIRECT_OWN
        return text + fill(REDIRECT_OTHER, other=self.worker_names[repeat.worker])

    def check_header(self, step: int, solver: int) -> str:
        """The header of the checker's next step after ``solver`` stated a boxed result."""
        assert self.checker is not None
        return self.step_header(self.checker, step) + fill(CHECK_RESULT, solver=self.worker_names[solver])

    def opening(self, worker: int) -> str:
        """The first step's opening text of ``worker`` (header included)."""
        header = self.step_header(worker, 1)
        me, lead = self.worker_names[worker], self.worker_names[0]
        if self.solo:
            return f"{header} {OPENING_SOLO}"
        if self.pattern == "orchestrated":
            template = OPENING_ORCHESTRATOR if worker == 0 else OPENING_ORCHESTRATED
            return f"{header} {fill(template, me=me, lead=lead)}"
        if self.pattern == "verified":
            checker = self.worker_names[-1]
            if worker == self.checker:
                return f"{header} {fill(OPENING_CHECKER, me=me)}"
            if self.num_workers == 2:  # the only solver
                return f"{header} {fill(OPENING_SOLVER, me=me, checker=checker)}"
        if worker == 0:
            return f"{header} {fill(OPENING_LEAD, me=me)}"
        template = OPENINGS_OTHERS[(worker - 1) % len(OPENINGS_OTHERS)]
        return f"{header} {fill(template, me=me, lead=lead)}"

    @property
    def constant_texts(self) -> dict[str, str]:
        """Texts of the constant blocks, under the names in :mod:`hogwild.core.layouts`."""
        return {
            layouts.OTHERS_HEADER: OTHERS_HEADER_TEXT,
            layouts.OWN_HEADER: OWN_HEADER_TEXT,
            layouts.UNFINISHED: UNFINISHED_TEXT,
        }

    def _view_description(self) -> str:
        template = VIEW_DESCRIPTIONS.get(self.layout, VIEW_OTHER)
        return fill(template, others_title=OTHERS_TITLE, own_title=OWN_TITLE,
                     unfinished=UNFINISHED_WORD)

    def system_text(self) -> str:
        """The system prompt (shared by all workers, so it names all of them)."""
        if self.solo:
            return fill(SYSTEM_SOLO, me=self.worker_names[0])
        count = number_words(self.num_workers)
        text = fill(SYSTEM_TEAM, count=count, names=join_names(self.worker_names),
                    view=self._view_description())
        if self.pattern == "orchestrated":
            text += "\n\n" + fill(PATTERN_ORCHESTRATED, lead=self.worker_names[0])
        elif self.pattern == "verified":
            text += "\n\n" + fill(PATTERN_VERIFIED, checker=self.worker_names[-1],
                                   solvers=join_names(self.worker_names[:-1]))
        return text

    def few_shot_text(self) -> str:
        """Worked examples of collaboration, with this protocol's names and headers."""
        return "" if self.solo else few_shot_examples(self.worker_names, self.step_header)

    def user_text(self, problem: str) -> str:
        return USER_TEXT.replace("{problem}", problem.strip())

    # ------------------------------------------------------------------ rendering

    def render_prompt(self, problem: str, tokenizer: Any, few_shot: bool | None = None) -> str:
        """The shared prompt as text: chat template, system text, examples, problem.

        ``few_shot`` overrides the protocol's setting (None: use the examples unless the
        protocol's ``few_shot`` is False).
        """
        _check_problem(problem)
        use_examples = (self.few_shot is not False) if few_shot is None else few_shot
        system = self.system_text()
        if use_examples and not self.solo:
            system = system + "\n\n" + self.few_shot_text()
        return render_chat(tokenizer, system, self.user_text(problem), thinking=self.thinking)

    def script(self, problem: str, tokenizer: Any, context_length: int) -> Script:
        """Render and tokenize everything the engine needs for ``problem``.

        Raises InvalidRequestError for an empty problem or a prompt that does not fit in
        ``context_length`` tokens (with few_shot auto, the examples are dropped first).
        With default names, call it on :meth:`for_problem`'s protocol (whose names the
        transcript then carries); this one renders with its own names as they are.
        """
        _check_problem(problem)
        encode = encoder(tokenizer)
        constants = {name: encode(text) for name, text in self.constant_texts.items()}
        openings = [encode(self.opening(w)) for w in range(self.num_workers)]
        # The smallest view a worker can have at the start: the prompt, the section
        # headers and every worker's opening with its unfinished marker.
        start_view = (sum(len(ids) for ids in constants.values())
                      + sum(len(ids) + len(constants[layouts.UNFINISHED]) for ids in openings))

        texts: dict[int, str] = {}  # id(prompt ids) -> its text

        def prompt_for(with_examples: bool) -> list[int]:
            text = self.render_prompt(problem, tokenizer, with_examples)
            ids = with_bos(tokenizer, encode(text))
            texts[id(ids)] = text
            return ids

        if self.solo or self.few_shot is False:
            prompt_ids = prompt_for(False)
        elif self.few_shot is True:
            prompt_ids = prompt_for(True)
        else:  # auto: examples only when the context is large and they leave room to work
            prompt_ids = []
            if context_length >= FEW_SHOT_MIN_CONTEXT:
                prompt_ids = prompt_for(True)
                if len(prompt_ids) + start_view > context_length // 2:
                    prompt_ids = []
            prompt_ids = prompt_ids or prompt_for(False)
        needed = len(prompt_ids) + start_view
        if needed > context_length:
            raise ContextLengthError(
                f"The prompt is {len(prompt_ids)} tokens long ({needed} with the workers' "
                f"first lines), but the model's context length is {context_length} tokens. "
                f"Shorten the problem, use fewer workers, or use a model with a longer context.")

        names = self.worker_names

        @lru_cache(maxsize=None)
        def header_ids(worker: int, step: int, check_in: bool = False) -> tuple[int, ...]:
            if not 0 <= worker < len(names):
                raise IndexError(f"worker {worker} out of range (0..{len(names) - 1})")
            return tuple(encode(self.header_text(worker, step, bool(check_in))))

        limit, least, headers = self.list_step_chars, self.min_step_chars, header_lines(names)

        def step_end(text: str) -> bool:
            return is_step_end(text, limit, least, headers)

        prompt_text = texts[id(prompt_ids)]
        thinking = thinking_open(prompt_text)

        def forced_suffix(ends_newline: bool) -> list[int]:
            return encode(self.forced_suffix_text(ends_newline, thinking))

        return Script(
            prompt_ids=prompt_ids,
            opening_ids=openings,
            header_ids=header_ids,
            constants=constants,
            is_step_end=step_end,
            step_end_chars=STEP_END_CHARS,
            shared_prefix=prefix_ends(tokenizer, prompt_text, prompt_ids, self.user_text(problem)),
            forced_suffix=forced_suffix,
            forced_marker=layouts.UNFINISHED,
            check_in_every=self.check_in_every,
            stop_ids=stop_ids(tokenizer),
            step_observer=step_observer(self, encode),
            no_repeat_ngram=self.no_repeat_ngram,
        )

    def is_step_end(self, text: str) -> bool:
        return is_step_end(text, self.list_step_chars, self.min_step_chars, header_lines(self.worker_names))

    # ------------------------------------------------------------------ forced answer

    def forced_answer_text(self, prompt_text: str, history: Sequence[tuple[int, str]],
                           unfinished: Sequence[tuple[int, str]]) -> str:
        """Transcript plus a suffix that makes the model write its final answer.

        ``history``: finished steps in completion order, ``unfinished``: the workers'
        current steps, each as (worker, step text including its header). Unfinished steps
        are closed by the unfinished marker. The text ends with "\\boxed{": decode a few
        tokens greedily and read the answer up to the matching "}". If the prompt opened a
        thinking section that is still open, the suffix closes it first.
        """
        parts = [prompt_text]
        for _worker, text in history:
            if not text.strip():
                continue
            parts.append(_as_paragraph(text))
        for _worker, text in unfinished:
            if not text.strip():
                continue
            parts.append(text.rstrip() + UNFINISHED_TEXT)
        transcript = "".join(parts)
        return transcript + self.forced_suffix_text(transcript.endswith("\n"), thinking_open(transcript))

    def forced_suffix_text(self, ends_newline: bool, thinking: bool) -> str:
        """What follows the transcript in a forced answer: "time is up", the open thinking
        section closed, and the answer lead ending inside an open box."""
        suffix = "" if ends_newline else "\n\n"
        if self.checker is not None:
            suffix += fill(FORCED_ANSWER_TEXT_VERIFIED, checker=self.worker_names[self.checker])
        else:
            suffix += FORCED_ANSWER_TEXT_SOLO if self.solo else FORCED_ANSWER_TEXT
        if thinking:
            suffix += "\n</think>"
        return suffix + "\n\n" + FORCED_ANSWER_LEAD


def _as_paragraph(text: str) -> str:
    """A step text that ends with exactly one blank line."""
    return text.rstrip() + "\n\n"


def _check_problem(problem: Any) -> None:
    if not isinstance(problem, str) or not problem.strip():
        raise InvalidRequestError(
            "The problem is empty. Give the text of the problem to solve.")
