"""No repeated n-grams across a run's steps (hogwild.core.repeats) and its use in the engine."""

from __future__ import annotations

import pytest
import torch

from hogwild.core.engine import Engine
from hogwild.core.events import TokenEvent
from hogwild.core.repeats import NgramBan

from tiny import random_script, tiny_model, toy_decode


def test_index_and_bans():
    ban = NgramBan(3)
    ban.add([5, 6, 7, 8], 0)
    assert ban.banned([1, 5, 6]) == {7} and ban.banned([6, 7]) == {8}
    assert ban.banned([7]) == set()  # shorter than n - 1: nothing to match
    ban.add([5, 6, 9], 2)  # only the n-gram ending at index 2 is new
    assert ban.banned([5, 6]) == {7, 9}
    with pytest.raises(ValueError):
        NgramBan(1)


def test_greedy_and_sampled_choices_skip_banned_tokens():
    ban = NgramBan(2)
    ban.add([3, 4], 0)  # after 3, 4 may not come again
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, 5.0, 1.0], [0.0, 0.0, 0.0, 0.0, 5.0, 1.0]])
    assert ban.fix_greedy(logits, [[3], [2]], [4, 4]) == [5, 4]  # only the first row is banned
    masked = ban.mask(logits, [[3], [2]])
    assert masked[0, 4] == float("-inf") and masked[1, 4] == 5.0 and logits[0, 4] == 5.0  # a copy
    assert ban.mask(logits, [[2], [2]]) is logits  # nothing banned: no copy


def _repeated_ngrams(n: int, ban_n: int, passes: int = 60) -> int:
    """Run 2 greedy workers of a tiny model; count generated tokens that completed an n-gram
    already present in one of the run's steps before that pass."""
    script = random_script(2, seed=5)
    script.no_repeat_ngram = ban_n
    run = Engine(tiny_model(seed=3), "combined", decode=toy_decode).start(script)
    repeats = 0
    for _ in range(passes):
        steps = [ids for _, ids in run.history_order] + [list(w.step_ids) for w in run.workers]
        seen = {tuple(s[i - n + 1 : i + 1]) for s in steps for i in range(n - 1, len(s))}
        before = {w.index: list(w.step_ids) for w in run.workers}
        for ev in run.step():
            if isinstance(ev, TokenEvent):
                step = before[ev.worker]
                if len(step) >= n - 1 and tuple(step[len(step) - n + 1 :]) + (ev.token,) in seen:
                    repeats += 1
        if run.stop_reason:
            break
    return repeats


def test_the_engine_never_repeats_a_banned_ngram():
    assert _repeated_ngrams(3, 0) > 0  # a tiny random model loops without the ban
    assert _repeated_ngrams(3, 3) == 0
