"""Rotary position embeddings as pure rotations.

Keys are stored rotated at block-local positions; queries are rotated by (query position -
block offset) per block (docs/architecture.md, "Query rotation"). Both use the same
``rotate`` with pure cos/sin: any magnitude scaling belongs to the attention scale, never
to the rotation.
"""

from __future__ import annotations

import math

import torch

from ..tensors import int_tensor
from .config import ModelConfig


def inverse_frequencies(config: ModelConfig) -> torch.Tensor:
    """Per-pair angular frequencies (fp32, length head_dim/2), with RoPE scaling applied."""
    dim = config.head_dim
    inv = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    scaling = config.rope_scaling
    if scaling is None:
        return inv.float()
    kind = scaling["rope_type"]
    factor = float(scaling.get("factor", 1.0))
    if kind == "linear":
        return (inv / factor).float()
    if kind == "llama3":
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        old_len = float(scaling.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old_len / low, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return torch.where(medium, blended, scaled).float()
    raise ValueError(f"unsupported RoPE scaling {kind!r}")


class Rope:
    """cos/sin for integer positions, from a table grown on demand (no sin/cos per pass)."""

    def __init__(self, config: ModelConfig, device: torch.device | str = "cpu"):
        self.inv_freq = inverse_frequencies(config).to(device)
        self._cos = self._sin = torch.empty(0, config.head_dim, device=device)

    def _angles(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()

    def cos_sin(self, positions) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of shape [len(positions), head_dim], fp32, in the rotate-half layout.

        ``positions``: a list of non-negative ints (table lookup) or a tensor (computed).
        """
        if isinstance(positions, torch.Tensor):
            return self._angles(positions)
        positions = list(positions)
        if not positions:
            return self._cos[:0], self._sin[:0]
        top = max(positions)
        if min(positions) < 0:
            return self._angles(torch.tensor(positions, device=self.inv_freq.device))
        cos, sin = self.tables(top)
        index = int_tensor(positions, torch.long).to(self.inv_freq.device)
        return cos.index_select(0, index), sin.index_select(0, index)

    def tables(self, top: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole cos and sin tables [positions, head_dim], grown (to at least twice ``top``)
        so that they hold position ``top``: for a consumer that picks its rows by index itself
        (the native decoder, :class:`hogwild.kernels.NativePass`)."""
        if top >= self._cos.shape[0]:
            size = max(1024, 2 * top + 2)
            self._cos, self._sin = self._angles(torch.arange(size, device=self.inv_freq.device))
        return self._cos, self._sin


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [rows, heads, head_dim] by per-row angles; computed in fp32, returned in x's dtype."""
    xf = x.float()
    half = xf.shape[-1] // 2
    rotated_half = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    out = xf * cos[:, None, :] + rotated_half * sin[:, None, :]
    return out.to(x.dtype)
