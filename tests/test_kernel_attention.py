"""The native attention kernel (``hw_attend``) against a dense softmax, and its batch
invariance: rows of a big pass give the same bits as alone, on every instruction set."""

from __future__ import annotations

import math

import pytest
import torch

from hogwild import kernels

from kernel_isa import AMX, isa, restore_threads  # noqa: F401 (fixtures used by name)

needs_kernels = pytest.mark.skipif(not kernels.available(), reason=f"native kernels: {kernels.status()}")


def _dense_attention(q, pairs, k_pool, v_pool, rope_cos, rope_sin, scale):
    """Per row: concatenate the (rotated-query) scores of its pairs, one softmax."""
    rows, heads, d = q.shape
    kv_heads = k_pool.shape[0]
    g = heads // kv_heads
    out = torch.empty(rows, heads, d, dtype=torch.float64)
    half = d // 2
    for r in range(rows):
        scores, values = [], []
        for p, (row, start, n) in enumerate(pairs):
            if row != r:
                continue
            qr = q[r].double()
            rotated = torch.cat((-qr[:, half:], qr[:, :half]), dim=-1)
            qr = qr * rope_cos[p].double() + rotated * rope_sin[p].double()
            keys = k_pool[:, start : start + n].double().repeat_interleave(g, dim=0)  # [H, n, d]
            scores.append(torch.einsum("hd,hnd->hn", qr, keys) * scale)
            values.append(v_pool[:, start : start + n].double().repeat_interleave(g, dim=0))
        probs = torch.cat(scores, dim=1).softmax(dim=-1)
        out[r] = torch.einsum("hn,hnd->hd", probs, torch.cat(values, dim=1))
    return out


def _tile_units(pairs, r, int8_from=None, unit=256, short=32):
    """Row r's units as the tile path cuts them (attend_plan): each pair from its own start in
    units of at most ``unit`` keys, in view order; then the row's pairs shorter than ``short``
    keys (not int8 blocks, start >= ``int8_from``), ordered by (start, keys, place in the
    view), fill units of at most ``unit`` keys, a segment each. A unit is a list of (pair
    index, first slot, keys)."""
    units, shorts = [], []
    for p, (row, start, n) in enumerate(pairs):
        if row != r:
            continue
        if 0 < n < short and not (int8_from is not None and start >= int8_from):
            shorts.append((start, n, p))
            continue
        for first in range(0, n, unit):
            units.append([(p, start + first, min(n - first, unit))])
    open_ = None
    for start, n, p in sorted(shorts):
        if open_ is not None and sum(k for _, _, k in open_) + n <= unit:
            open_.append((p, start, n))
        else:
            open_ = [(p, start, n)]
            units.append(open_)
    return units


def _tile_attention(q, pairs, k_pool, v_pool, rope_cos, rope_sin, scale, k_scale=None, v_scale=None, int8_from=None):
    """What the AMX path computes (``kernels.attention_rounds``): per unit (:func:`_tile_units`),
    the query rotated per segment's pair and scaled in fp32 and rounded to bf16, weights e =
    exp(score - the unit's max), their sum rounded to bf16 per weight, and the values weighted
    by e rounded to bf16; the units of a row merged by log-sum-exp. Scores and sums in
    float64. Int8 blocks: pools of the int8 values with ``k_scale``/``v_scale`` [kv_heads,
    slots] (1 elsewhere): scores times the key's scale, e times the value's scale before its
    rounding for the values."""
    rows, heads, d = q.shape
    g = heads // k_pool.shape[0]
    out = torch.empty(rows, heads, d, dtype=torch.float64)
    half = d // 2
    for r in range(rows):
        parts = []
        for segments in _tile_units(pairs, r, int8_from):
            scores, weights_of, values = [], [], []
            for p, start, n in segments:
                qr = q[r]
                rotated = torch.cat((-qr[:, half:], qr[:, :half]), dim=-1)
                qr = ((qr * rope_cos[p] + rotated * rope_sin[p]) * scale).to(torch.bfloat16).double()
                sl = slice(start, start + n)
                sc = torch.einsum("hd,hnd->hn", qr, k_pool[:, sl].double().repeat_interleave(g, dim=0))
                if k_scale is not None:
                    sc = sc * k_scale[:, sl].double().repeat_interleave(g, dim=0)
                scores.append(sc)
                weights_of.append(None if v_scale is None else v_scale[:, sl].double().repeat_interleave(g, dim=0))
                values.append(v_pool[:, sl].double().repeat_interleave(g, dim=0))
            scores = torch.cat(scores, dim=1)
            m = scores.max(dim=-1, keepdim=True).values
            e = (scores - m).exp()
            w = e if v_scale is None else e * torch.cat(weights_of, dim=1)
            parts.append((m, e.to(torch.bfloat16).double().sum(-1, keepdim=True),
                          torch.einsum("hn,hnd->hd", w.to(torch.bfloat16).double(), torch.cat(values, dim=1))))
        best = torch.stack([m for m, _, _ in parts]).max(dim=0).values
        den = sum(l * (m - best).exp() for m, l, _ in parts)
        out[r] = sum(acc * (m - best).exp() for m, _, acc in parts) / den
    return out


