"""The collaboration protocol: every piece of text the workers read, in one place.

A :class:`Protocol` holds the wording (system prompt, few-shot examples, step headers,
section headers, the "unfinished" marker, check-in question, first-step openings, the
forced-answer suffix) and the step-end rule. :meth:`Protocol.script` renders it through the
model's chat template and tokenizes it into a :class:`hogwild.script.Script`, the only
thing the engine sees.

Texts are tokenized block by block, so each block is written to read well on its own and
when concatenated: every step starts at the beginning of a line and ends with a blank line;
section headers end with a blank line; the unfinished marker starts with a space (it
follows text cut mid-sentence) and ends with a blank line.

Step headers end right after the colon, with no trailing space ("**Bob [4]:**"): with a
trailing space, BPE tokenizers produce a lone " " token and the model would then have to
continue with a space-less word token, which it rarely sees in training. Without it, the
model writes " Let me ..." with its usual tokens. Decoded text reads the same.

The step-end rule (:func:`is_step_end`) is documented on the function.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from hogwild import script as script_mod
from hogwild.answers import answers_equal, extract_boxed
from hogwild.errors import InvalidRequestError
from hogwild.script import Script

__all__ = [
    "DEFAULT_NAMES",
    "LAYOUTS",
    "Protocol",
    "AnswerAgreement",
    "is_step_end",
    "FEW_SHOT_MIN_CONTEXT",
]

DEFAULT_NAMES: tuple[str, ...] = (
    "Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi",
    "Ivan", "Judy", "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil",
)

LAYOUTS = ("combined", "interleaved", "contiguous")

#: few_shot=None (auto) uses the examples only when the model's context is at least this
#: long and the prompt with examples takes at most half of it.
FEW_SHOT_MIN_CONTEXT = 4096

# --------------------------------------------------------------------------- texts
# All wording lives in this section. "{...}" fields are filled by Protocol.

OTHERS_TITLE = "Unfinished steps of the others, still being written"
OWN_TITLE = "Your own current step"
OTHERS_HEADER_TEXT = "### " + OTHERS_TITLE + "\n\n"
OWN_HEADER_TEXT = "### " + OWN_TITLE + "\n\n"
UNFINISHED_TEXT = " ...(unfinished)\n\n"
UNFINISHED_WORD = "(unfinished)"

STEP_HEADER = "**{name} [{step}]:**"
CHECK_IN_TEXT = " Quick check: am I doing redundant work? (yes/no):"
CHECK_IN_TEXT_SOLO = " Quick check: am I repeating earlier work? (yes/no):"

SYSTEM_TEAM = """\
You are one of {count} copies of the same assistant, called {names}. All of you work on the \
same problem at the same time, and every one of you sees what the others write, as they \
write it. The step you are writing now carries your name, so you know which one you are.

Your work is written in steps. A step is one short paragraph: one idea, one calculation or \
one check. It starts with its author's name and step number, like "{example_header}", and \
ends with an empty line.

{view}

How to work together:
- Early on, make a plan and split the work: give each worker a different part, such as a \
sub-question, a case, another method, or checking a result.
- Say what you are about to do before you do it, so that the others can choose something else.
- Read what the others write and react to it: use their results, point out mistakes, answer \
their questions.
- Do not repeat work that someone else is already doing or has done. If you notice that you \
are duplicating someone, say so in one sentence and switch to a part nobody has taken.
- From time to time a step starts with a quick check whether you are doing redundant work. \
Answer it honestly, and change course if the answer is yes.
- Before finishing, agree on one final answer. Write it once, within \\boxed{}."""

VIEW_COMBINED = """\
What you see, from top to bottom:
1. The finished steps of all workers, in the order they were finished.
2. Under "{others_title}": the step each other worker is writing right now. It stops in \
mid-sentence and is marked "{unfinished}". Do not finish it for them; react to it if it helps.
3. Under "{own_title}": the step you are writing now. Continue it from where it stops."""

VIEW_INTERLEAVED = """\
What you see: the finished steps of all workers, in the order they were finished, and then \
the step you are writing now. Continue your step from where it stops. The others' steps \
appear when they finish them."""

