"""Oracle 4: every worker's view, decoded back to text, is what the layout definition says.

The test keeps its own record of what each worker wrote (openings, forced tokens, step ends
by the toy rule, headers) and rebuilds the expected views from docs/architecture.md
("Layouts"), independently of the engine's bookkeeping."""

from __future__ import annotations

import pytest

from hogwild.core.engine import Engine
from hogwild.core.layouts import OTHERS_HEADER, OWN_HEADER, UNFINISHED

from tiny import forced_tokens, random_script, tiny_model, toy_decode, toy_step_end


def expected_views(layout, script, steps, history, current, n):
    prompt = list(script.prompt_ids)
    const = {k: list(v) for k, v in script.constants.items()}
    hist = [t for _, ids in history for t in ids]
    views = []
    for w in range(n):
        others = [o for o in range(n) if o != w]
        if layout == "contiguous":
            v = prompt + [t for o in others for t in current[o] + const[UNFINISHED]] + current[w]
        elif layout == "independent":
            v = prompt + current[w]
        elif layout == "interleaved":
            v = prompt + hist + current[w]
        else:
            v = prompt + hist + (const[OTHERS_HEADER] if others else [])
            v += [t for o in others for t in current[o] + const[UNFINISHED]]
            v += const[OWN_HEADER] + current[w]
        views.append(v)
    return views


@pytest.mark.parametrize("layout", ["combined", "interleaved", "contiguous", "independent"])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 8])
def test_views_match_layout_definition(layout: str, n: int) -> None:
    steps_layout = layout in ("combined", "interleaved")
    script = random_script(n, seed=7 * n + len(layout))
    run = Engine(tiny_model(seed=n), layout, decode=toy_decode).start(script)
    step_no = [1] * n
    current = [list(o) for o in script.opening_ids]  # fed so far, per worker's current step
    generated = [[] for _ in range(n)]
    history: list[tuple[int, list[int]]] = []
    pending: list[list[int] | None] = [None] * n  # what the next pass will feed
    pending_hist: list[tuple[int, list[int], int]] = []
    merges = 0
    for forced in forced_tokens(n, 30, seed=n):
        run.step(force=forced)
        # everything queued last time is now in the cache
        for w in range(n):
            if pending[w] is not None:
                current[w] += pending[w]
        for w, ids, last in pending_hist:
            ids.append(last)
        pending_hist = []
        new_current = [list(c) for c in current]
        for w in range(n):
            tok = forced[w]
            generated[w].append(tok)
            pending[w] = [tok]
            if steps_layout and toy_step_end(toy_decode(generated[w])):
                done_ids = list(current[w])
                history.append((w, done_ids))
                pending_hist.append((w, done_ids, tok))
                step_no[w] += 1
                generated[w] = []
                new_current[w] = []
                pending[w] = list(script.header_ids(w, step_no[w], False))
                merges += 1
        current = new_current
        want = expected_views(layout, script, step_no, history, current, n)
        for w in range(n):
            assert toy_decode(run.view_token_ids(w)) == toy_decode(want[w]), (layout, n, w)
            assert run.view_token_ids(w) == want[w]
    if steps_layout:
        assert merges >= 2
