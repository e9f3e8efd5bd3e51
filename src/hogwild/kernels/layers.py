"""Drop-in CPU replacements for the plain modules of :mod:`hogwild.models.llama`.

Each one computes what the module it replaces computes, up to fp32 rounding, and takes its
weights from that module without copying them where it can.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.llama import RMSNorm, rms_norm
from . import ops


class PackedLinear(nn.Module):
    """A linear layer whose weight was reordered once into oneDNN's blocked layout.

    On CPU in fp32, MKL's plain sgemm runs at about half the memory bandwidth when a pass has
    a handful of rows (N workers); the prepacked oneDNN kernel reads the weight once at close
    to full speed (see docs/design-decisions.md). The original weight is not kept.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def can_pack(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether prepacked oneDNN linears are available for this dtype and device."""
    if device.type != "cpu" or dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return False
    try:
        probe = nn.Linear(8, 8)
        PackedLinear(probe)(torch.zeros(2, 8))
    except (RuntimeError, AttributeError):
        return False
    return True


class KernelLinear(nn.Module):
    """A linear layer for CPU inference with fp32 activations and fp32 or bf16 weights.

    Passes of at most :data:`hogwild.kernels.MAX_ROWS` rows (decode passes, batched ones of
    many runs included) use the native kernel: it reads the weight once per call, at close to
    the memory bandwidth for a few rows and near the FMA rate for many, in either dtype, and
    a row's output does not depend on the other rows of the call (batch invariance). Larger
    batches (prefill chunks) use torch's fp32 matmul, converting a bf16 weight on the fly,
    because CPUs without bf16 instructions run bf16 matmuls at a fraction of their fp32 rate.

    Where the CPU computes bf16 weights on AVX-512 BF16 dot products (:func:`ops.pairs_pay`),
    the weight is reordered once into :class:`ops.PairedBF16` and only that copy is kept;
    every pass then takes the native kernel, prefill chunks included (it beats torch's fp32
    matmul there too), and :attr:`weight` gives the plain weight back as a copy.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().contiguous()  # shares storage when already contiguous
        self.paired = ops.PairedBF16.pack(weight) if ops.pairs_pay(weight) else None
        self.plain = None if self.paired is not None else weight
        self.bias = None if linear.bias is None else linear.bias.detach().float().contiguous()

    @property
    def weight(self) -> torch.Tensor:
        """The weight [out, in] in its plain layout (a copy when it is kept in dot pairs)."""
        return self.plain if self.plain is not None else self.paired.unpack()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.paired is not None:
            flat = x.reshape(-1, self.in_features).contiguous()
            return ops.linear(flat, self.paired, self.bias).reshape(*x.shape[:-1], self.out_features)
        if x.dim() == 2 and x.shape[0] <= ops.MAX_ROWS:
            return ops.linear(x.contiguous(), self.plain, self.bias)
        return F.linear(x, self.plain.float(), self.bias)


class KernelRMSNorm(nn.Module):
    """An :class:`RMSNorm` that runs the native kernel on contiguous fp32 input.

    It keeps an fp32 copy of the weight (the same tensor when the weight is fp32) because the
    kernel reads fp32 only; other input (the strided q/k slices a q/k norm gets on the module
    path) takes the plain computation."""

    def __init__(self, norm: RMSNorm):
        super().__init__()
        self.weight = norm.weight
        self.eps = norm.eps
        self.weight32 = norm.weight.detach().float().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and x.is_contiguous():
            return ops.rmsnorm(x, self.weight32, self.eps)
        return rms_norm(x, self.weight, self.eps)
