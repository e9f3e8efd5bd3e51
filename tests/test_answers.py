"""Answer extraction and equivalence (hogwild.answers)."""

from __future__ import annotations

import threading

import pytest

from hogwild.answers import answers_equal, extract_boxed, normalize_answer, parse_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is \\boxed{42}.", "42"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("nested \\boxed{\\sqrt{\\frac{a}{b^{2}}}} done", "\\sqrt{\\frac{a}{b^{2}}}"),
        ("first \\boxed{3}, then corrected: \\boxed{4}", "4"),
        ("\\fbox{7}", "7"),
        ("\\boxed {  12 }", "12"),
        ("escaped braces \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("units \\boxed{12\\text{ cm}}", "12\\text{ cm}"),
        ("$\\boxed{-\\dfrac{3}{4}}$", "-\\dfrac{3}{4}"),
        # malformed / unfinished last box: fall back to the previous good one
        ("\\boxed{5} and then \\boxed{6", "5"),
        ("\\boxed{5} and then \\boxed{\\frac{1}{2}", "5"),
        # empty and placeholder boxes are skipped
        ("\\boxed{8} ... write \\boxed{}", "8"),
        ("answer format \\boxed{...}", None),
        ("\\boxed{answer}", None),
        ("no box here", None),
        ("", None),
        (None, None),
        ("\\boxed{", None),
        ("}\\boxed{1}}", "1"),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("0.5", "\\frac{1}{2}"),
        ("\\dfrac{1}{2}", "1/2"),
        ("1,200", "1200"),
        ("$1,200.00", "1200"),
        ("12 cm", "12"),
        ("12\\text{ cm}", "12"),
        ("45\\%", "45"),
        ("x = 5", "5"),
        ("x^2+2x", "2x+x^2"),
        ("\\sqrt{8}", "2\\sqrt{2}"),
        ("Alice", "alice"),
        ("\\text{Alice}", "Alice"),
        ("3.0", "3"),
        ("-7", "-7.0"),
        ("90^\\circ", "90"),
        ("20 + 18 = 38", "38"),  # a boxed calculation counts as its result ...
        ("4 \\times 5 + 3 \\times 6 = 20 + 18 = 38", "38"),
        ("\\boxed{27 + 30 = 57}", "57"),
    ],
)
def test_answers_equal(a, b):
    assert answers_equal(a, b)
    assert answers_equal(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("3", "4"),
        ("2x", "2"),
        ("0.5", "0.6"),
        ("\\frac{1}{3}", "0.3"),
        ("1200", "120"),
        ("20 + 18 = 40", "40"),  # ... only when its arithmetic is right
        ("20 + 18 = 40", "38"),
        (None, "1"),
        ("", ""),
        ("1", None),
    ],
)
def test_answers_differ(a, b):
    assert not answers_equal(a, b)


def test_answers_equal_never_raises_on_garbage():
    junk = ["\\frac{", "}}}{{{", "\\left(", "$$", "\\begin{matrix}", "x" * 5000, "1/0"]
    for a in junk:
        for b in junk[:3]:
            assert answers_equal(a, b) in (True, False)


def test_answers_equal_works_outside_main_thread():
    results = []
    thread = threading.Thread(target=lambda: results.append(answers_equal("0.25", "\\frac{1}{4}")))
    thread.start()
    thread.join(timeout=60)
    assert results == [True]


@pytest.mark.parametrize(
    ("s", "value"),
    [
        ("1,234.5", 1234.5), ("$12", 12.0), ("45%", 45.0), ("3.5 hours", 3.5),
        ("\\frac{3}{4}", 0.75), ("-\\frac{3}{4}", -0.75), ("3/4", 0.75), ("1e-3", 0.001),
        ("5.", 5.0), ("2x", None), ("x^2", None), ("\\sqrt{2}", None), ("1/0", None),
    ],
)
def test_parse_number(s, value):
    assert parse_number(s) == value


def test_normalize_answer_keys():
    assert normalize_answer("1,200") == normalize_answer("$1200.0") == "1200"
    assert normalize_answer("\\frac{1}{2}") == normalize_answer("0.5") == "0.5"
    assert normalize_answer("\\boxed{42}") == "42"
    assert normalize_answer("\\text{Alice}") == "alice"
    assert normalize_answer("\\left( 1, 2 \\right)") == "(1,2)"
    assert normalize_answer(None) == ""
