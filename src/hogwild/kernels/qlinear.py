"""Linear layers whose weights stay in a quantized block format (``hogwild_quant.c``).

A :class:`~hogwild.quant.weights.QuantWeight` is used as stored, its blocks read by the
native kernel in place: decoding is memory-bound and a 4-bit matrix is a quarter of the bytes
of a bf16 one, so widening it at load would give most of the gain away. Activations stay fp32
in and out, as with :class:`~hogwild.kernels.layers.KernelLinear`, so the modules mix freely
in one model, and the one-call decoder (:mod:`.native`) takes either.

The kernel is batch invariant like ``hw_linear`` (a row's output is the same bits whatever
else shares the call): it fixes the order of every reduction, and the whole process uses one
arithmetic (:func:`set_mode`), never one chosen by row count.
"""

from __future__ import annotations

import ctypes

import torch
from torch import nn

from ..errors import HogwildError
from ..quant.weights import QuantWeight
from .build import declare, library, status
from .ops import _need, check_rc, span, threads

_P = ctypes.c_void_p
_I = ctypes.c_int
declare({
    "hw_qlinear": (_I, [_P, _P, _I, ctypes.c_float, _P, _P, _P, _P, _P, _I, _I, _I, _I, _I]),
    "hw_qlinear_mode": (_I, [_I]),
    "hw_qformat_supported": (_I, [_I]),
    "hw_qlinear_isa": (_I, [_I]),
    "hw_fit_subblocks": (_I, [_P, ctypes.c_int64, _I, _I, ctypes.c_float, ctypes.c_float, _P, _P, _I]),
})

#: the kernel's two arithmetics (see hogwild_quant.c): int8 activations with integer dot
#: products, or the blocks widened to fp32 in registers
MODES = {"int8": 0, "f32": 1}


def set_mode(mode: str) -> str:
    """Choose the arithmetic of every later quantized linear in this process; returns the
    previous one. For benchmarks and tests: switching mid-run changes results."""
    if mode not in MODES:
        raise HogwildError(f"unknown quantized-kernel mode {mode!r}; known: {', '.join(MODES)}")
    lib = _lib_or_fail()
    before = lib.hw_qlinear_mode(-1)
    lib.hw_qlinear_mode(MODES[mode])
    return next(name for name, code in MODES.items() if code == before)


def set_isa(isa: int) -> int:
    """Force the quantized kernels' instruction set (1 AVX2, 2 AVX-512, 0 the best this CPU
    has); returns the one in force before, or -1 (nothing changed) when the CPU lacks it.
    Both give the same bits (tests/test_quant_kernels.py): for tests and benchmarks."""
    lib = _lib_or_fail()
    before = lib.hw_qlinear_isa(-1)
    return before if lib.hw_qlinear_isa(isa) >= 0 else -1


def format_supported(ggml_type: int) -> bool:
    """Whether the native kernels read this ggml block type (False without the kernels)."""
    lib = library()
    return lib is not None and bool(lib.hw_qformat_supported(int(ggml_type)))