VIEW_CONTIGUOUS = """\
What you see: first everything each other worker has written so far, each ending with the \
mark "{unfinished}" because they are still writing; then all of your own work. Continue \
your own work from where it stops."""

VIEW_OTHER = """\
What you see: the steps written so far by all workers; text marked "{unfinished}" is still \
being written. Continue your own step from where it stops."""

SYSTEM_SOLO = """\
You are {me}, solving a problem step by step.

Your work is written in steps. A step is one short paragraph: one idea, one calculation or \
one check. It starts with your name and step number, like "{example_header}", and ends with \
an empty line. You see your finished steps first and then the step you are writing now; \
continue it from where it stops.

From time to time a step starts with a quick check whether you are repeating earlier work. \
Answer it honestly, and change course if the answer is yes. Check your results before you \
finish. Write the final answer once, within \\boxed{}."""

USER_TEXT = "Problem: {problem}"

FEW_SHOT_INTRO = "Two short examples of good teamwork, on other problems:"

# Marks a few-shot step that opens with the check-in question.
CHECK_IN = "<check-in>"

# Each example is a problem and a list of (worker role, step body); roles 0, 1, 2 (written
# {w0}, {w1}, {w2} in the bodies) become the caller's worker names. There are versions for
# two workers and for three or more.
_EXAMPLE_SHOP_PROBLEM = (
    "Pens cost 3 dollars each and notebooks cost 5 dollars each. Mia buys 4 pens and "
    "3 notebooks and pays with 50 dollars. How much change does she get?"
)
_EXAMPLE_SHOP_2 = [
    (0, "Plan: the pens and the notebooks can be priced separately. I take the pens, "
        "{w1} takes the notebooks, then we subtract the total from 50."),
    (1, "Agreed, I take the notebooks: 3 * 5 = 15 dollars."),
    (0, "Pens: 4 * 3 = 12 dollars. With {w1}'s 15 dollars the total is 27 dollars."),
    (1, "Checking {w0}'s total: 12 + 15 = 27, correct. The change is 50 - 27 = 23 dollars."),
    (0, "I agree with {w1}. The final answer is \\boxed{23}."),
]
_EXAMPLE_SHOP_3 = [
    (0, "Plan: the pens and the notebooks can be priced separately. I take the pens, "
        "{w1} takes the notebooks, and {w2} checks both and finds the change."),
    (1, "I take the notebooks: 3 * 5 = 15 dollars."),
    (2, "I will wait for both costs, then check them and subtract from 50."),
    (0, "Pens: 4 * 3 = 12 dollars."),
    (2, "Checking: 4 * 3 = 12 and 3 * 5 = 15, both correct. The total is 27, so the change "
        "is 50 - 27 = 23 dollars."),
    (1, "I agree with {w2}. The final answer is \\boxed{23}."),
]
_EXAMPLE_MOD_PROBLEM = "What is the remainder when 2^10 + 3^5 is divided by 7?"
_EXAMPLE_MOD_2 = [
    (0, "I will find the remainder of 2^10."),
    (1, "I will start with 2^10 = 1024."),
    (1, CHECK_IN + " yes, {w0} is already doing 2^10. I switch to 3^5: 3^5 = 243 = 7 * 34 + 5, "
        "so its remainder is 5."),
    (0, "2^3 = 8 leaves 1, so 2^10 = (2^3)^3 * 2 leaves 2. With {w1}'s 5 the sum leaves "
        "2 + 5 = 7, which leaves remainder 0."),
    (1, "Check: 1024 + 243 = 1267 = 7 * 181, remainder 0. The final answer is \\boxed{0}."),
]
_EXAMPLE_MOD_3 = [
    (0, "I will find the remainder of 2^10."),
    (1, "I will start with 2^10 = 1024."),
    (2, "I take 3^5: 3^5 = 243 = 7 * 34 + 5, so its remainder is 5."),
    (1, CHECK_IN + " yes, {w0} is already doing 2^10. I switch to checking the whole sum "
        "directly: 1024 + 243 = 1267."),
    (0, "2^3 = 8 leaves 1, so 2^10 = (2^3)^3 * 2 leaves 2. With {w2}'s 5 the sum leaves "
        "2 + 5 = 7, which leaves remainder 0."),
    (1, "Check: 1267 = 7 * 181, remainder 0, the same as {w0}'s result. The final answer is "
        "\\boxed{0}."),
]

