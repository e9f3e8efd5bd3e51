"""Load a checkpoint into our own :class:`CausalLM`, with its tokenizer.

``load_model`` accepts:

- a short name from :mod:`hogwild.models.registry` (``smollm2-135m``, the default);
- a local transformers directory (``config.json`` + safetensors or ``pytorch_model*.bin``);
- a local ``.gguf`` file;
- a hub id ``org/name`` (needs a network, or the model in the local hub cache).

GGUF files are dequantized once (fp32) and written to ``cache_dir()/converted/<key>/`` as a
plain transformers directory (config, ``model.safetensors``, tokenizer), so later loads take
about a second. transformers 5 refuses ``save_pretrained`` on a GGUF-loaded model
(DESIGN.md §9), and its GGUF model loader needs ``accelerate``; we read the tensors with its
GGUF reader into a meta-device model's names and write them with safetensors ourselves.
The conversion goes to a temporary directory renamed into place, so an interrupted one
never leaves a half cache.

The architecture is checked (:meth:`ModelConfig.from_hf`) before any weights are read.
Everything a user can get wrong ends in a :class:`HogwildError` subclass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import torch

from ..errors import HogwildError, InvalidRequestError, ModelLoadError, ModelNotFoundError
from ..paths import cache_dir
from . import registry
from .config import SUPPORTED_MODEL_TYPES, ModelConfig
from .llama import CausalLM

log = logging.getLogger(__name__)

#: bump when the layout of a converted directory changes: old conversions are redone
CONVERSION_FORMAT = 1
_MARKER = "hogwild-conversion.json"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
#: end-of-turn markers that chat templates emit; stop on them when the template uses them
_TURN_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")
#: end-of-document special tokens: a model that emits one has finished
_TEXT_END_MARKERS = ("<|endoftext|>", "<|end_of_text|>")

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "f32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


@dataclass
class LoadedModel:
    """A model ready for our engine: weights in our forward, tokenizer, architecture."""

    model: CausalLM
    #: a transformers tokenizer (with its chat template), or None for a directory without one
    tokenizer: Any | None
    config: ModelConfig
    #: what the user asked for (short name, path or hub id)
    name: str
    #: the directory the weights were read from (for a GGUF: its converted cache directory)
    source: str
    #: the transformers config of the checkpoint
    hf_config: Any = None
    #: stop tokens found besides the config's: tokenizer eos, generation config, chat template
    extra_eos_ids: tuple[int, ...] = ()

    @property
    def context_length(self) -> int:
        return self.config.max_positions

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """Every token id that ends a generation, sorted."""
        return tuple(sorted(set(self.config.eos_token_ids) | set(self.extra_eos_ids)))

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device


def load_model(
    name_or_path: str = registry.DEFAULT_MODEL,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    optimize: bool = True,
) -> LoadedModel:
    """Load a short name, local directory, ``.gguf`` file or hub id into our :class:`CausalLM`.

    ``optimize``: switch to the fastest CPU path (native kernels, else oneDNN-prepacked fp32
    linears; see :meth:`CausalLM.prepare_for_cpu`); results then differ from the plain
    PyTorch modules by fp32 rounding only (reduction order).
    """
    torch_dtype = _parse_dtype(dtype)
    torch_device = _parse_device(device)
    directory = resolve(name_or_path)
    loaded = _load_directory(directory, str(name_or_path), torch_dtype, torch_device)
    if optimize:
        loaded.model.prepare_for_cpu()
    return loaded


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


def _looks_like_hub_id(text: str) -> bool:
    if text.startswith(("/", ".", "~")) or text.lower().endswith(".gguf") or "\\" in text:
        return False
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and all(c.isalnum() or c in "-_." for c in text.replace("/", ""))


# --------------------------------------------------------------------------- dtype, device


def _parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise InvalidRequestError(f"dtype {dtype} is not supported (use float32, bfloat16 or float16)")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise InvalidRequestError(f"unknown dtype {dtype!r} (use float32, bfloat16 or float16)")
    return _DTYPES[key]


def _parse_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidRequestError(f"unknown device {device!r}: {error}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidRequestError(f"device {device!r} requested but CUDA is not available")
    return dev


# --------------------------------------------------------------------------- GGUF conversion


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
    try:
        from transformers import GenerationConfig

        GenerationConfig.from_model_config(hf_config).save_pretrained(out)
    except Exception:  # optional: eos ids are in config.json as well
        pass


def _gguf_config(path: Path) -> Any:
    from transformers import AutoConfig

    try:
        with _quiet():
            return AutoConfig.from_pretrained(str(path.parent), gguf_file=str(path))
    except HogwildError:
        raise
    except Exception as error:
        raise ModelLoadError(f"cannot read the GGUF file {path} (truncated or corrupt?): {_brief(error)}") from None


def _gguf_tensors(path: Path, hf_config: Any) -> dict[str, torch.Tensor]:
    """Dequantized fp32 tensors under transformers' parameter names."""
    try:
        from transformers import AutoModelForCausalLM
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    except ImportError:  # a transformers without the standalone GGUF reader
        return _gguf_tensors_via_model(path)
    try:
        with torch.device("meta"), _quiet():
            skeleton = AutoModelForCausalLM.from_config(hf_config)
        with _quiet(), _no_tqdm():
            parsed = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=skeleton)
        tensors = parsed["tensors"]
    except HogwildError:
        raise
    except Exception as error:
        raise ModelLoadError(f"cannot read the tensors of {path} (truncated or corrupt?): {_brief(error)}") from None
    return {name: t.float() for name, t in tensors.items()}


