"""The native kernels as checked PyTorch functions: linear, RMSNorm, SiLU gate, K/V store,
per-block attention.

Each wrapper checks dtypes, shapes, contiguity and bounds before it hands raw pointers to C,
since a wrong pointer there is a crash, not an error. Calls are recorded as ``hogwild::name``
ranges in torch.profiler traces (:func:`span`).
"""

from __future__ import annotations

import contextlib
import ctypes

import torch
from torch.autograd import profiler as _autograd_profiler

from .build import declare, library, status
from ..tensors import huge_empty

#: The most rows a pass may have for the native path: the one row limit of hogwild's CPU
#: kernels. KernelLinear, NativeDecoder and the engine's choice of KernelPlan all follow it,
#: so a pass takes the native path as a whole or not at all. 128 covers batched decoding
#: (many runs of N workers advancing in one model call): the linear kernel tiles rows in
#: registers and blocks K in cache, so it stays near the FMA rate as rows grow and still
#: reads each weight once per pass, and every kernel computes a row the same way whatever
#: else shares the call (batch invariance, see hogwild_cpu.c), which torch's matmul does not
#: promise. The C code itself has no row limit. Above this, passes are prefill chunks, where
#: FastPlan's flash attention (many queries over the same keys) beats per-row attention and
#: torch's matmul is at least as fast as this kernel (on CPUs with AMX both use the tiles for
#: bf16; bench/kernel_rows.py, docs/bench.md), so the native path ends where batched decoding
#: does. (One exception: on AVX512_BF16 without AMX, a KernelLinear whose weight is kept in
#: dot pairs runs this kernel for prefill chunks too, faster there than torch's fp32 matmul.)
MAX_ROWS = 128
MAX_GROUP = 16  # query heads per KV head the attention kernel supports
MAX_HEAD_DIM = 256

_P = ctypes.c_void_p
_I = ctypes.c_int

#: pool slots at or above this address the store's int8 pool (hogwild.core.cache.COMPACT_SLOT)
COMPACT_SLOT = 1 << 40


class CompactPool(ctypes.Structure):
    """The store's int8 pool as the C side reads it (hogwild_cpu.c's Compact): keys and values
    int8 [layers, kv_heads, capacity, head_dim], their scales fp32 [layers, kv_heads, capacity].
    Build it with :func:`compact_pool`, which checks what C cannot."""

    _fields_ = [(name, ctypes.c_void_p) for name in ("k", "v", "ks", "vs")] + [
        ("capacity", ctypes.c_int64), ("layers", ctypes.c_int64)]


def compact_pool(k: torch.Tensor, v: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor) -> CompactPool:
    """The C view of an int8 pool (the tensors must outlive every call it is passed to)."""
    _need(k.dtype == torch.int8 and v.dtype == torch.int8 and k.dim() == 4 and k.shape == v.shape,
          "int8 pools must be int8 [layers, kv_heads, capacity, head_dim]")
    _need(ks.dtype == torch.float32 and vs.dtype == torch.float32 and ks.shape == k.shape[:3] == vs.shape,
          "int8 pool scales must be fp32 [layers, kv_heads, capacity]")
    _need(all(t.is_contiguous() and t.device.type == "cpu" for t in (k, v, ks, vs)), "int8 pools must be contiguous CPU tensors")
    return CompactPool(k.data_ptr(), v.data_ptr(), ks.data_ptr(), vs.data_ptr(), k.shape[2], k.shape[0])


def _compact_ref(compact: CompactPool | None, layer: int) -> int | None:
    """The address of ``compact`` for C (None: no int8 pool), after checking ``layer``."""
    if compact is None:
        return None
    _need(0 <= layer < compact.layers, "layer outside the int8 pool")
    return ctypes.addressof(compact)


