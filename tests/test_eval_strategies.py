"""Strategies on the default model with tiny budgets: answers agree with the snapshots.

Most runs here script the sampled tokens (the forward passes still run on the real model)
so that an answer appears at a known pass; forced answers use the real model greedily.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from hogwild.answers.voting import majority_vote
from hogwild.driver import Drive, Driver, ForcedAnswer
from hogwild.eval import strategies as st
from hogwild.eval.bundles import answer_from_text, bundle_question
from hogwild.eval.datasets import Task
from hogwild.protocol import stop_ids

TASK = Task("t", "What is 2 + 3?", "5")
FAST = dict(forced_tokens=3, few_shot=False, check_in_every=0)


class ScriptedSampler:
    """Emits fixed token sequences per worker; the last token (end of turn) repeats."""

    def __init__(self, seqs):
        self.seqs, self.pos = seqs, defaultdict(int)

    def sample(self, logits, workers, greedy=None):
        out = []
        for w in workers:
            seq = self.seqs[w]
            out.append(seq[min(self.pos[w], len(seq) - 1)])
            self.pos[w] += 1
        return out


def scripted(monkeypatch, loaded, texts):
    """Make the strategies' engine sample ``texts`` (one per worker), then end of turn."""
    tok = loaded.tokenizer
    eos = stop_ids(tok)[0]
    seqs = [tok.encode(t, add_special_tokens=False) + [eos] for t in texts]

    original = Driver.start

    def start(self, script):  # the strategies' main run only; forced answers stay real
        run = original(self, script)
        run.sampler = ScriptedSampler(seqs)
        return run

    monkeypatch.setattr(Driver, "start", start)
    return [len(s) for s in seqs]


def record_snapshots(strategy):
    """Wrap answer_at to keep the snapshot behind every budget's answer."""
    seen = []
    inner = strategy.answer_at

    def answer_at(task, snap, outcome):
        seen.append(snap)
        return inner(task, snap, outcome)

    strategy.answer_at = answer_at
    return seen


def test_single_and_early_stop_reuse_the_answer_after_the_stop(default_model, monkeypatch):
    text = " \\boxed{5}. Done."
    scripted(monkeypatch, default_model, [text])
    tok = default_model.tokenizer
    prefix = tok.encode(text[: text.index("}") + 1], add_special_tokens=False)
    stop_pass = len(prefix)  # the pass that samples the closing brace
    budgets = [2, stop_pass + 1, 64]
    single = st.make_strategy("single", **FAST)
    snaps = record_snapshots(single)
    out = single.run(default_model, TASK, budgets)
    assert out.stop_reason == "stop-rule" and out.passes == stop_pass
    r2, r_mid, r_top = out.results
    assert (r2.answer, r2.forced, r2.passes, r2.tokens) == (None, False, 2, [2])
    assert answer_from_text(snaps[0].workers[0]) is None and snaps[0].passes == 2
    for r in (r_mid, r_top):
        assert (r.answer, r.forced, r.passes) == ("5", False, stop_pass)
    early = st.make_strategy("early-stop", **FAST)
    out = early.run(default_model, TASK, budgets)
    assert out.results[0].forced and out.results[0].passes == 2
    assert [(r.answer, r.forced) for r in out.results[1:]] == [("5", False), ("5", False)]


def test_independent_votes_over_equivalent_answers(default_model, monkeypatch):
    texts = [" \\boxed{0.5}", " \\boxed{1/2}", " \\boxed{3}"]
    lengths = scripted(monkeypatch, default_model, texts)
    task = Task("h", "What is one half?", "1/2")
    strategy = st.make_strategy("independent", workers=3, **FAST)
    assert strategy.sampling().temperature > 0  # greedy would make N identical samples
    out = strategy.run(default_model, task, [max(lengths) + 2])
    (r,) = out.results
    assert out.stop_reason in ("stop-rule", "eos") and out.passes < max(lengths) + 2
    assert r.votes == ["0.5", "1/2", "3"] and r.answer == "0.5" and not r.forced
    assert r.passes == out.passes and len(r.tokens) == 3


def test_independent_forces_each_worker_at_small_budget(default_model, monkeypatch):
    scripted(monkeypatch, default_model, [" Let me see", " Hmm, so we"])
    strategy = st.make_strategy("independent", workers=2, **FAST)
    snaps = record_snapshots(strategy)
    out = strategy.run(default_model, TASK, [2])
    (r,) = out.results
    assert r.forced and len(r.votes) == 2 and r.passes == 2 and r.tokens == [2, 2]
    assert r.answer == majority_vote(r.votes)
    assert all(answer_from_text(t) is None for t in snaps[0].workers)


