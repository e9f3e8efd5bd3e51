"""The lock-step loop: one model call per pass carries the new tokens of every worker.

Data flows one way: a :class:`~hogwild.core.script.Script` (token ids from a protocol) goes
in, :mod:`events <hogwild.core.events>` come out. The engine knows nothing of wording,
terminals, files or HTTP. A pass (:meth:`Run.step`) runs five named stages:

1. **schedule**: pending tokens get slots in their blocks, the layout gives the views, and a
   pass that would overflow a view is refused;
2. **forward**: one model call writes every new K/V before any attention runs (so same-pass
   tokens of blocks earlier in a view are visible);
3. **fold history**: steps finished in the previous pass join the history block;
4. **sample**: each reading worker gets its next token (or a forced one);
5. **accept**: tokens become events; a finished step moves to history and the worker's next
   step starts with a header fed in the next pass.

Pass 1 also feeds the last prompt token and the constant blocks; the rest of the prompt is
prefilled before it (in chunks) and is not counted: budgets count passes that produce tokens.
The step-end rule and the check-in policy are the protocol's, reached through the Script.

Every run lives in a :class:`~hogwild.core.batch.Batch` (an engine makes a private one
unless given a shared one), which carries the pool and may put the rows of many runs into
one model call; :meth:`Run.step` is a batch of one. A run may also carry forced-answer
branches (:mod:`hogwild.core.branch`), decoded in its passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
import torch

from ..errors import InvalidRequestError
from ..models.llama import CausalLM
from . import branch as branches
from .attention import QueryGroup
from .batch import Batch
from .branch import Branch
from .pass_batch import PassBatch
from .cache import PoolFullError
from .prompt import PromptStorage
from .readout import RunReadout
from .repeats import NgramBan
from .events import Event, HeaderEvent, SnapshotEvent, StepEvent, StopEvent, TokenEvent
from .layouts import Layout, get_layout
from .sampling import Sampler, Sampling
from .script import Script
from .textstream import IncrementalDecoder
from .worker import WorkerState


class Engine:
    """A model, a layout and sampling; :meth:`start` begins a :class:`Run` (``attention``, ``kv``: see Batch)."""

    def __init__(
        self,
        model: CausalLM,
        layout: str | Layout = "combined",
        sampling: Sampling | None = None,
        decode: Callable[[Sequence[int]], str] | None = None,
        attention: str = "auto",
        batch: Batch | None = None,
        kv: str = "auto",
    ):
        if batch is not None and batch.model is not model:
            raise InvalidRequestError("the batch holds another model")
        self.model = model
        self.layout = get_layout(layout)
        self.sampling = sampling or Sampling()
        self.decode = decode
        self.batch = batch if batch is not None else Batch(model, attention, kv=kv)
        self.attention = self.batch.attention

    def start(self, script: Script) -> Run:
        """A new run in this engine's batch, its prompt prefilled now."""
        run = self.submit(script)
        run.prefill()
        return run

    def submit(self, script: Script) -> Run:
        """A new run in this engine's batch; its prompt is prefilled by the batch's passes
        (interleaved with other runs' decoding) or by :meth:`Run.prefill`."""
        with self.batch.lock:  # a run allocates in the shared pool: not during a pass
            run = Run(self, script)
            self.batch.add(run)
        return run


