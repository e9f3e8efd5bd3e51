"""The step-end rule: when a worker's current step is finished (see :func:`is_step_end`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from ..answers import extract_boxed

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

#: A step ends at a blank line, so only a token containing a newline can end it: the engine
#: decodes a step and asks :func:`is_step_end` only after such a token.
STEP_END_CHARS = "\n"

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


def header_lines(names: Sequence[str]) -> re.Pattern[str]:
    """A line that opens a step of one of ``names`` ("**Bob [4]:** ...", also with the
    spacing and bold marks bent: "** Bob **[4]:") or is a markdown heading about steps (the
    combined view's sections: "### Your own current step", "### Unfinished steps of ...").

    Small models write these inside their own step and go on as another worker (the format
    probe of issue 12: 40 of 58 steps with long steps, 9 of 230 in the product's team;
    docs/results/collaboration/README.md); :func:`is_step_end` ends the step at such a line."""
    return _header_lines(tuple(names))


@lru_cache(maxsize=64)
def _header_lines(names: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(name) for name in names)
    return re.compile(rf"^[\s*_(]*(?:{alternatives})[\s*_]*\[\d+\]|^\s*#{{1,6}}\s.*\bsteps?\b", re.IGNORECASE)


def _header_line_at_end(text: str, headers: re.Pattern[str]) -> bool:
    """Is the last line of ``text`` (not its first: that one continues the fed header) a
    line of ``headers``?"""
    body = text.rstrip()
    cut = body.rfind("\n")
    return cut >= 0 and headers.match(body[cut + 1 :]) is not None


def is_step_end(text: str, list_step_chars: int = LIST_STEP_CHARS, min_chars: int = 0,
                headers: re.Pattern[str] | None = None) -> bool:
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
      safety valve so that long lists still let steps end);
    * a step shorter than ``min_chars`` characters (its text without the trailing blank
      line) does not end: its next paragraph continues it;
    * with ``headers`` (:func:`header_lines`): a line after the first that opens a step or a
      section of the view ends the step as soon as the line is complete, whatever the rules
      above say (a worker writing another step's header is done with its own).

    Decimals need no special case: "3.5" does not end in a period, and "is 3." does end a
    sentence. Only the end of the text is tested, so the engine may call this after every
    token; text not ending in whitespace is rejected at once.
    """
    if not text or text[-1] not in " \t\r\n":
        return False
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if headers is not None and text.endswith("\n") and _header_line_at_end(text, headers):
        return True
    body = text.rstrip()
    if text[len(body):].count("\n") < 2 or not body or len(body) < min_chars:
        return False
    if _open_block(body):
        return False
    paragraph = _BLANK_LINE.split(body)[-1]
    first_line = paragraph.lstrip("\n").split("\n", 1)[0]
    if _LIST_ITEM.match(first_line) and len(body) < list_step_chars:
        return False
    return _ends_sentence(body)
