"""End to end on the real default model: protocol -> engine -> events -> answer (issue 3)."""

from __future__ import annotations

from hogwild.core.events import HeaderEvent, StepEvent, TokenEvent
from hogwild.protocol import CHECK_IN_TEXT
from hogwild.solve import ResultEvent, SolveSettings, solve_stream


def test_two_workers_combined_64_passes(default_model) -> None:
    settings = SolveSettings(
        workers=2, layout="combined", max_passes=64, check_in_every=16, few_shot=False,
        stop="none", forced_answer=True, forced_tokens=24,
    )
    problem = "Tom has 3 boxes with 4 pens each. He gives away 5 pens. How many pens are left?"
    events = list(solve_stream(default_model, problem, settings))
    result = events[-1].result if isinstance(events[-1], ResultEvent) else None
    assert result is not None
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    assert {e.worker for e in tokens} == {0, 1}, "both workers write"
    assert all(len(t) > 0 for t in result.workers)
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert steps and result.history, "steps get merged into history"
    headers = [e.text for e in events if isinstance(e, HeaderEvent)]
    assert any(CHECK_IN_TEXT.strip() in h for h in headers), "check-ins appear when K is small"
    assert result.passes == 64 and result.stop_reason == "budget"
    assert result.forced and result.forced_text is not None
    assert "\\boxed{" in result.forced_text
    assert result.answer is not None and result.answer.strip()


def test_workers_are_not_named_like_the_people_of_the_problem(default_model) -> None:
    settings = SolveSettings(workers=2, max_passes=6, few_shot=False, forced_answer=False)
    problem = "Alice has 3 apples and buys 5 more. Bob has twice as many. How many do they have?"
    result = [e for e in solve_stream(default_model, problem, settings)][-1].result
    assert result.names == ["Carol", "Dave"]
    assert "Carol" in result.prompt and "**Carol [1]:**" in result.workers[0]
