"""The per-block attention of a pass in two Triton kernels (see the package docstring).

Work is described by *items*: an item is one tile of (row, view entry) pairs that read the
same block (at most ``BLOCK_M // G`` pairs, G query heads per KV head, so one program's query
rows are pairs x heads), and one chunk ``[lo, hi)`` of that block's keys. Program (item, KV
head) scores its query rows against the chunk's keys with an online softmax and writes one
partial (output, log-sum-exp) per pair; a pair sees only its first ``visible`` keys of the
block. Splitting long blocks into chunks keeps the whole GPU busy when few rows read a long
prompt; grouping the rows that read one block into a tile makes them share its loads.

The merge kernel combines each row's partials, listed in CSR form (``row_ptr``,
``part_idx``), with log-sum-exp weights. Items with no pairs are skipped, so a caller may
pad the item table to a fixed size (CUDA graphs).

Item table layout (int32, 6 per item): pool slot where the block starts, lo, hi, first
pair, number of pairs, first partial. Queries are rotated per pair inside the kernel (the
pair's offset times the rotary frequencies), so no rotated copy is stored per pair.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import BLOCK_M, BLOCK_N

LOG2E = 1.4426950408889634


@triton.jit
def _attend_items(Q, K, V, O, LSE, ITEMS, PAIR_ROW, DELTA, VIS, INV_FREQ,
                  stride_qr, stride_qh, stride_kh, stride_ks, stride_op, stride_oh, stride_lp,
                  scale_log2,
                  G: tl.constexpr, HEAD_DIM: tl.constexpr, HALF: tl.constexpr, BLOCK_H: tl.constexpr,
                  BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr):
    item = tl.program_id(0)
    kvh = tl.program_id(1)
    meta = ITEMS + item * 6  # ITEM_FIELDS (hogwild.gpu) ints per item
    start = tl.load(meta)
    lo = tl.load(meta + 1)
    hi = tl.load(meta + 2)
    pair0 = tl.load(meta + 3)
    npairs = tl.load(meta + 4)
    out0 = tl.load(meta + 5)
    if npairs > 0:
        offs_m = tl.arange(0, BLOCK_M)
        p = offs_m // G
        head = kvh * G + offs_m % G
        m_ok = p < npairs
        # the query of each pair: its row's, rotated by the pair's offset (rotate-half, fp32),
        # then rounded to the pool's dtype for the dot products
        row = tl.load(PAIR_ROW + pair0 + p, mask=m_ok, other=0)
        delta = tl.load(DELTA + pair0 + p, mask=m_ok, other=0).to(tl.float32)
        j = tl.arange(0, BLOCK_H)
        h_ok = j < HALF
        angle = delta[:, None] * tl.load(INV_FREQ + j, mask=h_ok, other=0.0)[None, :]
        c = tl.cos(angle)
        sn = tl.sin(angle)
        q_at = Q + row[:, None] * stride_qr + head[:, None] * stride_qh + j[None, :]
        q_mask = m_ok[:, None] & h_ok[None, :]
        q1 = tl.load(q_at, mask=q_mask, other=0.0).to(tl.float32)
        q2 = tl.load(q_at + HALF, mask=q_mask, other=0.0).to(tl.float32)
        qa = (q1 * c - q2 * sn).to(K.dtype.element_ty)
        qb = (q2 * c + q1 * sn).to(K.dtype.element_ty)
        vis = tl.load(VIS + pair0 + p, mask=m_ok, other=0)
        offs_d = tl.arange(0, BLOCK_D)
        d_ok = offs_d < HEAD_DIM
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        k_base = K + kvh * stride_kh
        v_base = V + kvh * stride_kh
        for n0 in range(lo, hi, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            n_ok = offs_n < hi
            slot = (start + offs_n)[:, None] * stride_ks
            k_mask = n_ok[:, None] & h_ok[None, :]
            k1 = tl.load(k_base + slot + j[None, :], mask=k_mask, other=0.0)
            k2 = tl.load(k_base + slot + HALF + j[None, :], mask=k_mask, other=0.0)
            if IEEE:
                s = tl.dot(qa, tl.trans(k1), input_precision="ieee")
                s += tl.dot(qb, tl.trans(k2), input_precision="ieee")
            else:
                s = tl.dot(qa, tl.trans(k1))
                s += tl.dot(qb, tl.trans(k2))
            s = s * scale_log2
            seen = (offs_n[None, :] < vis[:, None]) & n_ok[None, :]
            s = tl.where(seen, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_safe)
            prob = tl.exp2(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(prob, 1)
            v = tl.load(v_base + slot + offs_d[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(prob.to(v.dtype), v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(prob.to(v.dtype), v)
            m_i = m_new
        empty = l_i == 0.0
        out = acc / tl.where(empty, 1.0, l_i)[:, None]
        lse = tl.where(empty, float("-inf"), m_i + tl.log2(tl.where(empty, 1.0, l_i)))
        part = out0 + p
        tl.store(O + part[:, None] * stride_op + head[:, None] * stride_oh + offs_d[None, :], out,
                 mask=m_ok[:, None] & d_ok[None, :])
        tl.store(LSE + part * stride_lp + head, lse, mask=m_ok)


@triton.jit
def _merge_rows(O, LSE, OUT, ROW_PTR, PART_IDX,
                stride_op, stride_oh, stride_lp, stride_rr, stride_rh,
                HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0)
    h = tl.program_id(1)
    a = tl.load(ROW_PTR + row)
    b = tl.load(ROW_PTR + row + 1)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    m = tl.full([], float("-inf"), tl.float32)
    den = tl.full([], 0.0, tl.float32)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for i in range(a, b):
        s = tl.load(PART_IDX + i)
        lse = tl.load(LSE + s * stride_lp + h)
        o = tl.load(O + s * stride_op + h * stride_oh + offs_d, mask=d_ok, other=0.0)
        m_new = tl.maximum(m, lse)
        alpha = tl.exp2(m - m_new)
        w = tl.exp2(lse - m_new)
        acc = acc * alpha + w * o
        den = den * alpha + w
        m = m_new
    tl.store(OUT + row * stride_rr + h * stride_rh + offs_d, (acc / den).to(OUT.dtype.element_ty), mask=d_ok)


def attend(q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, items: torch.Tensor,
           pair_row: torch.Tensor, delta: torch.Tensor, visible: torch.Tensor, inv_freq: torch.Tensor,
           num_items: int, num_parts: int, row_ptr: torch.Tensor, part_idx: torch.Tensor,
           scale: float) -> torch.Tensor:
    """Attention of the rows of ``q`` [rows, heads, d] (un-rotated) over their views.

    k_pool, v_pool [kv_heads, capacity, d] (one layer); items [num_items * 6] int32 (module
    docstring); per pair (int32) its row, query rotation and visible keys; inv_freq the
    rotary frequencies [d / 2]; row_ptr [rows + 1] and part_idx int32, each row's partials."""
    rows, heads, d = q.shape
    if q.stride(-1) != 1:
        q = q.contiguous()
    kv_heads = k_pool.shape[0]
    half = d // 2
    block_d = max(16, triton.next_power_of_2(d))
    block_h = max(16, triton.next_power_of_2(half))
    device = q.device
    o = torch.empty((max(num_parts, 1), heads, d), dtype=torch.float32, device=device)
    lse = torch.empty((max(num_parts, 1), heads), dtype=torch.float32, device=device)
    if num_items:
        _attend_items[(num_items, kv_heads)](
            q, k_pool, v_pool, o, lse, items, pair_row, delta, visible, inv_freq,
            q.stride(0), q.stride(1), k_pool.stride(0), k_pool.stride(1),
            o.stride(0), o.stride(1), lse.stride(0),
            scale * LOG2E,
            G=heads // kv_heads, HEAD_DIM=d, HALF=half, BLOCK_H=block_h, BLOCK_D=block_d,
            BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, IEEE=k_pool.dtype == torch.float32,
            num_warps=4, num_stages=2,
        )
    out = torch.empty((rows, heads, d), dtype=q.dtype, device=device)
    _merge_rows[(rows, heads)](
        o, lse, out, row_ptr, part_idx,
        o.stride(0), o.stride(1), lse.stride(0), out.stride(0), out.stride(1),
        HEAD_DIM=d, BLOCK_D=block_d, num_warps=1,
    )
    return out
