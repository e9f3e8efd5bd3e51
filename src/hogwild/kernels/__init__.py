"""Native CPU kernels for decode passes, built on first use with the system C compiler.

Why native code: on CPU a decode pass is memory-bound, yet PyTorch's bf16 matmul on CPUs
without bf16 instructions reads weights at a fraction of the bandwidth, and a layer made of
~90 small torch ops spends more time in dispatch than in arithmetic. ``hogwild_cpu.c`` has
the few kernels a decode pass needs (small-batch linear with fp32 or bf16 weights, RMSNorm,
SiLU-gate, and the whole per-block attention of a layer); they are compiled once per machine
into ``$HOGWILD_CACHE/kernels`` and called through ctypes.

Nothing depends on them: without a C compiler, on a CPU without AVX2/FMA, or with
``HOGWILD_KERNELS=0``, hogwild uses its PyTorch path (see :func:`status`). The wrappers
check dtypes, shapes and contiguity, since a wrong pointer here is a crash, not an error.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

import torch
from torch.autograd import profiler as _autograd_profiler

from ..paths import cache_dir

log = logging.getLogger(__name__)

ENV = "HOGWILD_KERNELS"  # "0" turns the native kernels off
SOURCE = Path(__file__).with_name("hogwild_cpu.c")
FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-fPIC", "-shared", "-std=gnu11"]

_lib: ctypes.CDLL | None = None
_tried = False
_reason = ""

_P = ctypes.c_void_p
_I = ctypes.c_int
_SIGNATURES = {
    "hw_linear": (None, [_P, _P, _I, _P, _P, _I, _I, _I, _I, _I]),
    "hw_rmsnorm": (None, [_P, _P, _P, _I, _I, ctypes.c_float]),
    "hw_silu_mul": (None, [_P, _P, _I, _I]),
    "hw_store_kv": (None, [_P, _P, _P, _P, _P, _P, _P, ctypes.c_int64, _I, _I, _I, _I]),
    "hw_attend": (
        _I,
        [_P, _P, _I, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, ctypes.c_int64, _I, ctypes.c_float, _I],
    ),
}


def _cpu_supported() -> bool:
    try:
        return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    except AttributeError:  # very old torch
        return False


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _build(compiler: str) -> Path:
    """Compile the source into the cache (once per source, compiler and flags)."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), compiler, version, *FLAGS]).encode()).hexdigest()[:16]
    out_dir = cache_dir() / "kernels"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"hogwild_cpu-{key}.so"
    if target.exists():
        return target
    tmp = out_dir / f".hogwild_cpu-{key}.{os.getpid()}.so"
    proc = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(tmp), "-lm"], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{compiler} failed: {proc.stderr.strip()[-2000:]}")
    os.replace(tmp, target)  # atomic: concurrent builders never see a half-written library
    return target


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, or None (the reason is in :func:`status`). Built once."""
    global _lib, _tried, _reason
    if _tried:
        return _lib
    _tried = True
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "off", "no"):
        _reason = f"turned off by {ENV}=0"
        return None
    if not _cpu_supported():
        _reason = "this CPU lacks AVX2/FMA"
        return None
    compiler = _compiler()
    if compiler is None:
        _reason = "no C compiler found (set CC)"
        return None
    try:
        lib = ctypes.CDLL(str(_build(compiler)))
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
    except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as exc:
        _reason = f"build failed: {exc}"
        log.warning("hogwild: native CPU kernels unavailable, using the PyTorch path (%s)", exc)
        return None
    _lib = lib
    _reason = "ready"
    return _lib


def available() -> bool:
    return library() is not None


def status() -> str:
    """'ready' or why the native kernels are not used."""
    library()
    return _reason


def reset() -> None:
    """Forget the loaded state so the next call re-reads the environment (tests)."""
    global _lib, _tried, _reason
    _lib, _tried, _reason = None, False, ""


# ---------------------------------------------------------------------------- wrappers
def span(name: str) -> contextlib.AbstractContextManager:
    """A ``hogwild::name`` range in torch.profiler traces (free when no profiler runs), so
    profiles count native kernel time as model math, not as Python overhead."""
    if _autograd_profiler._is_profiler_enabled:
        return torch.profiler.record_function(f"hogwild::{name}")
    return contextlib.nullcontext()


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(f"hogwild kernel: {what}")


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _lib_or_fail() -> ctypes.CDLL:
    lib = library()
    if lib is None:
        raise RuntimeError(f"native kernels unavailable: {_reason}")
    return lib


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    accumulate: bool = False,
) -> torch.Tensor:
    """x [M, K] fp32 @ weight [N, K] (fp32 or bf16)^T + bias (fp32) -> [M, N] fp32.

    With ``out`` and ``accumulate``, the product is added to ``out`` in place."""
    lib = _lib_or_fail()
    _need(x.dtype == torch.float32 and x.dim() == 2 and x.is_contiguous(), "x must be contiguous fp32 [M, K]")
    _need(weight.dtype in (torch.float32, torch.bfloat16) and weight.is_contiguous(), "weight must be contiguous fp32/bf16")
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
        lib.hw_linear(
            x.data_ptr(), weight.data_ptr(), int(weight.dtype == torch.bfloat16),
            None if bias is None else bias.data_ptr(), out.data_ptr(), M, N, K, int(accumulate), _threads(),
        )
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


def _pool_args(k_pool: torch.Tensor, v_pool: torch.Tensor) -> tuple[int, int]:
    _need(k_pool.dim() == 3 and k_pool.is_contiguous() and v_pool.is_contiguous(), "pools must be contiguous [Hkv, cap, D]")
    _need(k_pool.shape == v_pool.shape and k_pool.dtype == v_pool.dtype, "K and V pools differ")
    _need(k_pool.dtype in (torch.float32, torch.bfloat16), "pools must be fp32 or bf16")
    return k_pool.shape[1] * k_pool.shape[2], int(k_pool.dtype == torch.bfloat16)


def store_kv(
    k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor, k_cos: torch.Tensor, k_sin: torch.Tensor,
    k_pool: torch.Tensor, v_pool: torch.Tensor,
) -> None:
    """Rotate keys [R, Hkv, D] by (k_cos, k_sin) [R, D] and store keys and values at ``slots``."""
    lib = _lib_or_fail()
    R, Hkv, D = k.shape
    for t in (k, v, k_cos, k_sin):
        _need(t.dtype == torch.float32 and t.is_contiguous(), "k, v, cos, sin must be contiguous fp32")
    _need(v.shape == k.shape and k_cos.shape == (R, D) and k_sin.shape == (R, D), "k/v/cos/sin shapes")
    _need(slots.dtype == torch.int64 and slots.numel() == R and slots.is_contiguous(), "slots must be int64 [R]")
    _need(k_pool.shape[0] == Hkv and k_pool.shape[2] == D, "pool shape does not match k")
    _need(D <= 1024, "head_dim above 1024")
    if R:
        _need(int(slots.min()) >= 0 and int(slots.max()) < k_pool.shape[1], "slot outside the pool")
    stride, bf16 = _pool_args(k_pool, v_pool)
    with span("store_kv"):
        lib.hw_store_kv(
            k.data_ptr(), v.data_ptr(), slots.data_ptr(), k_cos.data_ptr(), k_sin.data_ptr(),
            k_pool.data_ptr(), v_pool.data_ptr(), stride, bf16, R, Hkv, D,
        )


MAX_GROUP = 16  # query heads per KV head the attention kernel supports
MAX_HEAD_DIM = 256


def supports_attention(num_heads: int, num_kv_heads: int, head_dim: int) -> bool:
    return num_heads % num_kv_heads == 0 and num_heads // num_kv_heads <= MAX_GROUP and head_dim <= MAX_HEAD_DIM


def attend(
    q: torch.Tensor, row_start: torch.Tensor, pair_slot: torch.Tensor, pair_len: torch.Tensor,
    pair_cos: torch.Tensor, pair_sin: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor,
    scale: float, max_slot: int,
) -> torch.Tensor:
    """Attention of rows q [R, H, D] (fp32, un-rotated) over their view entries.

    Row r owns pairs row_start[r]:row_start[r+1]; pair p reads keys at pool slots
    pair_slot[p] .. + pair_len[p] - 1 with the query rotated by pair_cos/sin[p] [P, D].
    ``max_slot``: an upper bound of the slots the pairs read (checked against the pool)."""
    lib = _lib_or_fail()
    R, H, D = q.shape
    Hkv = k_pool.shape[0]
    _need(q.dtype == torch.float32 and q.is_contiguous(), "q must be contiguous fp32 [R, H, D]")
    _need(supports_attention(H, Hkv, D) and k_pool.shape[2] == D, "unsupported head layout")
    P = pair_slot.numel()
    _need(row_start.dtype == torch.int32 and row_start.numel() == R + 1 and row_start.is_contiguous(), "row_start int32 [R+1]")
    _need(pair_slot.dtype == torch.int64 and pair_len.dtype == torch.int32 and pair_len.numel() == P, "pair arrays")
    _need(pair_cos.shape == (P, D) and pair_sin.shape == (P, D), "pair cos/sin [P, D]")
    _need(pair_cos.dtype == torch.float32 and pair_cos.is_contiguous() and pair_sin.is_contiguous(), "pair cos/sin fp32")
    _need(max_slot <= k_pool.shape[1], "a pair reads outside the pool")
    stride, bf16 = _pool_args(k_pool, v_pool)
    out = torch.empty_like(q)
    with span("attend"):
        rc = lib.hw_attend(
            q.data_ptr(), out.data_ptr(), R, H, Hkv, D, row_start.data_ptr(), pair_slot.data_ptr(),
            pair_len.data_ptr(), pair_cos.data_ptr(), pair_sin.data_ptr(), k_pool.data_ptr(), v_pool.data_ptr(),
            stride, bf16, scale, _threads(),
        )
    if rc != 0:
        raise MemoryError("hogwild kernel: attention scratch allocation failed")
    return out