# First steps. Worker 0 proposes a plan; the others start in different directions.
OPENING_SOLO = "First, let me restate what the problem asks:"
OPENING_LEAD = "Hi, I'm {me}. Here is how I suggest we split the work:"
OPENINGS_OTHERS = (
    "Hi, I'm {me}. While {lead} writes the plan, I will start by",
    "Hi, I'm {me}. I will try a different method from the others, so that we can compare "
    "results. My approach:",
    "Hi, I'm {me}. I will first list the facts the problem gives and what exactly it asks:",
    "Hi, I'm {me}. I will take a part nobody has claimed yet, namely",
    "Hi, I'm {me}. I will check the others' numbers as they appear, starting with",
)

FORCED_ANSWER_TEXT = "Time is up: we must stop here and give one answer now."
FORCED_ANSWER_TEXT_SOLO = "Time is up: I must stop here and give my answer now."
FORCED_ANSWER_LEAD = "The final answer is \\boxed{"

# --------------------------------------------------------------------------- step end

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_BEGIN_ENV = re.compile(r"\\begin\{([^{}]*)\}")
_END_ENV = re.compile(r"\\end\{([^{}]*)\}")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)]|[a-zA-Z][.)])\s+\S")
_LONE_MARKER = re.compile(r"^\s*(?:\d{1,3}|[a-zA-Z]|[ivx]{1,4})[.)]$")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
# "No." is left out on purpose: it is the usual answer to the check-in question.
_ABBREVIATIONS = frozenset({
    "e.g.", "i.e.", "cf.", "vs.", "viz.", "mr.", "mrs.", "ms.", "dr.", "prof.", "st.",
    "approx.", "fig.", "eq.", "resp.", "incl.", "esp.",
})
_SENTENCE_ENDERS = ".!?…"
_TRAILING_CLOSERS = "*_)\"'”’`"

#: A paragraph that is a list item does not end a step (so a list stays in one step) until
#: the step is at least this many characters long.
LIST_STEP_CHARS = 1200


def _open_block(body: str) -> bool:
    """True when ``body`` ends inside a code fence or a display-math block."""
    fence: str | None = None
    dollars = 0
    brackets = 0
    envs = 0
    for line in body.split("\n"):
        m = _FENCE.match(line)
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                    and not line.strip()[len(m.group(1)):].strip():
                fence = None
            continue
        if m:
            fence = m.group(1)
            continue
        plain = line.replace("\\$", "")
        dollars += plain.count("$$")
        brackets += plain.count("\\[") - plain.count("\\]")
        envs += len(_BEGIN_ENV.findall(plain)) - len(_END_ENV.findall(plain))
    return fence is not None or dollars % 2 == 1 or brackets > 0 or envs > 0


def _ends_sentence(body: str) -> bool:
    last_line = body.rsplit("\n", 1)[-1].strip()
    if _LONE_MARKER.match(last_line):          # "1." or "a)" alone: a list marker
        return False
    if last_line.startswith(("```", "~~~")):    # a code fence that just closed
        return True
    if body.endswith(("$$", "\\]")) or _END_ENV.search(last_line) and \
            last_line.startswith("\\end"):      # display math that just closed
        return True
    if last_line.rstrip(_TRAILING_CLOSERS + " .$").endswith("}") and \
            extract_boxed(last_line) is not None:
        return True                             # "... is \boxed{42}"
    text = body.rstrip(_TRAILING_CLOSERS + " ")
    if not text or text[-1] not in _SENTENCE_ENDERS:
        return False
    last_word = text.rsplit(None, 1)[-1].lstrip("(\"'*_").lower()
    if last_word in _ABBREVIATIONS:
        return False
    return True


