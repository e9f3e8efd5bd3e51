"""What is timed: our engine and transformers' decoding step, over the same model and prompt.

:class:`Models` holds both implementations of one model and dtype (real weights, or random
weights at a named shape from :mod:`hogwild.models.shapes`, shared by the two). A
:class:`Variant` is one timed configuration: ``setup()`` once, then ``step()`` is one forward
pass of all its runs (R independent runs of N workers), and ``stats()`` is its K/V and FLOP
accounting for the floor. ``stats()`` reads only what the engine offers its consumers
(``Run.stats()``, views, ``Batch.load()``), never its worker state.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from typing import Any

import torch

from .. import kernels
from ..gpu import prepare_for_gpu
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


def load_models(cfg: BenchConfig, dtype: torch.dtype, device: torch.device, weights: str | None = None) -> Models:
    """Our model plus (if cfg.transformers) the transformers model with the same weights.

    ``weights``: the ``--weights`` entry for our model (default: ``dtype``); a quantized
    one keeps ``dtype`` (fp32) for activations and the transformers baseline."""
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
        # the product path: fused as load_model leaves it, then the CPU or GPU kernels swapped in
        kernels.prepare_for_cpu(ours.fuse_projections())
        prepare_for_gpu(ours)
        return Models(f"{shape} (random weights)", ours.config, ours, hf, "random")
    loaded = load_model(cfg.model, weights=weights or dtype, device=device)  # the product path (CPU kernels)
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


def run_prompts(vocab: int, context: int, runs: int, shared: int, seed: int) -> list[list[int]]:
    """One prompt of ``context`` tokens per run. Run 0's is ``prompt_ids(vocab, context, seed)``
    (the prompt of a one-run bench); every other run has its own random tokens after the
    first ``shared``, which are run 0's (the shared prefix)."""
    first = prompt_ids(vocab, context, seed)
    return [first] + [first[:shared] + prompt_ids(vocab, context - shared, seed + 7919 * r) for r in range(1, runs)]


def model_calls(rows_per_run: list[int], limit: int) -> int:
    """Model calls of one batch pass: runs packed in order into calls of at most ``limit``
    rows, a run whose rows alone exceed it in a call of its own (as the batch packs them)."""
    calls, rows = 0, 0
    for n in rows_per_run:
        if calls == 0 or rows + n > limit:
            calls, rows = calls + 1, 0
        rows += n
    return calls


