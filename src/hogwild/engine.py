"""The lock-step loop: one model call per pass carries the new tokens of every worker.

Data flows one way: a :class:`~hogwild.script.Script` (token ids from a protocol) goes in,
:mod:`events <hogwild.events>` come out. The engine knows nothing of terminals, files or HTTP.

A pass: (1) every active worker's pending tokens get slots in its block of the shared store,
(2) the layout turns the state into views, (3) one forward over all rows writes every new
K/V before any attention runs (so same-pass tokens of blocks earlier in a view are visible),
(4) steps that finished last pass are folded into the history block (one re-rotation),
(5) each worker samples its next token; a finished step moves to history and the worker's
next step starts with a header fed in the next pass.

Pass 1 also feeds the last prompt token and the constant blocks; the rest of the prompt is
prefilled before it (in chunks) and is not counted: budgets count passes that produce tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .attention import FastPlan, KernelPlan, QueryGroup, ReferencePlan
from .cache import KVStore
from .errors import InvalidRequestError
from .events import Event, HeaderEvent, Snapshot, SnapshotEvent, StepEvent, StopEvent, TokenEvent
from .layouts import Layout, LayoutState, get_layout
from .models.llama import CausalLM
from .models.rope import Rope
from .sampling import Sampler, Sampling
from .script import Script
from .textstream import IncrementalDecoder

PREFILL_CHUNK = 512
ATTENTION_PATHS = ("auto", "torch", "reference")


@dataclass
class WorkerState:
    index: int
    block: int
    decoder: IncrementalDecoder
    step: int = 1
    step_ids: list[int] = field(default_factory=list)  # current step, header included
    generated: list[int] = field(default_factory=list)  # current step, generated part only
    pending: list[tuple[int, list[int]]] = field(default_factory=list)  # (block, ids) to feed
    all_ids: list[int] = field(default_factory=list)  # everything this worker wrote, in order
    generated_count: int = 0
    done: bool = False


class Engine:
    """A model plus a layout and sampling settings; :meth:`start` begins a :class:`Run`."""

    def __init__(
        self,
        model: CausalLM,
        layout: str | Layout = "combined",
        sampling: Sampling | None = None,
        decode: Callable[[Sequence[int]], str] | None = None,
        reference: bool = False,
        attention: str = "auto",
    ):
        if attention not in ATTENTION_PATHS:
            raise InvalidRequestError(f"unknown attention path {attention!r}; choose one of {', '.join(ATTENTION_PATHS)}")
        self.model = model
        self.layout = get_layout(layout)
        self.sampling = sampling or Sampling()
        self.decode = decode
        # "auto": native kernel for decode passes where available, else the PyTorch path;
        # "torch": always the PyTorch path (FastPlan); "reference" (or reference=True): the
        # dense oracle attention (tests, debugging)
        self.attention = "reference" if reference else attention
        self.rope = Rope(model.config, model.device)

    def start(self, script: Script) -> Run:
        return Run(self, script)


class Run:
    """One collaborative run. Low-level API: :meth:`step`, :attr:`logits`, :meth:`view`."""

    def __init__(self, engine: Engine, script: Script):
        n = script.num_workers
        if n < 1:
            raise InvalidRequestError("a run needs at least one worker (got 0)")
        if len(script.prompt_ids) == 0:
            raise InvalidRequestError("the prompt is empty: there is nothing to condition on")
        missing = [c for c in engine.layout.constants if c not in script.constants]
        if missing:
            raise InvalidRequestError(f"layout {engine.layout.name!r} needs constant blocks {missing}")
        self.engine, self.script, self.model = engine, script, engine.model
        self.layout = engine.layout
        cfg = self.model.config
        self.max_positions = cfg.max_positions
        fixed = len(script.prompt_ids) + sum(len(script.constants[c]) for c in self.layout.constants)
        longest_opening = max(len(o) for o in script.opening_ids)
        if fixed + n * longest_opening + 1 > self.max_positions:
            raise InvalidRequestError(
                f"the prompt needs {fixed + n * longest_opening} positions but the model's context "
                f"is {self.max_positions} tokens; shorten the problem or use fewer workers"
            )
        self.store = KVStore(cfg, self.model.dtype, self.model.device, capacity=max(1024, 2 * fixed))
        self.sampler = Sampler(engine.sampling, n, self.model.device)
        self.decode = engine.decode
        self.block_ids: dict[int, list[int]] = {}  # token ids per block, for views and text
        self.prompt = self._new_block(len(script.prompt_ids))
        self.history = self._new_block(256)
        self.history_pending: list[int] = []  # finished steps not yet folded into history
        self.history_order: list[tuple[int, list[int]]] = []  # (worker, step ids) as completed
        self.constants = {name: self._new_block(len(ids)) for name, ids in script.constants.items()}
        self.workers = [
            WorkerState(w, self._new_block(64), IncrementalDecoder(self.decode)) for w in range(n)
        ]
        self.passes = 0
        self.logits: list[torch.Tensor | None] = [None] * n
        self.stop_reason: str | None = None
        self.tokens_since_check_in = 0
        self._events: list[Event] = []  # filled while a pass runs, returned by step()
        self._prefill(list(script.prompt_ids[:-1]))

    # ------------------------------------------------------------------ state access
    @property
    def num_workers(self) -> int:
        return len(self.workers)

    def layout_state(self) -> LayoutState:
        return LayoutState(
            prompt=self.prompt,
            history=[self.history, *self.history_pending],
            current=[w.block for w in self.workers],
            constants=self.constants,
            done=[w.done for w in self.workers],
        )

    def view(self, worker: int) -> list[int]:
        """Block ids of a worker's view, in order."""
        return self.layout.build(self.layout_state(), worker)

    def view_token_ids(self, worker: int) -> list[int]:
        """The token ids a worker attends to, in view order (for checks and debugging)."""
        return [t for b in self.view(worker) for t in self.block_ids[b]]

    def view_length(self, worker: int) -> int:
        return sum(self.store.length(b) for b in self.view(worker))

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    def snapshot(self) -> Snapshot:
        text = self._text
        return Snapshot(
            passes=self.passes,
            workers=[text(w.all_ids) for w in self.workers],
            history=[(w, text(ids)) for w, ids in self.history_order],
            current=[(w.index, text(w.step_ids)) for w in self.workers if w.step_ids and not w.done],
            generated_tokens=[w.generated_count for w in self.workers],
        )

    # ------------------------------------------------------------------ driving
    def run(
        self,
        max_passes: int,
        stop: Callable[[Run, list[Event]], bool] | None = None,
        snapshot_at: Iterable[int] = (),
    ) -> Iterator[Event]:
        """Step until the budget, end of sequence for every worker, or ``stop`` fires."""
        marks = set(snapshot_at)
        while not self.finished:
            if self.passes >= max_passes:
                self.stop_reason = "budget"
                yield StopEvent(self.passes, "budget")
                break
            events = self.step()
            yield from events
            if self.passes in marks:
                yield SnapshotEvent(self.passes, self.snapshot())
            if not self.finished and stop is not None and stop(self, events):
                self.stop_reason = "stop-rule"
                yield StopEvent(self.passes, "stop-rule")

    def step(self, force: dict[int, int] | None = None) -> list[Event]:
        """One forward pass. ``force`` maps worker -> token to use instead of sampling."""
        if self.finished:
            raise InvalidRequestError(f"the run has already stopped ({self.stop_reason})")
        first = self.passes == 0
        groups: list[QueryGroup] = []
        ids: list[int] = []
        if first:
            self._queue_first_pass(groups, ids)
        active = [w for w in self.workers if w.pending and not w.done]
        views = self.layout.views(self.layout_state())  # block ids; feeding changes only lengths
        if self._would_overflow(active, views):
            self.stop_reason = "context"
            return [StopEvent(self.passes, "context")]
        for w in active:
            for block, toks in w.pending:
                self._reserve(block, toks)
        logit_rows: list[int] = []
        for w in active:
            blocks = [b for b, toks in w.pending for _ in toks]
            locals_ = [l for b, toks in w.pending for l in range(self.store.length(b) - len(toks), self.store.length(b))]
            groups.append(QueryGroup(views[w.index], blocks, locals_))
            ids += [t for _, toks in w.pending for t in toks]
            logit_rows.append(len(ids) - 1)
        prompt_row = 0  # in pass 1 the prompt's last token is row 0
        readers = [w for w in self.workers if not w.done and (w.pending or first)]
        rows_for = {w.index: r for w, r in zip(active, logit_rows)}
        rows = [rows_for.get(w.index, prompt_row) for w in readers]
        logits = self._forward(ids, groups, rows)
        for w in active:
            w.pending = []
        for block in self.history_pending:
            self.store.append_block(self.history, block, self.engine.rope)
            self.block_ids[self.history] += self.block_ids.pop(block)
        self.history_pending = []
        self.passes += 1
        events, self._events = self._events, []
        for w, row in zip(readers, logits):
            self.logits[w.index] = row
        chosen = self.sampler.sample(logits, [w.index for w in readers])
        for w, token in zip(readers, chosen):
            if force and w.index in force:
                token = force[w.index]
            self._accept(w, int(token))
        events += self._events
        self._events = []
        if all(w.done for w in self.workers):
            self.stop_reason = "eos"
            events.append(StopEvent(self.passes, "eos"))
        return events

    # ------------------------------------------------------------------ internals
    def _new_block(self, capacity: int) -> int:
        block = self.store.new_block(capacity)
        self.block_ids[block] = []
        return block

    def _would_overflow(self, active: list[WorkerState], views: list[list[int]]) -> bool:
        """Would feeding every pending token push some worker's view past the context?"""
        incoming: dict[int, int] = {}
        for w in active:
            for block, toks in w.pending:
                incoming[block] = incoming.get(block, 0) + len(toks)
        for w in active:
            view = views[w.index]
            total = sum(self.store.length(b) + incoming.get(b, 0) for b in view)
            if total > self.max_positions:
                return True
        return False

    def _reserve(self, block: int, toks: Sequence[int]) -> None:
        self.store.reserve(block, len(toks))
        self.block_ids[block] += toks

    def _forward(self, ids: list[int], groups: list[QueryGroup], logit_rows: list[int]) -> torch.Tensor:
        choice = self.engine.attention
        if choice == "reference":
            plan_cls: type = ReferencePlan
        elif choice == "auto" and KernelPlan.usable(self.store, len(ids)):
            plan_cls = KernelPlan
        else:
            plan_cls = FastPlan
        plan = plan_cls(self.store, self.engine.rope, groups)
        device = self.model.device
        return self.model(
            torch.tensor(ids, device=device), plan, torch.tensor(logit_rows, device=device)
        )

    def _prefill(self, ids: list[int]) -> None:
        for start in range(0, len(ids), PREFILL_CHUNK):
            chunk = ids[start : start + PREFILL_CHUNK]
            self._reserve(self.prompt, chunk)
            group = QueryGroup([self.prompt], [self.prompt] * len(chunk), list(range(start, start + len(chunk))))
            self._forward(chunk, [group], [len(chunk) - 1])

    def _queue_first_pass(self, groups: list[QueryGroup], ids: list[int]) -> None:
        """Pass 1 rows: the prompt's last token, the constant blocks, every worker's opening."""
        last = self.script.prompt_ids[-1]
        self._reserve(self.prompt, [last])
        n_prompt = self.store.length(self.prompt)
        groups.append(QueryGroup([self.prompt], [self.prompt], [n_prompt - 1]))
        ids.append(last)
        for name, block in self.constants.items():
            toks = list(self.script.constants[name])
            if not toks:
                continue
            self._reserve(block, toks)
            groups.append(QueryGroup([self.prompt, block], [block] * len(toks), list(range(len(toks)))))
            ids += toks
        for w in self.workers:
            opening = list(self.script.opening_ids[w.index])
            if opening:
                w.pending = [(w.block, opening)]
                self._record(w, opening, header=True)

    def _record(self, w: WorkerState, toks: Sequence[int], header: bool) -> str:
        w.step_ids += toks
        w.all_ids += toks
        text = "".join(w.decoder.push(t) for t in toks)
        if header:
            self._events.append(HeaderEvent(self.passes, w.index, text))
        else:
            w.generated += toks
        return text

    def _accept(self, w: WorkerState, token: int) -> None:
        if token in self.script.stop_ids:
            w.done = True
            if self.layout.steps and w.step_ids:
                self._finish_step(w)
            return
        text = self._record(w, [token], header=False)
        w.generated_count += 1
        self.tokens_since_check_in += 1
        self._events.append(TokenEvent(self.passes, w.index, token, text))
        w.pending = [(w.block, [token])]
        if self.layout.steps and "\n" in text and self.decode is not None:
            if self.script.is_step_end(self.decode(w.generated)):
                self._finish_step(w)

    def _finish_step(self, w: WorkerState) -> None:
        """Move w's current step to history and open its next step.

        The block joins history at once in every view; its keys are folded into the history
        block (one re-rotation) after the next pass, which also feeds its last sampled token
        and the header of the worker's next step.
        """
        self.history_order.append((w.index, list(w.step_ids)))
        self._events.append(StepEvent(self.passes, w.index, w.step, self._text(w.step_ids)))
        self.history_pending.append(w.block)
        w.block = self._new_block(64)
        w.step += 1
        w.step_ids, w.generated = [], []
        w.decoder.reset()
        if w.done:
            return
        check_in = self.script.check_in_every > 0 and self.tokens_since_check_in >= self.script.check_in_every
        if check_in:
            self.tokens_since_check_in = 0
        header = list(self.script.header_ids(w.index, w.step, check_in))
        if header:
            w.pending.append((w.block, header))
            self._record(w, header, header=True)

    def _text(self, ids: Sequence[int]) -> str:
        return self.decode(ids) if self.decode is not None else " ".join(map(str, ids))