@pytest.mark.parametrize("layout", ["interleaved", "contiguous"])
def test_hogwild_layouts_find_the_answer(default_model, monkeypatch, layout):
    texts = [" Sum.\n\nIt is \\boxed{5}.\n\n", " Yes."]
    scripted(monkeypatch, default_model, texts)
    strategy = st.make_strategy(f"hogwild-{layout}", workers=2, **FAST)
    out = strategy.run(default_model, TASK, [30])
    (r,) = out.results
    assert out.stop_reason == "stop-rule" and (r.answer, r.forced) == ("5", False)
    assert r.passes == out.passes < 30


def test_hogwild_combined_real_decoding_is_consistent(default_model, monkeypatch):
    forced_at = []

    def fake_forced(self, snap):  # the real one: tests above
        for worker in self.forced_requests(snap):
            forced_at.append(snap.passes)
            self.forced[(snap.passes, worker)] = ForcedAnswer("", "7", "stop")

    monkeypatch.setattr(Drive, "_force", fake_forced)
    strategy = st.make_strategy("hogwild-combined", workers=2, **FAST)
    snaps = record_snapshots(strategy)
    out = strategy.run(default_model, TASK, [2, 4])
    assert [s.passes for s in snaps] == [r.passes for r in out.results] == [2, 4]
    for snap, r in zip(snaps, out.results):
        assert r.tokens == snap.generated_tokens
        texts = [t for _, t in snap.history] + [t for _, t in snap.current]
        given = [answer_from_text(t) for t in texts if answer_from_text(t) is not None]
        assert r.forced == (not given) == (snap.passes in forced_at)
        if r.forced:
            assert r.answer == "7"
        else:
            assert r.answer == given[-1]
    # the text at budget 2 is where the text at budget 4 started
    assert all(b.startswith(a) for a, b in zip(snaps[0].workers, snaps[1].workers))


# --------------------------------------------------------------------------- copy guard, patterns

def _pass_closing(tok, text, box_index):
    """The pass that samples the closing brace of the ``box_index``-th box of ``text``."""
    end, start = -1, 0
    for _ in range(box_index + 1):
        end = text.index("}", start)
        start = end + 1
    return len(tok.encode(text[: end + 1], add_special_tokens=False))


def test_a_copied_answer_does_not_end_the_run(default_model, monkeypatch):
    # 23 is the first example's result: shown in the prompt, absent from the problem
    task = Task("d", "What is 20 + 6?", "26")
    alice = " It is \\boxed{23}.\n\nNo, 20 + 6 is \\boxed{26}.\n\n"
    scripted(monkeypatch, default_model, [alice, " Let me add them up carefully."])
    strategy = st.make_strategy("hogwild-combined", workers=2, forced_tokens=3, few_shot=True, check_in_every=0)
    snaps = record_snapshots(strategy)
    out = strategy.run(default_model, task, [64])
    (r,) = out.results
    assert out.stop_reason == "stop-rule" and (r.answer, r.forced, r.copied) == ("26", False, False)
    # the run went on past the copied box: Alice's text holds both boxes
    assert "\\boxed{23}" in snaps[-1].workers[0] and "\\boxed{26}" in snaps[-1].workers[0]
    assert out.analytics["copied"] is False and out.analytics["first_correct"]["reached"]


def test_a_copied_answer_is_reported_when_it_is_the_only_one(default_model, monkeypatch):
    scripted(monkeypatch, default_model, [" It is \\boxed{23}.\n\n", " Yes."])
    strategy = st.make_strategy("hogwild-combined", workers=2, forced_tokens=3, few_shot=True, check_in_every=0)
    out = strategy.run(default_model, TASK, [40])
    (r,) = out.results
    assert out.stop_reason == "eos"  # both ended; the copy never stopped the run
    assert (r.answer, r.forced, r.copied) == ("23", False, True) and out.analytics["copied"] is True
    # the same number in the problem is a real answer and stops the run at once
    task = Task("c", "A shop had 23 pens and sold none of them. How many pens are left?", "23")
    out = st.make_strategy("hogwild-combined", workers=2, forced_tokens=3, few_shot=True,
                           check_in_every=0).run(default_model, task, [40])
    assert out.stop_reason == "stop-rule" and (out.results[0].answer, out.results[0].copied) == ("23", False)


