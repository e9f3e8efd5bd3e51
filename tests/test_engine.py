"""Engine behaviour on a tiny random model: budgets, snapshots, sampling, custom layouts, errors."""

from __future__ import annotations

import pytest
import torch

from hogwild.core.engine import Engine
from hogwild.errors import InvalidRequestError
from hogwild.core.events import HeaderEvent, SnapshotEvent, StepEvent, StopEvent, TokenEvent
from hogwild.core.layouts import Layout, get_layout
from hogwild.core.sampling import Sampling, greedy_ids
from hogwild.core.script import Script

from tiny import forced_tokens, lockstep, random_script, tiny_model, toy_decode


def test_budget_and_snapshots() -> None:
    run = Engine(tiny_model(), "combined", decode=toy_decode).start(random_script(3, seed=1))
    events = list(run.run(max_passes=9, snapshot_at=[2, 5, 9]))
    snaps = [e for e in events if isinstance(e, SnapshotEvent)]
    assert [s.passes for s in snaps] == [2, 5, 9]
    assert [s.snapshot.passes for s in snaps] == [2, 5, 9]
    assert isinstance(events[-1], StopEvent) and events[-1].reason == "budget"
    assert run.passes == 9
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    assert len(tokens) == 27  # one token per worker per pass
    for w in range(3):  # each snapshot's text is a prefix of the later ones
        assert snaps[-1].snapshot.workers[w].startswith(snaps[0].snapshot.workers[w])
    assert sum(isinstance(e, HeaderEvent) for e in events) >= 3  # the openings


def test_stop_rule_and_eos() -> None:
    script = random_script(2, seed=2)
    run = Engine(tiny_model(), "interleaved", decode=toy_decode).start(script)
    events = list(run.run(max_passes=50, stop=lambda r, ev: r.passes == 4))
    assert run.passes == 4 and run.stop_reason == "stop-rule"
    script.stop_ids = (5,)
    run = Engine(tiny_model(), "combined", decode=toy_decode).start(script)
    for forced in [{0: 9, 1: 9}, {0: 5, 1: 9}, {1: 5}]:
        events = run.step(force=forced)
    assert run.stop_reason == "eos" and isinstance(events[-1], StopEvent)
    assert any(isinstance(e, StepEvent) for e in events), "a finished worker's last step joins history"
    with pytest.raises(InvalidRequestError):
        run.step()


def test_sampling_is_seeded() -> None:
    model = tiny_model(seed=4)
    script = random_script(2, seed=3)

    def tokens(seed, temperature=1.0, top_p=1.0):
        run = Engine(model, "combined", Sampling(temperature, top_p, seed), decode=toy_decode).start(script)
        return [e.token for e in run.run(12) if isinstance(e, TokenEvent)]

    assert tokens(1) == tokens(1)
    assert tokens(1) != tokens(2)
    greedy = [e.token for e in Engine(model, "combined", decode=toy_decode).start(script).run(12)
              if isinstance(e, TokenEvent)]
    assert tokens(1, top_p=1e-6) == greedy  # top-p that keeps only the best token is greedy
    with pytest.raises(InvalidRequestError):
        Sampling(temperature=-1)
    with pytest.raises(InvalidRequestError):
        Sampling(top_p=0)


def test_greedy_ids_are_argmax_first_of_ties() -> None:
    logits = torch.randn(16, 1000, generator=torch.Generator().manual_seed(0))
    logits[3, 10] = logits[3, 700] = logits[3].max() + 1  # a tie: the first index wins
    logits[5] = 0.0  # a row of equal logits: index 0
    assert greedy_ids(logits) == logits.argmax(-1).tolist()
    assert greedy_ids(logits)[3] == 10 and greedy_ids(logits)[5] == 0


def test_custom_layout() -> None:
    """A user's own layout: every worker sees only the prompt and worker 0's block before its own."""
    lay = Layout("follow-alice", lambda s, w: [s.prompt] + ([s.current[0]] if w else []) + [s.current[w]], steps=False)
    run = Engine(tiny_model(), lay, decode=toy_decode).start(random_script(3, seed=4))
    for forced in forced_tokens(3, 5, seed=1):
        run.step(force=forced)
    assert run.view(2) == [run.prompt, run.workers[0].block, run.workers[2].block]
    assert run.view_token_ids(0) == list(run.script.prompt_ids) + run.workers[0].all_ids[:-1]


