"""What is timed: our engine and transformers' decoding step, over the same model and prompt.

:class:`Models` holds both implementations of one model and dtype (real weights, or random
weights at a named shape from :mod:`hogwild.models.shapes`, shared by the two). A
:class:`Variant` is one timed configuration: ``setup()`` once, then ``step()`` is one forward
pass, and ``stats()`` is its K/V and FLOP accounting for the floor. ``stats()`` reads only
what the engine offers its consumers (``Run.stats()``, views), never its worker state.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from typing import Any

import torch

from .. import kernels
from ..models.config import ModelConfig
from ..models.llama import CausalLM
from ..loader import load_model
from ..models.shapes import SHAPES, hf_config_for
from .config import BenchConfig
from .measure import sync


@dataclass
class Models:
    """Our model and the transformers model of the same weights and dtype."""

    name: str
    config: ModelConfig
    ours: CausalLM
    hf: Any | None
    weights: str  # "real" or "random"

    def kv_bytes_per_token(self) -> int:
        """K/V bytes of one token over all layers, in the models' dtype (ours stores K/V in it)."""
        return self.config.kv_bytes_per_token(torch.empty((), dtype=self.ours.dtype).element_size())


def random_model(shape: str, dtype: torch.dtype, device: torch.device, seed: int = 0) -> CausalLM:
    """Our model with random weights (std 0.02, norms 1) at a named shape, built on ``device``."""
    config = SHAPES[shape]
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = CausalLM(config)
    # no full-size fp32 copy: allocate directly in the target dtype on the target device
    model = model.to(dtype).to_empty(device=device)
    if config.tie_embeddings:  # to_empty gives every parameter its own storage: tie again
        model.lm_head.weight = model.model.embed_tokens.weight
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02)
    return model.eval()


def load_models(cfg: BenchConfig, dtype: torch.dtype, device: torch.device) -> Models:
    """Our model plus (if cfg.transformers) the transformers model with the same weights."""
    if cfg.random_weights:
        shape = cfg.shape or cfg.model
        ours = random_model(shape, dtype, device, cfg.seed)
        hf = None
        if cfg.transformers:
            from transformers import AutoModelForCausalLM

            with torch.device(device):
                hf = AutoModelForCausalLM.from_config(hf_config_for(ours.config), dtype=dtype)
            # the same random weights (ours makes fused copies below)
            hf.load_state_dict(ours.state_dict(), strict=False, assign=True)
            if ours.config.tie_embeddings:
                hf.tie_weights()
            hf.eval()
        # the product path: fused as load_model leaves it, then the CPU kernels swapped in
        kernels.prepare_for_cpu(ours.fuse_projections())
        return Models(f"{shape} (random weights)", ours.config, ours, hf, "random")
    loaded = load_model(cfg.model, dtype=dtype, device=device)  # the product path (CPU kernels)
    hf = None
    if cfg.transformers:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            hf = AutoModelForCausalLM.from_pretrained(loaded.source, dtype=dtype).to(device).eval()
        finally:
            hf_logging.enable_progress_bar()
    return Models(loaded.name, loaded.config, loaded.model, hf, "real")


