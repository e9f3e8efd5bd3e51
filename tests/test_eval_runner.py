"""The runner on the default model: resume after an interruption, corrupt tail, report."""

from __future__ import annotations

import json

import pytest

from hogwild.errors import HogwildError
from hogwild.eval import report as rep
from hogwild.eval.runner import EvalConfig, evaluate


class Stop(Exception):
    pass


def test_interrupted_run_resumes_without_duplicates_or_losses(default_model, tmp_path):
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps({"n": f"q{i}", "q": f"What is {i} + 1?", "a": str(i + 1)}) + "\n"
                            for i in range(3)))
    out = tmp_path / "run"
    config = lambda: EvalConfig(dataset=str(data), strategies=["single"], workers=[1], budgets=[1, 2],
                                limit=3, question_field="q", answer_field="a", id_field="n")
    seen = []

    def interrupt(record):
        seen.append(record["task"])
        if len(seen) == 2:
            raise Stop

    with pytest.raises(Stop):
        evaluate(config(), out, loaded=default_model, progress=False, on_unit=interrupt)
    assert [r["task"] for r in rep.read_results(out / rep.RESULTS)] == ["q0", "q1"]
    with open(out / rep.RESULTS, "a") as f:
        f.write('{"task": "q2", "strategy": "sin')  # a run killed while writing
    rows = evaluate(config(), out, loaded=default_model, progress=False, on_unit=seen.append)
    records = rep.read_results(out / rep.RESULTS)
    assert sorted(r["task"] for r in records) == ["q0", "q1", "q2"]
    assert len((out / rep.RESULTS).read_text().splitlines()) == 3  # corrupt tail cut, no duplicates
    assert {r["budget"]: r["n"] for r in rows} == {1: 3, 2: 3}
    r = records[0]
    assert r["results"][0]["passes"] == 1 and r["results"][0]["tokens"] == [1]
    assert {"answer", "score", "correct", "forced", "wall_s"} <= set(r["results"][0])
    # resumed once more, finished: nothing to run, so no model is loaded (loaded=None) and
    # the summary is rewritten from the same records
    assert evaluate(config(), out, progress=False) == rows
    assert len((out / rep.RESULTS).read_text().splitlines()) == 3
    for name in (rep.SUMMARY, rep.PLOT, rep.CONFIG):
        assert (out / name).exists()
    with pytest.raises(HogwildError, match="different settings"):
        evaluate(EvalConfig(dataset=str(data), strategies=["single"], budgets=[1, 4], limit=3,
                            question_field="q", answer_field="a", id_field="n"),
                 out, loaded=default_model, progress=False)


def _tasks(tmp_path, n):
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps({"n": f"q{i}", "q": f"What is {i} + {2 * i + 3}?", "a": str(3 * i + 3)}) + "\n"
                            for i in range(n)))
    return data


def _essence(records):
    """What must not depend on batching: every unit's answers, scores, passes and tokens."""
    return {(r["task"], r["strategy"], r["workers"]):
            (r["passes"], r["stop_reason"],
             [(x["budget"], x["answer"], x["score"], x["forced"], x["passes"], x["tokens"], x.get("votes"))
              for x in r["results"]])
            for r in records}


def test_results_do_not_depend_on_concurrency(default_model, tmp_path):
    data = _tasks(tmp_path, 3)
    make = lambda: EvalConfig(dataset=str(data), strategies=["single", "early-stop", "independent", "hogwild-combined"],
                              workers=[2], budgets=[6, 12], limit=3, question_field="q", answer_field="a",
                              id_field="n", forced_tokens=6, seed=5)
    outs = {}
    for c in (1, 8):
        evaluate(make(), tmp_path / f"c{c}", loaded=default_model, progress=False, concurrency=c)
        outs[c] = rep.read_results(tmp_path / f"c{c}" / rep.RESULTS)
    assert len(outs[1]) == len(outs[8]) == 12
    assert _essence(outs[1]) == _essence(outs[8])
    assert any(x["forced"] for r in outs[1] for x in r["results"])  # forced answers were exercised
    assert any(r["strategy"] == "independent" for r in outs[1])  # and seeded sampling