def test_bad_input() -> None:
    model = tiny_model()
    with pytest.raises(InvalidRequestError, match="at least one worker"):
        Engine(model).start(Script(prompt_ids=[3, 4], opening_ids=[]))
    with pytest.raises(InvalidRequestError, match="empty"):
        Engine(model, "independent").start(Script(prompt_ids=[], opening_ids=[[1]]))
    with pytest.raises(InvalidRequestError, match="unknown layout"):
        get_layout("diagonal")
    with pytest.raises(InvalidRequestError, match="constant blocks"):
        Engine(model, "combined").start(Script(prompt_ids=[3, 4], opening_ids=[[1]]))
    small = tiny_model(max_positions=32)
    with pytest.raises(InvalidRequestError, match="context"):
        Engine(small, "independent").start(Script(prompt_ids=list(range(2, 40)), opening_ids=[[1]]))


def test_context_limit_stops_the_run() -> None:
    small = tiny_model(max_positions=24)
    run = Engine(small, "independent", decode=toy_decode).start(Script(prompt_ids=list(range(2, 12)), opening_ids=[[3], [4]]))
    events = list(run.run(100))
    assert run.stop_reason == "context" and isinstance(events[-1], StopEvent)
    assert all(run.view_length(w) <= 24 for w in range(2))


def test_bfloat16_fast_matches_reference() -> None:
    model = tiny_model(seed=5, dtype=torch.bfloat16)
    script = random_script(3, seed=9)
    fast = Engine(model, "combined", decode=toy_decode).start(script)
    ref = Engine(model, "combined", decode=toy_decode, attention="reference").start(script)
    *_, pairs = lockstep(fast, ref, forced_tokens(3, 12, seed=3))
    for a, b in pairs:
        assert (a - b).abs().max().item() < 0.1 * b.abs().max().item()


@pytest.mark.parametrize("arch", [{}, {"model_type": "qwen3", "qk_norm": True}, {"model_type": "qwen2", "qkv_bias": True}])
def test_fused_projections_match(arch) -> None:
    import copy

    plain = tiny_model(seed=1, **arch)
    fused = copy.deepcopy(plain).fuse_projections()
    assert fused.model.layers[0].self_attn.qkv_proj is not None
    script = random_script(2, seed=1)
    a = Engine(plain, "combined", decode=toy_decode).start(script)
    b = Engine(fused, "combined", decode=toy_decode).start(script)
    *_, pairs = lockstep(a, b, forced_tokens(2, 6, seed=1))
    for x, y in pairs:
        assert (x - y).abs().max().item() < 1e-5


def test_draw_follows_the_weights_and_never_draws_a_zero():
    """The sampler's draw (inverse CDF, one uniform per token): frequencies follow the weights,
    a zero weight is never drawn, and the same stream gives the same tokens."""
    from collections import Counter

    from hogwild.core.sampling import draw

    p = torch.tensor([0.0, 0.1, 0.0, 0.6, 0.3, 0.0])
    gen = torch.Generator().manual_seed(0)
    counts = Counter(draw(p, gen) for _ in range(20000))
    assert set(counts) == {1, 3, 4}
    for i, weight in ((1, 0.1), (3, 0.6), (4, 0.3)):
        assert abs(counts[i] / 20000 - weight) < 0.015
    streams = [torch.Generator().manual_seed(7) for _ in range(2)]
    assert [draw(p, streams[0]) for _ in range(50)] == [draw(p, streams[1]) for _ in range(50)]


def test_top_p_keeps_what_a_whole_sort_keeps():
    """top_p_probs looks at the largest 1024 probabilities first and sorts a whole row only
    when its nucleus may go past them: either way the tokens and values a full sort keeps."""
    from hogwild.core.sampling import TOP_P_FIRST, top_p_probs

    def whole_sort(probs, top_p):
        values, order = probs.sort(-1, descending=True)
        keep = values.cumsum(-1) - values < top_p
        return torch.zeros_like(probs).scatter_(-1, order, values * keep)

    gen = torch.Generator().manual_seed(0)
    for scale, top_p in ((12.0, 0.95), (4.0, 0.9), (0.5, 0.95), (12.0, 1e-6)):  # 0.5: a nucleus past 1024
        probs = torch.softmax(torch.randn(3, 20000, generator=gen) * scale, -1)
        kept = top_p_probs(probs, top_p)
        assert torch.equal(kept, whole_sort(probs, top_p))
        if scale == 0.5:
            assert int((kept[0] > 0).sum()) > TOP_P_FIRST
