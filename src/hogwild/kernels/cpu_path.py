"""Switch a loaded model to the fastest CPU inference path available, once, in place.

The model code (:mod:`hogwild.models.llama`) is plain PyTorch; this module swaps in the CPU
replacements through the seams it offers: modules are replaced, the MLP gate
(:attr:`MLP.act_mul`) becomes the native kernel, activations flow in fp32
(:attr:`CausalLM.activation_dtype`) and the model gets a :class:`NativeDecoder` as its
layer stack (:attr:`CausalLM.stack`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.llama import MLP, CausalLM, RMSNorm, replace_modules
from . import build, ops
from .layers import KernelLinear, KernelRMSNorm, PackedLinear, can_pack
from .native import NativeDecoder
from .qlinear import QuantLinear


def prepare_for_cpu(model: CausalLM) -> CausalLM:
    """Swap in the fastest CPU inference path available and return the same model.

    With the native kernels: every plain linear becomes a :class:`KernelLinear` (linears a
    loader already made :class:`QuantLinear`, weights kept in a block format, stay), norms
    and the SiLU gate use their kernels, and activations flow in fp32 whatever the weight
    format (fp32, bf16 or quantized: "weight-only"); the model also gets the one-call
    :class:`NativeDecoder` (q/k/v and gate/up fused or not). Without them, fp32 linears are prepacked for oneDNN
    (:class:`PackedLinear`). Results differ from the plain modules by fp32 rounding only.
    A no-op off CPU. Copy the model before, not after: the decoder holds raw pointers.
    """
    if model.device.type != "cpu":
        return model
    if build.available() and model.dtype in (torch.float32, torch.bfloat16):
        replace_modules(model, nn.Linear, KernelLinear)
        replace_modules(model, RMSNorm, KernelRMSNorm)
        for module in model.modules():
            if isinstance(module, MLP) and isinstance(module.gate_up_proj, (KernelLinear, QuantLinear)):
                module.act_mul = ops.silu_mul  # fp32 contiguous in, as KernelLinear returns
        model.activation_dtype = torch.float32
        if model.model.layers:
            model.stack = NativeDecoder(model)
    elif can_pack(model.dtype, model.device):
        replace_modules(model, nn.Linear, PackedLinear)
    return model