class Variant:
    """One timed configuration: setup() once, then step() is one forward pass of every run
    (R runs of N workers: R x N new tokens)."""

    impl: str = ""

    def __init__(self, models: Models, workers: int, context: int, prompts: list[list[int]],
                 device: torch.device, shared_prefix: int = 0):
        self.models, self.workers, self.context, self.device = models, workers, context, device
        self.prompts, self.shared_prefix = prompts, shared_prefix
        self.runs = len(prompts)
        self.times: list[float] = []
        self.setup_s = 0.0
        self.setup_mem = 0

    @property
    def label(self) -> str:
        return f"{self.impl} N={self.workers} R={self.runs}"

    def setup(self) -> None:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """K/V bytes in use, minimal (R separate copies), allocated and read per pass; keys
        attended; rows per pass (new tokens) and the model calls that carry them."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class OursVariant(Variant):
    """R runs (one script each) of one engine in one :class:`~hogwild.core.batch.Batch`:
    a pass is one ``batch.step()``, its rows packed into as few model calls as fit."""

    impl = "ours"

    def __init__(self, *args: Any, attention: str = "auto", graphs: bool = True, kv: str = "auto", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.attention, self.graphs, self.kv = attention, graphs, kv
        if attention != "auto":  # another path of our engine, measured beside the default one
            self.impl = f"ours-{attention}"

    def setup(self) -> None:
        from ..core.batch import Batch
        from ..core.engine import Engine
        from ..core.layouts import OTHERS_HEADER, OWN_HEADER, UNFINISHED
        from ..core.script import Script

        vocab = self.models.config.vocab_size
        extra = prompt_ids(vocab, 3 * 3 + self.workers, seed=self.context + 1)
        self.scripts = [
            Script(
                prompt_ids=prompt,
                opening_ids=[[extra[9 + w]] for w in range(self.workers)],
                constants={OTHERS_HEADER: extra[0:3], OWN_HEADER: extra[3:6], UNFINISHED: extra[6:9]},
                shared_prefix=self.shared_prefix,
            )
            for prompt in self.prompts
        ]
        # not reproducible: off the native CPU path that would give each run its own call,
        # and the point here is one call for all runs (the CPU path packs either way)
        self.batch = Batch(self.models.ours, self.attention, reproducible=False, graphs=self.graphs, kv=self.kv)
        engine = Engine(self.models.ours, "combined", batch=self.batch)
        self.started = [engine.start(script) for script in self.scripts]

    def step(self) -> None:
        self.batch.step()

    def stats(self) -> dict[str, Any]:
        kvbpt = self.models.kv_bytes_per_token()
        # Each block in some view is read once per layer, however many rows (of however many
        # runs: a shared prefix is one block) see it. Under the combined layout every stored
        # block is in some view except constant blocks no view places (with one worker: the
        # others' header and "unfinished").
        read: dict[int, int] = {}
        distinct = attended = 0
        store = self.batch.store
        for run, script in zip(self.started, self.scripts):
            summary = run.stats()
            fed = sum(w.tokens_fed for w in summary.workers)
            # the minimum of one run alone: its prompt, constants and written tokens, once
            distinct += len(script.prompt_ids) + sum(len(c) for c in script.constants.values()) + fed
            for w in summary.workers:
                for block in run.view(w.index):  # bytes: an int8 block at its own size
                    read[block] = len(run.ids_of(block)) * store.bytes_per_token(store.blocks[block].compact)
                attended += run.view_length(w.index) + 1
        load = self.batch.load()
        rows = self.runs * self.workers
        return dict(
            kv_bytes_in_use=load.kv_bytes_in_use,  # the pool: a shared prefix counted once
            kv_bytes_min=distinct * kvbpt,  # R separate copies
            kv_bytes_allocated=load.kv_bytes_allocated,
            kv_bytes_read=sum(read.values()) + rows * kvbpt,
            attended_keys=attended,
            rows=rows,
            rows_per_pass=load.rows_last_pass,
            model_calls=model_calls([self.workers] * self.runs, self.batch.max_rows),
        )

    def close(self) -> None:
        for run in self.started:
            run.close()


class TransformersVariant(Variant):
    """``generate``'s decoding step, as an explicit loop over a DynamicCache (greedy), for a
    batch of R x N sequences: the R prompts, each repeated N times."""

    impl = "transformers"

    def __init__(self, *args: Any, base_cache: Any = None, first_token: torch.Tensor | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.base_cache, self.first_token = base_cache, first_token

    def setup(self) -> None:
        cache = copy.deepcopy(self.base_cache)
        if self.workers > 1:
            cache.batch_repeat_interleave(self.workers)
        self.cache = cache
        self.next = self.first_token.repeat_interleave(self.workers)[:, None]

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
        generated = seq - self.context
        rows = self.runs * self.workers
        return dict(
            kv_bytes_in_use=held,
            kv_bytes_min=self.runs * (self.context + self.workers * generated) * kvbpt,  # prompts once
            kv_bytes_allocated=held,
            kv_bytes_read=rows * (seq + 1) * kvbpt,
            attended_keys=rows * (seq + 1),
            rows=rows,
            rows_per_pass=rows,
            model_calls=1,
        )

    def close(self) -> None:
        self.cache = None


def _cache_kwarg(hf: Any) -> str:
    """transformers >= 5.2x names the cache argument ``cache``; older ones ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"


def hf_prefill(models: Models, prompts: list[list[int]], device: torch.device) -> tuple[Any, torch.Tensor, float]:
    """Prefill the prompts (one per run, all of one length) as one batch; return (cache,
    greedy first token per prompt, seconds)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    kwargs = {_cache_kwarg(models.hf): cache}
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = models.hf(input_ids=torch.tensor(prompts, device=device), use_cache=True,
                        logits_to_keep=1, **kwargs)
    sync(device)
    return cache, out.logits[:, -1, :].argmax(-1), time.perf_counter() - t0
