"""The GPU inference path of a loaded model: fused Triton norms and SiLU gate.

:func:`prepare_for_gpu` is the GPU counterpart of :func:`hogwild.kernels.prepare_for_cpu`:
the loader calls it, it swaps modules through the model's seams (``models/llama.py``) and
leaves the plain PyTorch definition as the oracle. Attention is not here: the batch picks
:class:`hogwild.core.attention.GpuPlan` per pass.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.llama import MLP, CausalLM, RMSNorm, replace_modules
from . import available


class TritonRMSNorm(nn.Module):
    """:class:`RMSNorm` in one kernel (the plain one is ~7 launches)."""

    def __init__(self, norm: RMSNorm):
        super().__init__()
        self.weight = norm.weight
        self.eps = norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .triton_ops import rmsnorm

        return rmsnorm(x, self.weight, self.eps)


def _silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    from .triton_ops import silu_mul

    return silu_mul(gate_up)


def prepare_for_gpu(model: CausalLM) -> CausalLM:
    """Swap in the fused kernels on a CUDA model with Triton; a no-op anywhere else.
    Results differ from the plain modules by rounding order only."""
    if model.device.type != "cuda" or not available(model.device):
        return model
    replace_modules(model, RMSNorm, TritonRMSNorm)
    for module in model.modules():
        if isinstance(module, MLP):
            module.act_mul = _silu_mul
    return model