# Rows with several pairs: a long block (split into work units) several rows share, short
# ones, a repeat within a row, a partial view of a shared block.
MIXED = [(0, 0, 700), (0, 900, 5), (0, 950, 1), (1, 0, 700), (1, 900, 33), (1, 900, 33), (2, 1000, 300),
         (2, 0, 650)]
# Nine rows seeing the same blocks: more sharing rows than one work item takes (groups split).
SHARED = [(r, start, n) for r in range(9) for start, n in ((0, 300), (400, 7))]


def _team(first_row: int = 0) -> list[tuple[int, int, int]]:
    """A 6-worker team in the combined layout, rows from first_row: each sees the prompt,
    every other worker's step (20-25 keys) followed by a marker, and its own step last, 14
    blocks; on the dot path its long segments are scored on key tiles. Then a row that sees
    only the prompt (scored row by row in the same work item), one whose prompt ends 10 keys
    earlier and one that sees the first 10 of it among as many blocks."""
    pairs = []
    for w in range(6):
        r = first_row + w
        pairs += [(r, 0, 300), (r, 400, 3)]
        for o in range(6):
            if o != w:
                pairs += [(r, 500 + 40 * o, 20 + o), (r, 700, 3)]
        pairs += [(r, 410, 3), (r, 500 + 40 * w, 20 + w)]
    pairs.append((first_row + 6, 0, 300))
    pairs += [(first_row + 7, 0, 290)] + [(first_row + 7, 500 + 40 * o, 20 + o) for o in range(6)] + [
        (first_row + 7, 700, 3)] * 4
    pairs += [(first_row + 8, 0, 10)] + [(first_row + 8, 500 + 40 * o, 20 + o) for o in range(6)] + [
        (first_row + 8, 700, 3)] * 4
    return pairs


TEAM = _team()


def _many_rows(rows: int = 128) -> list[tuple[int, int, int]]:
    """A batched pass: groups of four rows (one run each) share a prompt block of their own or
    the common one, all see a common marker, and each row has its own step block."""
    pairs = []
    for r in range(rows):
        run = r // 4
        prompt = (0, 300 + 7 * (r % 4)) if run % 2 else (1000 + 40 * (run % 4), 33 + r % 4)
        pairs += [(r, *prompt), (r, 1290, 3), (r, 400 + 4 * r, 1 + r % 4)]
    return pairs