def is_step_end(text: str, list_step_chars: int = LIST_STEP_CHARS) -> bool:
    """Does the decoded text of a worker's current step end the step?

    A step ends when its text ends with a blank line (two newlines with only spaces or tabs
    between them, in any number of tokens) and the text before that blank line ends a
    sentence. Precisely:

    * a sentence ends with ``.``, ``!``, ``?`` or ``…``, possibly followed by closing
      ``*``, ``_``, ``)``, quotes or backticks ("**done.**", "(see above.)");
    * not a sentence end: a colon (what follows belongs to it: a list, an equation, code),
      a number or formula without a period ("x = 3.5"), an abbreviation ("e.g.", "i.e.",
      "vs.", "Dr."), a lone list marker ("1."), the bare step header ("**Bob [4]:**");
    * also a sentence end: a closed code fence, a closed display-math block (``$$``,
      ``\\]``, ``\\end{...}``) and a line that ends with a ``\\boxed{...}`` answer;
    * never inside an open code fence (``` or ~~~), open ``$$``/``\\[`` display math or an
      open ``\\begin{...}`` environment;
    * a paragraph that starts with a list item ("1. ...", "- ...") does not end the step,
      so a list stays together, unless the step is already ``list_step_chars`` long (a
      safety valve so that long lists still let steps end).

    Decimals need no special case: "3.5" does not end in a period, and "is 3." does end a
    sentence. Only the end of the text is tested, so the engine may call this after every
    token; text not ending in whitespace is rejected at once.
    """
    if not text or text[-1] not in " \t\r\n":
        return False
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    body = text.rstrip()
    if text[len(body):].count("\n") < 2 or not body:
        return False
    if _open_block(body):
        return False
    paragraph = _BLANK_LINE.split(body)[-1]
    first_line = paragraph.lstrip("\n").split("\n", 1)[0]
    if _LIST_ITEM.match(first_line) and len(body) < list_step_chars:
        return False
    return _ends_sentence(body)


# --------------------------------------------------------------------------- protocol

def _fill(template: str, **fields: str) -> str:
    """Replace ``{name}`` fields without str.format, so LaTeX braces need no escaping."""
    return re.sub(r"\{(\w+)\}", lambda m: fields.get(m.group(1), m.group(0)), template)


def _join_names(names: Sequence[str]) -> str:
    names = list(names)
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    return ", ".join(names[:-1]) + f" and {names[-1]}"


_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven",
                 8: "eight", 9: "nine", 10: "ten", 11: "eleven", 12: "twelve"}

_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>",
                "<end_of_turn>", "<|end|>", "</s>", "<|eom_id|>")


