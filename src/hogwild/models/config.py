"""The architecture description our own forward needs, read from a transformers config.

One dataclass covers the Llama family: Llama 2/3 (llama3 RoPE scaling), Mistral, Qwen2/2.5
(q/k/v bias), Qwen3 (q/k RMSNorm), SmolLM2 (a Llama). Anything else is refused with a
message that names what is supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UnsupportedArchitectureError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass(frozen=True)
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_eps: float
    rope_theta: float
    max_positions: int
    tie_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    #: RoPE scaling as in transformers' ``rope_parameters`` minus theta; None = plain RoPE.
    rope_scaling: dict[str, Any] | None = None

    @property
    def kv_groups(self) -> int:
        return self.num_heads // self.num_kv_heads

    def kv_bytes_per_token(self, bytes_per_element: int) -> int:
        """Bytes one token occupies in the KV store over all layers (K and V)."""
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim * bytes_per_element

    def layer_linear_params(self) -> int:
        """Weights of all decoder layers' linear maps (q, k, v, o, gate, up, down)."""
        d, h, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        per_layer = d * h + 2 * d * kv + h * d + 3 * d * self.intermediate_size
        return self.num_layers * per_layer

    def head_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def weight_params_read(self) -> int:
        """Parameters one decoding pass reads: layers, norms and the output head (an untied
        embedding table is only read a few rows at a time)."""
        norms = self.num_layers * 2 * self.hidden_size + self.hidden_size
        if self.qk_norm:
            norms += self.num_layers * 2 * self.head_dim
        bias = self.num_layers * (self.num_heads + 2 * self.num_kv_heads) * self.head_dim if self.qkv_bias else 0
        return self.layer_linear_params() + self.head_params() + norms + bias

    @classmethod
    def from_hf(cls, hf: Any) -> ModelConfig:
        """Build from a ``transformers.PretrainedConfig`` (or anything with its attributes)."""
        model_type = getattr(hf, "model_type", None)
        check_model_type(model_type)
        heads = hf.num_attention_heads
        kv_heads = getattr(hf, "num_key_value_heads", None) or heads
        head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // heads
        theta, scaling = _rope_settings(hf)
        sliding = getattr(hf, "sliding_window", None) if getattr(hf, "use_sliding_window", True) else None
        max_pos = getattr(hf, "max_position_embeddings", None) or 4096
        if model_type == "mistral" and sliding:
            # Our attention is full; a sliding window only matters past it, so cap the context.
            max_pos = min(max_pos, sliding)
        return cls(
            model_type=model_type,
            vocab_size=hf.vocab_size,
            hidden_size=hf.hidden_size,
            intermediate_size=hf.intermediate_size,
            num_layers=hf.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            rms_eps=hf.rms_norm_eps,
            rope_theta=theta,
            max_positions=max_pos,
            tie_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
            qkv_bias=bool(getattr(hf, "attention_bias", False)) or model_type == "qwen2",
            o_bias=bool(getattr(hf, "attention_bias", False)) and model_type in ("llama", "qwen3"),
            mlp_bias=bool(getattr(hf, "mlp_bias", False)),
            qk_norm=model_type == "qwen3",
            rope_scaling=scaling,
        )


def check_model_type(model_type: Any) -> None:
    """Refuse an architecture our forward does not implement, naming the ones it does.

    Called on the raw ``model_type`` before anything else is read: transformers may not even
    know a foreign architecture, and its weights are not worth reading."""
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} is not supported; hogwild's own forward implements "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (Llama 2/3, Mistral, Qwen2/2.5, Qwen3, SmolLM2)"
        )


def _rope_settings(hf: Any) -> tuple[float, dict[str, Any] | None]:
    """RoPE theta and scaling, read explicitly: transformers 5 keeps them in
    ``rope_parameters``, 4.x in ``rope_theta`` / ``rope_scaling``, and we accept both."""
    params = getattr(hf, "rope_parameters", None) or {}
    if isinstance(params, dict) and params and all(isinstance(v, dict) for v in params.values()):
        # per-layer-type parameters (newer transformers): all layers here share one kind
        params = next(iter(params.values()))
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    if theta is None:
        theta = getattr(hf, "rope_theta", None)
    if theta is None:
        theta = 10000.0
    scaling = None
    legacy = getattr(hf, "rope_scaling", None)
    source = params if isinstance(params, dict) and params.get("rope_type") else legacy
    if isinstance(source, dict):
        kind = source.get("rope_type") or source.get("type") or "default"
        if kind != "default":
            scaling = {k: v for k, v in source.items() if k != "rope_theta"}
            scaling["rope_type"] = kind
    if scaling is not None and scaling["rope_type"] not in ("llama3", "linear"):
        raise UnsupportedArchitectureError(
            f"RoPE scaling {scaling['rope_type']!r} is not supported (supported: default, linear, "
            "llama3)"
        )
    return float(theta), scaling
