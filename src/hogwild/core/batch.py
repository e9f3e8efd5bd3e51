"""Many runs, one shared KV pool, one model call per pass.

A :class:`Batch` holds the pool every run of one model writes into, the cache of shared
prompt prefixes, and the pass loop across runs (continuous batching, in the spirit of
nano-vllm's schedule -> run -> postprocess):

1. **admit**: at most one prefill chunk per :meth:`Batch.step` (``prefill_tokens`` tokens at
   most), so runs already decoding keep decoding while a long prompt comes in;
2. **schedule**: every decoding run reserves slots for its pending tokens and describes its
   rows (:meth:`Run._schedule`);
3. **forward**: the rows of all scheduled runs go into ONE model call (several when they
   exceed the native kernels' row limit: runs are packed in order, and a run whose pass alone
   exceeds it gets a call of its own);
4. **complete**: each run samples and accepts its tokens (:meth:`Run._complete`).

Rows of one run never see a block of another: every query group carries its own run's view.
Runs join and leave between passes; a closed run frees its blocks at once.

Reproducibility: prefill chunks never share a model call with anything else and their
boundaries depend only on the prompt (and its declared shared prefix), and on the native CPU
path every row's arithmetic is independent of the other rows in the call, so a run's tokens
and logits are the same alone or batched (docs/architecture.md, "Batches").
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from .. import kernels
from ..errors import InvalidRequestError
from ..models.llama import CausalLM
from ..models.rope import Rope
from ..tensors import int_tensor
from .attention import FastPlan, GpuPlan, KernelPlan, QueryGroup, ReferencePlan
from .cache import KVStore, PoolFullError, kv_setting
from .events import Event
from .graphs import GRAPH_MAX_ROWS, PassGraphs
from .sampling import greedy_ids


class Run(Protocol):
    """What a batch needs from a run (:class:`hogwild.core.engine.Run` is one)."""

    prefilled: bool
    needs_pass: bool
    finished: bool

    def _prefill_chunk(self, limit: int) -> bool: ...
    def _schedule(self, events: list[Event]) -> object | None: ...
    def _complete(self, batch: object, logits: torch.Tensor, force: dict[int, int] | None,
                  greedy: list[int] | None = None) -> list[Event]: ...
    def _stop(self, reason: str) -> list[Event]: ...
    def _release(self) -> None: ...

#: "auto": the native kernel plan on CPU and the Triton plan on a CUDA GPU where available,
#: else the PyTorch plan; "torch": always the PyTorch plan; "triton": always the Triton plan
#: (on CPU under Triton's interpreter: tests); "reference": the dense oracle (tests, debugging).
ATTENTION_PATHS = ("auto", "torch", "triton", "reference")
#: rows per model call off the native CPU path (a GPU is not limited by the native kernels)
GPU_MAX_ROWS = 1024
PREFILL_CHUNK = 512
#: Shorter shared prefixes are not worth a block of their own.
MIN_PREFIX = 16


def prefix_ends(shared: int | Sequence[int], prompt_length: int) -> list[int]:
    """The prompt's shared-prefix boundaries that are worth a block: increasing, the first at
    least :data:`MIN_PREFIX` tokens, all before the prompt's last token (fed in pass 1)."""
    ends = [shared] if isinstance(shared, int) else list(shared)
    out: list[int] = []
    for k in ends:
        if MIN_PREFIX <= k < prompt_length and (not out or k > out[-1]):
            out.append(k)
    return out


@dataclass
class Prefix:
    """A read-only prompt prefix in the pool, shared by every run whose prompt starts with it.

    A prompt may be stored as a chain of prefixes (e.g. the system text and examples, then
    the problem): each holds the tokens after the previous one, computed in its context."""

    ids: tuple[int, ...]  # the whole prompt up to this prefix's end (the cache key)
    start: int  # where this prefix's own tokens start in ``ids``
    block: int
    owner: object | None  # the run computing it; None when ready or orphaned
    users: int = 0  # runs holding it now
    ready: bool = False


@dataclass(frozen=True)
class BatchLoad:
    """What a batch carries now (for schedulers, metrics and the server)."""

    runs: int  # runs in the batch (prefilling or decoding)
    prefilling: int
    rows_last_pass: int
    kv_tokens_in_use: int
    kv_bytes_in_use: int
    kv_bytes_allocated: int
    prefixes_cached: int


