"""Loops: detection (hogwild.protocol.loops), the engine hook that lets the protocol answer a
repeated step (Script.step_observer), and the protocol's redirecting header."""

from __future__ import annotations

from hogwild.core.engine import Engine
from hogwild.core.events import HeaderEvent, StepEvent
from hogwild.protocol import Protocol
from hogwild.protocol.loops import (MIN_WORDS, RepeatTracker, loop_rate, normalize, repeats,
                                    step_body)

from tiny import NEWLINE, random_script, tiny_model, toy_decode

BOB_LOOP = "Hi, I'm Bob. I will start by calculating the total number of apples Alice has."


def test_exact_repeat_after_normalization():
    t = RepeatTracker()
    assert t.add(1, BOB_LOOP) is None
    hit = t.add(1, "  hi, I'M bob -- I will start by calculating the total number of apples Alice has!")
    assert hit is not None and hit.earlier == 0 and hit.worker == 1 and hit.share == 1.0 and hit.own(1)


def test_near_repeat_by_ngram_overlap_and_a_new_step():
    t = RepeatTracker()
    t.add(0, "Alice has 3 apples and buys 5 more, so she has 3 + 5 = 8 apples in total now.")
    # one word changed at the end: most trigrams are shared
    near = t.check(1, "Alice has 3 apples and buys 5 more, so she has 3 + 5 = 8 apples in total here.")
    assert near is not None and near.worker == 0 and not near.own(1) and 0.7 <= near.share < 1.0
    # the next calculation shares a few words only
    assert t.check(1, "Bob has twice as many as Alice: 2 * 8 = 16 apples, so together 24.") is None


def test_short_steps_never_count():
    t = RepeatTracker()
    assert len("Yes, agreed.".split()) < MIN_WORDS
    assert t.add(0, "Yes, agreed.") is None and t.add(0, "Yes, agreed.") is None


def test_the_most_recent_repeated_step_is_reported():
    steps = [(0, BOB_LOOP), (1, "Something else entirely, with more than a few words."), (1, BOB_LOOP), (0, BOB_LOOP)]
    hits = repeats(steps)
    assert hits[0] is None and hits[1] is None
    assert hits[2].earlier == 0 and hits[2].worker == 0
    assert hits[3].earlier == 2 and hits[3].worker == 1


def test_own_only_ignores_the_other_workers():
    steps = [(0, BOB_LOOP), (1, BOB_LOOP), (1, BOB_LOOP)]
    assert [h is not None for h in repeats(steps)] == [False, True, True]
    assert [h is not None for h in repeats(steps, own_only=True)] == [False, False, True]


def test_loop_rate():
    steps = [(1, BOB_LOOP)] * 4 + [(0, "Alice computes 3 + 5 = 8 apples for herself first.")]
    assert loop_rate(steps) == 3 / 5
    assert loop_rate([]) is None
    assert loop_rate([(0, "A single step of several words.")]) == 0.0


def test_step_body_drops_the_fed_text():
    p = Protocol(num_workers=2)
    assert step_body(p.opening(1) + " adding the apples.") == "adding the apples."
    assert step_body(p.step_header(0, 4, check_in=True) + " No. I continue.") == "No. I continue."
    redirect = p.redirect_header(1, 5, repeats([(0, BOB_LOOP), (1, BOB_LOOP)])[1])
    assert "Alice had already written" in redirect
    assert step_body(redirect + " I compute Bob's apples: 16.") == "I compute Bob's apples: 16."
    assert step_body("**Carol [12]:** Plain text.") == "Plain text."
    assert normalize("**Bob [2]:** Plain, text!") == "bob 2 plain text"


# --------------------------------------------------------------------------- engine hook

REDIRECT = [9, 9, 9]


def _forced(pattern_0, pattern_1, passes):
    return [{0: pattern_0[i % len(pattern_0)], 1: pattern_1[i % len(pattern_1)]} for i in range(passes)]


def test_engine_hands_every_finished_step_to_the_observer_and_uses_its_header():
    """Worker 0 writes the same step over and over; the observer (one per run) answers each
    repeat with its own header ids, which the engine feeds instead of the usual header."""
    calls = []

    def factory():
        seen = []

        def observe(worker, next_step, text):
            calls.append((worker, next_step, text))
            repeated = (worker, text) in seen
            seen.append((worker, text))
            return REDIRECT if repeated else None

        return observe

    script = random_script(2, seed=3)
    script.step_observer = factory
    run = Engine(tiny_model(), "combined", decode=toy_decode).start(script)
    events = []
    other = [t for first in range(14, 22) for t in (first, NEWLINE, NEWLINE)]  # new every time
    for forced in _forced([12, 13, NEWLINE, NEWLINE], other, 24):
        events += run.step(force=forced)
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [(c[0], c[1]) for c in calls] == [(e.worker, e.step + 1) for e in steps]  # completion order
    # the observer sees what the model wrote, without the header the protocol fed
    assert all(c[2] == toy_decode([12, 13, NEWLINE, NEWLINE]) for c in calls if c[0] == 0)
    headers = [e for e in events if isinstance(e, HeaderEvent) and e.passes > 0]
    zero = [h.text for h in headers if h.worker == 0]
    assert zero[0] == toy_decode(script.header_ids(0, 2, False))  # the first step is new
    assert zero[1:] and all(t == toy_decode(REDIRECT) for t in zero[1:])  # every later one repeats
    ones = [h.text for h in headers if h.worker == 1]
    assert ones and all(t != toy_decode(REDIRECT) for t in ones)


def test_without_an_observer_headers_are_unchanged():
    script = random_script(2, seed=3)
    run = Engine(tiny_model(), "combined", decode=toy_decode).start(script)
    events = []
    for forced in _forced([12, 13, NEWLINE, NEWLINE], [14, NEWLINE, NEWLINE], 12):
        events += run.step(force=forced)
    steps = {}
    for e in events:
        if isinstance(e, HeaderEvent) and e.passes > 0:
            steps[e.worker] = steps.get(e.worker, 1) + 1
            assert e.text == toy_decode(script.header_ids(e.worker, steps[e.worker], False))
    assert steps  # headers were fed