declare({
    "hw_linear": (_I, [_P, _P, _I, _P, _P, _I, _I, _I, _I, _I]),
    "hw_linear_rounds": (_I, [_I, _I, _I]),
    "hw_linear_pairs": (_I, [_I, _I]),
    "hw_pack_pairs": (None, [_P, _P, _I, _I, _I]),
    "hw_unpack_pairs": (None, [_P, _P, _I, _I]),
    "hw_attend_rounds": (_I, [_I, _I]),
    "hw_rmsnorm": (None, [_P, _P, _P, _I, _I, ctypes.c_float]),
    "hw_silu_mul": (None, [_P, _P, _I, _I]),
    "hw_argmax": (None, [_P, _I, _I, _P, _I]),
    "hw_store_kv": (_I, [_P, _P, _P, _P, _P, _P, _P, ctypes.c_int64, _I, _I, _I, _I, _P, _I]),
    "hw_attend": (
        _I,
        [_P, _P, _I, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, ctypes.c_int64, _I, _P, _I, ctypes.c_float, _I],
    ),
    "hw_attend_keyed": (
        _I,
        [_P, _P, _I, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _P, ctypes.c_int64, _I, _P, _I, ctypes.c_float, _I],
    ),
})


def span(name: str) -> contextlib.AbstractContextManager:
    """A ``hogwild::name`` range in torch.profiler traces (free when no profiler runs), so
    profiles count native kernel time as model math, not as Python overhead."""
    if _autograd_profiler._is_profiler_enabled:
        return torch.profiler.record_function(f"hogwild::{name}")
    return contextlib.nullcontext()


def threads() -> int:
    """The OpenMP threads a kernel call uses: torch's intra-op setting."""
    return max(1, torch.get_num_threads())


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(f"hogwild kernel: {what}")


def check_rc(rc: int, call: str) -> None:
    """Turn a kernel's error code into an exception: -1 scratch allocation failed, -2 a
    shape beyond the kernel's fixed-size buffers (the wrappers' checks normally catch it),
    -3 weights in dot pairs (:class:`PairedBF16`) on an instruction set pinned below
    AVX512_BF16 after they were reordered."""
    if rc == -1:
        raise MemoryError(f"hogwild kernel {call}: scratch allocation failed")
    if rc == -3:
        raise RuntimeError(f"hogwild kernel {call}: the weights were reordered for AVX512_BF16 dot products "
                           "and the instruction set is now pinned below it; prepare the model again")
    if rc != 0:
        raise ValueError(f"hogwild kernel {call}: unsupported shape (code {rc})")


def _lib_or_fail() -> ctypes.CDLL:
    lib = library()
    if lib is None:
        raise RuntimeError(f"native kernels unavailable: {status()}")
    return lib


_W_F32, _W_BF16, _W_PAIRS = 0, 1, 2  # hw_linear's weight formats


