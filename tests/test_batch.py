"""The batched engine on tiny random models: isolation, invariance, prefixes, branches, limits.

Every comparison of a run alone against the same run in a batch is bitwise (``torch.equal``):
on the native kernel plan a row's arithmetic does not depend on the other rows of a model
call, and on any other plan a reproducible batch gives each run a call of its own.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch

from hogwild import kernels
from hogwild.core.batch import Batch
from hogwild.core.cache import PoolFullError
from hogwild.core.engine import Engine
from hogwild.core.events import StopEvent
from hogwild.core.layouts import UNFINISHED
from hogwild.core.script import Script
from hogwild.driver import Drive, Scheduler
from hogwild.errors import HogwildError, InvalidRequestError

from tiny import VOCAB, random_script, tiny_model, toy_decode

PATHS = ["torch"] + (["native"] if kernels.available() else [])


def model_for(path: str, dtype=torch.float32):
    model = tiny_model(seed=3, dtype=dtype)
    if path == "native":
        model = kernels.prepare_for_cpu(copy.deepcopy(model).fuse_projections())
    return model


def attention(path: str) -> str:
    return "auto" if path == "native" else "torch"


def script(seed: int, workers: int, prefix: list[int] | None = None) -> Script:
    s = random_script(workers, seed=seed, check_in_every=4)
    if prefix is not None:
        s.prompt_ids = list(prefix) + list(s.prompt_ids)
        s.shared_prefix = len(prefix)
    s.forced_suffix = lambda ends_newline: [5, 6, 7]
    s.forced_marker = UNFINISHED
    return s


SPECS = [("combined", 2, 11), ("interleaved", 3, 12), ("independent", 2, 13), ("combined", 1, 14),
         ("contiguous", 3, 15)]


def trace_solo(model, path, layout, s, passes):
    """Greedy tokens and logits per pass of one run alone."""
    run = Engine(model, layout, decode=toy_decode, attention=attention(path)).start(s)
    out = []
    for _ in range(passes):
        run.step()
        out.append([None if x is None else x.clone() for x in run.logits])
    return out


def trace_batched(model, path, specs, passes, join_at, batch=None):
    """The same runs in one batch; run i joins before batch pass ``join_at[i]``."""
    batch = batch or Batch(model, attention(path))
    runs, traces = {}, {i: [] for i in range(len(specs))}
    step = 0
    while len(runs) < len(specs) or any(not r.finished for r in runs.values()):
        for i, (layout, workers, seed) in enumerate(specs):
            if i not in runs and join_at[i] <= step:
                runs[i] = Engine(model, layout, decode=toy_decode, batch=batch).submit(script(seed, workers))
        before = {i: r.passes for i, r in runs.items()}
        batch.step()
        for i, r in runs.items():
            if r.passes > before[i]:
                traces[i].append([None if x is None else x.clone() for x in r.logits])
                if r.passes >= passes and not r.finished:
                    r._stop("budget")
        step += 1
    return traces, runs, batch


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all((p is None and q is None) or torch.equal(p, q) for p, q in zip(x, y))
        for x, y in zip(a, b))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("join_at", [[0, 0, 0, 0, 0], [0, 3, 1, 6, 2], [7, 5, 3, 1, 0]])
def test_a_run_is_the_same_alone_or_batched(path, dtype, join_at):
    model = model_for(path, dtype)
    passes = 10
    solo = [trace_solo(model, path, layout, script(seed, workers), passes) for layout, workers, seed in SPECS]
    traces, runs, batch = trace_batched(model, path, SPECS, passes, join_at)
    for i in range(len(SPECS)):
        assert same(solo[i], traces[i]), f"run {i} ({SPECS[i]}) differs when batched"
    assert batch.load().runs == len(SPECS)


def test_rows_of_one_run_never_see_blocks_of_another():
    model = model_for("torch")
    batch = Batch(model, "torch", reproducible=False)  # mixed calls, to check the views
    prefix = [random.Random(1).randrange(2, VOCAB) for _ in range(20)]
    runs = [Engine(model, layout, decode=toy_decode, batch=batch).submit(script(seed, workers, prefix))
            for layout, workers, seed in SPECS]
    seen: dict[int, set[int]] = {}
    original = batch.forward

    def spy(ids, groups, logit_rows, **kw):
        for g in groups:
            if set(g.blocks) <= {p.block for p in runs[0].prefixes}:
                continue  # the shared prefix's own prefill (read-only afterwards)
            owners = [i for i, r in enumerate(runs) if set(g.blocks) <= set(r.block_ids)]
            assert len(owners) == 1
            seen.setdefault(owners[0], set()).update(g.view)
        return original(ids, groups, logit_rows, **kw)

    batch.forward = spy
    for _ in range(12):
        batch.step()
    for i, r in enumerate(runs):
        allowed = set(r.block_ids) | {p.block for p in r.prefixes}
        assert seen[i] <= allowed
    shared = {p.block for p in runs[0].prefixes}
    assert all({p.block for p in r.prefixes} == shared for r in runs)


def test_a_shared_prefix_is_stored_once_and_outlives_its_runs():
    model = model_for("torch")
    batch = Batch(model, "torch")
    prefix = [random.Random(2).randrange(2, VOCAB) for _ in range(40)]
    a = Engine(model, "combined", decode=toy_decode, batch=batch).start(script(21, 2, prefix))
    b = Engine(model, "combined", decode=toy_decode, batch=batch).start(script(22, 2, prefix))
    for _ in range(3):
        batch.step()
    load = batch.load()
    assert load.kv_tokens_in_use == a.tokens_stored() + b.tokens_stored() - len(prefix)
    a.close()
    b.close()
    assert batch.load().kv_tokens_in_use == len(prefix) and batch.load().prefixes_cached >= 1
    c = Engine(model, "combined", decode=toy_decode, batch=batch).submit(script(23, 2, prefix))
    assert c.prefixes[0].ready  # nothing to compute for it
    # ... and it computes the same as a run that made its prefix itself
    fresh = trace_solo(model, "torch", "combined", script(23, 2, prefix), 4)
    cached = []
    for _ in range(4):
        c.step()
        cached.append([x.clone() for x in c.logits])
    assert same(fresh, cached)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("worker", [None, 1])
def test_a_branch_equals_the_reference_and_leaves_its_run_untouched(path, worker):
    model = model_for(path)
    layout = "combined" if worker is None else "independent"
    s = script(31, 3)
    fast = Engine(model, layout, decode=toy_decode, attention=attention(path)).start(s)
    ref = Engine(model, layout, decode=toy_decode, attention="reference").start(script(31, 3))
    plain = Engine(model, layout, decode=toy_decode, attention=attention(path)).start(script(31, 3))
    for _ in range(6):
        for r in (fast, ref, plain):
            r.step()
    branches = [r.branch(worker, 5, stop=lambda text: False) for r in (fast, ref)]
    for _ in range(7):
        for r in (fast, ref, plain):
            r.step()
        if not branches[0].done:
            assert torch.allclose(branches[0].logits, branches[1].logits, atol=1e-4)
        for x, y in zip(fast.logits, plain.logits):
            assert torch.equal(x, y), "a branch must not change its run"
    assert branches[0].done and branches[0].reason == "budget" and branches[0].ids == branches[1].ids
    assert branches[0].view_ids[: len(s.prompt_ids)] == list(s.prompt_ids)
    marker = list(s.constants[UNFINISHED])
    has_marker = any(branches[0].view_ids[i : i + len(marker)] == marker for i in range(len(branches[0].view_ids)))
    assert has_marker == (worker is None)
    assert not fast.branches and fast.store.tokens_in_use() == fast.tokens_stored()  # freed


def test_overflow_stops_only_that_run_and_too_long_prompts_are_refused():
    model = tiny_model(seed=3, max_positions=120)
    batch = Batch(model, "torch")
    long = Engine(model, "combined", decode=toy_decode, batch=batch).start(script(41, 2, list(range(2, 42))))
    short = Engine(model, "combined", decode=toy_decode, batch=batch).start(script(42, 1))
    with pytest.raises(InvalidRequestError, match="context"):
        Engine(model, "combined", decode=toy_decode, batch=batch).submit(script(43, 2, list(range(2, 62)) * 2))
    for _ in range(30):
        batch.step()
    assert long.stop_reason == "context"
    assert short.passes == 30 and not short.finished


def test_a_full_pool_refuses_new_runs_and_keeps_running_ones():
    model = tiny_model(seed=3)
    batch = Batch(model, "torch", max_kv_tokens=700)
    running = Engine(model, "combined", decode=toy_decode, batch=batch).start(script(51, 2))
    for _ in range(3):
        batch.step()
    with pytest.raises(PoolFullError) as info:
        Engine(model, "combined", decode=toy_decode, batch=batch).submit(script(52, 2, list(range(2, 62)) * 6))
    assert isinstance(info.value, HogwildError) and "pool" in str(info.value)
    batch.step()
    assert running.passes == 4 and not running.finished


def test_cancel_frees_the_run_within_one_pass():
    model = tiny_model(seed=3)
    scheduler = Scheduler(Batch(model, "torch"))
    keep = scheduler.submit(Drive(Engine(model, "combined", decode=toy_decode, batch=scheduler.batch)
                                  .submit(script(61, 2)), toy_decode, max_passes=40))
    gone = scheduler.submit(Drive(Engine(model, "interleaved", decode=toy_decode, batch=scheduler.batch)
                                  .submit(script(62, 3)), toy_decode, max_passes=40))
    for _ in range(5):
        scheduler.step()
    run = gone.drive.run
    gone.cancel()
    scheduler.step()
    assert run not in scheduler.batch.runs and not run.block_ids
    assert scheduler.batch.load().kv_tokens_in_use == keep.drive.run.tokens_stored()
    assert [e for e in gone.events() if isinstance(e, StopEvent)][-1].reason == "cancelled"
    with pytest.raises(InvalidRequestError, match="already finished"):
        gone.cancel()
    assert keep.result().passes == 40
    with pytest.raises(InvalidRequestError, match="already finished"):
        keep.cancel()


def test_a_background_scheduler_serves_threads_and_shuts_down():
    import threading

    model = tiny_model(seed=3)
    scheduler = Scheduler(Batch(model, "torch"))
    scheduler.start()
    outcomes, errors = {}, []

    def client(i):
        try:
            run = Engine(model, "combined", decode=toy_decode, batch=scheduler.batch).submit(script(70 + i, 2))
            handle = scheduler.submit(Drive(run, toy_decode, max_passes=12 + i))
            tokens = sum(1 for _ in handle.events())
            outcomes[i] = (handle.result().passes, tokens)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    scheduler.shutdown()
    assert not errors and {i: p for i, (p, _) in outcomes.items()} == {i: 12 + i for i in range(4)}
    assert all(n > 0 for _, n in outcomes.values())
    assert scheduler.load()["drives"] == 0 and scheduler.batch.load().kv_tokens_in_use == 0
