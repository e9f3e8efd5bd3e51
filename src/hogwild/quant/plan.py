"""The weight setting (``--weights``) and the quantized matrices a model gets from it.

One setting names the weight format: ``native`` (a GGUF's own quantization, kept as
stored), ``fp32``/``bf16`` (float weights, today's path; ``--dtype`` is its deprecated
alias), or a format to quantize to on load (``q8_0``, ``q4_k``, ``mxfp4``, ``nvfp4``).
This module turns a loaded float model plus that setting into ``{module path ->
QuantWeight}``; :mod:`hogwild.kernels.quant_install` puts them into the model.

Fused projections: the model fuses q/k/v and gate/up into one linear. When the GGUF stores
the parts in one format they are fused as byte rows (rows of blocks concatenate). When it
mixes formats (Q4_K_M keeps ``attn_v`` in Q6_K or Q8_0 in half the layers) the parts stay
separate linears (``q_proj``, ``k_proj``, ``v_proj``): re-encoding them into one format
would either lose the precision the file's author gave ``v`` or spend bytes on ``q``/``k``,
and no format converts into another exactly; three calls in those layers cost less than
either.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..errors import InvalidRequestError
from ..models.config import ModelConfig
from ..models.llama import CausalLM
from .encode import ENCODABLE, Fit
from .gguf_tensors import read_gguf
from .superweights import SuperWeight, guard
from .weights import QuantWeight, block_format

log = logging.getLogger(__name__)

#: what ``--weights`` accepts (``auto``: ``native`` for a GGUF on CPU with kernels, else fp32)
WEIGHT_CHOICES = ("auto", "native", "fp32", "bf16", *ENCODABLE)
#: float settings and the torch dtype of each (fp16 kept for ``--dtype float16`` callers)
FLOAT_WEIGHTS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_ALIASES = {
    "float32": "fp32", "f32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16", "f16": "fp16",
}


#: the ``--weights`` help text of every command that loads a model
WEIGHTS_HELP = ("Weight format: native (a GGUF's own quantization), fp32, bf16, or quantize on load to q8_0, q4_k, "
                "mxfp4, nvfp4 (default: native for a GGUF on CPU with the native kernels, else fp32).")


def cli_setting(weights: str | None, dtype: str | None) -> str:
    """The setting of a command's ``--weights``/``--dtype`` pair, checked before any loading;
    ``--dtype`` prints a one-line deprecation note."""
    if dtype is not None:
        import sys

        print("note: --dtype is deprecated; it is the old name of --weights", file=sys.stderr)
    return resolve_setting(weights, dtype)


def parse_weights(value: str | torch.dtype | None) -> str:
    """The canonical name of a weight setting (a ``--weights``/``--dtype`` value or a torch dtype)."""
    if value is None:
        return "auto"
    if isinstance(value, torch.dtype):
        for name, dtype in FLOAT_WEIGHTS.items():
            if dtype == value:
                return name
        raise InvalidRequestError(f"dtype {value} is not supported (use float32, bfloat16 or float16)")
    key = str(value).strip().lower().removeprefix("torch.")
    key = _ALIASES.get(key, key)
    if key not in WEIGHT_CHOICES and key not in FLOAT_WEIGHTS:
        raise InvalidRequestError(f"unknown weight format {value!r}; use one of {', '.join(WEIGHT_CHOICES)}")
    return key


def resolve_setting(weights: str | torch.dtype | None, dtype: str | torch.dtype | None) -> str:
    """One setting from ``weights`` and its deprecated alias ``dtype``; both given must agree."""
    a, b = parse_weights(weights), parse_weights(dtype)
    if a != "auto" and b != "auto" and a != b:
        raise InvalidRequestError(f"--weights {a} and --dtype {b} disagree; --dtype is an old name for --weights")
    return a if a != "auto" else b


def recorded_name(setting: str) -> str:
    """The name a result file records: float settings under their dtype names (``float32``,
    ``bfloat16``), as before ``--weights`` existed, so earlier runs still resume."""
    return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(setting, setting)


def gguf_source(name_or_path: str) -> Path | None:
    """The GGUF file behind a short name or path, or None (a directory or hub id)."""
    from ..models import registry

    text = str(name_or_path).strip()
    if text in registry.MODELS:
        return registry.gguf_path(text)
    path = Path(text).expanduser()
    return path if path.is_file() and path.suffix.lower() == ".gguf" else None


def _layer_paths(i: int) -> dict[str, tuple[str, ...]]:
    base = f"model.layers.{i}"
    return {
        f"{base}.self_attn.qkv_proj": tuple(f"{base}.self_attn.{p}_proj" for p in "qkv"),
        f"{base}.self_attn.o_proj": (f"{base}.self_attn.o_proj",),
        f"{base}.mlp.gate_up_proj": (f"{base}.mlp.gate_proj", f"{base}.mlp.up_proj"),
        f"{base}.mlp.down_proj": (f"{base}.mlp.down_proj",),
    }


def concat_rows(parts: list[QuantWeight]) -> QuantWeight:
    """One matrix from row blocks of one format (fusing q/k/v or gate/up as stored)."""
    first = parts[0]
    return QuantWeight(first.fmt, torch.cat([p.data for p in parts]).contiguous(), sum(p.n for p in parts), first.k)


def native_weights(path: Path, config: ModelConfig) -> dict[str, QuantWeight]:
    """The GGUF's quantized matrices for a model of ``config`` (loaded from the same file),
    by module path of the fused model.

    A fused module whose parts share one format gets one fused matrix; otherwise its
    quantized parts are listed under the unfused names (see the module docstring). Parts
    the file stores as floats are left to the float model."""
    c = config
    tensors = read_gguf(path, c.num_heads, c.num_kv_heads)
    out: dict[str, QuantWeight] = {}
    for i in range(c.num_layers):
        for fused, parts in _layer_paths(i).items():
            found = [tensors.get(f"{p}.weight") for p in parts]
            quant = [t for t in found if isinstance(t, QuantWeight)]
            if len(quant) == len(parts) and len({q.fmt.name for q in quant}) == 1:
                out[fused] = quant[0] if len(quant) == 1 else concat_rows(quant)
            else:
                out.update({p: t for p, t in zip(parts, found) if isinstance(t, QuantWeight)})
    head = tensors.get("lm_head.weight", tensors.get("model.embed_tokens.weight") if c.tie_embeddings else None)
    if isinstance(head, QuantWeight):
        out["lm_head"] = head
    return out


def float_copies(weights: dict[str, QuantWeight], config: ModelConfig) -> set[str] | None:
    """The state-dict keys (transformers' names) whose float values ``weights`` makes
    unnecessary: the weight of every linear it replaces, so a loader can skip reading them.
    None when a fused layer would mix quantized and float parts (then the float model must
    be read whole, for the parts the file stores as floats)."""
    keys: set[str] = set()
    for i in range(config.num_layers):
        for fused, parts in _layer_paths(i).items():
            covered = [p for p in parts if fused in weights or p in weights]
            if covered and len(covered) != len(parts):
                return None
            keys.update(f"{p}.weight" for p in covered)
    if "lm_head" in weights and not config.tie_embeddings:  # a tied head's values are the embeddings
        keys.add("lm_head.weight")
    return keys


def quantized_linears(model: CausalLM) -> dict[str, nn.Linear]:
    """The linears a quantized setting encodes: every ``nn.Linear`` of the (fused) model,
    the output projection included."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def rtn_weights(model: CausalLM, fmt: str, supers: list[SuperWeight] | None = None,
                fit: Fit | None = None) -> dict[str, QuantWeight]:
    """Every linear of a float ``model`` quantized to ``fmt`` on load, by module path: each
    value rounded to its nearest code (q4_k's scales searched first, by ``fit`` when given:
    :func:`hogwild.quant.encode.quantize`); the ``supers`` (from :func:`find_super_weights`)
    kept exact in their ``down_proj``."""
    cells: dict[str, list[tuple[int, int]]] = {}
    for s in supers or ():
        cells.setdefault(f"model.layers.{s.layer}.mlp.down_proj", []).append((s.row, s.col))
    out = {}
    for name, linear in quantized_linears(model).items():
        target = fallback_format(fmt, linear.in_features)
        if target is None:
            log.info("%s: rows of %d weights fit no block format; kept in float", name, linear.in_features)
            continue
        if target != fmt:
            log.info("%s: rows of %d weights are not a multiple of %s's block of %d; encoded as %s",
                     name, linear.in_features, fmt, block_format(fmt).block, target)
        out[name] = guard(linear.weight, target, cells.get(name, []), fit)
    return out


def fallback_format(fmt: str, k: int) -> str | None:
    """The format a row of ``k`` weights is encoded in under setting ``fmt``: ``fmt`` itself
    when its block divides ``k``, else q8_0 (blocks of 32), else None (kept in float).

    Why q8_0, as llama.cpp falls back for such tensors: models with a hidden size that is
    not a multiple of 256 (SmolLM2-135M: 576, Qwen2.5-0.5B: 896) cannot use q4_k for the
    matrices that read the residual stream, and 8 bits keep those exact enough."""
    for candidate in (fmt, "q8_0"):
        if k % block_format(candidate).block == 0:
            return candidate
    return None


def describe_formats(weights: dict[str, QuantWeight]) -> str:
    """``Q4_K x 169, Q6_K x 29``-style summary for a log line."""
    counts: dict[str, int] = {}
    for q in weights.values():
        counts[q.fmt.name] = counts.get(q.fmt.name, 0) + 1
    return ", ".join(f"{name} x {n}" for name, n in sorted(counts.items()))