def test_verified_needs_the_checkers_answer(default_model, monkeypatch):
    solver = " It is \\boxed{5}.\n\n"
    checker = (" Reading the problem.\n\n Still reading it carefully now, word by word, so that nothing "
               "at all is missed in this short problem.\n\n Confirmed: \\boxed{5}.\n\n")
    scripted(monkeypatch, default_model, [solver, checker])
    strategy = st.make_strategy("hogwild-verified", workers=2, **FAST)
    assert strategy.name == "hogwild-verified" and strategy.protocol.pattern == "verified"
    snaps = record_snapshots(strategy)
    out = strategy.run(default_model, TASK, [80])
    (r,) = out.results
    assert out.stop_reason == "stop-rule" and (r.answer, r.forced) == ("5", False)
    tok = default_model.tokenizer
    # the solver's box (pass ~6) did not stop the run; the checker's did
    assert out.passes > _pass_closing(tok, solver, 0)
    bob = snaps[-1].workers[1]
    assert "Alice has stated a result. I check it by redoing the calculation: Confirmed: \\boxed{5}" in bob
    assert "\\boxed{5}" in snaps[-1].workers[0]


def test_verified_forces_an_answer_without_the_checker(default_model, monkeypatch):
    scripted(monkeypatch, default_model, [" It is \\boxed{5}.\n\n", " Let me read the problem slowly and"])
    strategy = st.make_strategy("hogwild-verified", workers=2, **FAST)
    out = strategy.run(default_model, TASK, [14])
    (r,) = out.results
    assert r.forced and out.stop_reason == "eos"  # a solver's answer alone neither stops nor answers
    assert strategy.protocol.forced_suffix_text(True, False).startswith("Time is up: we must stop here. Bob gives")


def test_orchestrated_records_assignments_and_division(default_model, monkeypatch):
    parts = ("Ann has 2 boxes of 6 eggs. How many eggs?", "Ben has 3 cats and 4 dogs. How many pets?")
    task = Task("b", bundle_question(parts), ["12", "7"], parts=parts)
    alice = "\nBob: problem B\nAlice: problem A\n\nProblem A: 2 * 6 = 12, so \\boxed{12}.\n\n"
    bob = " Ben has 3 cats and 4 dogs.\n\nProblem B: 3 + 4 = 7, so \\boxed{7}.\n\n"
    scripted(monkeypatch, default_model, [alice, bob])
    strategy = st.make_strategy("hogwild-orchestrated", workers=2, **FAST)
    snaps = record_snapshots(strategy)
    out = strategy.run(default_model, task, [80])
    (r,) = out.results
    assert (r.answer, r.forced) == ("12; 7", False)
    a = out.analytics
    assert a["assignments"]["parts"] == {"Bob": "problem B", "Alice": "problem A"}
    assert a["assignments"]["problems"] == {"Bob": [2], "Alice": [1]}
    assert a["division"]["first_answer"] == ["Alice", "Bob"] and a["assignments"]["followed"] == 1.0
    alice_text, bob_text = snaps[-1].workers
    assert "Here is the assignment" in alice_text
    assert "While Alice writes the assignment" in bob_text and "as Alice assigned it:" in bob_text


@pytest.mark.parametrize("name", ["hogwild-orchestrated", "hogwild-verified"])
def test_pattern_strategies_decode_for_real(default_model, name):
    """The real model, greedy, a few passes: every budget gets an answer (forced or not), the
    analytics describe the run, and the pattern's texts are what the workers read."""
    strategy = st.make_strategy(name, workers=3, **FAST)
    snaps = record_snapshots(strategy)
    out = strategy.run(default_model, TASK, [6, 12])
    assert [r.budget for r in out.results] == [6, 12] and [s.passes for s in snaps] == [6, 12]
    assert all(r.answer is not None or r.forced for r in out.results)
    assert out.analytics["steps"] >= 3 and set(out.analytics["per_worker"]) == {"Alice", "Bob", "Carol"}
    first = snaps[-1].workers
    if name == "hogwild-verified":
        assert "the checker" in first[2] and "Carol is the checker" in strategy.protocol.system_text()
    else:
        assert "Here is the assignment" in first[0]
        assert all("While Alice writes the assignment" in t for t in first[1:])


def test_team_names_avoid_the_task_names() -> None:
    """Each task gets worker names its question does not mention; the analytics use them."""
    team = st.make_strategy("hogwild-combined", workers=2)
    assert team.names(Task("a", "Alice and Bob share 6 pears. How many each?", "3")) == ["Carol", "Dave"]
    assert team.names(TASK) == ["Alice", "Bob"]
    assert st.make_strategy("independent", workers=2).names(TASK) == ["Worker 1", "Worker 2"]
