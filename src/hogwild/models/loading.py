"""Load a checkpoint into our own :class:`CausalLM`, with its tokenizer.

``load_model`` takes a short name, a local transformers directory, a ``.gguf`` file or a hub
id (:func:`hogwild.models.hub.resolve` finds or makes the directory) and reads it into our
forward, fused for inference. It returns the plain PyTorch model: the CPU fast path lives
above the model code, in :func:`hogwild.kernels.prepare_for_cpu`.

The architecture is checked (:func:`hogwild.models.config.check_model_type`) before any
weights are read. Everything a user can get wrong ends in a :class:`HogwildError` subclass.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidRequestError, ModelLoadError
from ..paths import cache_dir
from . import ready, registry
from .config import ModelConfig, check_model_type
from .hf import brief, quiet
from .hub import resolve, weight_files
from .llama import CausalLM

log = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")

#: the dtype names users may give (``--dtype``, ``load_model(dtype=...)``)
DTYPES: dict[str, torch.dtype] = {
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
    #: the weight format the model computes with (``fp32``, ``bf16``, ``native``, ``q4_k``, ...;
    #: set by :func:`hogwild.loader.load_model`; empty: the plain float model of this module)
    weights: str = ""
    #: what the weight setting did, for logs and reports (formats per matrix, fallbacks)
    weights_note: str = ""
    #: the super weights the guard kept exact (:class:`hogwild.quant.superweights.SuperWeight`)
    super_weights: list[Any] = field(default_factory=list)

    @property
    def context_length(self) -> int:
        return self.config.max_positions

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
    skip: Collection[str] = (),
) -> LoadedModel:
    """Load a short name, local directory, ``.gguf`` file or hub id into our :class:`CausalLM`,
    with q/k/v and gate/up projections fused (:meth:`CausalLM.fuse_projections`).

    ``skip``: state-dict keys (transformers' names) not to read; those parameters stay on the
    meta device for the caller to replace (a loader that keeps a GGUF's quantized matrices
    reads none of their float copies)."""
    torch_dtype = parse_dtype(dtype)
    torch_device = _parse_device(device)
    directory = resolve(name_or_path)
    return _load_directory(directory, str(name_or_path), torch_dtype, torch_device, frozenset(skip))


def model_config(name_or_path: str) -> ModelConfig:
    """The :class:`ModelConfig` of a model (the cached conversion of a GGUF included), without
    reading its weights."""
    return _read_config(resolve(name_or_path))


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A dtype from a name in :data:`DTYPES` (``torch.`` prefix allowed) or a torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise InvalidRequestError(f"dtype {dtype} is not supported (use float32, bfloat16 or float16)")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in DTYPES:
        raise InvalidRequestError(f"unknown dtype {dtype!r} (use float32, bfloat16 or float16)")
    return DTYPES[key]


def _parse_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidRequestError(f"unknown device {device!r}: {error}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidRequestError(f"device {device!r} requested but CUDA is not available")
    return dev


def _read_weights(files: list[Path], dtype: torch.dtype, device: torch.device,
                  skip: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        if not file.is_file():
            raise ModelLoadError(f"the checkpoint lists the shard {file.name}, which is missing")
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt") as f:
                    keys = [key for key in f.keys() if key not in skip]  # skipped bytes are never read
                for key in keys:
                    # One mapping per tensor: the pages a tensor was read from leave the
                    # process when its mapping closes. Through one mapping for the whole file,
                    # a bf16 load of the 1.5B model's float32 conversion held all 7 GB of it
                    # (10.7 GB peak; docs/results/quant/load/README.md).
                    with safe_open(str(file), framework="pt") as f:
                        tensors[key] = f.get_tensor(key).to(device=device, dtype=dtype)
            else:
                state = torch.load(str(file), map_location="cpu", weights_only=True)
                for key, value in state.items():
                    if key not in skip:
                        tensors[key] = value.to(device=device, dtype=dtype)
        except (SafetensorError, OSError, RuntimeError, ValueError, EOFError) as error:
            raise ModelLoadError(f"cannot read weights from {file} (truncated or corrupt?): {brief(error)}") from None
    return tensors


def _read_config(directory: Path) -> ModelConfig:
    config_path = directory / "config.json"
    try:
        raw = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read {config_path}: {brief(error)}") from None
    # Refuse other architectures from the raw file: AutoConfig may not even know them.
    check_model_type(raw.get("model_type"))
    from transformers import AutoConfig

    try:
        with quiet():
            hf_config = AutoConfig.from_pretrained(str(directory))
    except Exception as error:
        raise ModelLoadError(f"cannot read the config in {directory}: {brief(error)}") from None
    return ModelConfig.from_hf(hf_config)


def _load_directory(directory: Path, name: str, dtype: torch.dtype, device: torch.device,
                    skip: frozenset[str] = frozenset()) -> LoadedModel:
    config = _read_config(directory)
    files = weight_files(directory)
    if not files:
        raise ModelLoadError(f"{directory} has config.json but no model.safetensors or pytorch_model.bin")
    def loaded(model: CausalLM) -> LoadedModel:
        return LoadedModel(model=model, tokenizer=_load_tokenizer(directory), config=config, name=name,
                           source=str(directory))

    # weights mapped from files rather than read and copied (hogwild.models.ready): bf16/fp16
    # from a ready file once one exists, float32 from its own source where it can
    ready_file = stamp = None
    if dtype in ready.DTYPES and not skip and all(f.suffix == ".safetensors" for f in files):
        ready_file, stamp = ready.path_for(directory, dtype), ready.fingerprint(files, dtype)
        model = _from_ready(config, ready.load(ready_file, stamp), device)
        if model is not None:
            return loaded(model)
    elif dtype == torch.float32 and device.type == "cpu" and not skip:
        model = _mapped_float32(config, directory, files)
        if model is not None:
            return loaded(model)
    state = _read_weights(files, dtype, device, skip)
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    embed_key = "model.embed_tokens.weight"
    if config.tie_embeddings:
        if embed_key in state:
            state["lm_head.weight"] = state[embed_key]
    elif "lm_head.weight" not in state and "lm_head.weight" not in skip:
        raise ModelLoadError(
            f"{directory} has no lm_head.weight and its config does not tie the output to the embeddings"
        )

    with torch.device("meta"):
        model = CausalLM(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state) - skip), sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelLoadError(
            f"the weights in {directory} do not match the {config.model_type} architecture: "
            f"missing {_few(missing)}; unexpected {_few(unexpected)}"
        )
    try:
        model.load_state_dict(state, strict=not skip, assign=True)
    except RuntimeError as error:
        raise ModelLoadError(f"the weights in {directory} do not fit the config: {brief(error)}") from None
    _finish(model, config).fuse_projections()
    if ready_file is not None and stamp is not None:
        ready.save(ready_file, _ready_state(model, config), stamp, directory)
    return loaded(model)


def _finish(model: CausalLM, config: ModelConfig) -> CausalLM:
    """A model whose weights are in place: the output tied to the embeddings where the
    config says so (one tensor, as transformers has it), in inference mode."""
    if config.tie_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.eval().requires_grad_(False)


def _ready_state(model: CausalLM, config: ModelConfig) -> dict[str, torch.Tensor]:
    """The fused model's tensors as a ready file stores them (on the CPU; a tied output
    matrix once, as the embedding)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)
    return state