@dataclass
class Protocol:
    """The collaboration protocol for ``num_workers`` workers.

    names:          worker names; default :data:`DEFAULT_NAMES` (then "Worker 17", ...).
    check_in_every: a check-in question opens a worker's next step after this many
                    generated tokens, summed over workers (the engine counts); 0 = off.
    few_shot:       None = auto (on when the context is at least FEW_SHOT_MIN_CONTEXT tokens
                    and the prompt with examples takes at most half of it), True = always
                    (a prompt that does not fit is refused), False = never. N=1 has none.
    layout:         the layout the engine will use; only changes how the system prompt
                    describes the view ("combined", "interleaved", "contiguous" or another).
    thinking:       for reasoning models whose template knows a thinking section: None =
                    auto (make sure the assistant turn starts inside an open ``<think>``),
                    True = same, False = leave the template's generation prompt as it is.
    list_step_chars: see :func:`is_step_end`.
    """

    num_workers: int = 2
    names: Sequence[str] | None = None
    check_in_every: int = 1024
    few_shot: bool | None = None
    layout: str = "combined"
    thinking: bool | None = None
    list_step_chars: int = LIST_STEP_CHARS
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
            extra = [f"Worker {i + 1}" for i in range(len(DEFAULT_NAMES), self.num_workers)]
            names = list(DEFAULT_NAMES[: self.num_workers]) + extra
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

    def opening(self, worker: int) -> str:
        """The first step's opening text of ``worker`` (header included)."""
        header = self.step_header(worker, 1)
        me = self.worker_names[worker]
        if self.solo:
            return f"{header} {OPENING_SOLO}"
        if worker == 0:
            return f"{header} {_fill(OPENING_LEAD, me=me)}"
        template = OPENINGS_OTHERS[(worker - 1) % len(OPENINGS_OTHERS)]
        return f"{header} {_fill(template, me=me, lead=self.worker_names[0])}"

    @property
    def constant_texts(self) -> dict[str, str]:
        """Texts of the constant blocks, under the names in :mod:`hogwild.script`."""
        return {
            script_mod.OTHERS_HEADER: OTHERS_HEADER_TEXT,
            script_mod.OWN_HEADER: OWN_HEADER_TEXT,
            script_mod.UNFINISHED: UNFINISHED_TEXT,
        }

    def _view_description(self) -> str:
        template = {"combined": VIEW_COMBINED, "interleaved": VIEW_INTERLEAVED,
                    "contiguous": VIEW_CONTIGUOUS}.get(self.layout, VIEW_OTHER)
        return _fill(template, others_title=OTHERS_TITLE, own_title=OWN_TITLE,
                     unfinished=UNFINISHED_WORD)

    def system_text(self) -> str:
        """The system prompt (shared by all workers, so it names all of them)."""
        example_header = self.step_header(min(1, self.num_workers - 1), 1)
        if self.solo:
            return _fill(SYSTEM_SOLO, me=self.worker_names[0], example_header=example_header)
        count = _NUMBER_WORDS.get(self.num_workers, str(self.num_workers))
        return _fill(SYSTEM_TEAM, count=count, names=_join_names(self.worker_names),
                     example_header=example_header, view=self._view_description())

    def few_shot_text(self) -> str:
        """Worked examples of collaboration, with this protocol's names and headers."""
        if self.solo:
            return ""
        n = self.names_for_examples()
        three = self.num_workers >= 3
        examples = [
            (_EXAMPLE_SHOP_PROBLEM, _EXAMPLE_SHOP_3 if three else _EXAMPLE_SHOP_2),
            (_EXAMPLE_MOD_PROBLEM, _EXAMPLE_MOD_3 if three else _EXAMPLE_MOD_2),
        ]
        parts = [FEW_SHOT_INTRO]
        for index, (problem, steps) in enumerate(examples, 1):
            lines = [f"Example {index}. Problem: {problem}"]
            counts: dict[int, int] = {}
            for role, body in steps:
                counts[role] = counts.get(role, 0) + 1
                # A body starting with CHECK_IN shows a check-in exactly as workers see it.
                check_in = body.startswith(CHECK_IN)
                if check_in:
                    body = body[len(CHECK_IN):]
                filled = _fill(body, **{f"w{i}": name for i, name in enumerate(n)})
                header = self.step_header(role, counts[role], check_in=check_in)
                lines.append(f"{header}{filled}" if check_in else f"{header} {filled}")
            parts.append("\n\n".join(lines))
        return "\n\n".join(parts)

    def names_for_examples(self) -> list[str]:
        return self.worker_names[: min(3, self.num_workers)]

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
        """
        _check_problem(problem)
        encode = _encoder(tokenizer)
        constants = {name: encode(text) for name, text in self.constant_texts.items()}
        openings = [encode(self.opening(w)) for w in range(self.num_workers)]
        # The smallest view a worker can have at the start: the prompt, the section
        # headers and every worker's opening with its unfinished marker.
        start_view = (sum(len(ids) for ids in constants.values())
                      + sum(len(ids) + len(constants[script_mod.UNFINISHED]) for ids in openings))

        def prompt_for(with_examples: bool) -> list[int]:
            text = self.render_prompt(problem, tokenizer, with_examples)
            return _with_bos(tokenizer, encode(text))

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
            raise InvalidRequestError(
                f"The prompt is {len(prompt_ids)} tokens long ({needed} with the workers' "
                f"first lines), but the model's context length is {context_length} tokens. "
                f"Shorten the problem, use fewer workers, or use a model with a longer context.")

        names = self.worker_names

        @lru_cache(maxsize=None)
        def header_ids(worker: int, step: int, check_in: bool = False) -> tuple[int, ...]:
            if not 0 <= worker < len(names):
                raise IndexError(f"worker {worker} out of range (0..{len(names) - 1})")
            return tuple(encode(self.step_header(worker, step, bool(check_in))))

        limit = self.list_step_chars

        def step_end(text: str) -> bool:
            return is_step_end(text, limit)

        return Script(
            prompt_ids=prompt_ids,
            opening_ids=openings,
            header_ids=header_ids,
            constants=constants,
            is_step_end=step_end,
            check_in_every=self.check_in_every,
            stop_ids=stop_ids(tokenizer),
        )

    def is_step_end(self, text: str) -> bool:
        return is_step_end(text, self.list_step_chars)

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
        suffix = FORCED_ANSWER_TEXT_SOLO if self.solo else FORCED_ANSWER_TEXT
        if _thinking_open(transcript):
            suffix += "\n</think>"
        suffix += "\n\n" + FORCED_ANSWER_LEAD
        if not transcript.endswith("\n"):
            transcript += "\n\n"
        return transcript + suffix


def _as_paragraph(text: str) -> str:
    """A step text that ends with exactly one blank line."""
    return text.rstrip() + "\n\n"


def _thinking_open(text: str) -> bool:
    start = text.rfind("<think>")
    return start >= 0 and text.find("</think>", start) < 0


def _check_problem(problem: Any) -> None:
    if not isinstance(problem, str) or not problem.strip():
        raise InvalidRequestError(
            "The problem is empty. Give the text of the problem to solve.")


# --------------------------------------------------------------------------- tokenizer glue

def _encoder(tokenizer: Any) -> Callable[[str], list[int]]:
    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))
    return encode


def _with_bos(tokenizer: Any, ids: list[int]) -> list[int]:
    """Prepend BOS when the tokenizer normally adds one and the template did not."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None or (ids and ids[0] == bos):
        return ids
    try:
        probe = list(tokenizer.encode("a", add_special_tokens=True))
    except Exception:  # noqa: BLE001 - a minimal tokenizer without this option
        return ids
    if probe and probe[0] == bos:
        return [bos] + ids
    return ids


