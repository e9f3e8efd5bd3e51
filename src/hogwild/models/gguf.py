"""GGUF checkpoints, converted once into a plain transformers directory in the cache.

A GGUF file is dequantized (fp32) and written to ``cache_dir()/converted/<key>/`` as config,
``model.safetensors`` and tokenizer, so later loads read it in about a second like any
directory. transformers 5 refuses ``save_pretrained`` on a GGUF-loaded model, and its GGUF
model loader needs ``accelerate``; so we read the tensors with its GGUF reader into a
meta-device model's names and write them with safetensors ourselves. The conversion goes to
a temporary directory renamed into place, so an interrupted one never leaves a half cache;
a marker file records the source's fingerprint and the layout version, so a changed file or
a new layout is converted again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import HogwildError, ModelLoadError
from ..paths import cache_dir
from .config import ModelConfig
from .hf import brief, no_tqdm, quiet

log = logging.getLogger(__name__)

#: bump when the layout of a converted directory changes: old conversions are redone
CONVERSION_FORMAT = 1
_MARKER = "hogwild-conversion.json"


def gguf_fingerprint(path: Path) -> str:
    """A cheap content fingerprint: size plus the first and last MiB (headers and tail)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
            digest.update(f.read())
    return digest.hexdigest()[:16]


def converted_dir(path: Path, key: str | None = None) -> Path:
    """Where the conversion of ``path`` lives (exists or not)."""
    name = key if key is not None else f"{_safe(path.stem)}-{gguf_fingerprint(path)}"
    return cache_dir() / "converted" / _safe(name)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _conversion_valid(directory: Path, fingerprint: str) -> bool:
    try:
        marker = json.loads((directory / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("format") == CONVERSION_FORMAT and marker.get("fingerprint") == fingerprint


def convert_gguf(path: Path, key: str | None = None) -> Path:
    """Convert a GGUF file to a transformers directory in the cache, once; return that directory."""
    path = Path(path).resolve()
    _check_gguf_magic(path)
    fingerprint = gguf_fingerprint(path)
    target = converted_dir(path, key)
    if _conversion_valid(target, fingerprint):
        return target
    log.info("converting %s to %s (once)", path, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_conversion(path, tmp)
        (tmp / _MARKER).write_text(
            json.dumps({"format": CONVERSION_FORMAT, "fingerprint": fingerprint, "source": str(path)}, indent=1)
        )
        _install_dir(tmp, target, fingerprint)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _install_dir(tmp: Path, target: Path, fingerprint: str) -> None:
    """Rename ``tmp`` to ``target``, replacing a stale ``target``; tolerate a concurrent winner."""
    if target.exists():
        if _conversion_valid(target, fingerprint):
            return  # another process finished first
        stale = target.parent / f".stale-{target.name}-{os.getpid()}"
        os.replace(target, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(tmp, target)
    except OSError:
        if not _conversion_valid(target, fingerprint):
            raise


def _check_gguf_magic(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as error:
        raise ModelLoadError(f"cannot read {path}: {error}") from None
    if magic != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")


def _write_conversion(path: Path, out: Path) -> None:
    from safetensors.torch import save_file

    hf_config = _gguf_config(path)
    config = ModelConfig.from_hf(hf_config)  # unsupported architectures stop here, before weights
    tensors = _gguf_tensors(path, hf_config)
    if config.tie_embeddings:
        tensors.pop("lm_head.weight", None)
    elif "lm_head.weight" not in tensors:
        raise ModelLoadError(f"{path} has no output projection and does not tie it to the embeddings")
    tokenizer = _gguf_tokenizer(path)

    out.mkdir(parents=True)
    if getattr(hf_config, "quantization_config", None) is not None:
        del hf_config.quantization_config
    hf_config.save_pretrained(out)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)
    try:  # a complete checkpoint for transformers too (its generate() reads this file)
        from transformers import GenerationConfig

        GenerationConfig.from_model_config(hf_config).save_pretrained(out)
    except Exception:  # optional: transformers falls back to config.json
        pass


def _gguf_config(path: Path) -> Any:
    from transformers import AutoConfig

    try:
        with quiet():
            return AutoConfig.from_pretrained(str(path.parent), gguf_file=str(path))
    except HogwildError:
        raise
    except Exception as error:
        raise ModelLoadError(f"cannot read the GGUF file {path} (truncated or corrupt?): {brief(error)}") from None


def _gguf_tensors(path: Path, hf_config: Any) -> dict[str, torch.Tensor]:
    """Dequantized fp32 tensors under transformers' parameter names."""
    try:
        from transformers import AutoModelForCausalLM
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    except ImportError:  # a transformers without the standalone GGUF reader
        return _gguf_tensors_via_model(path)
    try:
        with torch.device("meta"), quiet():
            skeleton = AutoModelForCausalLM.from_config(hf_config)
        with quiet(), no_tqdm():
            parsed = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=skeleton)
        tensors = parsed["tensors"]
    except HogwildError:
        raise
    except Exception as error:
        raise ModelLoadError(f"cannot read the tensors of {path} (truncated or corrupt?): {brief(error)}") from None
    return {name: t.float() for name, t in tensors.items()}


def _gguf_tensors_via_model(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    try:
        with quiet():
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=str(path), dtype=torch.float32)
    except Exception as error:
        raise ModelLoadError(f"cannot load the GGUF file {path}: {brief(error)}") from None
    return {k: v.detach().float() for k, v in model.state_dict().items()}


def _gguf_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        with quiet():
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=str(path))
    except Exception as error:
        raise ModelLoadError(f"cannot read the tokenizer of {path}: {brief(error)}") from None
