"""Load a model ready to run on this machine: the plain model, its weight format, the fastest path.

:func:`hogwild.models.loading.load_model` gives the plain PyTorch model (pure ``models/``,
the definition every oracle compares against); :func:`hogwild.kernels.prepare_for_cpu`
swaps in the native kernels where the machine has them, and
:func:`hogwild.gpu.prepare_for_gpu` the fused Triton kernels on a CUDA device. This module joins the two so that
the CLI, the evaluation and Python users get the product path with one call, while the
layers stay apart (models never import kernels).

The weight setting (``weights=``, the CLI's ``--weights``; ``dtype=`` is its old name) is
one of :data:`hogwild.quant.plan.WEIGHT_CHOICES`. ``fp32``/``bf16`` load float weights as
before. ``native`` keeps a GGUF's quantized blocks as stored and computes with the native
quantized kernels; ``q8_0``/``q4_k``/``mxfp4``/``nvfp4`` quantize every linear on load
(each value to its nearest code; q4_k searches its sub-block scales first; a GGUF
dequantized first) with the super-weight guard. ``auto`` (the
default) is ``native`` for a GGUF on CPU when the quantized kernels are available, else
``fp32``. Without the kernels a quantized setting still computes with its quantized values,
dequantized into float modules (the PyTorch fallback).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .errors import InvalidRequestError
from .gpu import prepare_for_gpu
from .kernels import prepare_for_cpu
from .models import loading
from .models.loading import LoadedModel
from .models.registry import DEFAULT_MODEL
from .kernels import quant_install
from .kernels.qlinear import fit_subblocks
from .quant import plan
from .quant import superweights as sw

log = logging.getLogger(__name__)


def decide_weights(setting: str, name_or_path: str, device: str, optimize: bool = True) -> str:
    """The concrete setting ``auto`` stands for: ``native`` for a GGUF on CPU when the native
    quantized kernels are available, else ``fp32``; any other setting as given. (Here, not
    in :mod:`hogwild.quant.plan`: it asks the kernels, which sit above ``quant``.)"""
    if setting != "auto":
        return setting
    on_cpu = optimize and str(device).startswith("cpu")
    if on_cpu and plan.gguf_source(name_or_path) is not None and quant_install.quant_linear_class() is not None:
        return "native"
    return "fp32"


def load_model(name_or_path: str = DEFAULT_MODEL, dtype: str | torch.dtype | None = None,
               device: str | torch.device = "cpu", optimize: bool = True,
               weights: str | torch.dtype | None = None, guard: bool = True) -> LoadedModel:
    """Like :func:`hogwild.models.loading.load_model`, with the weight format ``weights``
    (``dtype`` is its deprecated alias: one setting) and, with ``optimize`` (default), the
    model prepared for CPU or GPU inference (a no-op without the kernels). ``guard=False``
    turns the super-weight guard off (for quality comparisons)."""
    setting = plan.resolve_setting(weights, dtype)
    torch_device = loading._parse_device(device)  # a bad device is a clear error before any loading
    setting = decide_weights(setting, name_or_path, torch_device.type, optimize)
    gguf = plan.gguf_source(name_or_path) if setting == "native" else None
    kernels = optimize and torch_device.type == "cpu" and quant_install.quant_linear_class() is not None
    if setting in plan.FLOAT_WEIGHTS:
        loaded = loading.load_model(name_or_path, dtype=plan.FLOAT_WEIGHTS[setting], device=device)
        loaded.weights = setting
        return _prepared(loaded, optimize)
    if torch_device.type != "cpu" and setting == "native":
        raise InvalidRequestError("--weights native runs on the CPU kernels; use fp32 or bf16 on a GPU")
    if setting == "native" and gguf is not None and kernels:
        fast = _native_without_float_copies(name_or_path, gguf, device)
        if fast is not None:
            return _prepared(fast, optimize)
    loaded = loading.load_model(name_or_path, dtype=torch.float32, device=device)
    if setting == "native":
        if gguf is None or not kernels:
            why = "is not a GGUF file" if gguf is None else "has no quantized kernels on this machine"
            log.info("--weights native: %s %s; computing with float32 weights", name_or_path, why)
            loaded.weights = "fp32" if gguf is None else "native"
            loaded.weights_note = "float32 (dequantized as stored)" if gguf is not None else "float32"
            return _prepared(loaded, optimize)
        qweights = plan.native_weights(gguf, loaded.config)
        note = f"GGUF blocks as stored: {plan.describe_formats(qweights)}"
    else:
        supers = find_guarded(loaded) if guard else []
        # q4_k's scale search in C when the kernels are here (the PyTorch reference is ~10 x slower)
        qweights = plan.rtn_weights(loaded.model, setting, supers, fit=fit_subblocks if kernels else None)
        loaded.super_weights = supers
        note = f"quantized on load: {plan.describe_formats(qweights)}; {len(supers)} super weights kept exact"
    loaded.weights = setting
    if kernels:
        quant_install.install(loaded.model, qweights)
    else:
        quant_install.apply_dequantized(loaded.model, qweights)
        note += "; no quantized kernels here: computing with the dequantized values"
    loaded.weights_note = note
    log.info("%s: %s", loaded.name, note)
    return _prepared(loaded, optimize)


def _native_without_float_copies(name_or_path: str, gguf: Path, device: str | torch.device) -> LoadedModel | None:
    """``--weights native`` without the float model: the GGUF's quantized matrices go
    straight into the kernels, and only what stays in float (embeddings, norms, biases,
    matrices the file stores as floats) is read from the cached conversion. A 1.5B model
    then loads without its 6 GB of float32 matrices, which the slow path below read, fused
    and threw away. None (use the slow path) when a fused layer mixes quantized and float
    parts, or a matrix ends up computed from its float values after all."""
    config = loading.model_config(name_or_path)
    qweights = plan.native_weights(gguf, config)
    skip = plan.float_copies(qweights, config)
    if skip is None:
        return None
    loaded = loading.load_model(name_or_path, dtype=torch.float32, device=device, skip=skip)
    quant_install.install(loaded.model, qweights)
    if any(p.is_meta for p in loaded.model.parameters()):
        log.info("%s: some matrices fall back to float values; reading the float model whole", name_or_path)
        return None
    loaded.weights = "native"
    loaded.weights_note = f"GGUF blocks as stored: {plan.describe_formats(qweights)}"
    log.info("%s: %s", loaded.name, loaded.weights_note)
    return loaded


def find_guarded(loaded: LoadedModel) -> list[sw.SuperWeight]:
    """The super weights of a float model on the calibration text (none without a tokenizer)."""
    if loaded.tokenizer is None:
        log.info("%s has no tokenizer: the super-weight guard has no calibration text and is off", loaded.name)
        return []
    found = sw.find_super_weights(loaded.model, sw.calibration_ids(loaded.tokenizer))
    sw.log_found(found)
    return found


def _prepared(loaded: LoadedModel, optimize: bool) -> LoadedModel:
    if optimize:
        prepare_for_cpu(loaded.model)
        prepare_for_gpu(loaded.model)
    return loaded
