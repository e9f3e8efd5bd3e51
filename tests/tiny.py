"""Tiny random-weight models and scripts for fast engine tests (no checkpoint needed)."""

from __future__ import annotations

import random

import torch

from hogwild.models.config import ModelConfig
from hogwild.models.llama import CausalLM
from hogwild.core.layouts import OTHERS_HEADER, OWN_HEADER, UNFINISHED
from hogwild.core.script import Script

NEWLINE = 1  # token 1 decodes to "\n" in the toy vocabulary below
VOCAB = 64


def tiny_config(**overrides) -> ModelConfig:
    base = dict(
        model_type="llama", vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, rms_eps=1e-6, rope_theta=10000.0,
        max_positions=4096,
    )
    base.update(overrides)
    return ModelConfig(**base)


def tiny_model(seed: int = 0, dtype=torch.float32, **overrides) -> CausalLM:
    torch.manual_seed(seed)
    model = CausalLM(tiny_config(**overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.to(dtype).eval()


def toy_decode(ids) -> str:
    """Token 1 is a newline, every other token a letter followed by a dot every 5th id."""
    out = []
    for t in ids:
        t = int(t)
        out.append("\n" if t == NEWLINE else chr(ord("a") + t % 26) + ("." if t % 5 == 0 else ""))
    return "".join(out)


def toy_step_end(text: str) -> bool:
    return text.endswith("\n\n")


def random_script(num_workers: int, seed: int, check_in_every: int = 0) -> Script:
    rng = random.Random(seed)

    def ids(lo: int, hi: int) -> list[int]:
        return [rng.randrange(2, VOCAB) for _ in range(rng.randint(lo, hi))]

    headers = {(w, s): ids(1, 4) for w in range(num_workers) for s in range(1, 200)}
    return Script(
        prompt_ids=ids(3, 40),
        opening_ids=[ids(1, 6) for _ in range(num_workers)],
        header_ids=lambda w, s, c: headers[(w, s)] + ([7, 7] if c else []),
        constants={OTHERS_HEADER: ids(1, 5), OWN_HEADER: ids(1, 5), UNFINISHED: ids(1, 3)},
        is_step_end=toy_step_end,
        check_in_every=check_in_every,
    )


def forced_tokens(num_workers: int, passes: int, seed: int) -> list[dict[int, int]]:
    """Random tokens per pass and worker, with many newlines so steps end often."""
    rng = random.Random(seed)
    return [
        {w: (NEWLINE if rng.random() < 0.5 else rng.randrange(2, VOCAB)) for w in range(num_workers)}
        for _ in range(passes)
    ]


def lockstep(a, b, passes: list[dict[int, int]]):
    """Step runs ``a`` and ``b`` with the same forced tokens; after each pass yield their
    logits paired per worker."""
    for forced in passes:
        a.step(force=forced)
        b.step(force=forced)
        yield list(zip(a.logits, b.logits))
