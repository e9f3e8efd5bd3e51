"""From what the user typed to a local transformers directory.

:func:`resolve` accepts a short name from :mod:`hogwild.models.registry`, a local
transformers directory, a local ``.gguf`` file (converted once, :mod:`hogwild.models.gguf`)
or a hub id ``org/name``: from the local hub cache, else downloaded when the hub can be
reached. A hub checkpoint's architecture is checked from its ``config.json`` before any
weights are downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import HogwildError, ModelLoadError, ModelNotFoundError
from ..net import hub_reachable
from . import registry
from .config import check_model_type
from .gguf import convert_gguf
from .hf import brief


def resolve(name_or_path: str) -> Path:
    """The local transformers directory for a name, path or hub id (converting GGUF once)."""
    text = str(name_or_path).strip()
    if not text:
        raise ModelNotFoundError(registry.unknown_model_message(text))
    if text in registry.MODELS:
        gguf = registry.gguf_path(text)
        return convert_gguf(gguf, key=text)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a directory without config.json: not a transformers checkpoint")
        return path
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return convert_gguf(path)
        raise ModelLoadError(f"{path} is neither a .gguf file nor a checkpoint directory")
    if _looks_like_hub_id(text):
        return _hub_directory(text)
    path_like = text.startswith(("/", ".", "~")) or "/" in text or os.sep in text or path.suffix.lower() == ".gguf"
    raise ModelNotFoundError(registry.unknown_model_message(text, path_like=path_like))


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory, following a shard index when present."""
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = directory / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError) as error:
                raise ModelLoadError(f"cannot read the shard index {index}: {brief(error)}") from None
            return [directory / name for name in sorted(set(weight_map.values()))]
        if (directory / single).is_file():
            return [directory / single]
    return []


def _looks_like_hub_id(text: str) -> bool:
    if text.startswith(("/", ".", "~")) or text.lower().endswith(".gguf") or "\\" in text:
        return False
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and all(c.isalnum() or c in "-_." for c in text.replace("/", ""))


def _hub_directory(hub_id: str) -> Path:
    """A local snapshot of ``hub_id``: from the hub cache, else downloaded (config checked first)."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError:
        raise ModelNotFoundError(f"{hub_id!r} looks like a hub id, but huggingface_hub is not installed") from None
    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.tiktoken"]
    try:
        local = Path(snapshot_download(hub_id, allow_patterns=patterns, local_files_only=True))
        if (local / "config.json").is_file() and weight_files(local):
            return local
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelNotFoundError(
            f"{hub_id!r} is not in the local hub cache and HF_HUB_OFFLINE is set; "
            f"known short names: {', '.join(registry.MODELS)}"
        )
    if not hub_reachable():
        raise ModelNotFoundError(
            f"{hub_id!r} is not a short name ({', '.join(registry.MODELS)}), not a local path, and the "
            "Hugging Face hub cannot be reached to download it"
        )
    try:
        config_file = hf_hub_download(hub_id, "config.json")
        check_model_type(json.loads(Path(config_file).read_text()).get("model_type"))  # before the weights
        local = Path(snapshot_download(hub_id, allow_patterns=patterns))
        if not weight_files(local):
            local = Path(snapshot_download(hub_id, allow_patterns=["pytorch_model*.bin", *patterns]))
    except HogwildError:
        raise
    except Exception as error:
        raise ModelNotFoundError(f"cannot download {hub_id!r} from the hub: {brief(error)}") from None
    return local
