"""Teamwork analytics (hogwild.analytics) on hand-written runs whose redundancy,
cross-references, loops, check-ins, division of labour and assignments are known; pooled in
the eval report; printed by `hogwild show --analytics`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hogwild.analytics import (Step, analyze, check_in_answer, from_saved, parse_assignments,
                               steps_from_texts, summary_rows)
from hogwild.answers import CopyGuard
from hogwild.answers.lists import question_refs
from hogwild.cli import app
from hogwild.eval import report as rep
from hogwild.protocol import Protocol

NAMES = ["Alice", "Bob"]
PROBLEM = "Tom has 3 red pens and 4 blue pens. How many pens does he have?"
P = Protocol(num_workers=2)


def h(worker: int, step: int, body: str, check_in: bool = False) -> str:
    return P.step_header(worker, step, check_in) + " " + body


# Trigrams per step (words are lower-cased):
#   A1 alpha beta gamma delta epsilon    {abg, bgd, gde}                 new
#   B1 alpha beta gamma zeta 12          {abg, bgz, gz12}   abg is Alice's: 1 of 3 repeated
#   A2 with 12 we get theta              {w12w, 12wg, wgt}  12 is Bob's result: cross-ref
#   B2 Alice is right theta              {air, irt}         names Alice: cross-ref
#   B3 = B1                              abg repeated again; a loop (repeats B1)
KNOWN = [
    Step(0, h(0, 1, "Alpha beta gamma delta epsilon."), 10),
    Step(1, h(1, 1, "Alpha beta gamma zeta 12."), 11),
    Step(0, h(0, 2, "With 12 we get theta."), 12),
    Step(1, h(1, 2, "Alice is right: theta."), 13),
    Step(1, h(1, 3, "Alpha beta gamma zeta 12."), 14),
]


def test_known_redundancy_cross_references_and_loops():
    a = analyze(KNOWN, NAMES, PROBLEM)
    assert (a["steps"], a["ngrams"], a["ngrams_repeated"]) == (5, 14, 2)
    assert a["redundancy"] == pytest.approx(2 / 14)
    assert (a["cross_refs"], a["cross_ref_names"], a["cross_ref_results"]) == (2, 1, 1)
    assert a["cross_ref_rate"] == pytest.approx(2 / 5)
    assert a["loops"] == 1 and a["loop_rate"] == pytest.approx(1 / 5)
    alice, bob = a["per_worker"]["Alice"], a["per_worker"]["Bob"]
    assert (alice["steps"], alice["ngrams"], alice["ngrams_repeated"], alice["loops"]) == (2, 6, 0, 0)
    assert (bob["steps"], bob["ngrams"], bob["ngrams_repeated"], bob["loops"]) == (3, 8, 2, 1)
    assert bob["redundancy"] == pytest.approx(0.25) and alice["redundancy"] == 0.0
    assert (alice["tokens"], bob["tokens"]) == (22, 38)
    assert a["copied"] is None and a["first_correct"] is None  # no guard, no target


def test_computing_steps_are_the_ones_with_a_calculation():
    steps = [
        Step(0, h(0, 1, "I will calculate how many apples Alice has.")),
        Step(1, h(1, 1, "Alice has 3 + 5 = 8 apples.")),
        Step(0, h(0, 2, "So Bob has 2 \\times 8 apples, and I agree with Bob.")),
        Step(1, h(1, 2, "The total is 24 apples; x = 24.")),
        Step(0, h(0, 3, "Great, we agree on 24 apples and 8 apples.")),
    ]
    a = analyze(steps, NAMES, "Alice has 3 apples and buys 5 more.")
    assert a["computing_steps"] == 3 and a["computing_rate"] == pytest.approx(3 / 5)
    assert analyze([], NAMES)["computing_rate"] is None


def test_a_number_from_the_problem_is_not_a_cross_reference():
    steps = [Step(0, h(0, 1, "Tom has 3 red pens here.")), Step(1, h(1, 1, "So 3 + 4 = 7 pens."))]
    a = analyze(steps, NAMES, PROBLEM)
    assert a["cross_refs"] == 0  # 3 is the problem's, 7 is Bob's own
    steps.append(Step(0, h(0, 2, "Then 7 pens in total.")))
    assert analyze(steps, NAMES, PROBLEM)["cross_ref_results"] == 1


def test_check_ins_and_changing_course():
    steps = [
        Step(0, h(0, 1, "I add the red pens and the blue pens together now.")),
        Step(1, h(1, 1, "I add the red pens and the blue pens together too.")),
        # yes, then something new: changed course
        Step(1, h(1, 2, "yes, Alice is adding already. I switch to checking the question's wording.", True)),
        # yes, then the same work again: not changed
        Step(0, h(0, 2, "Yes. I add the red pens and the blue pens together now.", True)),
        Step(0, h(0, 3, "No, I continue with the sum.", True)),
        Step(1, h(1, 3, "Maybe.", True)),
    ]
    c = analyze(steps, NAMES, PROBLEM)["check_ins"]
    assert c == {"asked": 4, "yes": 2, "no": 1, "other": 1, "changed_after_yes": 1}
    assert check_in_answer(steps[0].text) is None
    assert check_in_answer(steps[4].text) == ("no", "I continue with the sum.")


def test_a_short_yes_is_judged_by_the_next_step():
    steps = [
        Step(0, h(0, 1, "I add the red pens and the blue pens together now.")),
        Step(1, h(1, 1, "Yes.", True)),
        Step(1, h(1, 2, "Then I check the wording of the question instead of adding.")),
    ]
    assert analyze(steps, NAMES, PROBLEM)["check_ins"]["changed_after_yes"] == 1


def test_copied_answer_and_tokens_before_the_first_correct_answer():
    steps = [
        Step(0, h(0, 1, "3 + 4 = 7 pens."), 8),
        Step(1, h(1, 1, "I think it is \\boxed{23}."), 9),
        Step(0, h(0, 2, "No: the answer is \\boxed{7}."), 10),
        Step(1, h(1, 2, "Agreed, \\boxed{7}."), 6),
    ]
    guard = CopyGuard("Example: the change is 23 dollars. " + PROBLEM, PROBLEM)
    a = analyze(steps, NAMES, PROBLEM, answer="7", gold="7", guard=guard)
    assert a["copied"] is False
    assert a["first_correct"] == {"reached": True, "tokens": {"Alice": 18, "Bob": 9}, "total": 27}
    b = analyze(steps[:2], NAMES, PROBLEM, answer="23", gold="7", guard=guard)
    assert b["copied"] is True and b["first_correct"]["reached"] is False
    # without token counts the measure is unknown, unless a counter is given
    bare = [Step(s.worker, s.text) for s in steps]
    assert analyze(bare, NAMES, PROBLEM, gold="7")["first_correct"] is None
    counted = analyze(bare, NAMES, PROBLEM, gold="7", count_tokens=lambda t: 1)
    assert counted["first_correct"]["total"] == 3


def test_division_of_labour_and_assignments_in_a_bundle():
    parts = ["Ann has 2 boxes of 6 eggs. How many eggs?", "Ben has 3 cats and 4 dogs. How many pets?"]
    steps = [
        Step(0, P.opening(0) + "\nBob: problem B\nAlice: Problem A", 20),
        Step(1, P.opening(1) + " reading problem B: 3 + 4 = 7 pets.", 20),
        Step(0, h(0, 2, "Problem A: 2 * 6 = 12 eggs, so \\boxed{12}."), 10),
        Step(1, h(1, 2, "For problem 2 the answer is \\boxed{7}."), 10),
        Step(1, h(1, 3, "Both answers: \\boxed{12; 7}."), 10),
    ]
    a = analyze(steps, NAMES, parts, gold=["12", "7"], k=2, answer="12; 7")
    assert a["division"]["first_answer"] == ["Alice", "Bob"] and a["division"]["split"] is True
    assert a["division"]["answered"] == {"Alice": [1], "Bob": [2, 1]}
    # questions named by letter (as the bundle prompt labels them) or by position
    assert a["assignments"]["parts"] == {"Bob": "problem B", "Alice": "Problem A"}
    assert a["assignments"]["problems"] == {"Bob": [2], "Alice": [1]}
    assert a["assignments"]["followed"] == 1.0
    assert a["first_correct"]["tokens"] == {"Alice": 30, "Bob": 40}
    # Bob answers both first: the work was not split, and only half the assignment was followed
    swapped = [steps[0], steps[1], steps[4], steps[2]]
    b = analyze(swapped, NAMES, parts, gold=["12", "7"], k=2)
    assert b["division"]["first_answer"] == ["Bob", "Bob"] and b["division"]["split"] is False
    assert b["assignments"]["followed"] == 0.5


def test_parse_assignments_and_question_refs():
    text = "Plan:\n- **Bob**: problem 2\n1. Carol: checking\nAlice takes the pens. Bob will check it"
    assert parse_assignments(text, ["Alice", "Bob", "Carol"]) == {
        "Bob": "problem 2", "Carol": "checking", "Alice": "the pens"}
    assert parse_assignments("no names here", ["Alice"]) == {}
    assert question_refs("see problem 2, Question 1 and #3") == [2, 1, 3]


def test_unordered_runs_compare_whole_texts_and_own_loops():
    workers = ["alpha beta gamma delta\n\nalpha beta gamma delta\n\nThe answer is \\boxed{7}.",
               "zeta alpha beta gamma\n\nI get \\boxed{8}."]
    steps = steps_from_texts(workers)
    assert [s.worker for s in steps] == [0, 0, 0, 1, 1]
    a = analyze(steps, NAMES, PROBLEM, ordered=False, gold="7", count_tokens=lambda t: len(t.split()))
    # Alice's two paragraphs share "alpha beta gamma" with Bob's text; Bob's first shares it with hers
    assert a["ngrams_repeated"] == 1 + 1 + 0 + 1 + 0
    assert a["loops"] == 1  # Alice repeats herself; Bob's paragraph is not compared with hers
    assert a["cross_ref_results"] == 0
    assert a["first_correct"] == {"reached": True, "tokens": {"Alice": 12, "Bob": None}, "total": 12}


def test_one_worker_has_no_redundancy_but_a_loop_rate():
    steps = [Step(0, "Let me add the pens now."), Step(0, "Let me add the pens now.")]
    a = analyze(steps, ["Alice"], PROBLEM)
    assert a["redundancy"] is None and a["cross_ref_rate"] is None and a["loop_rate"] == 0.5


def _saved(tmp_path):
    data = {
        "format": "hogwild-solve", "version": 1, "problem": PROBLEM, "model": "m",
        "settings": {"workers": 2, "layout": "combined", "max_passes": 64},
        "names": NAMES, "answer": "23", "forced": False, "passes": 40, "stop_reason": "stop-rule",
        "workers": [KNOWN[0].text + KNOWN[2].text, KNOWN[1].text + KNOWN[3].text + KNOWN[4].text],
        "history": [[s.worker, s.text] for s in KNOWN], "unfinished": [],
        "history_tokens": [s.tokens for s in KNOWN],
        "prompt": "Example: the change is 23 dollars.\nProblem: " + PROBLEM,
        "timings": {},
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    return path, data


def test_from_saved_and_show_analytics(tmp_path):
    path, data = _saved(tmp_path)
    a = from_saved(data)
    assert a["redundancy"] == pytest.approx(2 / 14) and a["copied"] is True
    assert a["first_correct"]["reached"] is False  # the target is the final answer, never boxed
    result = CliRunner().invoke(app, ["show", str(path), "--plain", "--analytics"])
    assert result.exit_code == 0, result.output
    out = result.stdout.split("===== teamwork analytics =====", 1)[1]
    assert "redundancy: 14%" in out and "loop rate 20%" in out
    assert "cross-references: 2 steps (40%)" in out and "copied answer: yes" in out
    rows = dict(summary_rows(a))
    assert rows["tokens before the answer"] == "never reached"
    # without the prompt, copying is unknown
    del data["prompt"]
    assert from_saved(data)["copied"] is None


def test_report_pools_teamwork_and_plots_it(tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    known = analyze(KNOWN, NAMES, PROBLEM, gold="7", answer="7")
    loopy = analyze([Step(0, "Let me add the pens now."), Step(0, "Let me add the pens now.")],
                    ["Worker 1"], PROBLEM, ordered=False)
    records = []
    for task, strategy, workers, an, score, copied in [
        ("a", "hogwild-combined", 2, known, 1.0, False),
        ("b", "hogwild-combined", 2, known, 0.0, True),
        ("a", "single", 1, loopy, 0.0, False),
    ]:
        records.append({"task": task, "strategy": strategy, "workers": workers, "k": 1, "gold": "7",
                        "passes": 8, "stop_reason": "budget", "wall_s": 1.0, "timings": {},
                        "results": [{"budget": 8, "answer": "7", "score": score, "correct": score == 1.0,
                                     "forced": False, "copied": copied, "passes": 8, "tokens": [8],
                                     "wall_s": 1.0}],
                        "analytics": an})
    for r in records:
        rep.append_result(out / rep.RESULTS, r)
    rep.report(out)
    summary = json.loads((out / rep.SUMMARY).read_text())
    team = {r["strategy"]: r for r in summary["teamwork"]}
    hw = team["hogwild-combined"]
    assert hw["n"] == 2 and hw["accuracy"] == 0.5 and hw["copy_rate"] == 0.5
    assert hw["redundancy"] == pytest.approx(4 / 28) and hw["loop_rate"] == pytest.approx(2 / 10)
    assert hw["cross_ref_rate"] == pytest.approx(4 / 10)
    assert team["single"]["loop_rate"] == 0.5 and team["single"]["redundancy"] is None
    assert {r["budget"]: r["copied"] for r in summary["rows"] if r["strategy"] == "hogwild-combined"} == {8: 0.5}
    assert (out / rep.TEAMWORK_PLOT).stat().st_size > 1000 and (out / rep.PLOT).exists()
