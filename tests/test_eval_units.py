"""Evaluation pieces that need no model: bundles, voting, loaders, results file, report."""

from __future__ import annotations

import json
import re
import time

import pytest

from hogwild import net
from hogwild.errors import HogwildError
from hogwild.eval import datasets as ds
from hogwild.eval import report as rep
from hogwild.eval.bundles import (answer_from_text, bundle_question, is_complete, make_bundles,
                                  score_answer, split_answers)
from hogwild.eval.datasets import DatasetError, Task, load_tasks
from hogwild.eval.runner import EvalConfig, check_config
from hogwild.answers.voting import bundle_vote, majority_vote


# --------------------------------------------------------------------------- voting

def test_majority_vote_groups_equivalent_strings():
    assert majority_vote(["7", "0.5", "\\frac{1}{2}", "1/2", "7"]) in ("0.5",)
    assert majority_vote(["$1,200", "1200", "12"]) == "$1,200"


def test_majority_vote_ties_and_abstentions():
    assert majority_vote(["3", "4"]) == "3"          # tie: earliest worker's group
    assert majority_vote(["4", "3", "3.0", "4"]) == "4"  # 2-2 tie, "4" came first
    assert majority_vote([None, "", "5"]) == "5"
    assert majority_vote([None, None]) is None


def test_bundle_vote_is_per_question():
    assert bundle_vote(["1; 2", "1; 3", "9; 3"], 2) == "1; 3"
    assert bundle_vote(["1", None], 2) == "1; "
    assert bundle_vote([None, None], 2) is None


# --------------------------------------------------------------------------- bundles

def test_bundle_parsing_is_forgiving():
    assert split_answers("12; 7") == ["12", "7"]
    assert split_answers("1) 12; 2) 7") == ["12", "7"]
    assert split_answers("Problem 1: 12, Problem 2: 7") == ["12", "7"]
    assert split_answers("Problem A: 12; Problem B: 7") == ["12", "7"]
    assert split_answers("(A) 12; b) 7") == ["12", "7"]
    assert split_answers("A = 12") == ["A = 12"]            # not a label: kept as written
    assert split_answers("1,200; \\frac{1}{2}") == ["1,200", "\\frac{1}{2}"]
    assert split_answers("1,200") == ["1,200"]              # thousands separator kept
    assert split_answers("f(1, 2); 3") == ["f(1, 2)", "3"]  # no split inside brackets
    assert split_answers("12; 7;") == ["12", "7"]
    assert split_answers(None) == []


def test_bundle_answer_from_text():
    text = "First \\boxed{3}. Then \\boxed{4}. So \\boxed{3; 4}."
    assert answer_from_text(text, 2) == "3; 4"
    assert answer_from_text("a \\boxed{3} and b \\boxed{5}", 2) == "3; 5"  # separate boxes
    assert answer_from_text("only \\boxed{3}", 2) == "3"                   # partial
    assert not is_complete("3", 2) and is_complete("3; 5", 2)
    assert answer_from_text("no box", 2) is None


def test_bundle_scoring_missing_and_extra():
    gold = ["12", "0.5"]
    assert score_answer("12; 1/2", gold) == 1.0
    assert score_answer("12", gold) == 0.5            # missing second answer
    assert score_answer(None, gold) == 0.0
    assert score_answer("12; 0.5; 9", gold) == pytest.approx(2 / 3)  # extra answer penalised
    assert score_answer("0.5; 12", gold) == 0.0       # order matters
    assert score_answer("12", "12.0") == 1.0


def test_make_bundles_and_prompt():
    tasks = [Task(str(i), f"q{i}?", str(i)) for i in range(5)]
    bundles = make_bundles(tasks, 2)
    assert [b.id for b in bundles] == ["0+1", "2+3"]
    assert bundles[0].answer == ["0", "1"] and bundles[0].k == 2
    assert "Problem B: q1?" in bundles[0].question and "semicolons" in bundles[0].question
    assert "\\boxed{}" in bundles[0].question and "answer 1" not in bundles[0].question
    assert bundle_question(["a", "b", "c"]).count("Problem ") == 3
    # No number of the bundle's own: neither labels nor the count (a model pasted "1").
    assert not re.search(r"\d", bundle_question(["a", "b", "c"]))
    with pytest.raises(ValueError, match="between 1 and 26"):
        make_bundles(tasks, 27)


