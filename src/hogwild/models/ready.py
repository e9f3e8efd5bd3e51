"""Ready weights: a model's fused weights in the dtype it runs in, mapped from one file.

A float load otherwise reads every weight, converts it (the cached conversion of a GGUF is
float32, so a bf16 model rounds 7 GB for the 1.5B model) and concatenates the q/k/v and
gate/up projections into fresh memory: 28 s for Qwen2.5-Coder-1.5B in bf16 on the 2-core
machine, every time. The first bf16 (or fp16) load of a directory therefore writes the
finished state dict (:meth:`CausalLM.fuse_projections` done, our names) to
``$HOGWILD_CACHE/ready/``, and later loads map that file instead: its pages come from the
page cache as the kernels read them, nothing is converted or copied, and they do not count
against the process's private memory (docs/results/quant/load/README.md has the numbers).

The file is tied to what it was made from by a fingerprint of the source weight files
(name, size, modification time), the dtype and :data:`FORMAT`; a mismatch, a missing or an
unreadable file means "rebuild". Writing is best effort (a full disk or a read-only cache
costs speed, never the load) and atomic (a temporary file renamed into place), so concurrent
loads and killed processes leave either the old file or the new one. A float32 load maps its
float32 source (:func:`map_file`) and keeps only the fused projections in its ready file: a
whole second copy would double the disk the model takes. Each file records its source
directory, and files whose source is gone are removed at the next write. Deleting
``$HOGWILD_CACHE/ready/`` is always safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
from pathlib import Path

import torch

from ..paths import cache_dir

log = logging.getLogger(__name__)

#: bumped when what the file holds changes (names, fusion), so old files are rebuilt
FORMAT = 1
#: the dtypes that get a ready file of every tensor (float32 gets one of its fused
#: projections only: the rest maps from the float32 source itself)
DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16"}
_TORCH = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
_ITEM = {"BF16": 2, "F16": 2, "F32": 4}
_NAMES = {dtype: name for name, dtype in _TORCH.items()}


def path_for(directory: Path, dtype: torch.dtype) -> Path:
    """Where the ready file of ``directory``'s weights in ``dtype`` lives."""
    key = hashlib.sha1(str(directory.resolve()).encode()).hexdigest()[:12]
    return cache_dir() / "ready" / f"{directory.name}-{key}-{_NAMES[dtype].lower()}.safetensors"


def fingerprint(files: list[Path], dtype: torch.dtype) -> str:
    """What a ready file must have been made from: the source files as they are now."""
    sources = []
    for f in files:
        st = f.stat()
        sources.append([f.name, st.st_size, st.st_mtime_ns])
    return json.dumps({"format": FORMAT, "dtype": _NAMES[dtype], "sources": sources}, sort_keys=True)


def map_file(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """A safetensors file's metadata and its tensors, mapped copy-on-write (nothing is read
    until used, and a write to a tensor copies its page, never reaching the file). Raises
    OSError, ValueError or KeyError (an unsupported dtype) for a file it cannot map."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        if n <= 0 or 8 + n > size:
            raise ValueError("bad header length")
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", {}) or {}
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
    tensors = {}
    for name, entry in header.items():
        kind, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        item = _ITEM[kind]
        count = 1
        for s in shape:
            count *= s
        offset = 8 + n + start
        if end - start != count * item or offset % item or 8 + n + end > size:
            raise ValueError(f"tensor {name} does not fit the file")
        t = torch.empty(0, dtype=_TORCH[kind])
        t.set_(storage, offset // item, shape)
        tensors[name] = t
    return meta, tensors


def load(path: Path, expected: str) -> dict[str, torch.Tensor] | None:
    """The tensors of a ready file, mapped (:func:`map_file`), or None when there is none or
    it does not match ``expected`` (then the caller rebuilds it)."""
    try:
        meta, tensors = map_file(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        log.warning("ignoring the unreadable ready weights %s (%s); rebuilding them", path, error)
        return None
    return tensors if meta.get("hogwild") == expected else None


def save(path: Path, state: dict[str, torch.Tensor], stamp: str, source: Path) -> None:
    """Write ``state`` (contiguous CPU tensors of :data:`_NAMES`' dtypes, no two sharing
    memory) as the ready file at ``path``, made from the checkpoint in ``source``; best effort
    (a failure is logged, the load goes on). Ready files whose source is gone go first."""
    need = sum(t.numel() * t.element_size() for t in state.values())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(path)
        _remove_stale(path.parent)
        # leave room behind it (a quarter of its size, at least 64 MB): a cache that fills the
        # disk would cost more than the speed it buys
        free = shutil.disk_usage(path.parent).free
        if free < need + max(need // 4, 64 << 20):
            log.info("not writing ready weights to %s: %d MB free, %d MB needed", path.parent,
                     free >> 20, need >> 20)
            return
        _write(tmp, state, {"hogwild": stamp, "source": str(source.resolve())})
        os.replace(tmp, path)
        log.info("wrote ready weights %s (%d MB): later loads map it", path, need >> 20)
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        log.warning("could not write ready weights to %s: %s", path, error)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_orphans(path: Path) -> None:
    """Temporary files of ``path`` whose writer is gone (a killed load)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            os.kill(int(tmp.suffixes[-2].lstrip(".")), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


def _remove_stale(folder: Path) -> None:
    """Ready files whose source directory no longer exists (a deleted model, a test's
    temporary checkpoint) or that do not say where they came from."""
    for f in folder.glob("*.safetensors"):
        try:
            with open(f, "rb") as fh:
                n = struct.unpack("<Q", fh.read(8))[0]
                meta = json.loads(fh.read(min(n, 1 << 24))).get("__metadata__", {}) or {}
            gone = not meta.get("source") or not Path(meta["source"]).exists()
        except (OSError, ValueError, struct.error):
            gone = True
        if gone:
            f.unlink(missing_ok=True)


def _write(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """The safetensors layout (8-byte header length, JSON header, the tensors' bytes back to
    back), written straight from the tensors' memory: safetensors' own ``save_file`` first
    copies every tensor into a new buffer, 28 s for the 1.5B model here against 2 s. Wider
    types first, so every tensor starts at a multiple of its item size without a gap."""
    order = sorted(state, key=lambda k: -state[k].element_size())
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name in order:
        t = state[name]
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in order:
            f.write(memoryview(state[name].contiguous().reshape(-1).view(torch.uint8).numpy()))
