"""Fused elementwise kernels of a decode pass on the GPU (Triton).

Why: in a decode pass the linears read the weights at full bandwidth, but each plain-ops
RMSNorm (7 launches), rotation (8) and SiLU gate (3) is a chain of tiny kernels of a few
microseconds each; over 28-64 layers they cost more than a millisecond a pass. Each chain is
one kernel here, with the rounding of the plain ops (computed in fp32, rounded to the
activations' dtype where they round).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rmsnorm(X, W, Y, n, stride_x, stride_y, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    ok = offs < n
    x = tl.load(X + row * stride_x + offs, mask=ok, other=0.0).to(tl.float32)
    inv = tl.rsqrt(tl.sum(x * x, 0) / n + eps)
    normed = (x * inv).to(Y.dtype.element_ty).to(tl.float32)
    w = tl.load(W + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + offs, (normed * w).to(Y.dtype.element_ty), mask=ok)


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension, as :func:`hogwild.models.llama.rms_norm` computes it."""
    shape = x.shape
    n = shape[-1]
    x2 = x.reshape(-1, n)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    out_dtype = torch.promote_types(weight.dtype, x.dtype)
    y = torch.empty((x2.shape[0], n), dtype=out_dtype, device=x.device)
    if x2.shape[0]:
        _rmsnorm[(x2.shape[0],)](x2, weight, y, n, x2.stride(0), y.stride(0), eps,
                                 BLOCK=triton.next_power_of_2(n), num_warps=4 if n <= 4096 else 8)
    return y.view(*shape[:-1], n)


@triton.jit
def _silu_mul(GU, Y, n, stride_gu, stride_y, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    gate = tl.load(GU + row * stride_gu + offs, mask=ok, other=0.0).to(tl.float32)
    up = tl.load(GU + row * stride_gu + n + offs, mask=ok, other=0.0)
    act = (gate / (1.0 + tl.exp(-gate))).to(Y.dtype.element_ty).to(tl.float32)
    tl.store(Y + row * stride_y + offs, (act * up.to(tl.float32)).to(Y.dtype.element_ty), mask=ok)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for a fused gate/up output [rows, 2 * intermediate]."""
    rows, two_n = gate_up.shape
    n = two_n // 2
    if gate_up.stride(-1) != 1:
        gate_up = gate_up.contiguous()
    y = torch.empty((rows, n), dtype=gate_up.dtype, device=gate_up.device)
    block = 1024
    if rows:
        _silu_mul[(rows, triton.cdiv(n, block))](gate_up, y, n, gate_up.stride(0), y.stride(0), BLOCK=block)
    return y


@triton.jit
def _rope_store(K, V, POS, SLOTS, INV_FREQ, KP, VP,
                stride_kr, stride_kh, stride_vr, stride_vh, stride_ph, stride_ps,
                HALF: tl.constexpr, BLOCK_H: tl.constexpr):
    row = tl.program_id(0)
    h = tl.program_id(1)
    j = tl.arange(0, BLOCK_H)
    ok = j < HALF
    pos = tl.load(POS + row).to(tl.float32)
    slot = tl.load(SLOTS + row).to(tl.int64)
    angle = pos * tl.load(INV_FREQ + j, mask=ok, other=0.0)
    c = tl.cos(angle)
    s = tl.sin(angle)
    k1 = tl.load(K + row * stride_kr + h * stride_kh + j, mask=ok, other=0.0).to(tl.float32)
    k2 = tl.load(K + row * stride_kr + h * stride_kh + HALF + j, mask=ok, other=0.0).to(tl.float32)
    # rotate-half on the two halves, rounded to the pool's dtype as the plain path stores it
    dst = KP + h * stride_ph + slot * stride_ps
    tl.store(dst + j, (k1 * c - k2 * s).to(KP.dtype.element_ty), mask=ok)
    tl.store(dst + HALF + j, (k2 * c + k1 * s).to(KP.dtype.element_ty), mask=ok)
    vdst = VP + h * stride_ph + slot * stride_ps
    v1 = tl.load(V + row * stride_vr + h * stride_vh + j, mask=ok, other=0.0)
    v2 = tl.load(V + row * stride_vr + h * stride_vh + HALF + j, mask=ok, other=0.0)
    tl.store(vdst + j, v1.to(VP.dtype.element_ty), mask=ok)
    tl.store(vdst + HALF + j, v2.to(VP.dtype.element_ty), mask=ok)


def rope_store(k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
               inv_freq: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor) -> None:
    """Rotate keys [rows, kv_heads, d] to their block-local ``positions`` and store keys and
    values at ``slots`` of one layer's pools [kv_heads, capacity, d], in one launch."""
    rows, kv_heads, d = k.shape
    if k.stride(-1) != 1 or v.stride(-1) != 1:
        k, v = k.contiguous(), v.contiguous()
    half = d // 2
    if rows:
        _rope_store[(rows, kv_heads)](
            k, v, positions, slots, inv_freq, k_pool, v_pool,
            k.stride(0), k.stride(1), v.stride(0), v.stride(1), k_pool.stride(0), k_pool.stride(1),
            HALF=half, BLOCK_H=triton.next_power_of_2(half), num_warps=1,
        )
