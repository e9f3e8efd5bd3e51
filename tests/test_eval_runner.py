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
    for name in (rep.SUMMARY, rep.PLOT, rep.CONFIG):
        assert (out / name).exists()
    with pytest.raises(HogwildError, match="different settings"):
        evaluate(EvalConfig(dataset=str(data), strategies=["single"], budgets=[1, 4], limit=3,
                            question_field="q", answer_field="a", id_field="n"),
                 out, loaded=default_model, progress=False)
