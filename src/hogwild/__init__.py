"""hogwild: parallel collaborative LLM inference through one shared KV cache."""

__version__ = "0.1.0"