def _gguf_tensors_via_model(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    try:
        with _quiet():
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=str(path), dtype=torch.float32)
    except Exception as error:
        raise ModelLoadError(f"cannot load the GGUF file {path}: {_brief(error)}") from None
    return {k: v.detach().float() for k, v in model.state_dict().items()}


def _gguf_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        with _quiet():
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=str(path))
    except Exception as error:
        raise ModelLoadError(f"cannot read the tokenizer of {path}: {_brief(error)}") from None


# --------------------------------------------------------------------------- hub


def _hub_directory(hub_id: str) -> Path:
    """A local snapshot of ``hub_id``: from the hub cache, else downloaded (config checked first)."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError:
        raise ModelNotFoundError(f"{hub_id!r} looks like a hub id, but huggingface_hub is not installed") from None
    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.tiktoken"]
    try:
        local = Path(snapshot_download(hub_id, allow_patterns=patterns, local_files_only=True))
        if (local / "config.json").is_file() and _weight_files(local):
            return local
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelNotFoundError(
            f"{hub_id!r} is not in the local hub cache and HF_HUB_OFFLINE is set; "
            f"known short names: {', '.join(registry.MODELS)}"
        )
    if not _hub_reachable():
        raise ModelNotFoundError(
            f"{hub_id!r} is not a short name ({', '.join(registry.MODELS)}), not a local path, and the "
            "Hugging Face hub cannot be reached to download it"
        )
    try:
        config_file = hf_hub_download(hub_id, "config.json")
        model_type = json.loads(Path(config_file).read_text()).get("model_type")
        _check_model_type(model_type)  # refuse before downloading weights
        local = Path(snapshot_download(hub_id, allow_patterns=patterns))
        if not _weight_files(local):
            local = Path(snapshot_download(hub_id, allow_patterns=["pytorch_model*.bin", *patterns]))
    except HogwildError:
        raise
    except Exception as error:
        raise ModelNotFoundError(f"cannot download {hub_id!r} from the hub: {_brief(error)}") from None
    return local


def _hub_reachable(timeout: float = 3.0) -> bool:
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy decides; let the download itself report
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- local directory


def _weight_files(directory: Path) -> list[Path]:
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
                raise ModelLoadError(f"cannot read the shard index {index}: {_brief(error)}") from None
            return [directory / name for name in sorted(set(weight_map.values()))]
        if (directory / single).is_file():
            return [directory / single]
    return []


def _read_weights(files: list[Path], dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        if not file.is_file():
            raise ModelLoadError(f"the checkpoint lists the shard {file.name}, which is missing")
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt") as f:
                    for key in f.keys():
                        tensors[key] = f.get_tensor(key).to(device=device, dtype=dtype)
            else:
                state = torch.load(str(file), map_location="cpu", weights_only=True)
                for key, value in state.items():
                    tensors[key] = value.to(device=device, dtype=dtype)
        except (SafetensorError, OSError, RuntimeError, ValueError, EOFError) as error:
            raise ModelLoadError(f"cannot read weights from {file} (truncated or corrupt?): {_brief(error)}") from None
    return tensors


def _load_directory(directory: Path, name: str, dtype: torch.dtype, device: torch.device) -> LoadedModel:
    config_path = directory / "config.json"
    try:
        raw = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read {config_path}: {_brief(error)}") from None
    # Refuse other architectures from the raw file: AutoConfig may not even know them.
    _check_model_type(raw.get("model_type"))
    from transformers import AutoConfig

    try:
        with _quiet():
            hf_config = AutoConfig.from_pretrained(str(directory))
    except Exception as error:
        raise ModelLoadError(f"cannot read the config in {directory}: {_brief(error)}") from None
    config = ModelConfig.from_hf(hf_config)

    files = _weight_files(directory)
    if not files:
        raise ModelLoadError(f"{directory} has config.json but no model.safetensors or pytorch_model.bin")
    state = _read_weights(files, dtype, device)
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    embed_key = "model.embed_tokens.weight"
    if config.tie_embeddings:
        if embed_key in state:
            state["lm_head.weight"] = state[embed_key]
    elif "lm_head.weight" not in state:
        raise ModelLoadError(
            f"{directory} has no lm_head.weight and its config does not tie the output to the embeddings"
        )

    with torch.device("meta"):
        model = CausalLM(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelLoadError(
            f"the weights in {directory} do not match the {config.model_type} architecture: "
            f"missing {_few(missing)}; unexpected {_few(unexpected)}"
        )
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise ModelLoadError(f"the weights in {directory} do not fit the config: {_brief(error)}") from None
    if config.tie_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.eval().requires_grad_(False)
    model.fuse_projections()

    tokenizer = _load_tokenizer(directory)
    extra = _extra_eos(directory, tokenizer)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        config=config,
        name=name,
        source=str(directory),
        hf_config=hf_config,
        extra_eos_ids=extra,
    )


def _load_tokenizer(directory: Path) -> Any | None:
    if not any((directory / f).is_file() for f in _TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        with _quiet():
            return AutoTokenizer.from_pretrained(str(directory))
    except Exception as error:
        raise ModelLoadError(f"cannot load the tokenizer in {directory}: {_brief(error)}") from None


def _extra_eos(directory: Path, tokenizer: Any | None) -> tuple[int, ...]:
    ids: set[int] = set()
    try:
        generation = json.loads((directory / "generation_config.json").read_text())
        eos = generation.get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    except (OSError, ValueError):
        pass
    if tokenizer is not None:
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
        template = getattr(tokenizer, "chat_template", None)
        template = template if isinstance(template, str) else json.dumps(template or "")
        for marker in _TURN_END_MARKERS:
            if marker in template:
                token_id = tokenizer.convert_tokens_to_ids(marker)
                if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
                    ids.add(token_id)
        try:
            added = tokenizer.get_added_vocab()
        except Exception:
            added = {}
        for marker in _TEXT_END_MARKERS:
            if marker in added:
                ids.add(int(added[marker]))
    return tuple(sorted(int(i) for i in ids))


# --------------------------------------------------------------------------- helpers


def _check_model_type(model_type: Any) -> None:
    """Raise UnsupportedArchitectureError (ModelConfig's message) for a foreign model_type."""
    if model_type not in SUPPORTED_MODEL_TYPES:
        ModelConfig.from_hf(SimpleNamespace(model_type=model_type))


def _few(items: list[str], n: int = 4) -> str:
    if not items:
        return "none"
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _brief(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


class _quiet:
    """Silence transformers' progress bars and warnings inside a block."""

    def __enter__(self):
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        try:
            from transformers.utils import logging as hf_logging

            self._level = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            self._bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        except Exception:
            self._level = None
        return self

    def __exit__(self, *exc):
        if self._level is not None:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity(self._level)
            if self._bars:
                hf_logging.enable_progress_bar()
        self._warnings.__exit__(*exc)
        return False


class _no_tqdm:
    """The GGUF reader draws its own tqdm bar; the caller reports the conversion instead."""

    def __enter__(self):
        from transformers import modeling_gguf_pytorch_utils as gguf_utils

        self._module, self._saved = gguf_utils, getattr(gguf_utils, "tqdm", None)
        if self._saved is not None:
            gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            self._module.tqdm = self._saved
        return False
