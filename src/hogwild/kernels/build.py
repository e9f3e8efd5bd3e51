"""Building and loading the native kernel library: compiled once per machine, on first use.

The C sources (:data:`SOURCES`: the decode kernels and the quantized-weight kernels) are
compiled with the system C compiler into one library in ``$HOGWILD_CACHE/kernels``: each
source into an object keyed by its text, the compiler and the flags, then the objects linked
under a name keyed by theirs. An edit or a new compiler builds anew what it changes (an edit
to one source recompiles that source only) and an unchanged library is reused. The modules
that call into the library declare the C signatures of the functions they use (:func:`declare`); they are set on every library
object this module loads, since ctypes would otherwise pass pointers as 32-bit ints.

Nothing depends on the library: without a C compiler, on a CPU without AVX2/FMA, or with
``HOGWILD_KERNELS=0``, :func:`library` returns None and :func:`status` says why.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import torch

from ..paths import cache_dir

log = logging.getLogger(__name__)

ENV = "HOGWILD_KERNELS"  # "0" turns the native kernels off
SOURCE = Path(__file__).with_name("hogwild_cpu.c")  # the decode kernels (bench/kernel_rows.py builds it alone)
#: every C file of the library, compiled in one command into one shared object
SOURCES = [SOURCE, Path(__file__).with_name("hogwild_quant.c")]
#: -ffp-contract=off: no a * b + c fused behind the code's back, so the same C expression
#: rounds the same wherever it is inlined (the kernels are batch invariant; FMAs they want
#: are written as intrinsics or fmaf)
#: -mf16c: half-precision block scales (ggml formats) convert in one instruction; every CPU
#: with AVX2 and FMA has F16C
FLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=off", "-fopenmp", "-fPIC", "-shared", "-std=gnu11"]

#: C function name -> (restype, argtypes), filled by :func:`declare`
Signatures = dict[str, tuple[Any, list[Any]]]
_signatures: Signatures = {}

_lib: ctypes.CDLL | None = None
_tried = False
_reason = ""


def declare(signatures: Signatures) -> None:
    """Register the C signatures of library functions a module calls (at its import)."""
    _signatures.update(signatures)
    if _lib is not None:
        _bind(_lib, signatures)


def _bind(lib: ctypes.CDLL, signatures: Signatures) -> None:
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)  # AttributeError: the library lacks the symbol
        fn.restype, fn.argtypes = restype, argtypes


def cpu_supported() -> bool:
    """Whether this CPU has the AVX2/FMA instructions the kernels are compiled for."""
    try:
        return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    except AttributeError:  # very old torch
        return False


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _atomic(target: Path, command: list[str], compiler: str) -> None:
    """Run ``command`` (which writes the path it is given last) into ``target`` atomically:
    concurrent builders never see a half-written file."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    proc = subprocess.run([*command, str(tmp)], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{compiler} failed: {proc.stderr.strip()[-2000:]}")
    os.replace(tmp, target)


def _build(compiler: str) -> Path:
    """Compile the sources into the cache (each once per text, compiler and flags) and link."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    out_dir = cache_dir() / "kernels"
    out_dir.mkdir(parents=True, exist_ok=True)
    compile_flags = [f for f in FLAGS if f != "-shared"]
    keys = []
    for src in SOURCES:
        key = hashlib.sha256("\0".join([src.name, src.read_text(), compiler, version, *FLAGS]).encode()).hexdigest()[:16]
        obj = out_dir / f"{src.stem}-{key}.o"
        if not obj.exists():
            _atomic(obj, [compiler, *compile_flags, "-c", str(src), "-o"], compiler)
        keys.append((obj, key))
    key = hashlib.sha256("\0".join(k for _, k in keys).encode()).hexdigest()[:16]
    target = out_dir / f"hogwild_cpu-{key}.so"
    if not target.exists():
        _atomic(target, [compiler, *FLAGS, *(str(obj) for obj, _ in keys), "-lm", "-o"], compiler)
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
    if not cpu_supported():
        _reason = "this CPU lacks AVX2/FMA"
        return None
    compiler = _compiler()
    if compiler is None:
        _reason = "no C compiler found (set CC)"
        return None
    try:
        lib = ctypes.CDLL(str(_build(compiler)))
        _bind(lib, _signatures)
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