def test_resume_after_kill_9_redoes_only_the_units_in_flight(default_model, tmp_path):
    from processes import kill_after_rows

    data = _tasks(tmp_path, 4)
    out = tmp_path / "run"
    args = ["eval", "--dataset", str(data), "--strategies", "single,hogwild-combined", "--workers", "2",
            "--budgets", "24,64", "--limit", "4", "--question-field", "q", "--answer-field", "a",
            "--id-field", "n", "--forced-tokens", "8", "--concurrency", "2", "--out", str(out),
            "--weights", "fp32"]  # the weights of default_model, which the resume below uses
    results = out / rep.RESULTS
    kill_after_rows(args, results, rows=2, wait_s=240)
    before = rep.read_results(results, repair=True)
    assert 2 <= len(before) < 8
    evaluate(EvalConfig(dataset=str(data), strategies=["single", "hogwild-combined"], workers=[2], budgets=[24, 64],
                        limit=4, question_field="q", answer_field="a", id_field="n", forced_tokens=8),
             out, loaded=default_model, progress=False, concurrency=2)
    after = rep.read_results(results)
    keys = [rep.unit_key(r) for r in after]
    assert len(keys) == len(set(keys)) == 8  # every unit exactly once
    assert after[: len(before)] == before  # finished units kept as they were


def test_pattern_strategies_on_bundles_write_analytics_and_plots(default_model, tmp_path):
    data = _tasks(tmp_path, 2)
    config = EvalConfig(dataset=str(data), strategies=["single", "hogwild-orchestrated", "hogwild-verified"],
                        workers=[2], budgets=[4, 8], limit=1, bundle=2, question_field="q", answer_field="a",
                        id_field="n", forced_tokens=4, few_shot=False)
    evaluate(config, tmp_path / "out", loaded=default_model, progress=False)
    records = rep.read_results(tmp_path / "out" / rep.RESULTS)
    assert sorted(r["strategy"] for r in records) == ["hogwild-orchestrated", "hogwild-verified", "single"]
    for r in records:
        a = r["analytics"]
        assert a["steps"] >= 1 and "division" in a and len(r["gold"]) == 2
        assert all(isinstance(x["copied"], bool) for x in r["results"])
    summary = json.loads((tmp_path / "out" / rep.SUMMARY).read_text())
    assert {t["strategy"] for t in summary["teamwork"]} == {"single", "hogwild-orchestrated", "hogwild-verified"}
    assert all("copied" in row for row in summary["rows"])
    assert (tmp_path / "out" / rep.TEAMWORK_PLOT).exists() and (tmp_path / "out" / rep.PLOT).exists()


def test_a_directory_older_than_a_setting_resumes_only_with_the_old_behaviour(tmp_path):
    import json

    from hogwild.eval.runner import EvalConfig, check_config

    old = EvalConfig(no_repeat_ngram=0).to_json()
    del old["no_repeat_ngram"]  # written before the setting existed
    (tmp_path / "config.json").write_text(json.dumps(old))
    check_config(tmp_path, EvalConfig(no_repeat_ngram=0))  # the same behaviour: resumes
    with pytest.raises(HogwildError, match="no_repeat_ngram: 0 there, 10 now"):
        check_config(tmp_path, EvalConfig(no_repeat_ngram=10))


def test_a_directory_made_with_few_shot_on_by_default_resumes_with_it(tmp_path):
    """Few-shot examples were "auto" (null) by default before; asking for the new default on
    such a directory resumes it as it ran, an explicit --few-shot does not match it."""
    import json

    from hogwild.eval.runner import check_config
    from hogwild.protocol import DEFAULT_FEW_SHOT

    old = EvalConfig().to_json()
    old["few_shot"] = None
    (tmp_path / "config.json").write_text(json.dumps(old))
    config = EvalConfig()
    assert config.few_shot == DEFAULT_FEW_SHOT is False
    check_config(tmp_path, config)
    assert config.few_shot is None  # adopted
    with pytest.raises(HogwildError, match="few_shot: None there, True now"):
        check_config(tmp_path, EvalConfig(few_shot=True))
