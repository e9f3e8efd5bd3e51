"""Do two answers agree? (:func:`answers_equal`, :func:`normalize_answer`, :func:`parse_number`).

* :func:`answers_equal` compares two answers with ``math-verify`` (so ``0.5`` equals
  ``\\frac{1}{2}`` and ``x^2+2x`` equals ``2x+x^2``), and falls back to a plain-number
  comparison (units, thousands separators, ``$`` and ``%`` stripped). It never raises.
* :func:`normalize_answer` gives a short canonical string for display and as a key for
  voting (equal keys imply equal answers; the converse needs :func:`answers_equal`).
"""

from __future__ import annotations

import ast
import logging
import math
import operator
import re
import threading
from functools import lru_cache

from .boxes import extract_boxed

# Longest answer we hand to math-verify: sympy can take a very long time on big inputs,
# and outside the main thread we cannot interrupt it.
_MAX_VERIFY_CHARS = 400

_TEXT_COMMANDS = re.compile(
    r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|°")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_FRAC = re.compile(
    r"^([-+]?)\\[dt]?frac\s*\{\s*([-+]?\d+(?:\.\d+)?)\s*\}\s*\{\s*([-+]?\d+(?:\.\d+)?)\s*\}$")
_SLASH = re.compile(r"^([-+]?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)$")
# "12 cm", "3.5 hours", "20 km/h": a number, whitespace, then a word-like unit. No space
# ("2x") is not a unit: that is algebra.
_UNIT_TAIL = re.compile(r"^([-+0-9.,]*\d)\s+[a-zA-Z][a-zA-Z./²³^0-9 ]*$")
_LHS = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?=[^=])")
_ARITHMETIC = re.compile(r"^[-+*/()0-9. ]+$")
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _arithmetic_value(expr: str) -> float | None:
    """The value of a plain arithmetic expression (numbers, + - * / and parentheses), else None."""
    expr = expr.replace("\\times", "*").replace("\\cdot", "*").replace("×", "*").replace("\\div", "/")
    expr = expr.replace("÷", "/").replace(",", "")
    if not _ARITHMETIC.match(expr):
        return None

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = value(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        raise ValueError("not arithmetic")

    try:
        return value(ast.parse(expr.strip(), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


def _worked_result(s: str) -> str:
    """``20 + 18 = 38`` -> ``38``: a boxed calculation counts as its result when every side
    is plain arithmetic with the same value (so ``20 + 18 = 40`` stays as it is, and wrong)."""
    if "=" not in s:
        return s
    sides = [side.strip() for side in s.split("=")]
    values = [_arithmetic_value(side) for side in sides]
    if len(sides) < 2 or any(v is None for v in values):
        return s
    if all(math.isclose(v, values[-1], rel_tol=1e-9, abs_tol=1e-9) for v in values):
        return sides[-1]
    return s


def _basic_clean(s: str) -> str:
    """Strip LaTeX decoration that never changes the value of a short answer."""
    s = s.strip()
    boxed = extract_boxed(s)
    if boxed is not None and s.lstrip("$ ").startswith(("\\boxed", "\\fbox")):
        s = boxed
    s = s.strip().strip("$").strip()
    s = s.replace("\\$", "").replace("\\%", "%").replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _DEGREES.sub("", s)
    for _ in range(3):  # nested \text{\textbf{..}}
        s2 = _TEXT_COMMANDS.sub(r"\1", s)
        if s2 == s:
            break
        s = s2
    s = _SPACING.sub(" ", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = _LHS.sub("", s)
    return _worked_result(s.rstrip(" ."))


def parse_number(s: str | None) -> float | None:
    """The value of an answer that is a plain number, else None.

    Accepts ``1,234.5``, ``$12``, ``45%`` (as 45), ``12 cm``, ``3.5 hours``, ``-7``,
    ``\\frac{3}{4}``, ``3/4``, ``1e-3``. Anything with more structure returns None.
    """
    if s is None:
        return None
    t = _basic_clean(s)
    t = t.replace("$", "").replace("%", "").strip()
    frac = _FRAC.match(t) or _SLASH.match(t)
    if frac:
        groups = frac.groups()
        sign = -1.0 if groups[0] == "-" else 1.0
        if len(groups) == 3:
            num, den = float(groups[1]), float(groups[2])
        else:
            num, den = float(groups[0]), float(groups[1])
            sign = 1.0
        return None if den == 0 else sign * num / den
    unit = _UNIT_TAIL.match(t)
    if unit and not _NUMBER.fullmatch(t):
        t = unit.group(1).strip()
    if _THOUSANDS.match(t):
        t = t.replace(",", "")
    if _NUMBER.fullmatch(t):
        try:
            value = float(t)
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    return None


def _format_number(x: float) -> str:
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.10g}"


def normalize_answer(s: str | None) -> str:
    """Canonical short form of an answer, for display and as a voting key.

    Numbers become a canonical decimal (``"1,200"``, ``"1200.0"`` and ``"$1200"`` all give
    ``"1200"``; ``"\\frac{1}{2}"`` and ``"0.5"`` give ``"0.5"``). Other answers lose
    ``$``, ``\\text{}``, ``\\left``/``\\right``, spacing commands and a leading ``x =``;
    plain words are lower-cased; all whitespace is removed.
    """
    if s is None:
        return ""
    value = parse_number(s)
    if value is not None:
        return _format_number(value)
    t = _basic_clean(s)
    t = t.replace(" ", "")
    if "\\" not in t:
        t = t.lower()
    return t


# --------------------------------------------------------------------------- equality

class _DropTimeoutNotice(logging.Filter):
    """math-verify logs a warning on every call made with its timeout disabled."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutNotice())


def _as_latex(s: str) -> str:
    if "\\boxed" in s or "$" in s:
        return s
    return f"${s}$"


def _math_verify_equal(a: str, b: str) -> bool:
    if len(a) > _MAX_VERIFY_CHARS or len(b) > _MAX_VERIFY_CHARS:
        return False
    try:
        from math_verify import parse, verify
    except Exception:  # pragma: no cover - dependency missing
        return False
    # math-verify's timeouts use SIGALRM, which only works in the main thread; elsewhere we
    # run without them (inputs are short, see _MAX_VERIFY_CHARS).
    main = threading.current_thread() is threading.main_thread()
    timeout = 3 if main else None
    try:
        gold = parse(_as_latex(a), parsing_timeout=timeout)
        pred = parse(_as_latex(b), parsing_timeout=timeout)
        if not gold or not pred:
            return False
        return bool(verify(gold, pred, timeout_seconds=timeout))
    except BaseException as exc:  # noqa: BLE001 - sympy/timeout can raise anything
        if isinstance(exc, KeyboardInterrupt):
            raise
        return False


@lru_cache(maxsize=4096)
def _equal_cached(a: str, b: str) -> bool:
    if a == b:
        return True
    if normalize_answer(a) == normalize_answer(b):
        return True
    x, y = parse_number(a), parse_number(b)
    if x is not None and y is not None:
        if math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9):
            return True
    return _math_verify_equal(a, b)


def answers_equal(a: str | None, b: str | None) -> bool:
    """True when two answers denote the same value. Never raises; None equals nothing."""
    if a is None or b is None:
        return False
    a, b = str(a).strip(), str(b).strip()
    if not a or not b:
        return False
    try:
        return _equal_cached(a, b)
    except Exception:  # noqa: BLE001 - an answer comparison must never crash a run
        return False
