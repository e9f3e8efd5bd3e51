"""Nothing to copy: no prompt text shows a filled box or a placeholder answer, and the copy
guard (hogwild.answers.CopyGuard) tells answers copied from the prompt from real ones."""

from __future__ import annotations

import re

import pytest

from hogwild.answers import CopyGuard, numbers_in
from hogwild.eval.bundles import bundle_question, make_bundles
from hogwild.eval.datasets import Task
from hogwild.protocol import PATTERNS, Protocol, texts
from hogwild.protocol.plain import PlainProtocol

# a box with anything inside it (an empty "\boxed{}" says where the answer goes, and is fine)
FILLED_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{\s*[^}\s]")
PLACEHOLDER = re.compile(r"\b(?:answer|result|value)\s*\d\b|your answer|final answer here|\.\.\.\s*\}", re.I)


def _all_text_constants() -> list[str]:
    """Every string the protocol's wording module holds (constants, tuples, example lists)."""
    found: list[str] = []

    def walk(value):
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    for name in dir(texts):
        if name.isupper():
            walk(getattr(texts, name))
    return found


def test_no_protocol_text_shows_a_filled_box_or_a_placeholder():
    strings = _all_text_constants()
    assert len(strings) > 40  # the walk found the examples too
    for s in strings:
        assert not FILLED_BOX.search(s), s
        assert not PLACEHOLDER.search(s), s


@pytest.mark.parametrize(("pattern", "workers"),
                         [(p, n) for p in PATTERNS for n in (1, 2, 3, 4) if p == "team" or n >= 2])
def test_rendered_team_texts_have_nothing_to_copy(pattern, workers):
    p = Protocol(num_workers=workers, pattern=pattern)
    shown = [p.system_text(), p.few_shot_text(), p.forced_suffix_text(True, False)]
    shown += [p.opening(w) for w in range(workers)]
    shown += [p.header_text(w, s, c) for w in range(workers) for s in (2, 3) for c in (False, True)]
    for text in shown:
        assert not FILLED_BOX.search(text), text
        assert not PLACEHOLDER.search(text), text
    # the format line says where the answer goes
    assert "\\boxed{}" in p.system_text()


def test_examples_state_their_results_in_words():
    two = Protocol(num_workers=2).few_shot_text()
    three = Protocol(num_workers=3).few_shot_text()
    for text in (two, three):
        assert "23 dollars" in text and "remainder is 0" in text
        assert "\\boxed" not in text


def test_bundle_instructions_have_no_placeholders():
    for k in (2, 3, 5):
        question = bundle_question([f"What is {i} + {i}?" for i in range(k)])
        assert not FILLED_BOX.search(question) and not PLACEHOLDER.search(question)
        assert "\\boxed{}" in question and "semicolons" in question and "in the order" in question
    bundle = make_bundles([Task(str(i), f"q{i}?", str(i)) for i in range(4)], 2)[0]
    assert "answer 1" not in bundle.question and "answer 2" not in bundle.question


def test_plain_prompt_and_forced_texts_have_nothing_to_copy():
    for text in (texts.PLAIN_SYSTEM, PlainProtocol.forced_suffix_text(), texts.FORCED_ANSWER_LEAD):
        assert not FILLED_BOX.search(text)


# --------------------------------------------------------------------------- the guard

PROMPT = (
    "You are Alice and Bob. Write the final answer once, within \\boxed{}.\n\n"
    "Example 1. Pens cost 3 dollars each ... the change is 23 dollars.\n"
    "Example 2. 1024 + 243 = 1267 = 7 * 181, remainder 0.\n\n"
)


def test_copied_when_only_the_prompt_has_the_number():
    problem = "Alice has 4 apples and buys 20 more. How many does she have?"
    guard = CopyGuard(PROMPT + "Problem: " + problem, problem)
    for copied in ("23", "1267", "23.0", "$23", "23 dollars", "1,267", "181"):
        assert guard.copied(copied), copied
        assert not guard.accepts(copied)
    for real in ("24", "16", "1266", "-23", "twenty four"):
        assert not guard.copied(real), real
        assert guard.accepts(real)
    assert not guard.copied(None) and not guard.copied("  ")


def test_accepted_when_the_problem_contains_the_number():
    problem = "A shop has 23 pens and sells 0 of them. How many pens are left?"
    guard = CopyGuard(PROMPT + "Problem: " + problem, problem)
    assert guard.accepts("23") and guard.accepts("0")     # in the problem: never copied
    assert not guard.accepts("1267")                      # still only in the prompt


def test_placeholders_and_bundle_parts():
    old_instruction = "write all 2 final answers in ONE box: \\boxed{answer 1; answer 2}."
    parts = ("Tom has 5 pens.", "Ann has 7 cats.")
    guard = CopyGuard(old_instruction + " " + " ".join(parts), parts)
    assert guard.copied("answer 1; answer 2", ["answer 1", "answer 2"])
    assert guard.copied("answer 1")
    # a bundle answer is copied when any part is
    guard = CopyGuard(PROMPT + " ".join(parts), parts)
    assert guard.copied("12; 23", ["12", "23"])
    assert not guard.copied("12; 14", ["12", "14"])
    assert not guard.copied("5; 7", ["5", "7"])


def test_a_boxed_answer_in_the_prompt_is_compared_by_value():
    guard = CopyGuard("Example: the answer is \\boxed{\\frac{1}{2}}.", "What is 3 - 2.5?")
    assert guard.copied("0.5") and guard.copied("\\frac{1}{2}")
    assert not guard.copied("1.5")


def test_numbers_in_reads_values():
    values = numbers_in("2^10 + 3^5 = 1,024 + 243; x-3; $12 and -4, 3.5.")
    assert values == {2.0, 10.0, 3.0, 5.0, 1024.0, 243.0, 12.0, -4.0, 3.5}


def test_guard_on_the_real_protocol_prompt():
    problem = "Alice has 3 apples and buys 5 more. Bob has twice as many apples as Alice. How many apples do they have together?"
    p = Protocol(num_workers=2)
    guard = CopyGuard(p.system_text() + "\n\n" + p.few_shot_text() + "\n\n" + p.user_text(problem), problem)
    assert guard.copied("1267") and guard.copied("23")   # the examples' numbers
    assert guard.accepts("24") and guard.accepts("16")   # not shown anywhere
    assert guard.accepts("3") and guard.accepts("5")     # the problem has them