class PairedBF16:
    """A bf16 weight [N, K] reordered once for the AVX-512 BF16 linear ("dot pairs"): panels
    of 16 output columns, each the K/2 key pairs in order, 16 columns x 2 keys in 64 bytes.

    On CPUs with AVX512_BF16 and no AMX, the linear reads a panel as one contiguous stream
    and takes each load as a whole operand of a dot-product instruction, which runs it 1.4 to
    2.0 x faster than along the rows of the plain layout (``hw_linear`` in hogwild_cpu.c says
    how; bench/kernel_rows.py measures it). The bits are those of the plain weight on the
    same instruction set: the kernel reorders a plain weight per call the same way. Build one
    with :meth:`pack` where :func:`pairs_pay` says so; :meth:`unpack` gives the plain weight
    back (a copy)."""

    def __init__(self, data: torch.Tensor, out_features: int, in_features: int):
        _need(data.dtype == torch.bfloat16 and data.is_contiguous() and in_features % 32 == 0
              and data.numel() == -(-out_features // 16) * 16 * in_features,
              "dot pairs must be contiguous bf16 of ceil(N / 16) * 16 * K values, K a multiple of 32")
        self.data, self.out_features, self.in_features = data, out_features, in_features

    @property
    def shape(self) -> tuple[int, int]:
        return self.out_features, self.in_features

    @classmethod
    def pack(cls, weight: torch.Tensor) -> PairedBF16:
        lib = _lib_or_fail()
        _need(weight.dtype == torch.bfloat16 and weight.dim() == 2 and weight.is_contiguous(),
              "only a contiguous bf16 [N, K] weight goes into dot pairs")
        n, k = weight.shape
        _need(k % 32 == 0 and k > 0 and n > 0, "dot pairs need K a multiple of 32")
        data = huge_empty((-(-n // 16) * 16 * k,), torch.bfloat16)  # read whole every pass
        lib.hw_pack_pairs(weight.data_ptr(), data.data_ptr(), n, k, threads())
        return cls(data, n, k)

    def unpack(self) -> torch.Tensor:
        """The plain weight [N, K] (a new tensor)."""
        lib = _lib_or_fail()
        out = torch.empty(self.out_features, self.in_features, dtype=torch.bfloat16)
        lib.hw_unpack_pairs(self.data.data_ptr(), out.data_ptr(), self.out_features, self.in_features)
        return out


def pairs_pay(weight: torch.Tensor) -> bool:
    """Is this weight worth reordering into :class:`PairedBF16`? Yes for a bf16 weight with K
    a multiple of 32 where the instruction set in effect is AVX512_BF16 without AMX (on AMX
    the tiles read the plain layout; below, the FMA kernels do)."""
    if weight.dtype != torch.bfloat16 or weight.dim() != 2 or library() is None:
        return False
    return bool(library().hw_linear_pairs(int(weight.shape[0]), int(weight.shape[1])))


def linear_rounds_input(weight: torch.Tensor | PairedBF16) -> bool:
    """Does :func:`linear` round x to bf16 for this weight? Yes where it runs on AMX tiles
    (bf16 weights with rows a multiple of 16 and columns of 32, on a CPU with AMX) or on the
    AVX-512 BF16 dot products (bf16 weights with columns a multiple of 32, on a CPU with
    AVX512_BF16), unless the instruction set is pinned lower: both multiply bf16 by bf16 into
    fp32. Always for :class:`PairedBF16`."""
    lib = _lib_or_fail()
    n, k = weight.shape
    return bool(lib.hw_linear_rounds(int(n), int(k), _weight_format(weight)))


def _weight_format(weight: torch.Tensor | PairedBF16) -> int:
    if isinstance(weight, PairedBF16):
        return _W_PAIRS
    return _W_BF16 if weight.dtype == torch.bfloat16 else _W_F32


def attention_rounds(k_pool: torch.Tensor) -> bool:
    """Does :func:`attend` read queries and softmax weights as bf16 over this pool? Yes where
    it runs on AMX tiles or the AVX-512 BF16 dot path: a bf16 pool with head_dim a multiple of
    32, on a CPU with AMX or AVX512_BF16, unless the instruction set is pinned lower (keys,
    values and every sum stay exact / fp32). The
    int8 blocks of a compact store beside such a pool go on the tiles too, widened to bf16
    exactly, with their scales applied to scores and weights."""
    lib = _lib_or_fail()
    return bool(lib.hw_attend_rounds(int(k_pool.shape[-1]), int(k_pool.dtype == torch.bfloat16)))


def linear(
    x: torch.Tensor,
    weight: torch.Tensor | PairedBF16,
    bias: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    accumulate: bool = False,
) -> torch.Tensor:
    """x [M, K] fp32 @ weight [N, K] (fp32 or bf16, or bf16 in :class:`PairedBF16`)^T + bias
    (fp32) -> [M, N] fp32. On AMX tiles and the AVX-512 BF16 dot products
    (:func:`linear_rounds_input`) x is rounded to bf16 first.

    Any M (:class:`KernelLinear` uses it up to :data:`MAX_ROWS` rows). Each output row is the
    same bits whatever the other rows, their number and the thread count: every element is
    reduced in one fixed order (see ``hw_linear``). With ``out`` and ``accumulate``, the
    product is added to ``out`` in place (``out`` must not overlap ``x``)."""
    lib = _lib_or_fail()
    _need(x.dtype == torch.float32 and x.dim() == 2 and x.is_contiguous(), "x must be contiguous fp32 [M, K]")
    if not isinstance(weight, PairedBF16):
        _need(weight.dtype in (torch.float32, torch.bfloat16) and weight.is_contiguous(),
              "weight must be contiguous fp32/bf16")
    M, K = x.shape
    N = weight.shape[0]
    _need(weight.shape[1] == K, "weight/in features mismatch")
    if bias is not None:
        _need(bias.dtype == torch.float32 and bias.is_contiguous() and bias.numel() == N, "bias must be fp32 [N]")
    if out is None:
        _need(not accumulate, "accumulate needs out")
        out = torch.empty((M, N), dtype=torch.float32, device=x.device)
    else:
        _need(out.dtype == torch.float32 and out.is_contiguous() and tuple(out.shape) == (M, N), "out must be fp32 [M, N]")
    with span("linear"):
        data = weight.data if isinstance(weight, PairedBF16) else weight
        rc = lib.hw_linear(
            x.data_ptr(), data.data_ptr(), _weight_format(weight),
            None if bias is None else bias.data_ptr(), out.data_ptr(), M, N, K, int(accumulate), threads(),
        )
    check_rc(rc, "linear")
    return out


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension; x and weight fp32 contiguous."""
    lib = _lib_or_fail()
    _need(x.dtype == torch.float32 and x.is_contiguous(), "x must be contiguous fp32")
    K = x.shape[-1]
    _need(weight.dtype == torch.float32 and weight.is_contiguous() and weight.numel() == K, "weight must be fp32 [K]")
    out = torch.empty_like(x)
    with span("rmsnorm"):
        lib.hw_rmsnorm(x.data_ptr(), weight.data_ptr(), out.data_ptr(), x.numel() // max(K, 1), K, eps)
    return out


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for a fused [M, 2I] gate/up output; fp32 contiguous."""
    lib = _lib_or_fail()
    _need(gate_up.dtype == torch.float32 and gate_up.dim() == 2 and gate_up.is_contiguous(), "gate_up must be contiguous fp32 [M, 2I]")
    M, two_i = gate_up.shape
    _need(two_i % 2 == 0, "gate_up width must be even")
    out = torch.empty((M, two_i // 2), dtype=torch.float32, device=gate_up.device)
    with span("silu_mul"):
        lib.hw_silu_mul(gate_up.data_ptr(), out.data_ptr(), M, two_i // 2)
    return out


def argmax_rows(x: torch.Tensor) -> list[int]:
    """Each row's index of its largest value, the first of ties, or of its first NaN: what
    ``x.max(-1).indices`` gives on the CPU, for fp32 [rows, n] on the CPU. Greedy decoding's
    pick: for a 16-worker SmolLM2 pass (16 x 49k logits) about 0.07 ms against torch's
    0.35-0.45 ms (a row-by-row reduction on one thread)."""
    lib = _lib_or_fail()
    _need(x.dtype == torch.float32 and x.dim() == 2 and x.device.type == "cpu", "argmax needs fp32 [rows, n] on the CPU")
    x = x.contiguous()
    rows, n = x.shape
    _need(n > 0, "argmax of empty rows")
    out = torch.empty(rows, dtype=torch.int64)
    with span("argmax"):
        lib.hw_argmax(x.data_ptr(), rows, n, out.data_ptr(), threads())
    return out.tolist()


def _pool_args(k_pool: torch.Tensor, v_pool: torch.Tensor) -> tuple[int, int]:
    _need(k_pool.dim() == 3 and k_pool.is_contiguous() and v_pool.is_contiguous(), "pools must be contiguous [Hkv, cap, D]")
    _need(k_pool.shape == v_pool.shape and k_pool.dtype == v_pool.dtype, "K and V pools differ")
    _need(k_pool.dtype in (torch.float32, torch.bfloat16), "pools must be fp32 or bf16")
    return k_pool.shape[1] * k_pool.shape[2], int(k_pool.dtype == torch.bfloat16)


def store_kv(
    k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor, k_cos: torch.Tensor, k_sin: torch.Tensor,
    k_pool: torch.Tensor, v_pool: torch.Tensor, compact: CompactPool | None = None, layer: int = 0,
) -> None:
    """Rotate keys [R, Hkv, D] by (k_cos, k_sin) [R, D] and store keys and values at ``slots``
    (slots from :data:`COMPACT_SLOT` on: quantized into layer ``layer`` of ``compact``)."""
    lib = _lib_or_fail()
    R, Hkv, D = k.shape
    for t in (k, v, k_cos, k_sin):
        _need(t.dtype == torch.float32 and t.is_contiguous(), "k, v, cos, sin must be contiguous fp32")
    _need(v.shape == k.shape and k_cos.shape == (R, D) and k_sin.shape == (R, D), "k/v/cos/sin shapes")
    _need(slots.dtype == torch.int64 and slots.numel() == R and slots.is_contiguous(), "slots must be int64 [R]")
    _need(k_pool.shape[0] == Hkv and k_pool.shape[2] == D, "pool shape does not match k")
    _need(D <= 1024, "head_dim above 1024")
    if R:
        _need(int(slots.min()) >= 0, "slot outside the pool")
        top = int(slots.max())
        if top >= COMPACT_SLOT:
            _need(compact is not None and top - COMPACT_SLOT < compact.capacity, "slot outside the int8 pool")
            full = slots[slots < COMPACT_SLOT]
            top = int(full.max()) if full.numel() else -1
        _need(top < k_pool.shape[1], "slot outside the pool")
    stride, bf16 = _pool_args(k_pool, v_pool)
    with span("store_kv"):
        rc = lib.hw_store_kv(
            k.data_ptr(), v.data_ptr(), slots.data_ptr(), k_cos.data_ptr(), k_sin.data_ptr(),
            k_pool.data_ptr(), v_pool.data_ptr(), stride, bf16, R, Hkv, D, _compact_ref(compact, layer), layer,
        )
    check_rc(rc, "store_kv")


def supports_attention(num_heads: int, num_kv_heads: int, head_dim: int) -> bool:
    """Whether the attention kernel's fixed-size work buffers hold this head layout (the C
    side's heads_supported; rotate-half RoPE needs an even head_dim). Rows are not limited."""
    return (
        num_kv_heads > 0 and num_heads % num_kv_heads == 0 and num_heads // num_kv_heads <= MAX_GROUP
        and 0 < head_dim <= MAX_HEAD_DIM and head_dim % 2 == 0
    )


def attend(
    q: torch.Tensor, row_start: torch.Tensor, pair_slot: torch.Tensor, pair_len: torch.Tensor,
    pair_cos: torch.Tensor, pair_sin: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor,
    scale: float, max_slot: int, compact: CompactPool | None = None, layer: int = 0, max_compact: int = 0,
    pair_key: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of rows q [R, H, D] (fp32, un-rotated) over their view entries.

    Row r owns pairs row_start[r]:row_start[r+1]; pair p reads keys at pool slots
    pair_slot[p] .. + pair_len[p] - 1 with the query rotated by pair_cos/sin[p] [P, D].
    ``pair_key`` (int64 [P]): the block each pair reads, by id; a row's short blocks are taken
    in that order (None: by slot, which is batch invariant only while a row's short blocks keep
    their order in the pool).
    ``max_slot``: an upper bound of the slots the pairs read (checked against the pool);
    pairs from :data:`COMPACT_SLOT` on read layer ``layer`` of the int8 pool ``compact``,
    ``max_compact`` (less COMPACT_SLOT) bounds their slots."""
    lib = _lib_or_fail()
    R, H, D = q.shape
    Hkv = k_pool.shape[0]
    _need(q.dtype == torch.float32 and q.is_contiguous(), "q must be contiguous fp32 [R, H, D]")
    _need(supports_attention(H, Hkv, D) and k_pool.shape[2] == D, "unsupported head layout")
    P = pair_slot.numel()
    _need(row_start.dtype == torch.int32 and row_start.numel() == R + 1 and row_start.is_contiguous(), "row_start int32 [R+1]")
    _need(pair_slot.dtype == torch.int64 and pair_len.dtype == torch.int32 and pair_len.numel() == P, "pair arrays")
    _need(pair_key is None or (pair_key.dtype == torch.int64 and pair_key.numel() == P and pair_key.is_contiguous()),
          "pair_key int64 [P]")
    _need(pair_cos.shape == (P, D) and pair_sin.shape == (P, D), "pair cos/sin [P, D]")
    _need(pair_cos.dtype == torch.float32 and pair_cos.is_contiguous() and pair_sin.is_contiguous(), "pair cos/sin fp32")
    _need(max_slot <= k_pool.shape[1], "a pair reads outside the pool")
    _need(max_compact == 0 or (compact is not None and max_compact <= compact.capacity), "a pair reads outside the int8 pool")
    stride, bf16 = _pool_args(k_pool, v_pool)
    out = torch.empty_like(q)
    with span("attend"):
        rc = lib.hw_attend_keyed(
            q.data_ptr(), out.data_ptr(), R, H, Hkv, D, row_start.data_ptr(), pair_slot.data_ptr(),
            pair_len.data_ptr(), None if pair_key is None else pair_key.data_ptr(), pair_cos.data_ptr(),
            pair_sin.data_ptr(), k_pool.data_ptr(), v_pool.data_ptr(), stride, bf16, _compact_ref(compact, layer),
            layer, scale, threads(),
        )
    check_rc(rc, "attend")
    return out