def fit_subblocks(x: torch.Tensor, nmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`hogwild.quant.encode.fit_subblocks` in C (``hw_fit_subblocks``): the same
    search, about 10 x faster, for quantize-on-load of large models (the loader passes it
    to the encoder when the kernels are here). Equal to the reference up to fp32 rounding of
    the sums, which may pick the other of two candidates whose errors tie within it."""
    from ..quant.encode import SEARCH_LO, SEARCH_STEPS, SEARCH_WIDTH

    lib = _lib_or_fail()
    x = x.detach().to(torch.float32).contiguous()
    _need(x.dim() == 2 and x.shape[1] == 32, f"fit_subblocks wants rows of 32 values, got {tuple(x.shape)}")
    scale, offset = torch.empty(x.shape[0]), torch.empty(x.shape[0])
    with span("fit_subblocks"):
        rc = lib.hw_fit_subblocks(x.data_ptr(), x.shape[0], int(nmax), SEARCH_STEPS, SEARCH_LO, SEARCH_WIDTH,
                                  scale.data_ptr(), offset.data_ptr(), threads())
    check_rc(rc, "hw_fit_subblocks")
    return scale, offset


def _lib_or_fail() -> ctypes.CDLL:
    lib = library()
    if lib is None:
        raise HogwildError(f"quantized linears need the native kernels, which are unavailable: {status()}")
    return lib


class Corrections:
    """The super-weight guard's corrections of one matrix, grouped by output column as the C
    side reads them: column ``i`` adds ``x[:, j[f]] * delta[f]`` for ``f`` in
    ``start[i]:start[i+1]``, in the order :class:`QuantWeight` lists them."""

    def __init__(self, weight: QuantWeight):
        index, delta = weight.fix_index, weight.fix_delta
        if index is None or delta is None:
            if index is not None or delta is not None:
                raise HogwildError("QuantWeight: fix_index and fix_delta come together")
            self.start = self.j = self.delta = None
            return
        index = index.to(torch.int64).reshape(-1, 2)
        delta = delta.to(torch.float32).reshape(-1)
        if index.shape[0] != delta.numel():
            raise HogwildError(f"QuantWeight: {index.shape[0]} fix_index rows but {delta.numel()} fix_delta values")
        if index.numel() and (index.min() < 0 or index[:, 0].max() >= weight.n or index[:, 1].max() >= weight.k):
            raise HogwildError(f"QuantWeight [{weight.n}, {weight.k}]: a correction outside the matrix")
        order = torch.sort(index[:, 0], stable=True).indices  # by column, given order kept within one
        counts = torch.bincount(index[:, 0], minlength=weight.n)
        self.start = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]).to(torch.int32).contiguous()
        self.j = index[order, 1].to(torch.int32).contiguous()
        self.delta = delta[order].contiguous()

    def pointers(self) -> tuple[int | None, int | None, int | None]:
        if self.start is None:
            return None, None, None
        return self.start.data_ptr(), self.j.data_ptr(), self.delta.data_ptr()


def qlinear(
    x: torch.Tensor, weight: QuantWeight, bias: torch.Tensor | None = None, out: torch.Tensor | None = None,
    accumulate: bool = False, corrections: Corrections | None = None,
) -> torch.Tensor:
    """x [M, K] fp32 @ dequant(weight)^T * weight.scale + corrections + bias -> [M, N] fp32.

    Any M. ``corrections``: ``Corrections(weight)`` built once (built here when None and the
    weight has any). With ``out`` and ``accumulate`` the result is added to ``out`` in place
    (``out`` must not overlap ``x``)."""
    lib = _lib_or_fail()
    _need(x.dtype == torch.float32 and x.dim() == 2 and x.is_contiguous(), "x must be contiguous fp32 [M, K]")
    M, K = x.shape
    N = weight.n
    _need(K == weight.k, f"x has {K} features, the weight {weight.k}")
    _need(weight.data.is_contiguous() and weight.data.device.type == "cpu", "weight data must be contiguous on CPU")
    _need(bool(lib.hw_qformat_supported(weight.fmt.ggml_type)), f"format {weight.fmt.name} has no native kernel")
    if bias is not None:
        _need(bias.dtype == torch.float32 and bias.is_contiguous() and bias.numel() == N, "bias must be fp32 [N]")
    if out is None:
        _need(not accumulate, "accumulate needs out")
        out = torch.empty((M, N), dtype=torch.float32)
    else:
        _need(out.dtype == torch.float32 and out.is_contiguous() and tuple(out.shape) == (M, N), "out must be fp32 [M, N]")
    if corrections is None and weight.fix_index is not None:
        corrections = Corrections(weight)
    fix = corrections.pointers() if corrections is not None else (None, None, None)
    with span("qlinear"):
        rc = lib.hw_qlinear(
            x.data_ptr(), weight.data.data_ptr(), weight.fmt.ggml_type, float(weight.scale), *fix,
            None if bias is None else bias.data_ptr(), out.data_ptr(), M, N, K, int(accumulate), threads(),
        )
    check_rc(rc, "qlinear")
    return out


class QuantLinear(nn.Module):
    """A linear layer computing with a quantized weight as stored (fp32 activations in/out).

    Every row count takes the kernel (it has no row limit; prefill chunks too): the weight
    exists only as blocks, and widening it per call would cost more than the kernel's
    arithmetic. Needs the native kernels (a :class:`HogwildError` says why not otherwise)."""

    def __init__(self, weight: QuantWeight, bias: torch.Tensor | None = None):
        super().__init__()
        lib = _lib_or_fail()
        if not lib.hw_qformat_supported(weight.fmt.ggml_type):
            raise HogwildError(f"format {weight.fmt.name} has no native kernel")
        if weight.data.device.type != "cpu":
            raise HogwildError("quantized linears run on CPU")
        if not weight.data.is_contiguous():
            weight = QuantWeight(weight.fmt, weight.data.contiguous(), weight.n, weight.k, weight.scale,
                                 weight.fix_index, weight.fix_delta)
        if bias is not None and bias.numel() != weight.n:
            raise HogwildError(f"bias of {bias.numel()} values for {weight.n} outputs")
        self.qweight = weight
        self.in_features, self.out_features = weight.k, weight.n
        self.bias = None if bias is None else bias.detach().float().contiguous()
        self.corrections = Corrections(weight)

    @property
    def fmt(self) -> str:
        return self.qweight.fmt.name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).float().contiguous()
        y = qlinear(flat, self.qweight, self.bias, corrections=self.corrections)
        return y.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, format={self.fmt}"
