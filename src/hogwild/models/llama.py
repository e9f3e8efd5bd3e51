"""Our own compact forward for the Llama family (Llama 2/3, Mistral, Qwen2/2.5, Qwen3, SmolLM2).

Module and parameter names mirror transformers' ``LlamaForCausalLM`` so a transformers state
dict loads as is. The forward does not own attention: each layer hands its un-rotated queries
and its keys/values to an :class:`AttentionPlan`, which writes them into the shared cache and
attends over every worker's view. That is what lets one model call serve many workers.

This module is plain PyTorch and knows no execution backend. A faster one plugs in through
three seams whose defaults are the plain computation: modules can be replaced (linears,
norms), :attr:`MLP.act_mul` computes the gate of a fused gate/up output, and
:attr:`CausalLM.stack` may run all layers of a pass at once (:class:`LayerStack`). The CPU
path (:func:`hogwild.kernels.prepare_for_cpu`) uses all three.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


class AttentionPlan(Protocol):
    """What a forward pass needs from the cache: store this layer's K/V, return attention."""

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [rows, heads, d] un-rotated; k, v [rows, kv_heads, d], k un-rotated. Returns [rows, heads, d]."""
        ...


class LayerStack(Protocol):
    """All decoder layers of a pass in one call, in place of the per-layer modules.

    Small passes spend more time in the dispatch of a layer's many modules than in their
    arithmetic; a stack runs the same computation without that overhead where it can."""

    def run(self, x: torch.Tensor, plan: AttentionPlan) -> bool:
        """Apply every layer to the residual stream ``x`` [rows, hidden] in place and return
        True, or return False with ``x`` untouched when it cannot take this pass."""
        ...


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension, computed in fp32 and scaled in the input's dtype."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for a fused gate/up output [..., 2 * intermediate]."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class SelfAttention(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.c = c
        self.q_proj = nn.Linear(c.hidden_size, c.num_heads * c.head_dim, bias=c.qkv_bias)
        self.k_proj = nn.Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.qkv_bias)
        self.v_proj = nn.Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.qkv_bias)
        self.o_proj = nn.Linear(c.num_heads * c.head_dim, c.hidden_size, bias=c.o_bias)
        if c.qk_norm:
            self.q_norm = RMSNorm(c.head_dim, c.rms_eps)
            self.k_norm = RMSNorm(c.head_dim, c.rms_eps)

        self.qkv_proj: nn.Module | None = None

    def fuse(self) -> None:
        """One q/k/v matmul instead of three (fewer kernel launches per layer)."""
        self.qkv_proj = _concat_linears(self.q_proj, self.k_proj, self.v_proj)
        del self.q_proj, self.k_proj, self.v_proj

    def forward(self, x: torch.Tensor, layer: int, plan: AttentionPlan) -> torch.Tensor:
        c = self.c
        rows = x.shape[0]
        if self.qkv_proj is not None:
            qkv = self.qkv_proj(x)
            q_size, kv_size = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
            q = qkv[:, :q_size].view(rows, c.num_heads, c.head_dim)
            k = qkv[:, q_size : q_size + kv_size].view(rows, c.num_kv_heads, c.head_dim)
            v = qkv[:, q_size + kv_size :].view(rows, c.num_kv_heads, c.head_dim)
        else:
            q = self.q_proj(x).view(rows, c.num_heads, c.head_dim)
            k = self.k_proj(x).view(rows, c.num_kv_heads, c.head_dim)
            v = self.v_proj(x).view(rows, c.num_kv_heads, c.head_dim)
        if c.qk_norm:
            q = self.q_norm(q)
            k = self.k_norm(k)
        out = plan.attend(layer, q, k, v)
        return self.o_proj(out.reshape(rows, c.num_heads * c.head_dim))


class MLP(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=c.mlp_bias)
        self.gate_up_proj: nn.Module | None = None
        #: the gate applied to the fused gate/up output; a backend may put its own kernel here
        self.act_mul: Callable[[torch.Tensor], torch.Tensor] = silu_mul

    def fuse(self) -> None:
        self.gate_up_proj = _concat_linears(self.gate_proj, self.up_proj)
        del self.gate_proj, self.up_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            return self.down_proj(self.act_mul(self.gate_up_proj(x)))
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def replace_modules(model: nn.Module, kind: type[nn.Module], make: Callable[[nn.Module], nn.Module]) -> None:
    """Replace every submodule of exactly type ``kind`` by ``make(submodule)`` (backends)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is kind:
                setattr(module, name, make(child))


