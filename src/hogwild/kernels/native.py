"""The decoder stack of a prepared model in one native call per decode pass.

A decode pass runs a handful of rows through every layer. Done module by module, each layer
costs dozens of Python-level calls whose dispatch outweighs the arithmetic on small models;
:class:`NativeDecoder` hands the C side a table of weight pointers once and then runs all
layers of a pass (norms, projections, key storage, per-block attention, MLP, residuals) in
``hw_decode_layers``. The PyTorch modules remain the definition; tests hold the two equal.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

import torch

from . import library, span

if TYPE_CHECKING:
    from ..models.llama import CausalLM


class LayerWeights(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in (
        "qkv_w", "qkv_b", "o_w", "o_b", "gate_up_w", "gate_up_b", "down_w", "down_b",
        "ln_in", "ln_post", "q_norm", "k_norm",
    )]


class Dims(ctypes.Structure):
    _fields_ = [
        ("hidden", ctypes.c_int), ("heads", ctypes.c_int), ("kv_heads", ctypes.c_int),
        ("head_dim", ctypes.c_int), ("inter", ctypes.c_int), ("w_bf16", ctypes.c_int),
        ("kv_bf16", ctypes.c_int), ("threads", ctypes.c_int), ("eps", ctypes.c_float),
        ("scale", ctypes.c_float),
    ]


class PassInfo(ctypes.Structure):
    _fields_ = [("rows", ctypes.c_int)] + [(name, ctypes.c_void_p) for name in (
        "slots", "k_cos", "k_sin", "row_start", "pair_slot", "pair_len", "pair_cos", "pair_sin",
    )]


def _bind(lib: ctypes.CDLL) -> None:
    """Declare the decoder's C signatures on this library object (a reloaded library is a
    new object: without argtypes, ctypes would pass pointers as 32-bit ints)."""
    if getattr(lib, "_hogwild_decoder_bound", False):
        return
    P = ctypes.c_void_p
    lib.hw_decode_scratch.restype = ctypes.c_int64
    lib.hw_decode_scratch.argtypes = [ctypes.POINTER(Dims), ctypes.c_int]
    lib.hw_decode_layers.restype = ctypes.c_int
    lib.hw_decode_layers.argtypes = [
        P, ctypes.POINTER(LayerWeights), ctypes.c_int, ctypes.POINTER(Dims), ctypes.POINTER(PassInfo),
        P, P, ctypes.c_int64, ctypes.c_int64, P,
    ]
    lib._hogwild_decoder_bound = True


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class NativeDecoder:
    """All layers of a :class:`CausalLM` prepared with :class:`KernelLinear` modules.

    Holds raw pointers into the model's weights: build it last (``prepare_for_cpu`` does),
    and build a new one if the model's tensors are replaced or moved."""

    MAX_ROWS = 16  # the linear kernel's sweet spot; larger passes go module by module

    def __init__(self, model: CausalLM):
        from ..models.llama import KernelLinear

        lib = library()
        if lib is None:
            raise RuntimeError("native kernels unavailable")
        _bind(lib)
        self.lib = lib
        c = model.config
        self.keep: list[torch.Tensor] = []  # everything the pointer table points into

        def hold(t: torch.Tensor | None) -> int | None:
            if t is None:
                return None
            self.keep.append(t)
            return t.data_ptr()

        table = (LayerWeights * c.num_layers)()
        w_dtype = None
        for i, layer in enumerate(model.model.layers):
            attn, mlp = layer.self_attn, layer.mlp
            linears = (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj)
            if not all(isinstance(m, KernelLinear) for m in linears):
                raise ValueError("the native decoder needs fused projections prepared as KernelLinear")
            w_dtype = w_dtype or attn.qkv_proj.weight.dtype
            if any(m.weight.dtype != w_dtype for m in linears):
                raise ValueError("mixed weight dtypes across layers")
            norms = (layer.input_layernorm, layer.post_attention_layernorm)
            if any(n.weight32 is None for n in norms):
                raise ValueError("norms are not prepared for kernels")
            e = table[i]
            e.qkv_w, e.qkv_b = hold(attn.qkv_proj.weight), hold(attn.qkv_proj.bias)
            e.o_w, e.o_b = hold(attn.o_proj.weight), hold(attn.o_proj.bias)
            e.gate_up_w, e.gate_up_b = hold(mlp.gate_up_proj.weight), hold(mlp.gate_up_proj.bias)
            e.down_w, e.down_b = hold(mlp.down_proj.weight), hold(mlp.down_proj.bias)
            e.ln_in, e.ln_post = hold(norms[0].weight32), hold(norms[1].weight32)
            if c.qk_norm:
                if attn.q_norm.weight32 is None or attn.k_norm.weight32 is None:
                    raise ValueError("q/k norms are not prepared for kernels")
                e.q_norm, e.k_norm = hold(attn.q_norm.weight32), hold(attn.k_norm.weight32)
        self.table = table
        self.num_layers = c.num_layers
        self.w_bf16 = int(w_dtype == torch.bfloat16)
        self.config = c

    def __deepcopy__(self, memo: Any) -> NativeDecoder:
        raise TypeError("a model prepared for native kernels cannot be copied; copy it before prepare_for_cpu()")

    def run(self, x: torch.Tensor, plan: Any) -> None:
        """Apply every layer to the residual stream x [rows, hidden] (fp32, in place)."""
        c, store = self.config, plan.store
        if x.dtype != torch.float32 or not x.is_contiguous() or x.shape[0] != plan.num_rows:
            raise ValueError("native decode needs a contiguous fp32 stream with one row per plan row")
        if store.k.shape[0] != self.num_layers or store.dtype not in (torch.float32, torch.bfloat16):
            raise ValueError("the store does not match the model")
        dims = Dims(
            c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size, self.w_bf16,
            int(store.dtype == torch.bfloat16), max(1, torch.get_num_threads()), c.rms_eps, plan.scale,
        )
        info = plan.native_pass()
        rows = x.shape[0]
        scratch = torch.empty(int(self.lib.hw_decode_scratch(ctypes.byref(dims), rows)), dtype=torch.float32)
        _, kv_heads, capacity, head_dim = store.k.shape
        with span("decode_layers"):
            rc = self.lib.hw_decode_layers(
                x.data_ptr(), self.table, self.num_layers, ctypes.byref(dims), ctypes.byref(info),
                store.k.data_ptr(), store.v.data_ptr(), kv_heads * capacity * head_dim, capacity * head_dim,
                scratch.data_ptr(),
            )
        if rc != 0:
            raise MemoryError("hogwild kernel: attention scratch allocation failed")