class Batch:
    """The pool and pass loop shared by every run of one model (see the module docstring).

    ``prefix_cache_tokens``: prefixes no run holds stay cached (least recently used first
    out) while their total stays under this many tokens, so the next run with the same
    system prompt and examples skips them. ``max_kv_tokens``: the pool never grows past
    this; a run that would need more is refused with a clear error, and running runs go on.
    ``reproducible`` (default): runs share a model call only on the native kernel plan, whose
    rows do not affect each other; on any other plan (the PyTorch fallback, a GPU, the
    reference) each run gets a call of its own, so that no result depends on the batch.
    ``graphs`` (default): on a CUDA device, decode passes replay CUDA graphs captured per
    shape (no Python or launch overhead per layer); off, every pass runs eagerly.
    ``kv``: how the pool keeps keys and values (:data:`hogwild.core.cache.KV_MODES`; "int8"
    keeps prompts and history as int8, docs/architecture.md, "Compact KV cache").
    Thread-safe: :meth:`step`, :meth:`close` and :meth:`load` take one lock.
    """

    def __init__(self, model: CausalLM, attention: str = "auto", prefill_tokens: int = PREFILL_CHUNK,
                 prefix_cache_tokens: int = 1 << 16, max_kv_tokens: int | None = None,
                 reproducible: bool = True, graphs: bool = True, kv: str = "auto"):
        if attention not in ATTENTION_PATHS:
            raise InvalidRequestError(
                f"unknown attention path {attention!r}; choose one of {', '.join(ATTENTION_PATHS)}")
        if prefill_tokens < 1:
            raise InvalidRequestError(f"prefill_tokens must be >= 1 (got {prefill_tokens})")
        self.model = model
        self.attention = attention
        self.rope = Rope(model.config, model.device)
        self.prefill_tokens = prefill_tokens
        self.prefix_cache_tokens = prefix_cache_tokens
        capacity = 1024 if max_kv_tokens is None else min(1024, max_kv_tokens)
        kv_dtype, compact = kv_setting(kv, model.dtype)
        if compact and attention == "triton":
            raise InvalidRequestError("the Triton attention path does not read an int8 KV cache; use --kv auto")
        self.kv = kv
        self.store = KVStore(model.config, kv_dtype, model.device, capacity=capacity,
                             max_capacity=max_kv_tokens, compact=compact)
        self.runs: list[Run] = []
        self.prefixes: OrderedDict[tuple[int, ...], Prefix] = OrderedDict()
        self.lock = threading.RLock()
        self.rows_last_pass = 0
        self.reproducible = reproducible
        self.graphs_enabled = graphs
        self.graphs: PassGraphs | None = None

    # ------------------------------------------------------------------ runs
    def add(self, run: Run) -> None:
        with self.lock:
            self.runs.append(run)

    def close(self, run: Run) -> None:
        """Remove a run and free its blocks (a no-op for a run already closed)."""
        with self.lock:
            if run in self.runs:
                self.runs.remove(run)
                run._release()
                self._trim_prefixes()

    def load(self) -> BatchLoad:
        with self.lock:
            store = self.store
            return BatchLoad(
                runs=len(self.runs), prefilling=sum(1 for r in self.runs if not r.prefilled),
                rows_last_pass=self.rows_last_pass, kv_tokens_in_use=store.tokens_in_use(),
                kv_bytes_in_use=store.bytes_in_use(), kv_bytes_allocated=store.bytes_allocated(),
                prefixes_cached=len(self.prefixes))

    # ------------------------------------------------------------------ prefixes
    def acquire_prefix(self, run: Run, ids: Sequence[int], start: int) -> Prefix:
        """The cached prefix for ``ids`` (made, and owned by ``run`` for prefill, if new)."""
        key = tuple(ids)
        prefix = self.prefixes.get(key)
        if prefix is None:
            prefix = Prefix(key, start, self.store.new_block(len(key) - start, compact=True), owner=run)
            self.prefixes[key] = prefix
        self.prefixes.move_to_end(key)
        prefix.users += 1
        return prefix

    def release_prefix(self, prefix: Prefix, run: Run) -> None:
        prefix.users -= 1
        if prefix.owner is run:  # its prefill is unfinished: the next run that needs it goes on
            prefix.owner = None
            if prefix.users == 0:
                self.prefixes.pop(prefix.ids, None)
                self.store.free(prefix.block)

    def _trim_prefixes(self) -> None:
        """Forget unused prefixes, oldest first, until the cached ones fit the budget."""
        total = sum(len(p.ids) for p in self.prefixes.values())
        for key in list(self.prefixes):
            if total <= self.prefix_cache_tokens:
                break
            prefix = self.prefixes[key]
            if prefix.users == 0 and prefix.ready:
                del self.prefixes[key]
                self.store.free(prefix.block)
                total -= len(key)

    # ------------------------------------------------------------------ passes
    def plan_class(self, rows: int) -> type:
        """The attention plan for a model call of ``rows`` rows under this batch's setting."""
        if self.attention == "reference":
            return ReferencePlan
        if self.attention == "triton":
            return GpuPlan
        if self.attention == "auto" and KernelPlan.usable(self.store, rows):
            return KernelPlan
        if self.attention == "auto" and self.store.device.type == "cuda" and GpuPlan.usable(self.store):
            return GpuPlan
        return FastPlan

    @property
    def max_rows(self) -> int:
        """Rows per model call when runs are packed together."""
        return kernels.MAX_ROWS if self.store.device.type == "cpu" else GPU_MAX_ROWS

    def forward(self, ids: list[int], groups: list[QueryGroup], logit_rows: list[int],
                decode: bool = False) -> torch.Tensor:
        """One model call over ``ids`` (slots already reserved); logits of ``logit_rows``.
        A decode pass on the Triton plan on a CUDA device replays a CUDA graph of its shape
        (:class:`~hogwild.core.graphs.PassGraphs`; ``graphs=False`` turns that off)."""
        cls = self.plan_class(len(ids))
        if (decode and cls is GpuPlan and self.graphs_enabled and self.store.device.type == "cuda"
                and len(ids) <= GRAPH_MAX_ROWS):
            if self.graphs is None:
                self.graphs = PassGraphs(self.model, self.store, self.rope)
            return self.graphs.run(ids, groups, logit_rows)
        plan = cls(self.store, self.rope, groups)
        device = self.model.device
        # every row's logits (a decode pass of workers): no selection to make
        rows = None if len(logit_rows) == len(ids) and logit_rows == list(range(len(ids))) else (
            int_tensor(logit_rows, torch.long).to(device))
        return self.model(int_tensor(ids, torch.long).to(device), plan, rows)

    def step(self, runs: Sequence[Run] | None = None,
             force: dict[Run, dict[int, int]] | None = None) -> dict[Run, list[Event]]:
        """One pass for ``runs`` (default: every run in the batch): at most one prefill chunk,
        then one pass of every run that has finished its prefill. Returns each stepped run's
        events."""
        with self.lock:
            chosen = list(self.runs if runs is None else runs)
            out: dict[Run, list[Event]] = {}
            waiting = [r for r in chosen if not r.prefilled and not r.finished]
            if waiting:
                self._prefill_some(waiting, out)
            ready = [r for r in chosen if r.prefilled and r.needs_pass]
            scheduled = []
            for run in ready:
                events: list[Event] = []
                try:
                    batch = run._schedule(events)
                except PoolFullError:  # the pool is at its limit: this run stops, the rest go on
                    out[run] = events + run._stop("memory")
                    continue
                if batch is None:  # it would overflow its context: it stops alone
                    out[run] = events + run._stop("context")
                else:
                    scheduled.append((run, batch, events))
            self.rows_last_pass = sum(len(b.ids) for _, b, _ in scheduled)
            # a run's rows come in two segments, its own and its branches': on a plan that is
            # not row-independent, a reproducible batch gives each segment a call of its own,
            # so that neither other runs nor its forced answers change a run's numbers
            segments = []
            for run, b, _ in scheduled:
                a, g, r = b.split
                for ids, groups, rows in ((b.ids[:a], b.groups[:g], b.logit_rows[:r]),
                                          (b.ids[a:], b.groups[g:], [x - a for x in b.logit_rows[r:]])):
                    if ids:
                        segments.append((run, ids, groups, rows))
            logits_of: dict[Run, list[torch.Tensor]] = {run: [] for run, _, _ in scheduled}
            # every row's greedy token, read back once per model call rather than once per
            # run (each read waits for the device)
            greedy_of: dict[Run, list[int]] = {run: [] for run, _, _ in scheduled}
            for pack in self._packs(segments):
                ids, groups, rows = [], [], []
                for _, seg_ids, seg_groups, seg_rows in pack:
                    rows += [len(ids) + x for x in seg_rows]
                    ids += seg_ids
                    groups += seg_groups
                logits = self.forward(ids, groups, rows, decode=True)
                picks = greedy_ids(logits)
                at = 0
                for run, _, _, seg_rows in pack:
                    logits_of[run].append(logits[at : at + len(seg_rows)])
                    greedy_of[run] += picks[at : at + len(seg_rows)]
                    at += len(seg_rows)
            for run, b, events in scheduled:
                parts = logits_of[run]
                mine = torch.cat(parts) if len(parts) > 1 else parts[0] if parts else torch.empty(0)
                out[run] = events + run._complete(b, mine, (force or {}).get(run), greedy_of[run])
            return out

    def _packs(self, segments: list) -> list[list]:
        """Group segments of rows into model calls of at most the native row limit, in order;
        a segment that alone exceeds it gets a call of its own."""
        limit = self.max_rows
        if self.reproducible and self.plan_class(1) is not KernelPlan:
            return [[seg] for seg in segments]
        packs: list[list] = []
        current: list = []
        rows = 0
        for seg in segments:
            n = len(seg[1])
            if current and rows + n > limit:
                packs.append(current)
                current, rows = [], 0
            current.append(seg)
            rows += n
        if current:
            packs.append(current)
        return packs

    def _prefill_some(self, waiting: list[Run], out: dict[Run, list[Event]]) -> None:
        """Advance the first run that can prefill by one chunk (a prefix owned by another,
        unfinished run makes a run wait)."""
        for run in waiting:
            try:
                if run._prefill_chunk(self.prefill_tokens):
                    return
            except PoolFullError:
                out[run] = run._stop("memory")
                return
