"""A minimal GGUF reader: the metadata we need and every tensor's raw bytes, memory-mapped.

Why not ``gguf.GGUFReader``: it builds a numpy view for every part of every metadata field,
and a tokenizer of 150k entries makes that a minute (Qwen2.5's GGUFs: 63 of 68 seconds of a
load on a busy 2-core machine). The format is simple (little-endian: a header, typed
key/value pairs, tensor infos, aligned data), so we skip the values we do not need and
keep the tensors as slices of one ``numpy.memmap``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError

#: fixed sizes of GGUF's scalar value types (8 = string, 9 = array are variable)
_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


@dataclass
class TensorInfo:
    """One tensor: its name, shape (rows first, as torch lists it), ggml type and raw bytes."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    data: np.ndarray  # uint8, a view into the file


class _Cursor:
    def __init__(self, buf: memoryview, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise ModelLoadError(f"{self.path} ends inside its header (truncated or corrupt?)")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> str:
        return bytes(self.take(self.u64())).decode("utf-8", errors="replace")

    def skip_value(self, kind: int) -> None:
        if kind in _SCALAR:
            self.take(_SCALAR[kind])
        elif kind == _STRING:
            self.take(self.u64())
        elif kind == _ARRAY:
            inner, count = self.u32(), self.u64()
            if inner in _SCALAR:
                self.take(_SCALAR[inner] * count)
            else:
                for _ in range(count):
                    self.skip_value(inner)
        else:
            raise ModelLoadError(f"{self.path}: unknown GGUF value type {kind} (corrupt file?)")

    def scalar(self, kind: int) -> int | float | str | None:
        if kind == _STRING:
            return self.string()
        if kind in (4, 5, 10, 11, 0, 1, 2, 3, 7):
            size = _SCALAR[kind]
            fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
            value = struct.unpack("<" + (fmt.lower() if kind in (1, 3, 5, 11) else fmt), self.take(size))[0]
            return value
        self.skip_value(kind)
        return None


def tensor_nbytes(shape: tuple[int, ...], ggml_type: int, name: str) -> int:
    """Bytes a tensor of ``shape`` (rows first) and ``ggml_type`` occupies."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise ModelLoadError(f"tensor {name}: unknown ggml type {ggml_type}") from None
    count = int(np.prod(shape)) if shape else 1
    if shape and shape[-1] % block:
        raise ModelLoadError(f"tensor {name}: rows of {shape[-1]} do not split into blocks of {block}")
    return count // block * size


def read_file(path: str | Path) -> tuple[dict[str, int | float | str], list[TensorInfo]]:
    """The scalar and string metadata of a GGUF file and its tensors (memory-mapped)."""
    path = Path(path)
    try:
        mapped = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read the GGUF file {path}: {error}") from None
    cur = _Cursor(memoryview(mapped), path)
    if bytes(cur.take(4)) != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    version = cur.u32()
    if version < 2:
        raise ModelLoadError(f"{path}: GGUF version {version} is too old (2 or later)")
    n_tensors, n_fields = cur.u64(), cur.u64()
    meta: dict[str, int | float | str] = {}
    for _ in range(n_fields):
        key, kind = cur.string(), cur.u32()
        value = cur.scalar(kind) if kind != _ARRAY else cur.skip_value(kind)
        if value is not None:
            meta[key] = value
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        dims = [cur.u64() for _ in range(cur.u32())]
        ggml_type, offset = cur.u32(), cur.u64()
        infos.append((name, tuple(reversed(dims)), ggml_type, offset))
    align = int(meta.get("general.alignment", 32))
    start = (cur.pos + align - 1) // align * align
    tensors = []
    for name, shape, ggml_type, offset in infos:
        nbytes = tensor_nbytes(shape, ggml_type, name)
        begin = start + offset
        if begin + nbytes > len(mapped):
            raise ModelLoadError(
                f"tensor {name} needs {nbytes} bytes at offset {begin}, but {path} has {len(mapped)}: "
                "the file is truncated or corrupt")
        tensors.append(TensorInfo(name, shape, ggml_type, mapped[begin : begin + nbytes]))
    return meta, tensors