class Run(PromptStorage, RunReadout):
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
        self.batch = engine.batch
        self.store = self.batch.store
        room = self.store.free_tokens()
        need = len(script.prompt_ids) + sum(len(c) for c in script.constants.values()) + 64 * (n + 4)
        if room is not None and need > room:  # refused before it takes anything
            raise PoolFullError(
                f"the KV pool has room for {room} more tokens and this run needs about {need} to "
                f"start; wait for running runs to finish or raise the pool's limit")
        self.sampler = Sampler(engine.sampling, n, self.model.device)
        self.decode = engine.decode
        self.block_ids: dict[int, list[int]] = {}  # token ids of the run's own blocks
        self.prefixes = []
        self.branches: list[Branch] = []  # forced answers being decoded
        self.stop_reason: str | None = None
        try:
            self._init_prompt(script)
            self.history = self._new_block(256, compact=True)
            self.constants = {name: self._new_block(len(ids)) for name, ids in script.constants.items()}
            self.workers = [
                WorkerState(w, self._new_block(64), IncrementalDecoder(self.decode)) for w in range(n)
            ]
        except PoolFullError:
            self._release()  # give back what was taken before the pool ran out
            raise
        self.history_pending: list[int] = []  # finished steps not yet folded into history
        self.history_order: list[tuple[int, list[int]]] = []  # (worker, step ids) as completed
        self.passes = 0
        self.logits: list[torch.Tensor | None] = [None] * n
        self.tokens_since_check_in = 0  # generated tokens (all workers) since the last check-in
        # the protocol's per-run view of finished steps (redirecting headers), if it has one
        self.step_observer = script.step_observer() if script.step_observer is not None else None
        self.ngram_ban = NgramBan(script.no_repeat_ngram) if script.no_repeat_ngram else None
        self.sampled = engine.sampling.temperature > 0

    @property
    def needs_pass(self) -> bool:
        return not self.finished or bool(self.branches)

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
        """One forward pass of this run alone (a batch of one). ``force`` maps worker -> token
        to use instead of sampling."""
        if not self.needs_pass:
            raise InvalidRequestError(f"the run has already stopped ({self.stop_reason})")
        self.prefill()
        return self.batch.step([self], {self: force} if force else None).get(self, [])

    def branch(self, worker: int | None, max_tokens: int, stop: Callable[[str], bool]) -> Branch:
        """Start a forced answer (see :mod:`hogwild.core.branch`): from the next pass on it is
        decoded greedily with this run, reading the run's blocks as they are now."""
        if self.script.forced_suffix is None:
            raise InvalidRequestError("the script gives no forced-answer text")
        if worker is not None and not 0 <= worker < len(self.workers):
            raise InvalidRequestError(f"no worker {worker} in this run")
        new = Branch(worker, max_tokens, stop, started_at=self.passes)
        self.branches.append(new)
        return new

    def close(self) -> None:
        """Leave the batch and free every block this run holds (idempotent)."""
        self.batch.close(self)

    def _stop(self, reason: str) -> list[Event]:
        """End the main run (branches too when the reason is that it cannot go on)."""
        self.stop_reason = self.stop_reason or reason
        if reason in ("context", "memory", "cancelled"):  # its blocks may hold unwritten slots
            for b in list(self.branches):
                branches.close(self, b, reason)
        return [StopEvent(self.passes, reason)]

    def _release(self) -> None:
        """Free everything (called by the batch when the run leaves it)."""
        for b in list(self.branches):
            branches.close(self, b, "cancelled")
        self.stop_reason = self.stop_reason or "cancelled"
        for block in list(self.block_ids):
            self.store.free(block)
        self.block_ids.clear()
        for p in self.prefixes:
            self.batch.release_prefix(p, self)
        self.prefixes = []

    # ------------------------------------------------------------------ the stages
    def _schedule(self, events: list[Event]) -> PassBatch | None:
        """Reserve slots for every pending token and build the pass (None: it would overflow).

        In pass 1 the openings are queued here, and their header events go to ``events``.
        A stopped run with open branches feeds its last sampled tokens once, then only the
        branches' rows."""
        main = not self.finished
        first = main and self.passes == 0
        groups: list[QueryGroup] = []
        ids: list[int] = []
        if first:
            events += self._queue_first_pass(groups, ids)
        active = [w for w in self.workers if w.pending and not w.done and self.stop_reason != "context"]
        views = self.views()  # block ids; feeding changes only lengths
        if self._would_overflow(active, views):
            if main:
                return None
            active = []
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
        readers: list[WorkerState] = []
        rows: list[int] = []
        if main:
            prompt_row = 0  # in pass 1 the prompt's last token is row 0
            readers = [w for w in self.workers if not w.done and (w.pending or first)]
            rows_for = {w.index: r for w, r in zip(active, logit_rows)}
            rows = [rows_for.get(w.index, prompt_row) for w in readers]
        reading: list[Branch] = []
        split = (len(ids), len(groups), len(rows))
        for b in list(self.branches):
            if b.entries is None:
                branches.freeze(self, b)
            g = branches.group(self, b)
            if g is None:
                branches.close(self, b, "context")
                continue
            groups.append(g)
            ids += b.pending
            rows.append(len(ids) - 1)
            reading.append(b)
        return PassBatch(ids, groups, readers, rows, active, main, reading, split)

    def _complete(self, batch: PassBatch, logits: torch.Tensor, force: dict[int, int] | None,
                  greedy: list[int] | None = None) -> list[Event]:
        """Everything after the model call: fold, sample, accept (main run and branches).
        ``greedy``: each row's argmax, when the caller has read them already."""
        for w in batch.active:
            w.pending = []
        self._fold_history()
        events: list[Event] = []
        n = len(batch.readers)
        if batch.main:
            self.passes += 1
            chosen = self._sample(batch.readers, logits[:n], force, None if greedy is None else greedy[:n])
            for w, token in zip(batch.readers, chosen):
                events += self._accept(w, token)
            if all(w.done for w in self.workers):
                events += self._stop("eos")
        for i, (b, row) in enumerate(zip(batch.branches, logits[n:])):
            branches.accept(self, b, row, None if greedy is None else greedy[n + i])
        return events

    def _fold_history(self) -> None:
        """Fold the steps that finished last pass into the history block (one re-rotation)."""
        for block in self.history_pending:
            self.store.append_block(self.history, block, self.batch.rope)
            self.block_ids[self.history] += self.block_ids.pop(block)
        self.history_pending = []

    def _sample(self, readers: list[WorkerState], logits: torch.Tensor, force: dict[int, int] | None,
                greedy: list[int] | None = None) -> list[int]:
        for w, row in zip(readers, logits):
            self.logits[w.index] = row
        if self.ngram_ban is not None:
            logits, greedy = self.ngram_ban.apply(logits, [w.step_ids for w in readers], greedy,
                                                  sampled=self.sampled)
        chosen = self.sampler.sample(logits, [w.index for w in readers], greedy=greedy)
        out = [int(t) for t in chosen]
        if force:
            out = [force.get(w.index, t) for w, t in zip(readers, out)]
        return out

    def _accept(self, w: WorkerState, token: int) -> list[Event]:
        """Record a worker's new token; end its step (or the worker) when the rules say so."""
        if token in self.script.stop_ids:
            w.done = True
            return self._finish_step(w) if self.layout.steps and w.step_ids else []
        text = self._record(w, [token])
        w.generated += [token]
        w.generated_count += 1
        self.tokens_since_check_in += 1
        events: list[Event] = [TokenEvent(self.passes, w.index, token, text)]
        w.pending = [(w.block, [token])]
        if self.layout.steps and self.decode is not None and self.script.may_end_step(text):
            if self.script.is_step_end(self.decode(w.generated)):
                events += self._finish_step(w)
        return events

    def _new_block(self, capacity: int, compact: bool = False) -> int:
        block = self.store.new_block(capacity, compact=compact)
        self.block_ids[block] = []
        return block

    def _would_overflow(self, active: list[WorkerState], views: list[list[int]]) -> bool:
        """Would feeding every pending token push some worker's view past the context?"""
        incoming = {b: 0 for w in active for b in views[w.index]}  # each block once, not per view entry
        for w in active:
            for block, toks in w.pending:
                incoming[block] = incoming.get(block, 0) + len(toks)
        length = {b: self.store.blocks[b].length + n for b, n in incoming.items()}
        return any(sum(map(length.__getitem__, views[w.index])) > self.max_positions for w in active)

    def _reserve(self, block: int, toks: Sequence[int]) -> None:
        self.store.reserve(block, len(toks))
        self.block_ids[block] += toks

    def _queue_first_pass(self, groups: list[QueryGroup], ids: list[int]) -> list[Event]:
        """Pass 1 rows: the prompt's last token, the constant blocks, every worker's opening."""
        last = self.script.prompt_ids[-1]
        self._reserve(self.prompt, [last])
        n_prompt = self.store.length(self.prompt)
        groups.append(QueryGroup(self.prompt_chain, [self.prompt], [n_prompt - 1]))
        ids.append(last)
        for name, block in self.constants.items():
            if not (toks := list(self.script.constants[name])):
                continue
            self._reserve(block, toks)
            groups.append(QueryGroup([*self.prompt_chain, block], [block] * len(toks), list(range(len(toks)))))
            ids += toks
        events: list[Event] = []
        for w in self.workers:
            opening = list(self.script.opening_ids[w.index])
            if opening:
                w.pending = [(w.block, opening)]
                events.append(HeaderEvent(self.passes, w.index, self._record(w, opening)))
        return events

    def _record(self, w: WorkerState, toks: Sequence[int]) -> str:
        """Append tokens to the worker's step and transcript; return their new text."""
        w.step_ids += toks
        if self.ngram_ban is not None:
            self.ngram_ban.add(w.step_ids, len(w.step_ids) - len(toks))
        w.all_ids += toks
        return "".join(w.decoder.push(t) for t in toks)

    def _finish_step(self, w: WorkerState) -> list[Event]:
        """Move w's current step to history and open its next step.

        The block joins history at once in every view; its keys are folded into the history
        block (one re-rotation) after the next pass, which also feeds its last sampled token
        and the header of the worker's next step.
        """
        self.history_order.append((w.index, list(w.step_ids)))
        events: list[Event] = [StepEvent(self.passes, w.index, w.step, self._text(w.step_ids))]
        self.history_pending.append(w.block)
        w.block = self._new_block(64)
        w.step += 1
        written = w.generated
        w.step_ids, w.generated = [], []
        w.decoder.reset()
        # the protocol sees every finished step (its own text only, no header) and may
        # replace the next header, e.g. to redirect a worker that repeated a step
        redirect = self.step_observer(w.index, w.step, self._text(written)) if self.step_observer else None
        if w.done:
            return events
        if redirect:  # a check-in that is due waits for the next plain header
            header = list(redirect)
        else:
            check_in = self.script.check_in_due(self.tokens_since_check_in)
            if check_in:
                self.tokens_since_check_in = 0
            header = list(self.script.header_ids(w.index, w.step, check_in))
        if header:
            w.pending.append((w.block, header))
            events.append(HeaderEvent(self.passes, w.index, self._record(w, header)))
        return events

    def _text(self, ids: Sequence[int]) -> str:
        return self.decode(ids) if self.decode is not None else " ".join(map(str, ids))
