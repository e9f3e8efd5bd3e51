"""A plain causal KV cache for one sequence: the simplest :class:`AttentionPlan`.

It checks our model code on its own, apart from the shared cache and per-block attention:
the tests compare our forward through this plan with transformers'. (The forced-answer
decode goes through the engine with one worker instead.) Each call of ``model(ids, plan)`` appends ``ids`` to
the sequence: keys are rotated at their absolute positions and stored, queries are rotated
at theirs and attend causally over everything stored so far (GQA by repeating K/V heads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import ModelConfig
from .rope import Rope, rotate


class SequencePlan:
    """Causal attention over one growing sequence. Pass it to ``CausalLM.forward``."""

    def __init__(self, config: ModelConfig, device: torch.device | str = "cpu", capacity: int = 256):
        self.config = config
        self.rope = Rope(config, device)
        self._capacity = max(1, capacity)
        self._k: list[torch.Tensor | None] = [None] * config.num_layers
        self._v: list[torch.Tensor | None] = [None] * config.num_layers
        self._len = [0] * config.num_layers

    def __len__(self) -> int:
        """Tokens in the sequence (after the last complete forward)."""
        return self._len[-1]

    @property
    def length(self) -> int:
        return len(self)

    def reset(self) -> None:
        self._len = [0] * self.config.num_layers

    def truncate(self, length: int) -> None:
        """Forget everything from position ``length`` on (e.g. to re-decode a suffix)."""
        if not 0 <= length <= len(self):
            raise ValueError(f"cannot truncate a sequence of {len(self)} tokens to {length}")
        self._len = [length] * self.config.num_layers

    def _store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start = self._len[layer]
        end = start + k.shape[0]
        cache_k, cache_v = self._k[layer], self._v[layer]
        if cache_k is None or cache_k.shape[0] < end or cache_k.dtype != k.dtype or cache_k.device != k.device:
            size = max(end, 2 * (cache_k.shape[0] if cache_k is not None else 0), self._capacity)
            new_k = k.new_empty((size, *k.shape[1:]))
            new_v = v.new_empty((size, *v.shape[1:]))
            if cache_k is not None and start:
                new_k[:start] = cache_k[:start]
                new_v[:start] = cache_v[:start]
            self._k[layer], self._v[layer] = cache_k, cache_v = new_k, new_v
        cache_k[start:end] = k
        cache_v[start:end] = v
        self._len[layer] = end
        return cache_k[:end], cache_v[:end]

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        rows = q.shape[0]
        start = self._len[layer]
        positions = torch.arange(start, start + rows, device=q.device)
        cos, sin = self.rope.cos_sin(positions)
        q = rotate(q, cos, sin)
        keys, values = self._store(layer, rotate(k, cos, sin), v)
        groups = q.shape[1] // keys.shape[1]
        if groups > 1:
            keys = keys.repeat_interleave(groups, dim=1)
            values = values.repeat_interleave(groups, dim=1)
        mask = None
        if rows > 1:
            # query i sits at position start + i and sees keys 0 .. start + i
            key_pos = torch.arange(start + rows, device=q.device)
            mask = key_pos[None, :] <= positions[:, None]
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1), keys.transpose(0, 1), values.transpose(0, 1), attn_mask=mask
        )
        return out.transpose(0, 1)
