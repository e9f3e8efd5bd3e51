"""The one box scanner: find ``\\boxed{...}`` answers in generated text.

Braces are matched properly (``\\boxed{\\frac{1}{2}}`` works; escaped braces do not
count); an unclosed box and empty or placeholder boxes (``\\boxed{}``, ``\\boxed{...}``) are
skipped. Every reader of boxes (stop rules, bundles, forced answers, the step-end rule, the
terminal view) goes through these functions.
"""

from __future__ import annotations

import re

_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")

# Box contents that are not answers: a model copying the format instruction, or a
# box it has not filled in.
_PLACEHOLDERS = {
    "", "...", "…", r"\ldots", r"\dots", r"\cdots", "?", "answer", "your answer",
    "final answer", r"\text{answer}", r"\text{your answer}", "x", r"\cdot",
}


def closing_brace(text: str, start: int) -> int | None:
    """Index of the ``}`` that closes the ``{`` just before ``start``; None if unbalanced.

    Escaped braces (``\\{``, ``\\}``) do not count; ``\\\\`` is an escaped backslash.
    """
    depth = 1
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _is_answer_content(content: str) -> bool:
    stripped = content.strip()
    if stripped.lower() in _PLACEHOLDERS:
        return False
    # Content made only of dots/spaces ("...", ". . .") is a placeholder too.
    return bool(stripped.strip(". …"))


def extract_boxed(text: str | None) -> str | None:
    """Content of the last well-formed ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``.

    Scans boxes from the end; a box whose braces never close, or whose content is empty or
    a placeholder, is skipped and the previous one is tried. Returns the content stripped
    of surrounding whitespace, or None when there is no usable box.
    """
    if not text:
        return None
    starts = [m.end() for m in _BOX_START.finditer(text)]
    for start in reversed(starts):
        end = closing_brace(text, start)
        if end is None:
            continue
        content = text[start:end]
        if _is_answer_content(content):
            return content.strip()
    return None


def all_boxes(text: str) -> list[str]:
    """Contents of every well-formed, non-placeholder box, in order of their start.

    A box nested in another is read on its own too (the outer box yields its last inner
    answer, as :func:`extract_boxed` reads it)."""
    out = []
    for m in _BOX_START.finditer(text):
        end = closing_brace(text, m.end())
        content = extract_boxed(text[m.start() : end + 1]) if end is not None else None
        if content is not None:
            out.append(content)
    return out


def may_close_box(token_text: str) -> bool:
    """Can a token with this text close a box? (A cheap test before scanning a text.)"""
    return "}" in token_text


def open_box_answer(continuation: str) -> tuple[str | None, int | None]:
    """Read an answer written after an already open ``\\boxed{`` (a forced answer).

    Returns (the answer, or None if the content is empty or a placeholder; the index of the
    closing brace in ``continuation``, or None while the box is open). Text after the
    closing brace is ignored; an open box is read as if it closed at the end."""
    end = closing_brace(continuation, 0)
    content = continuation if end is None else continuation[:end]
    return extract_boxed("\\boxed{" + content + "}"), end
