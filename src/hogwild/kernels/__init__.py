"""Native CPU kernels for decode passes, built on first use with the system C compiler.

Why native code: on CPU a decode pass is memory-bound, yet PyTorch's bf16 matmul on CPUs
without bf16 instructions reads weights at a fraction of the bandwidth, and a layer made of
~90 small torch ops spends more time in dispatch than in arithmetic. ``hogwild_cpu.c`` has
the few kernels a decode pass needs (the linear of a pass of up to :data:`MAX_ROWS` rows with
fp32 or bf16 weights, RMSNorm, SiLU-gate, greedy's argmax, the whole per-block attention of a layer, and all
layers of a pass in one call). They are batch invariant: a row's results are the same bits
whatever other rows (of its run, or of other runs batched with it) share the pass.

- :mod:`.build`: compiling, caching and loading the library; :func:`available`, :func:`status`.
- :mod:`.ops`: the kernels as checked PyTorch functions, and :data:`MAX_ROWS`.
- :mod:`.layers`: drop-in replacements for the model's linears and norms.
- :mod:`.qlinear`: :class:`QuantLinear`, a linear computing with a quantized weight as stored
  (``hogwild_quant.c``: the ggml block formats of :mod:`hogwild.quant`).
- :mod:`.native`: :class:`NativeDecoder`, all layers of a pass in one call.
- :mod:`.cpu_path`: :func:`prepare_for_cpu`, which puts the above into a loaded model.

Nothing depends on them: without a C compiler, on a CPU without AVX2/FMA, or with
``HOGWILD_KERNELS=0``, hogwild uses its PyTorch path (see :func:`status`).
"""

from .build import ENV, available, library, reset, status
from .cpu_path import prepare_for_cpu
from .layers import KernelLinear, KernelRMSNorm, PackedLinear, can_pack
from .native import NativeDecoder, NativePass, NativePassSource
from .qlinear import QuantLinear, format_supported, qlinear
from .ops import (
    MAX_GROUP,
    COMPACT_SLOT,
    MAX_HEAD_DIM,
    MAX_ROWS,
    CompactPool,
    PairedBF16,
    argmax_rows,
    attend,
    compact_pool,
    linear,
    linear_rounds_input,
    attention_rounds,
    pairs_pay,
    rmsnorm,
    silu_mul,
    span,
    store_kv,
    supports_attention,
)

__all__ = [
    "COMPACT_SLOT", "CompactPool", "ENV", "MAX_GROUP", "MAX_HEAD_DIM", "MAX_ROWS", "KernelLinear", "KernelRMSNorm", "NativeDecoder",
    "NativePass", "NativePassSource", "PackedLinear", "PairedBF16", "QuantLinear", "argmax_rows", "attend", "attention_rounds", "available", "can_pack", "compact_pool",
    "format_supported", "library", "linear", "linear_rounds_input", "pairs_pay", "prepare_for_cpu", "qlinear", "reset", "rmsnorm", "silu_mul",
    "span", "status", "store_kv", "supports_attention",
]