MANY = _many_rows()


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads,kv_heads,d", [(4, 2, 16), (9, 3, 64), (8, 1, 128), (6, 6, 72)])
@pytest.mark.parametrize("pairs", [MIXED, SHARED, MANY, TEAM], ids=["mixed", "shared", "many", "team"])
def test_attention_kernel(dtype, heads, kv_heads, d, pairs, isa) -> None:
    torch.manual_seed(heads + d)
    cap = 1500
    k_pool = torch.randn(kv_heads, cap, d).to(dtype)
    v_pool = torch.randn(kv_heads, cap, d).to(dtype)
    rows = pairs[-1][0] + 1
    q = torch.randn(rows, heads, d)
    angles = torch.rand(len(pairs), d // 2) * 6
    cos = torch.cat((angles.cos(), angles.cos()), dim=-1)
    sin = torch.cat((angles.sin(), angles.sin()), dim=-1)
    row_start = torch.tensor([sum(1 for p in pairs if p[0] < r) for r in range(rows + 1)], dtype=torch.int32)
    slots = torch.tensor([s for _, s, _ in pairs])
    lens = torch.tensor([n for _, _, n in pairs], dtype=torch.int32)
    scale = 1 / math.sqrt(d)
    got = kernels.attend(q, row_start, slots, lens, cos, sin, k_pool, v_pool, scale, 1300)
    want = _dense_attention(q, pairs, k_pool, v_pool, cos, sin, scale)
    rounds = kernels.attention_rounds(k_pool)  # AMX tiles: bf16 queries and weights
    assert rounds == (isa >= 3 and dtype == torch.bfloat16 and d % 32 == 0)
    if rounds:
        # the same rounding in float64: equal but where an fp32 weight (polynomial exp) and the
        # float64 one round to different bf16 neighbours (a few in 10^4, each < 1e-3 here)
        err = (got.double() - _tile_attention(q, pairs, k_pool, v_pool, cos, sin, scale)).abs()
        assert err.mean().item() < 1e-6 and err.max().item() < 1e-3
        assert (got.double() - want).abs().max().item() < 1e-2  # what the rounding costs
    else:
        assert (got.double() - want).abs().max().item() < 1e-4


def _attend_pairs(q, pairs, cos, sin, k_pool, v_pool, shift=0):
    """kernels.attend over (row, start, n) pairs (rows numbered 0..), blocks moved by shift."""
    rows = q.shape[0]
    row_start = torch.tensor([sum(1 for p in pairs if p[0] < r) for r in range(rows + 1)], dtype=torch.int32)
    slots = torch.tensor([s + shift for _, s, _ in pairs])
    lens = torch.tensor([n for _, _, n in pairs], dtype=torch.int32)
    return kernels.attend(q, row_start, slots, lens, cos, sin, k_pool, v_pool, 1 / math.sqrt(q.shape[-1]),
                          int((slots + lens).max()))


@needs_kernels
@pytest.mark.parametrize("heads,kv_heads,d", [(9, 3, 64), (14, 2, 64), (8, 1, 128)])
def test_short_blocks_follow_their_ids_not_the_pool(heads, kv_heads, d, isa) -> None:
    """A team's rows (the combined layout's markers and short steps) give the same bits when
    the pool holds their blocks in another order, as it does when other runs share the pool:
    the kernel takes a row's short blocks in the order of the ids it is given (``pair_key``),
    and only by slot without them (which then changes the row's sums, so the test can fail)."""
    torch.manual_seed(d)
    # blocks: a prompt, a header, a marker and four workers' steps of 4-12 keys (id, keys)
    blocks = [(0, 120), (1, 3), (2, 3), (3, 9), (4, 12), (5, 4), (6, 7)]
    views = [[0, 1, 4, 2, 5, 2, 6, 2, 3], [0, 1, 3, 2, 5, 2, 6, 2, 4],
             [0, 1, 3, 2, 4, 2, 6, 2, 5], [0, 1, 3, 2, 4, 2, 5, 2, 6]]
    layouts = {"ids order": [0, 1, 2, 3, 4, 5, 6], "reversed": [0, 6, 5, 4, 3, 2, 1]}
    values = {b: (torch.randn(kv_heads, n, d), torch.randn(kv_heads, n, d)) for b, n in blocks}
    q = torch.randn(len(views), heads, d)
    pairs_per_row = sum(len(v) for v in views)
    angles = torch.rand(pairs_per_row, d // 2) * 6
    cos, sin = torch.cat((angles.cos(),) * 2, -1), torch.cat((angles.sin(),) * 2, -1)
    row_start = torch.tensor([0] + [sum(len(v) for v in views[: r + 1]) for r in range(len(views))], dtype=torch.int32)
    outs = {}
    for name, order in layouts.items():
        slot, at = 5, {}  # odd start: other alignments too
        for b in order:
            at[b] = slot
            slot += dict(blocks)[b] + 2
        k_pool = torch.zeros(kv_heads, slot, d, dtype=torch.bfloat16)
        v_pool = torch.zeros_like(k_pool)
        for b, n in blocks:
            k_pool[:, at[b] : at[b] + n], v_pool[:, at[b] : at[b] + n] = values[b][0], values[b][1]
        slots = torch.tensor([at[b] for v in views for b in v])
        lens = torch.tensor([dict(blocks)[b] for v in views for b in v], dtype=torch.int32)
        key = torch.tensor([b for v in views for b in v])
        for keyed in (True, False):
            outs[name, keyed] = kernels.attend(q, row_start, slots, lens, cos, sin, k_pool, v_pool,
                                               1 / math.sqrt(d), slot, pair_key=key if keyed else None)
    assert torch.equal(outs["ids order", True], outs["reversed", True])
    if kernels.attention_rounds(torch.zeros(1, 1, d, dtype=torch.bfloat16)):  # short blocks make units here
        assert not torch.equal(outs["ids order", False], outs["reversed", False])


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# head_dim 64, 128 and 96 take the AVX-512 loops where the CPU has them (96: a 32-lane value block)
@pytest.mark.parametrize("heads,kv_heads,d", [(4, 2, 16), (9, 3, 64), (8, 1, 128), (6, 6, 72), (14, 2, 20), (6, 2, 96)])
def test_attention_is_batch_invariant(dtype, heads, kv_heads, d, restore_threads, isa) -> None:
    """Each row of a 143-row pass (rows sharing blocks, so they are computed together in work
    items) gives the same bits as that row alone, in any order, under any thread count, and
    with its blocks at other places in the pool."""
    torch.manual_seed(d + heads)
    # on the tiles a row's short blocks, ordered by slot, make a unit: rows 131 and 132 see the
    # same ones in other orders (one work item, each segment with the row's own rotation);
    # 130's unit is the start of 128's and 133's of 131's (a shorter last block), so they
    # ride in those work items with their lanes masked past their keys
    pairs = MANY + [(128, 0, 700), (128, 1290, 3), (128, 1290, 3), (129, 0, 299), (129, 900, 300), (130, 0, 700),
                    (130, 1290, 3), (131, 0, 700), (131, 1300, 5), (131, 1290, 3), (131, 1310, 6),
                    (132, 1310, 6), (132, 1290, 3), (132, 0, 700), (132, 1300, 5), (133, 1310, 4), (133, 1290, 3),
                    (133, 1300, 5)] + _team(134)
    rows = pairs[-1][0] + 1
    shift = 1503  # odd: every block lands at another alignment too
    k_pool = torch.randn(kv_heads, 1500 + shift, d).to(dtype)
    v_pool = torch.randn(kv_heads, 1500 + shift, d).to(dtype)
    k_pool[:, shift:], v_pool[:, shift:] = k_pool[:, :1500].clone(), v_pool[:, :1500].clone()
    q = torch.randn(rows, heads, d)
    angles = torch.rand(len(pairs), d // 2) * 6
    cos, sin = torch.cat((angles.cos(),) * 2, -1), torch.cat((angles.sin(),) * 2, -1)

    def subset(order):
        picked = [[i for i, p in enumerate(pairs) if p[0] == r] for r in order]
        flat = [i for row in picked for i in row]
        sub = [(new, pairs[i][1], pairs[i][2]) for new, row in enumerate(picked) for i in row]
        return q[order], sub, cos[flat], sin[flat]

    torch.set_num_threads(1)
    alone = torch.cat([_attend_pairs(*subset([r]), k_pool, v_pool) for r in range(rows)])
    gen = torch.Generator().manual_seed(d)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        order = torch.randperm(rows, generator=gen).tolist()
        assert torch.equal(_attend_pairs(*subset(order), k_pool, v_pool), alone[order])
        some = order[: rows // 3]
        assert torch.equal(_attend_pairs(*subset(some), k_pool, v_pool, shift=shift), alone[some])