# --------------------------------------------------------------------------- datasets

def test_jsonl_with_odd_field_names(tmp_path):
    path = tmp_path / "odd.jsonl"
    rows = [{"key": "a1", "Prompt Text": "What is 2+2?", "gold": "#### 4"},
            {"key": "a2", "Prompt Text": "What is 3+3?", "gold": 6}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    tasks = load_tasks(str(path), question_field="Prompt Text", answer_field="gold", id_field="key")
    assert tasks == [Task("a1", "What is 2+2?", "4"), Task("a2", "What is 3+3?", "6")]
    with pytest.raises(DatasetError, match="no field 'question'"):
        load_tasks(str(path), question_field="question")
    with pytest.raises(DatasetError, match="--question-field"):
        load_tasks(str(path))


def test_json_file_with_common_fields(tmp_path):
    path = tmp_path / "math.json"
    path.write_text(json.dumps({"data": [{"problem": "x?", "solution": "so \\boxed{\\frac12}"}]}))
    assert load_tasks(str(path), limit=5) == [Task("0", "x?", "\\frac12")]


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_tasks(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_tasks("no_such_generator")


def test_reasoning_gym_offline():
    a = load_tasks("basic_arithmetic", limit=3, seed=5)
    b = load_tasks("basic_arithmetic", limit=3, seed=5)
    assert len(a) == 3 and a == b and all(t.question and t.answer for t in a)
    assert load_tasks("gsm_symbolic", limit=1, seed=0)[0].answer.lstrip("-").isdigit()


def test_hub_dataset_without_datasets_package(monkeypatch):
    monkeypatch.setattr(ds, "_import_datasets", lambda: None)
    with pytest.raises(DatasetError, match="pip install datasets"):
        load_tasks("gsm8k", limit=2)


def test_hub_dataset_without_network_fails_fast(monkeypatch):
    calls = []

    class FakeDatasets:
        @staticmethod
        def load_dataset(*args, **kwargs):
            calls.append((args, kwargs))
            raise ConnectionError("offline")

    def no_connect(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(ds, "_import_datasets", lambda: FakeDatasets)
    monkeypatch.setattr(net.socket, "create_connection", no_connect)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    t0 = time.perf_counter()
    with pytest.raises(DatasetError, match="no network"):
        load_tasks("HuggingFaceH4/MATH-500", limit=2)
    assert time.perf_counter() - t0 < 5
    assert calls and calls[0][0][0] == "HuggingFaceH4/MATH-500"


# --------------------------------------------------------------------------- results, report

def _record(task, strategy="single", workers=1, scores=(0.0, 1.0)):
    return {"task": task, "strategy": strategy, "workers": workers, "passes": 8,
            "timings": {"decode_s": 1.0},
            "results": [{"budget": b, "answer": "1", "score": s, "forced": False, "passes": b}
                        for b, s in zip((4, 8), scores)]}


def test_corrupt_last_line_is_tolerated_and_repaired(tmp_path):
    path = tmp_path / rep.RESULTS
    rep.append_result(path, _record("t1"))
    rep.append_result(path, _record("t2"))
    with open(path, "a") as f:
        f.write('{"task": "t3", "strat')  # killed mid-write
    assert [r["task"] for r in rep.read_results(path)] == ["t1", "t2"]
    rep.read_results(path, repair=True)
    assert path.read_text().endswith("\n") and path.read_text().count("\n") == 2
    rep.append_result(path, _record("t1"))  # a duplicate unit: first one wins
    assert len(rep.read_results(path)) == 2


def test_summary_intervals_and_report(tmp_path):
    for t in ("a", "b", "c"):
        rep.append_result(tmp_path / rep.RESULTS, _record(t))
        rep.append_result(tmp_path / rep.RESULTS, _record(t, "hogwild-combined", 2, (0.5, 1.0)))
    rows = rep.report(tmp_path)
    single8 = next(r for r in rows if r["strategy"] == "single" and r["budget"] == 8)
    assert single8["accuracy"] == 1.0 and single8["n"] == 3 and single8["ci95"][0] < 1.0
    lo, hi = rep.wilson(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)  # textbook values
    assert (tmp_path / rep.PLOT).stat().st_size > 1000
    assert json.loads((tmp_path / rep.SUMMARY).read_text())["tasks"] == 3


def test_resume_into_other_config_is_refused(tmp_path):
    check_config(tmp_path, EvalConfig(budgets=[4, 8]))
    check_config(tmp_path, EvalConfig(budgets=[4, 8]))  # same settings: fine
    with pytest.raises(HogwildError, match="different settings.*budgets"):
        check_config(tmp_path, EvalConfig(budgets=[4, 16]))


def test_bundle_labels_do_not_eat_numbers():
    assert split_answers("0.5; 3: 4; 2) 7") == ["0.5", "3: 4", "7"]
    assert split_answers("a_1 = 5; a_2 = 6") == ["5", "6"]


def test_a_registered_layout_becomes_a_strategy():
    from hogwild.core.layouts import LAYOUTS, Layout, register
    from hogwild.errors import InvalidRequestError
    from hogwild.eval.strategies import make_strategy, strategy_names

    mirror = Layout("mirror-test", lambda s, w: [s.prompt, *s.history, s.current[w]], steps=True)
    try:
        register(mirror)
        assert "hogwild-mirror-test" in strategy_names()
        assert make_strategy("hogwild-mirror-test", workers=2).layout == "mirror-test"
        with pytest.raises(InvalidRequestError, match="already registered"):
            register(Layout("mirror-test", mirror.build, steps=False))
    finally:
        LAYOUTS.pop("mirror-test", None)
    assert "hogwild-mirror-test" not in strategy_names()


def test_answers_by_question_puts_labelled_answers_in_order():
    from hogwild.answers.lists import answers_by_question, labelled_answers

    steps = ["Problem 2: 3 + 4 = 7, so \\boxed{7}.", "For question 1 I get \\boxed{12}.", "Unlabelled \\boxed{5}."]
    assert labelled_answers(steps[0], 2) == [(1, "7")] and labelled_answers(steps[2], 2) == []
    assert answers_by_question(steps, 2) == "12; 7"
    assert answers_by_question(steps[:1], 2) is None                      # question 1 missing
    assert answers_by_question(steps + ["Problem 2 again: \\boxed{8}."], 2) == "12; 8"  # later wins
    assert labelled_answers("Problem 1 and 2: \\boxed{1; 2}", 2) == []   # several answers: not one question
    # Letters, as the bundle prompt labels them; a small "a" is an article, not a label.
    lettered = ["Problem B: 3 + 4 = 7, so \\boxed{7}.", "Now problem A: \\boxed{12}."]
    assert answers_by_question(lettered, 2) == "12; 7"
    assert labelled_answers("Problem B, seen a different way: \\boxed{7}", 2) == [(1, "7")]
    assert labelled_answers("Let us read the problem a second time: \\boxed{7}", 2) == []
    assert labelled_answers("Problem C: \\boxed{7}", 2) == []        # no third question


def test_the_pattern_strategies_are_offered():
    from hogwild.eval.strategies import Orchestrated, Verified, make_strategy, strategy_names

    names = strategy_names()
    assert "hogwild-orchestrated" in names and "hogwild-verified" in names
    assert isinstance(make_strategy("hogwild-orchestrated", 3), Orchestrated)
    v = make_strategy("hogwild-verified", 3)
    assert isinstance(v, Verified) and v.checker == 2 and v.answerers() == {2} and v.layout == "combined"
    assert v.should_stop(None, {0: "5"}) is False and v.should_stop(None, {2: "5"}) is True
