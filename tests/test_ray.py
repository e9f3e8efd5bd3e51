"""Scale-out on Ray (docs/scale-out.md), on a local Ray cluster this module starts and stops.

Same records as the local runner (greedy and seeded sampling), an actor killed mid-run, the
driver killed with SIGKILL and rerun, and ``hogwild serve`` replicas behind Ray Serve. Each
test is bounded by an alarm; the module skips when Ray is not installed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

ray = pytest.importorskip("ray")

from hogwild.eval import report as rep
from hogwild.eval.ray_runner import RayOptions, evaluate_ray
from hogwild.eval.runner import EvalConfig, evaluate
from processes import CLI, kill_after_rows


@pytest.fixture(scope="module")
def cluster():
    """A local cluster for the module: 4 logical CPUs (actors reserve 1 each) on this machine."""
    import logging

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def deadline():
    """Fail a test that runs longer than its bound instead of hanging CI."""
    def expire(signum, frame):
        raise TimeoutError("the test ran past its time bound")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(240)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _tasks(tmp_path, n):
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps({"n": f"q{i}", "q": f"What is {i} + {2 * i + 3}?", "a": str(3 * i + 3)}) + "\n"
                            for i in range(n)))
    return data


def _config(data, n, strategies, budgets, **extra):
    return EvalConfig(dataset=str(data), strategies=strategies, workers=[2], budgets=budgets, limit=n,
                      question_field="q", answer_field="a", id_field="n", **extra)


def _essence(records):
    """Everything of a record but its timings: what must not depend on where a unit ran."""
    return {rep.unit_key(r): (r["passes"], r["stop_reason"], r["k"], r["gold"], r["analytics"],
                              [{k: v for k, v in x.items() if k != "wall_s"} for x in r["results"]])
            for r in records}


def test_two_actors_give_the_local_runners_records(cluster, deadline, default_model, tmp_path):
    data = _tasks(tmp_path, 2)
    make = lambda: _config(data, 2, ["single", "early-stop", "independent", "hogwild-combined"], [4, 8],
                           forced_tokens=4, seed=5)
    evaluate(make(), tmp_path / "local", loaded=default_model, progress=False, concurrency=4)
    evaluate_ray(make(), tmp_path / "ray", RayOptions(actors=2, concurrency=3), progress=False)
    local = rep.read_results(tmp_path / "local" / rep.RESULTS)
    remote = rep.read_results(tmp_path / "ray" / rep.RESULTS)
    assert len(local) == len(remote) == 8
    assert len((tmp_path / "ray" / rep.RESULTS).read_text().splitlines()) == 8  # no duplicate lines
    assert _essence(local) == _essence(remote)
    assert any(r["strategy"] == "independent" for r in remote)  # seeded sampling (temperature 0.7)
    assert any(x["forced"] for r in remote for x in r["results"])  # forced answers too
    assert json.loads((tmp_path / "ray" / rep.SUMMARY).read_text())["rows"]


def test_an_actor_killed_mid_run_loses_nothing(cluster, deadline, tmp_path):
    data = _tasks(tmp_path, 3)
    config = _config(data, 3, ["single", "hogwild-combined"], [8, 16], forced_tokens=4)
    fleets, killed = [], []

    def kill_one(record):
        if killed:
            return
        held = [slot.actor for slot, _ in fleets[0].inflight.values() if slot.actor.alive]
        assert held, "no actor held work after the first record"
        killed.append(held[0])
        os.kill(held[0].info["pid"], signal.SIGKILL)

    evaluate_ray(config, tmp_path / "out", RayOptions(actors=2, concurrency=2), progress=False,
                 on_unit=kill_one, on_start=fleets.append)
    fleet = fleets[0]
    records = rep.read_results(tmp_path / "out" / rep.RESULTS)
    keys = [rep.unit_key(r) for r in (json.loads(line) for line in
                                      (tmp_path / "out" / rep.RESULTS).read_text().splitlines())]
    assert len(keys) == len(set(keys)) == len(records) == 6  # every unit, exactly once
    assert not killed[0].alive and fleet.requeued >= 1  # it died holding units, which were re-queued
    survivor = next(a for a in fleet.actors if a is not killed[0])
    assert survivor.alive and survivor.units + killed[0].units == 6  # the survivor ran the rest


def test_driver_killed_with_sigkill_resumes(cluster, deadline, tmp_path):
    data = _tasks(tmp_path, 3)
    out = tmp_path / "run"
    args = ["eval", "--dataset", str(data), "--strategies", "single,hogwild-combined", "--workers", "2",
            "--budgets", "12,24", "--limit", "3", "--question-field", "q", "--answer-field", "a",
            "--id-field", "n", "--forced-tokens", "6", "--concurrency", "2", "--out", str(out),
            "--ray", cluster, "--ray-actors", "1"]
    results = out / rep.RESULTS
    kill_after_rows(args, results, rows=2, wait_s=120)
    before = rep.read_results(results, repair=True)
    assert 2 <= len(before) < 6
    rerun = subprocess.run([sys.executable, "-c", CLI, *args[:-1], "2"], capture_output=True, text=True,
                           timeout=180, check=False)  # the same command, on 2 actors this time
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming:" in rerun.stdout
    after = rep.read_results(results)
    keys = [rep.unit_key(r) for r in after]
    assert len(keys) == len(set(keys)) == 6  # every unit exactly once
    assert after[: len(before)] == before  # finished units kept as they were
    assert len(results.read_text().splitlines()) == 6


def test_without_ray_the_error_names_the_extra(monkeypatch, tmp_path):
    from hogwild.errors import HogwildError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(HogwildError, match=r"hogwild\[ray\]"):
        evaluate_ray(_config(_tasks(tmp_path, 1), 1, ["single"], [2]), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # refused before touching the output directory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_replicas_behind_one_endpoint(cluster, deadline):
    serve = pytest.importorskip("ray.serve")
    from hogwild.errors import HogwildError
    from hogwild.serve.ray_serve import build

    with pytest.raises(HogwildError, match="unknown settings"):
        build({"replicas": "2", "modle": "x"})
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:  # the builder `serve run hogwild.serve.ray_serve:build replicas=2 threads=1 ...` calls
        serve.run(build({"replicas": "2", "threads": "1", "max_running": "4", "max_queue": "4"}),
                  name="hogwild", route_prefix="/", blocking=False)
        base = f"http://127.0.0.1:{port}"  # serve.run returned: both replicas have loaded the model
        for _ in range(4):
            with urllib.request.urlopen(base + "/health", timeout=10) as r:
                assert json.loads(r.read())["status"] == "ok"
        replicas = serve.status().applications["hogwild"].deployments["hogwild"].replica_states
        assert replicas.get("RUNNING") == 2
        body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "What is 2 + 3?"}],
                "max_tokens": 6, "n": 2}
        req = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())
        assert len(answer["choices"]) == 2 and answer["hogwild"]["passes"] == 6
        assert answer["usage"]["completion_tokens"] == 12
    finally:
        serve.shutdown()