def _concat_linears(*linears: nn.Linear) -> nn.Linear:
    first = linears[0]
    with torch.no_grad():  # each written once; parts still on the meta device stay there
        weight = _cat([l.weight for l in linears])
        bias = _cat([l.bias for l in linears]) if first.bias is not None else None
    return _linear_from(weight, bias)


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat, except for parts on the meta device (a loader's placeholders), made
    directly: concatenating meta tensors imports torch._dynamo, 1 s of a model load."""
    if any(p.is_meta for p in parts):
        return torch.empty((sum(p.shape[0] for p in parts), *parts[0].shape[1:]), dtype=parts[0].dtype, device="meta")
    return torch.cat(parts)


def _linear_from(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Linear:
    """An ``nn.Linear`` around existing tensors, never initialised: no full-size random init
    (minutes of fp32 for a 32B model), no second copy, and no meta-device init, whose
    decompositions import torch._dynamo (1 s of every model load)."""
    linear = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(linear)
    linear.out_features, linear.in_features = weight.shape
    linear.weight = nn.Parameter(weight, requires_grad=False)
    linear.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
    return linear


class DecoderLayer(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.self_attn = SelfAttention(c)
        self.mlp = MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_eps)

    def forward(self, x: torch.Tensor, layer: int, plan: AttentionPlan) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), layer, plan)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        if torch.empty(0).is_meta:
            # Built to receive loaded weights: no random init. nn.Embedding's init goes
            # through a function that imports torch._dynamo on first use, 1 s of every
            # model load (docs/results/quant/load/README.md).
            table = nn.Parameter(torch.empty(c.vocab_size, c.hidden_size))
            self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size, _weight=table)
        else:
            self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.num_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_eps)


class CausalLM(nn.Module):
    """A decoder-only LM whose attention is supplied per call by an :class:`AttentionPlan`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = Backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        #: the dtype activations flow in (None: the weights' dtype); a backend that keeps
        #: bf16 weights but computes in fp32 sets it
        self.activation_dtype: torch.dtype | None = None
        #: runs all layers of a pass where it can (see :class:`LayerStack`); None: module by module
        self.stack: LayerStack | None = None

    def fuse_projections(self) -> CausalLM:
        """Concatenate q/k/v and gate/up weights for inference (done by the loader).

        The state dict then no longer matches transformers' names; fuse after loading.
        """
        for layer in self.model.layers:
            if layer.self_attn.qkv_proj is None:
                layer.self_attn.fuse()
                layer.mlp.fuse()
        return self

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    @torch.inference_mode()
    def forward(
        self, ids: torch.Tensor, plan: AttentionPlan, logit_rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run all rows (tokens of every worker, packed) through the model in one call.

        Only ``logit_rows`` (default: all) go through the final norm and the output
        projection: the 49k-wide head is a large share of a pass on small models.
        Returns fp32 logits [len(logit_rows), vocab].
        """
        x = self.model.embed_tokens(ids)
        if self.activation_dtype is not None:
            x = x.to(self.activation_dtype)
        if self.stack is None or not self.stack.run(x, plan):
            for i, layer in enumerate(self.model.layers):
                x = layer(x, i, plan)
        if logit_rows is not None:
            x = x.index_select(0, logit_rows)
        return self.lm_head(self.model.norm(x)).float()
