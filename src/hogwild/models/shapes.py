"""Named model shapes: real architectures without their weights.

A shape is a :class:`ModelConfig` under a short name, so that code which only needs the sizes
of a model (the speed benchmark's ``--config``, with random weights) can build one at its true
size without a checkpoint on disk. :func:`hf_config_for` goes the other way from
:meth:`ModelConfig.from_hf`: the transformers config of the same architecture, so that a
transformers model can be built with the same shape (and then given the same weights).
"""

from __future__ import annotations

from typing import Any

from .config import ModelConfig

#: Short name -> architecture. ``tiny`` is for tests and smoke runs; the others are the sizes
#: of real checkpoints (SmolLM2-135M, Qwen2.5-0.5B, Qwen2.5-7B, Qwen2.5-32B / QwQ-32B).
SHAPES: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        model_type="llama", vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, rms_eps=1e-6, rope_theta=10000.0,
        max_positions=32768, tie_embeddings=True,
    ),
    "smollm2-135m": ModelConfig(
        model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
        num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64, rms_eps=1e-5,
        rope_theta=100000.0, max_positions=8192, tie_embeddings=True,
    ),
    "qwen2.5-0.5b": ModelConfig(
        model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
        num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64, rms_eps=1e-6,
        rope_theta=1000000.0, max_positions=32768, tie_embeddings=True, qkv_bias=True,
    ),
    "qwen2.5-7b": ModelConfig(
        model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
        num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128, rms_eps=1e-6,
        rope_theta=1000000.0, max_positions=32768, tie_embeddings=False, qkv_bias=True,
    ),
    "qwen2.5-32b": ModelConfig(  # also QwQ-32B's shape
        model_type="qwen2", vocab_size=152064, hidden_size=5120, intermediate_size=27648,
        num_layers=64, num_heads=40, num_kv_heads=8, head_dim=128, rms_eps=1e-5,
        rope_theta=1000000.0, max_positions=32768, tie_embeddings=False, qkv_bias=True,
    ),
}

#: transformers config class per model type (the types :class:`ModelConfig` supports)
_HF_CONFIG_CLASSES = {"llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config",
                      "qwen3": "Qwen3Config"}


def hf_config_for(c: ModelConfig) -> Any:
    """A transformers config with the same architecture as ``c`` (llama or qwen2 family).

    transformers is imported here, not at module level: most users of the shapes never build a
    transformers model."""
    import transformers

    cls = getattr(transformers, _HF_CONFIG_CLASSES[c.model_type])
    kwargs: dict[str, Any] = dict(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim, rms_norm_eps=c.rms_eps,
        max_position_embeddings=c.max_positions, tie_word_embeddings=c.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
    )
    if c.model_type in ("llama", "qwen3"):
        kwargs["attention_bias"] = c.qkv_bias
    if c.model_type == "llama":
        kwargs["mlp_bias"] = c.mlp_bias
    return cls(**kwargs)
