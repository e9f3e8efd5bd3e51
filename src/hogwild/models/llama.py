"""Our own compact forward for the Llama family (Llama 2/3, Mistral, Qwen2/2.5, Qwen3, SmolLM2).

Module and parameter names mirror transformers' ``LlamaForCausalLM`` so a transformers state
dict loads as is. The forward does not own attention: each layer hands its un-rotated queries
and its keys/values to an :class:`AttentionPlan`, which writes them into the shared cache and
attends over every worker's view. That is what lets one model call serve many workers.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .. import kernels
from .config import ModelConfig


class AttentionPlan(Protocol):
    """What a forward pass needs from the cache: store this layer's K/V, return attention.

    A plan may also offer ``native_pass()`` (as :class:`hogwild.attention.KernelPlan` does):
    then a model prepared with native kernels runs all layers of the pass in one call."""

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [rows, heads, d] un-rotated; k, v [rows, kv_heads, d], k un-rotated. Returns [rows, heads, d]."""
        ...


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.weight32: torch.Tensor | None = None  # set by use_kernels(): fp32 copy for the kernel

    def use_kernels(self) -> None:
        self.weight32 = self.weight.detach().float().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight32 is not None and x.dtype == torch.float32 and x.is_contiguous():
            return kernels.rmsnorm(x, self.weight32, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


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

        self.qkv_proj: nn.Linear | None = None

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
        self.gate_up_proj: nn.Linear | None = None

    def fuse(self) -> None:
        self.gate_up_proj = _concat_linears(self.gate_proj, self.up_proj)
        del self.gate_proj, self.up_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            gate_up = self.gate_up_proj(x)
            if isinstance(self.gate_up_proj, KernelLinear):  # prepared: fp32 out, fused gate kernel
                return self.down_proj(kernels.silu_mul(gate_up))
            gate, up = gate_up.chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


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


class KernelLinear(nn.Module):
    """A linear layer for CPU inference with fp32 activations and fp32 or bf16 weights.

    Decode passes (at most ``MAX_ROWS`` rows) use the native kernel, which reads the weight
    once at close to the memory bandwidth in either dtype; larger batches (prefill) use
    torch's fp32 matmul, converting a bf16 weight on the fly, because CPUs without bf16
    instructions run bf16 matmuls at a fraction of their fp32 rate.
    """

    MAX_ROWS = 16

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight.detach().contiguous()  # shares storage when already contiguous
        self.bias = None if linear.bias is None else linear.bias.detach().float().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.dim() == 2 and x.shape[0] <= self.MAX_ROWS:
            return kernels.linear(x.contiguous(), self.weight, self.bias)
        return F.linear(x, self.weight.float(), self.bias)


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


def _concat_linears(*linears: nn.Linear) -> nn.Linear:
    first = linears[0]
    out = sum(l.out_features for l in linears)
    fused = nn.Linear(first.in_features, out, bias=first.bias is not None)
    fused = fused.to(device=first.weight.device, dtype=first.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([l.weight for l in linears]))
        if first.bias is not None:
            fused.bias.copy_(torch.cat([l.bias for l in linears]))
    return fused


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
        self.activation_dtype: torch.dtype | None = None  # None: the weights' dtype
        self.native = None  # a NativeDecoder once prepare_for_cpu() found the kernels

    def fuse_projections(self) -> CausalLM:
        """Concatenate q/k/v and gate/up weights for inference (done by the loader).

        The state dict then no longer matches transformers' names; fuse after loading.
        """
        for layer in self.model.layers:
            if layer.self_attn.qkv_proj is None:
                layer.self_attn.fuse()
                layer.mlp.fuse()
        return self

    def prepare_for_cpu(self) -> CausalLM:
        """Swap in the fastest CPU inference path available (done by the loader).

        With the native kernels (:mod:`hogwild.kernels`): every linear becomes a
        :class:`KernelLinear`, norms and the SiLU gate use their kernels, and activations
        flow in fp32 whatever the weight dtype (fp32 or bf16 weights, "weight-only" bf16).
        Without them, fp32 linears are prepacked for oneDNN (:class:`PackedLinear`).
        Results differ from the plain path by fp32 rounding only. A no-op off CPU.
        """
        if self.device.type != "cpu":
            return self
        if kernels.available() and self.dtype in (torch.float32, torch.bfloat16):
            self._swap_linears(KernelLinear)
            for module in self.modules():
                if isinstance(module, RMSNorm):
                    module.use_kernels()
            self.activation_dtype = torch.float32
            if self.model.layers and self.model.layers[0].self_attn.qkv_proj is not None:
                from ..kernels.native import NativeDecoder

                self.native = NativeDecoder(self)
        elif can_pack(self.dtype, self.device):
            self._swap_linears(PackedLinear)
        return self

    def _swap_linears(self, cls: type[nn.Module]) -> None:
        for module in [self, *self.modules()]:
            for name, child in list(module.named_children()):
                if type(child) is nn.Linear:
                    setattr(module, name, cls(child))

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
        native_pass = getattr(plan, "native_pass", None)
        if self.native is not None and native_pass is not None and x.shape[0] <= self.native.MAX_ROWS:
            x = x.contiguous()
            self.native.run(x, plan)  # all layers in one native call (decode passes)
        else:
            for i, layer in enumerate(self.model.layers):
                x = layer(x, i, plan)
        if logit_rows is not None:
            x = x.index_select(0, logit_rows)
        return self.lm_head(self.model.norm(x)).float()
