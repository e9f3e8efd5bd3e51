"""The decoder stack of a prepared model in one native call per decode pass.

A decode pass runs a handful of rows (or, batched, up to :data:`MAX_ROWS` rows of many runs)
through every layer. Done module by module, each layer costs dozens of Python-level calls
whose dispatch outweighs the arithmetic on small models;
:class:`NativeDecoder` hands the C side a table of weight pointers once and then runs all
layers of a pass (norms, projections, key storage, per-block attention, MLP, residuals) in
``hw_decode_layers``. The PyTorch modules remain the definition; tests hold the two equal.
Each row's result is the same bits whatever other rows share the pass and wherever its
blocks sit in the store (the kernels are batch invariant; ``tests/test_kernels.py`` checks
it), so batching runs together never changes what one run computes.

The decoder is the model's :class:`hogwild.models.llama.LayerStack`. It takes a pass only
from a plan that describes the pass in the decoder's terms (:class:`NativePassSource`, which
the engine's kernel attention plan is), so it never guesses at a plan's internals.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ..models.llama import AttentionPlan, CausalLM
from .build import declare, library
from .layers import KernelLinear, KernelRMSNorm
from .ops import MAX_ROWS, CompactPool, check_rc, span, supports_attention, threads
from .qlinear import QuantLinear


@dataclass(frozen=True)
class NativePass:
    """One pass as the native decoder reads it: where each row's key and value go, which
    stored keys each row attends to with which query rotation, and the store itself.

    Row r owns pairs ``row_start[r]:row_start[r+1]``; pair p reads keys at pool slots
    ``pair_slot[p] .. + pair_len[p] - 1``. Rotations are rows of the rotary tables picked by
    index (``k_at``, ``pair_at``), the tables themselves being passed, not rows gathered per
    pass. The producer guarantees every slot is inside the store and every index inside the
    tables: the C side does not check."""

    slots: torch.Tensor  # int64 [rows]: pool slot of each row's new key and value
    rope_cos: torch.Tensor  # fp32 [positions, head_dim]: the rotary tables (rotate-half layout)
    rope_sin: torch.Tensor
    k_at: torch.Tensor  # int32 [rows]: the table row rotating each row's new key
    row_start: torch.Tensor  # int32 [rows + 1]
    pair_slot: torch.Tensor  # int64 [pairs]
    pair_len: torch.Tensor  # int32 [pairs]
    pair_at: torch.Tensor  # int32 [pairs]: the table row rotating the query of each pair
    pair_key: torch.Tensor  # int64 [pairs]: the block each pair reads, by id (the order of short blocks)
    k: torch.Tensor  # the store's keys [layers, kv_heads, capacity, head_dim], fp32 or bf16
    v: torch.Tensor  # the store's values, same shape and dtype
    scale: float  # attention score scale
    #: the store's int8 pool (slots from COMPACT_SLOT on), or None
    compact: CompactPool | None = None

    @property
    def rows(self) -> int:
        return self.slots.numel()


@runtime_checkable
class NativePassSource(Protocol):
    """An attention plan that can describe its pass to the native decoder."""

    def native_pass(self) -> NativePass:
        ...


class Matrix(ctypes.Structure):
    """One weight matrix in its own format (the C side's HwMat): ``fmt`` is ggml's type id,
    0 fp32 and 30 bf16 (hw_linear), 1030 for bf16 in dot pairs (hogwild's own, hw_linear
    too) or a block format (hw_qlinear, with ``scale`` and the
    guard's corrections grouped by column)."""

    _fields_ = [(name, ctypes.c_void_p) for name in ("w", "b", "fix_start", "fix_j", "fix_delta")] + [
        ("fmt", ctypes.c_int), ("scale", ctypes.c_float),
    ]


class LayerWeights(ctypes.Structure):
    """q/k/v fused in ``qkv[0]`` (``qkv[1].w`` NULL) or three matrices; gate/up likewise."""

    _fields_ = [("qkv", Matrix * 3), ("o", Matrix), ("gate_up", Matrix * 2), ("down", Matrix)] + [
        (name, ctypes.c_void_p) for name in ("ln_in", "ln_post", "q_norm", "k_norm")
    ]


class Dims(ctypes.Structure):
    _fields_ = [
        ("hidden", ctypes.c_int), ("heads", ctypes.c_int), ("kv_heads", ctypes.c_int),
        ("head_dim", ctypes.c_int), ("inter", ctypes.c_int),
        ("kv_bf16", ctypes.c_int), ("threads", ctypes.c_int), ("eps", ctypes.c_float),
        ("scale", ctypes.c_float),
    ]

_FP32, _BF16 = 0, 30  # ggml's type ids of the unquantized formats
_PAIRS = 1030  # bf16 in dot pairs (ops.PairedBF16): hogwild's own, hogwild_cpu.c's FMT_PAIRS


class PassInfo(ctypes.Structure):
    _fields_ = [("rows", ctypes.c_int)] + [(name, ctypes.c_void_p) for name in (
        "slots", "rope_cos", "rope_sin", "k_at", "row_start", "pair_slot", "pair_len", "pair_at", "pair_key",
    )]


_P = ctypes.c_void_p
declare({
    "hw_decode_scratch": (ctypes.c_int64, [ctypes.POINTER(Dims), ctypes.c_int]),
    "hw_decode_layers": (
        ctypes.c_int,
        [_P, ctypes.POINTER(LayerWeights), ctypes.c_int, ctypes.POINTER(Dims), ctypes.POINTER(PassInfo),
         _P, _P, ctypes.c_int64, ctypes.c_int64, _P, _P],
    ),
})


class NativeDecoder:
    """All layers of a :class:`CausalLM` whose projections are :class:`KernelLinear` (fp32
    or bf16 weights) or :class:`QuantLinear` (block formats), in any mix, q/k/v and gate/up
    fused or separate (a GGUF may store v in another format than q and k), and whose norms
    are :class:`KernelRMSNorm`.

    Holds raw pointers into the model's weights: build it last (``prepare_for_cpu`` does),
    and build a new one if the model's tensors are replaced or moved."""

    def __init__(self, model: CausalLM):
        lib = library()
        if lib is None:
            raise RuntimeError("native kernels unavailable")
        self.lib = lib
        c = model.config
        self.keep: list[torch.Tensor] = []  # everything the pointer table points into

        def hold(t: torch.Tensor | None) -> int | None:
            if t is None:
                return None
            self.keep.append(t)
            return t.data_ptr()

        def matrix(m: nn.Module | None) -> Matrix:
            if isinstance(m, KernelLinear) and m.paired is not None:
                return Matrix(hold(m.paired.data), hold(m.bias), None, None, None, _PAIRS, 1.0)
            if isinstance(m, KernelLinear):
                if m.plain.dtype not in (torch.float32, torch.bfloat16):
                    raise ValueError(f"no native linear for {m.plain.dtype} weights")
                return Matrix(hold(m.plain), hold(m.bias), None, None, None,
                              _BF16 if m.plain.dtype == torch.bfloat16 else _FP32, 1.0)
            if isinstance(m, QuantLinear):
                fix = m.corrections
                for t in (m.qweight.data, fix.start, fix.j, fix.delta):
                    hold(t)
                return Matrix(m.qweight.data.data_ptr(), hold(m.bias), *fix.pointers(),
                              m.qweight.fmt.ggml_type, float(m.qweight.scale))
            raise ValueError(f"the native decoder needs KernelLinear or QuantLinear projections, not {type(m).__name__}")

        table = (LayerWeights * c.num_layers)()
        for i, layer in enumerate(model.model.layers):
            attn, mlp = layer.self_attn, layer.mlp
            e = table[i]
            if attn.qkv_proj is not None:
                e.qkv[0] = matrix(attn.qkv_proj)
            else:
                e.qkv[0], e.qkv[1], e.qkv[2] = matrix(attn.q_proj), matrix(attn.k_proj), matrix(attn.v_proj)
            if mlp.gate_up_proj is not None:
                e.gate_up[0] = matrix(mlp.gate_up_proj)
            else:
                e.gate_up[0], e.gate_up[1] = matrix(mlp.gate_proj), matrix(mlp.up_proj)
            e.o, e.down = matrix(attn.o_proj), matrix(mlp.down_proj)
            norms = (layer.input_layernorm, layer.post_attention_layernorm)
            if c.qk_norm:
                norms += (attn.q_norm, attn.k_norm)
            if not all(isinstance(n, KernelRMSNorm) for n in norms):
                raise ValueError("norms are not prepared for kernels")
            e.ln_in, e.ln_post = hold(norms[0].weight32), hold(norms[1].weight32)
            if c.qk_norm:
                e.q_norm, e.k_norm = hold(attn.q_norm.weight32), hold(attn.k_norm.weight32)
        self.table = table
        self.num_layers = c.num_layers
        self.config = c
        self.heads_ok = supports_attention(c.num_heads, c.num_kv_heads, c.head_dim)

    def __deepcopy__(self, memo: Any) -> NativeDecoder:
        raise TypeError("a model prepared for native kernels cannot be copied; copy it before prepare_for_cpu()")

    def run(self, x: torch.Tensor, plan: AttentionPlan) -> bool:
        """Apply every layer to the residual stream x [rows, hidden] (fp32, in place).

        Takes passes of at most :data:`MAX_ROWS` rows from a :class:`NativePassSource` on a
        head layout the attention kernel supports; for any other pass it returns False and
        the model goes module by module."""
        # the protocol's method looked up directly: isinstance on a runtime-checkable protocol
        # walks its attributes, 25 us a pass
        native_pass = getattr(plan, "native_pass", None)
        if x.shape[0] > MAX_ROWS or not self.heads_ok or native_pass is None:
            return False
        p = native_pass()
        c = self.config
        if x.dtype != torch.float32 or not x.is_contiguous() or x.shape[0] != p.rows:
            raise ValueError("native decode needs a contiguous fp32 stream with one row per plan row")
        if p.k.shape[0] != self.num_layers or p.k.dtype not in (torch.float32, torch.bfloat16):
            raise ValueError("the store does not match the model")
        dims = Dims(
            c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size,
            int(p.k.dtype == torch.bfloat16), threads(), c.rms_eps, p.scale,
        )
        info = PassInfo(p.rows, *(t.data_ptr() for t in (
            p.slots, p.rope_cos, p.rope_sin, p.k_at, p.row_start, p.pair_slot, p.pair_len, p.pair_at, p.pair_key,
        )))
        scratch = torch.empty(int(self.lib.hw_decode_scratch(ctypes.byref(dims), p.rows)), dtype=torch.float32)
        _, kv_heads, capacity, head_dim = p.k.shape
        with span("decode_layers"):
            rc = self.lib.hw_decode_layers(
                x.data_ptr(), self.table, self.num_layers, ctypes.byref(dims), ctypes.byref(info),
                p.k.data_ptr(), p.v.data_ptr(), kv_heads * capacity * head_dim, capacity * head_dim,
                None if p.compact is None else ctypes.addressof(p.compact), scratch.data_ptr(),
            )
        check_rc(rc, "decode_layers")
        return True