def stop_ids(tokenizer: Any) -> list[int]:
    """Token ids that end a worker: EOS and the usual end-of-turn tokens of the vocab."""
    found: list[int] = []
    eos = getattr(tokenizer, "eos_token_id", None)
    for value in (eos if isinstance(eos, (list, tuple)) else [eos]):
        if isinstance(value, int) and value not in found:
            found.append(value)
    try:
        vocab = tokenizer.get_vocab()
    except Exception:  # noqa: BLE001
        vocab = {}
    for token in _STOP_TOKENS:
        idx = vocab.get(token)
        if isinstance(idx, int) and idx not in found:
            found.append(idx)
    return found


def _template_text(tokenizer: Any) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        return " ".join(str(t) for t in template.values())
    return template or ""


def render_chat(tokenizer: Any, system: str, user: str, thinking: bool | None = None) -> str:
    """Render a system + user turn with the tokenizer's chat template, opening the
    assistant's turn.

    * Templates that reject a system role, or silently drop it, get the system text at the
      top of the user turn.
    * Tokenizers without a chat template get a plain-text layout.
    * Reasoning templates (they mention ``<think>``): unless ``thinking`` is False, the
      assistant turn is made to start inside an open ``<think>`` section, since the
      workers' steps are the model's reasoning. Templates with an ``enable_thinking``
      switch get it set accordingly.
    The result always ends with whitespace, so the first step header starts a line.
    """
    template = _template_text(tokenizer)
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
    if "enable_thinking" in template:
        kwargs["enable_thinking"] = thinking is not False
    probe = system.strip()[:200]
    text: str | None = None
    if template:
        try:
            rendered = tokenizer.apply_chat_template(
                [{"role": "system", "content": system}, {"role": "user", "content": user}],
                **kwargs)
            if isinstance(rendered, str) and probe in rendered:
                text = rendered
        except Exception:  # noqa: BLE001 - templates raise all kinds of errors
            text = None
        if text is None:
            try:
                rendered = tokenizer.apply_chat_template(
                    [{"role": "user", "content": system + "\n\n" + user}], **kwargs)
                if isinstance(rendered, str):
                    text = rendered
            except Exception:  # noqa: BLE001
                text = None
    if text is None:
        text = f"{system}\n\n{user}\n\nSolution:\n"
    if "<think>" in template and thinking is not False and not _thinking_open(text):
        if not text.endswith("\n"):
            text += "\n"
        text += "<think>\n"
    if not text[-1:].isspace():
        text += "\n"
    return text


# --------------------------------------------------------------------------- stopping

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
