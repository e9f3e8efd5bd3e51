"""Read a GGUF file's tensors as stored: quantized matrices as :class:`QuantWeight`.

The conversion path (:mod:`hogwild.models.gguf`) dequantizes every tensor; this reader keeps
the blocks of every type that has a native kernel (:data:`~hogwild.quant.weights.FORMATS`)
and only decodes the others: float types (F32, F16, BF16) become float32 tensors, and a
quantized type without a kernel is dequantized with one log line saying so.

Names follow transformers' (``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``)
so the result lines up with the float model the conversion path builds.

Row order: llama.cpp's converter permutes the rows of ``attn_q``/``attn_k`` of the ``llama``
architecture (it pairs rotary dimensions as (0, 1), (2, 3), ... where transformers pairs
(0, d/2), (1, d/2 + 1), ...). transformers undoes it on the dequantized matrix; a row of
blocks is independent of the others, so we undo it by reordering byte rows
(:func:`unpermute_rows`), which gives bit for bit the same matrix once dequantized.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelLoadError
from .dequant import decode_blocks
from .gguf_file import read_file
from .weights import QuantWeight, block_format

log = logging.getLogger(__name__)

#: ggml type ids of the float types (F32, F16, BF16)
FLOAT_TYPES = {0: "F32", 1: "F16", 30: "BF16"}

_LAYER = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK_NAME = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")


def hf_name(gguf_name: str) -> str | None:
    """transformers' parameter name for a GGUF tensor name, or None for one we do not use."""
    found = _BLOCK_NAME.match(gguf_name)
    if found:
        layer, part, kind = found.groups()
        module = _LAYER.get(part)
        return None if module is None else f"model.layers.{layer}.{module}.{kind}"
    stem, _, kind = gguf_name.rpartition(".")
    module = _GLOBAL.get(stem)
    return None if module is None or kind not in ("weight", "bias") else f"{module}.{kind}"


def unpermute_rows(n_rows: int, heads: int) -> torch.Tensor:
    """The row order that turns llama.cpp's rotary row layout back into transformers'.

    GGUF row ``h * 2 d + 2 i + a`` (head ``h``, pair ``i`` of ``d``, element ``a``) holds
    transformers' row ``h * 2 d + a * d + i``; entry ``r`` of the result is the GGUF row of
    transformers' row ``r``."""
    if n_rows % (2 * heads):
        raise ModelLoadError(f"cannot un-permute {n_rows} rows over {heads} heads")
    d = n_rows // heads // 2
    h, a, i = torch.meshgrid(torch.arange(heads), torch.arange(2), torch.arange(d), indexing="ij")
    return (h * 2 * d + 2 * i + a).reshape(-1)


def as_quant_weight(name: str, data: np.ndarray, ggml_type: int, n: int, k: int) -> QuantWeight:
    """Wrap a tensor's raw blocks; a byte size that does not fit ``[n, k]`` is a corrupt tensor."""
    fmt = block_format(ggml_type)
    if k % fmt.block:
        raise ModelLoadError(f"tensor {name}: rows of {k} weights do not split into {fmt.name} blocks of {fmt.block}")
    row_bytes = k // fmt.block * fmt.bytes
    if data.size != n * row_bytes:
        raise ModelLoadError(
            f"tensor {name} ({fmt.name} [{n}, {k}]) has {data.size} bytes of blocks, expected {n * row_bytes}: "
            "the file is corrupt or truncated"
        )
    # Copied by torch, not numpy: numpy asks the kernel for huge pages for big arrays, and
    # where that makes the kernel compact memory first (transparent huge pages on "madvise",
    # as on the project's machine) a 1.1 GB copy took 8-14 s instead of 0.3 s
    # (docs/results/quant/load/README.md).
    rows = torch.tensor(data.reshape(n, row_bytes))
    return QuantWeight(fmt, rows, n, k)


def read_gguf(path: str | Path, num_heads: int, num_kv_heads: int) -> dict[str, QuantWeight | torch.Tensor]:
    """Every tensor of the GGUF file at ``path`` under transformers' names: a
    :class:`QuantWeight` for a matrix in a format we have a kernel for, else float32.

    ``num_heads``/``num_kv_heads`` (the model config's) un-permute q/k rows of the
    ``llama`` architecture. Raises :class:`ModelLoadError` for an unreadable file or a
    tensor whose blocks do not fit its shape."""
    meta, tensors = read_file(path)
    arch = str(meta.get("general.architecture", ""))
    out: dict[str, QuantWeight | torch.Tensor] = {}
    for tensor in tensors:
        name = hf_name(tensor.name)
        if name is None:
            continue
        shape = list(tensor.shape)
        value = _tensor_value(tensor.name, tensor.data, tensor.ggml_type, shape)
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = num_heads if ".q_proj." in name else num_kv_heads
            order = unpermute_rows(shape[0], heads)
            if isinstance(value, QuantWeight):
                value = QuantWeight(value.fmt, value.data[order].contiguous(), value.n, value.k)
            else:
                value = value[order].contiguous()
        out[name] = value
    return out


def _tensor_value(name: str, data: np.ndarray, ggml_type: int, shape: list[int]) -> QuantWeight | torch.Tensor:
    if ggml_type in FLOAT_TYPES:
        values = decode_blocks(data, ggml_type, name)
        if values.size != int(np.prod(shape)):
            raise ModelLoadError(f"tensor {name} has {values.size} values, expected shape {shape}: corrupt file")
        return torch.from_numpy(np.array(values, dtype=np.float32).reshape(shape))
    if len(shape) == 2:
        try:
            block_format(ggml_type)
        except Exception:
            pass
        else:
            return as_quant_weight(name, data, ggml_type, shape[0], shape[1])
    from gguf import GGMLQuantizationType

    try:
        type_name = GGMLQuantizationType(ggml_type).name
    except ValueError:
        type_name = f"type {ggml_type}"
    log.warning("tensor %s: %s has no native kernel; dequantized to float32", name, type_name)
    values = decode_blocks(data, ggml_type, name)
    if values.size != int(np.prod(shape)):
        raise ModelLoadError(f"tensor {name} ({type_name}) decodes to {values.size} values, expected {shape}")
    return torch.from_numpy(np.array(values, dtype=np.float32).reshape(shape))