def _from_ready(config: ModelConfig, state: dict[str, torch.Tensor] | None, device: torch.device) -> CausalLM | None:
    """The fused model over a ready file's mapped tensors (moved when ``device`` is not the
    CPU), or None when there is no usable file: then the caller loads as usual and writes one."""
    if state is None:
        return None
    with torch.device("meta"):
        model = CausalLM(config)
    model.fuse_projections()
    if device.type != "cpu":
        state = {k: v.to(device) for k, v in state.items()}
    if config.tie_embeddings:
        state["lm_head.weight"] = state.get("model.embed_tokens.weight")
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except (RuntimeError, TypeError) as error:
        log.warning("the ready weights do not fit the model (%s); reading the checkpoint", brief(error))
        return None
    return _finish(model, config)


def _mapped_float32(config: ModelConfig, directory: Path, files: list[Path]) -> CausalLM | None:
    """The fused float32 model with every weight mapped, nothing copied: the tensors the
    fusion leaves alone straight from the float32 source (a GGUF's conversion is float32),
    the fused q/k/v and gate/up projections from their ready file, which the first such load
    writes (it concatenates them once, as a load without the file does each time). Only for
    checkpoints in hogwild's own cache (converted GGUFs, assembled models), which are
    replaced by renaming a new directory into place: a file someone rewrites in place under
    a live mapping would take the process down, so a user's directory is read (copied) as
    before. None (read as usual) also for a source that is not all-float32 safetensors or
    does not fit the architecture; that path gives the error."""
    if not directory.resolve().is_relative_to(cache_dir().resolve()):
        return None
    if not all(f.suffix == ".safetensors" for f in files):
        return None
    source: dict[str, torch.Tensor] = {}
    try:
        for f in files:
            source.update(ready.map_file(f)[1])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None
    source = {k: v for k, v in source.items() if not k.endswith("rotary_emb.inv_freq")}
    if any(t.dtype != torch.float32 for t in source.values()):
        return None
    if config.tie_embeddings and "model.embed_tokens.weight" in source:
        source["lm_head.weight"] = source["model.embed_tokens.weight"]
    with torch.device("meta"):
        model = CausalLM(config)
    if set(model.state_dict()) != set(source):
        return None
    path, stamp = ready.path_for(directory, torch.float32), ready.fingerprint(files, torch.float32)
    fused = ready.load(path, stamp)
    if fused is None:  # fuse from the mapped source (one copy of the fused parts), then keep them
        try:
            model.load_state_dict(source, strict=True, assign=True)
        except RuntimeError:
            return None
        _finish(model, config).fuse_projections()
        ready.save(path, {k: v for k, v in model.state_dict().items() if k not in source}, stamp, directory)
        return model
    model.fuse_projections()
    state = {k: source[k] if k in source else fused.get(k) for k in model.state_dict()}
    if any(v is None for v in state.values()):
        return None
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError:
        return None
    return _finish(model, config)


def _load_tokenizer(directory: Path) -> Any | None:
    if not any((directory / f).is_file() for f in _TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        with quiet():
            return AutoTokenizer.from_pretrained(str(directory))
    except Exception as error:
        raise ModelLoadError(f"cannot load the tokenizer in {directory}: {brief(error)}") from None


def _few(items: list[str], n: int = 4) -> str:
    if not items:
        return "none"
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")
