"""Put quantized matrices into a loaded model: the one hook between the loaders and the kernels.

:func:`install` replaces each listed linear by the native kernels' ``QuantLinear`` (built
from a :class:`QuantWeight` and the module's bias), imported lazily so that nothing here
needs the kernels until a model is installed. :func:`apply_dequantized` is the PyTorch
fallback: the float modules get the dequantized values, so a machine without the kernels
computes with the same weights, only slower.

Paths are module paths of the fused model (``model.layers.3.self_attn.qkv_proj``); a path
naming an unfused part (``...self_attn.v_proj``) in a fused layer splits that layer's fused
linear back into its parts first (see :mod:`hogwild.quant.plan` for why formats can differ per part).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from ..errors import HogwildError
from ..models.llama import CausalLM
from ..quant.dequant import dequantize
from ..quant.weights import QuantWeight

log = logging.getLogger(__name__)

_FUSED = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj", "gate_proj": "gate_up_proj",
          "up_proj": "gate_up_proj"}


def quant_linear_class() -> type | None:
    """The kernels' ``QuantLinear`` when it exists and the native kernels load, else None."""
    try:
        from . import build
        from .qlinear import QuantLinear
    except ImportError:
        return None
    return QuantLinear if build.available() else None


def _part_rows(model: CausalLM, path: str) -> tuple[nn.Module, str, slice] | None:
    """For an unfused part path in a fused layer: (parent, fused name, the part's rows)."""
    parent_path, _, name = path.rpartition(".")
    fused = _FUSED.get(name)
    parent = model.get_submodule(parent_path)
    if fused is None or getattr(parent, fused, None) is None:
        return None
    c = model.config
    sizes = {"q_proj": c.num_heads * c.head_dim, "k_proj": c.num_kv_heads * c.head_dim,
             "v_proj": c.num_kv_heads * c.head_dim, "gate_proj": c.intermediate_size, "up_proj": c.intermediate_size}
    order = ["q_proj", "k_proj", "v_proj"] if fused == "qkv_proj" else ["gate_proj", "up_proj"]
    start = sum(sizes[p] for p in order[: order.index(name)])
    return parent, fused, slice(start, start + sizes[name])


def unfuse(parent: nn.Module, fused: str) -> None:
    """Split ``parent``'s fused linear back into its parts (views of its rows, no copy)."""
    linear = getattr(parent, fused)
    if fused == "qkv_proj":
        c = parent.c
        names = ["q_proj", "k_proj", "v_proj"]
        sizes = [c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.num_kv_heads * c.head_dim]
    else:
        names, sizes = ["gate_proj", "up_proj"], [linear.out_features // 2] * 2
    start = 0
    for name, size in zip(names, sizes):
        part = nn.Linear(linear.in_features, size, bias=linear.bias is not None, device="meta")
        part.weight = nn.Parameter(linear.weight.detach()[start : start + size], requires_grad=False)
        if linear.bias is not None:
            part.bias = nn.Parameter(linear.bias.detach()[start : start + size], requires_grad=False)
        setattr(parent, name, part)
        start += size
    setattr(parent, fused, None)


def install(model: CausalLM, weights: dict[str, QuantWeight], make: Callable | None = None) -> int:
    """Replace the linears at ``weights``' paths by ``make(qweight, bias)`` (default: the
    kernels' ``QuantLinear``) and return how many were replaced (a
    format the kernels refuse keeps its float module, given the dequantized values). Raises
    :class:`HogwildError` when there is no ``QuantLinear`` to install."""
    if make is None:
        make = quant_linear_class()
        if make is None:
            raise HogwildError("the native quantized kernels are not available on this machine")
    installed = 0
    for path in weights:
        part = _part_rows(model, path)
        if part is not None:
            unfuse(part[0], part[1])
    for path, q in weights.items():
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        module = getattr(parent, name)
        if getattr(module, "in_features", q.k) != q.k or getattr(module, "out_features", q.n) != q.n:
            raise HogwildError(f"{path}: quantized matrix [{q.n}, {q.k}] does not fit the module "
                               f"[{module.out_features}, {module.in_features}]")
        bias = getattr(module, "bias", None)
        try:
            layer = make(q, None if bias is None else bias.detach().float().contiguous())
        except HogwildError as error:  # a format this machine's kernels do not read
            log.warning("%s: %s; computing with its dequantized values", path, error)
            apply_dequantized(model, {path: q})
            continue
        setattr(parent, name, layer)
        installed += 1
    return installed


@torch.no_grad()
def apply_dequantized(model: CausalLM, weights: dict[str, QuantWeight]) -> None:
    """Write each matrix's dequantized values into the float model (the PyTorch fallback).

    The output projection of a tied model gets its own weight, so the embeddings keep their
    float values as they do with the kernels."""
    for path, q in weights.items():
        values = dequantize(q)
        part = _part_rows(model, path)
        if part is not None:
            parent, fused, rows = part
            target = getattr(parent, fused).weight
            target[rows] = values.to(target.device, target.dtype)
            continue
        module = model.get_submodule(path)
        if path == "lm_head" and module.weight is model.model.embed_tokens.weight:
            module.weight = nn.Parameter(values.to(module.weight.device, module.weight.dtype), requires_grad=False)
        else:
            module.weight.copy_(values.to(module.weight.dtype))
