"""Building and loading the native kernel library: compiled once per machine, on first use.

The C source is compiled with the system C compiler into ``$HOGWILD_CACHE/kernels`` under a
name keyed by the source, the compiler and the flags, so an edit or a new compiler builds a
new library and an unchanged one is reused. The modules that call into the library declare
the C signatures of the functions they use (:func:`declare`); they are set on every library
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
SOURCE = Path(__file__).with_name("hogwild_cpu.c")
#: -ffp-contract=off: no a * b + c fused behind the code's back, so the same C expression
#: rounds the same wherever it is inlined (the kernels are batch invariant; FMAs they want
#: are written as intrinsics or fmaf)
FLAGS = ["-O3", "-mavx2", "-mfma", "-ffp-contract=off", "-fopenmp", "-fPIC", "-shared", "-std=gnu11"]

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