def prompt_ids(vocab: int, length: int, seed: int) -> list[int]:
    """Random token ids (away from the ends of the vocabulary, where special tokens live)."""
    rng = random.Random(seed)
    lo, hi = min(100, vocab // 4), max(min(100, vocab // 4) + 1, vocab - 100)
    return [rng.randrange(lo, hi) for _ in range(length)]


class Variant:
    """One timed configuration: setup() once, then step() is one forward pass."""

    impl: str = ""

    def __init__(self, models: Models, workers: int, context: int, prompt: list[int], device: torch.device):
        self.models, self.workers, self.context, self.prompt, self.device = models, workers, context, prompt, device
        self.times: list[float] = []
        self.setup_s = 0.0
        self.setup_mem = 0

    @property
    def label(self) -> str:
        return f"{self.impl} N={self.workers}"

    def setup(self) -> None:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """K/V bytes in use, minimal, allocated and read per pass; keys attended; rows."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class OursVariant(Variant):
    impl = "ours"

    def setup(self) -> None:
        from ..core.engine import Engine
        from ..core.layouts import OTHERS_HEADER, OWN_HEADER, UNFINISHED
        from ..core.script import Script

        vocab = self.models.config.vocab_size
        extra = prompt_ids(vocab, 3 * 3 + self.workers, seed=len(self.prompt) + 1)
        self.script = Script(
            prompt_ids=self.prompt,
            opening_ids=[[extra[9 + w]] for w in range(self.workers)],
            constants={OTHERS_HEADER: extra[0:3], OWN_HEADER: extra[3:6], UNFINISHED: extra[6:9]},
        )
        self.run = Engine(self.models.ours, "combined").start(self.script)

    def step(self) -> None:
        self.run.step()

    def stats(self) -> dict[str, Any]:
        run, script, summary = self.run, self.script, self.run.stats()
        kvbpt = self.models.kv_bytes_per_token()
        fed = sum(w.tokens_fed for w in summary.workers)
        distinct = len(script.prompt_ids) + sum(len(c) for c in script.constants.values()) + fed
        # Each block in some view is read once per layer. Under the combined layout every
        # stored block is in some view (the prompt, history and each worker's own block are in
        # its own view) except constant blocks no view places (with one worker: the others'
        # header and "unfinished"); their lengths are the script's.
        viewed = {b for w in summary.workers for b in run.view(w.index)}
        constants = run.layout_state().constants
        unread = sum(len(ids) for name, ids in script.constants.items() if constants[name] not in viewed)
        read_tokens = summary.tokens_stored - unread
        attended = sum(run.view_length(w.index) + 1 for w in summary.workers)
        return dict(
            kv_bytes_in_use=summary.kv_bytes_in_use,
            kv_bytes_min=distinct * kvbpt,
            kv_bytes_allocated=summary.kv_bytes_allocated,
            kv_bytes_read=(read_tokens + self.workers) * kvbpt,
            attended_keys=attended,
            rows=self.workers,
        )


class TransformersVariant(Variant):
    """``generate``'s decoding step, as an explicit loop over a DynamicCache (greedy)."""

    impl = "transformers"

    def __init__(self, *args: Any, base_cache: Any = None, first_token: torch.Tensor | None = None):
        super().__init__(*args)
        self.base_cache, self.first_token = base_cache, first_token

    def setup(self) -> None:
        cache = copy.deepcopy(self.base_cache)
        if self.workers > 1:
            cache.batch_repeat_interleave(self.workers)
        self.cache = cache
        self.next = self.first_token.repeat(self.workers)[:, None]

    @torch.inference_mode()
    def step(self) -> None:
        kwargs = {_cache_kwarg(self.models.hf): self.cache}
        out = self.models.hf(input_ids=self.next, use_cache=True, **kwargs)
        self.next = out.logits[:, -1, :].argmax(-1, keepdim=True)
        sync(self.device)

    def stats(self) -> dict[str, Any]:
        seq = self.cache.get_seq_length()
        held = 0
        for layer in self.cache.layers:
            for t in (layer.keys, layer.values):
                held += t.numel() * t.element_size()
        kvbpt = self.models.kv_bytes_per_token()
        generated = seq - len(self.prompt)
        return dict(
            kv_bytes_in_use=held,
            kv_bytes_min=(len(self.prompt) + self.workers * generated) * kvbpt,  # prompt once
            kv_bytes_allocated=held,
            kv_bytes_read=self.workers * (seq + 1) * kvbpt,
            attended_keys=self.workers * (seq + 1),
            rows=self.workers,
        )

    def close(self) -> None:
        self.cache = None


def _cache_kwarg(hf: Any) -> str:
    """transformers >= 5.2x names the cache argument ``cache``; older ones ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"


def hf_prefill(models: Models, prompt: list[int], device: torch.device) -> tuple[Any, torch.Tensor, float]:
    """Prefill the prompt once at batch 1; return (cache, greedy first token, seconds)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    kwargs = {_cache_kwarg(models.hf): cache}
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = models.hf(input_ids=torch.tensor([prompt], device=device), use_cache=True,
                        logits_to_keep=1, **kwargs)
    sync(device)
    return cache, out.logits[:, -1, :].argmax(-1), time.perf_counter() - t0
