"""The one driver loop: runs to their budgets, stopped by rule, forced answers from the cache.

Everything that runs workers goes through here: ``hogwild solve`` (and so the CLI) and every
evaluation strategy. A :class:`Drive` is one run under the driver's rules: it stops at its
budget, at the end of every worker, or by its stop rule; it takes snapshots at the requested
passes; and where the caller asks for a forced answer (a budget reached without an answer)
it opens a branch of the run (:mod:`hogwild.core.branch`) that reads the run's blocks plus the
protocol's "time is up ... \\boxed{" text and is decoded greedily in the same passes.

A :class:`Scheduler` advances many drives together through one
:class:`~hogwild.core.batch.Batch` (one model call per pass for all of them): submit a drive
and get a :class:`Handle`, iterate its events, cancel it, read the load. It steps inline in
the caller's thread, or on a background thread (:meth:`Scheduler.start`) for a server.

What a stop rule sees: each time a worker's new token may close a box, the worker's whole
text (:meth:`StopRule.observe`); after every pass, the run's read-only stats
(:meth:`StopRule.done`). The driver knows nothing of how answers are compared.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .answers import may_close_box, open_box_answer
from .core.batch import Batch
from .core.branch import Branch
from .core.engine import Engine, Run
from .core.events import Event, RunStats, Snapshot, SnapshotEvent, StopEvent, TokenEvent
from .core.sampling import Sampling
from .core.script import Script
from .errors import InvalidRequestError


class StopRule(Protocol):
    """Ends a run early once the workers have answered."""

    def observe(self, worker: int, text: str) -> None:
        """``worker`` wrote a token that may close a box; ``text`` is all it wrote."""

    def done(self, stats: RunStats) -> bool:
        """Called after every pass: stop now?"""


#: (snapshot) -> the forced answers it needs: None for the team's, an index for one
#: worker's own (see :class:`hogwild.core.branch.Branch`).
ForcedRequests = Callable[[Snapshot], Sequence[int | None]]


@dataclass
class ForcedAnswer:
    text: str  # the transcript the branch read, its forced-answer text, what it wrote
    answer: str | None
    reason: str  # stop (the box closed), eos, budget, context, cancelled


@dataclass
class Outcome:
    """A finished drive: the snapshot behind every requested budget, and the end state."""

    script: Script
    requested: list[int]  # the budgets, ascending
    snapshots: dict[int, tuple[Snapshot, float]]  # pass -> (snapshot, seconds since start)
    final: Snapshot
    final_s: float  # seconds from start to the end of the main run
    passes: int
    stop_reason: str
    forced: dict[tuple[int, int | None], ForcedAnswer] = field(default_factory=dict)  # (pass, worker)
    views: list[str] = field(default_factory=list)  # each worker's view at the end, decoded
    timings: dict[str, float] = field(default_factory=dict)  # prefill_s, decode_s, forced_s
    prompt_text: str = ""  # the shared prompt as the workers read it, decoded

    def at(self, budget: int) -> tuple[Snapshot, float]:
        """The state behind ``budget``: its snapshot, or the final state if the run ended
        before it."""
        return self.snapshots.get(budget, (self.final, self.final_s))

    def forced_at(self, snapshot: Snapshot, worker: int | None = None) -> ForcedAnswer | None:
        return self.forced.get((snapshot.passes, worker))


def make_decoder(loaded: Any):
    """Token ids -> text with the model's tokenizer (special tokens kept)."""
    tok = loaded.tokenizer

    def decode(ids: Sequence[int]) -> str:
        return tok.decode(list(ids), skip_special_tokens=False)

    return decode


def _box_closed(text: str) -> bool:
    return open_box_answer(text)[1] is not None


class Drive:
    """One run under the driver's rules (see the module docstring)."""

    def __init__(self, run: Run, decode: Callable[[Sequence[int]], str], max_passes: int,
                 stop: StopRule | None = None, budgets: Sequence[int] = (),
                 snapshot_at: Sequence[int] = (), forced: ForcedRequests | None = None,
                 forced_tokens: int = 48, keep_views: bool = False):
        if max_passes < 1:
            raise InvalidRequestError(f"max_passes must be >= 1 (got {max_passes})")
        self.run, self.decode, self.max_passes, self.stop = run, decode, max_passes, stop
        self.budgets = sorted({int(b) for b in budgets})
        self.marks = set(self.budgets) | set(snapshot_at)
        self.forced_requests, self.forced_tokens, self.keep_views = forced, forced_tokens, keep_views
        self.snapshots: dict[int, tuple[Snapshot, float]] = {}
        self.open: dict[tuple[int, int | None], Branch] = {}
        self.forced: dict[tuple[int, int | None], ForcedAnswer] = {}
        self.t0 = time.perf_counter()
        self.t_prefilled: float | None = None
        self.t_stopped: float | None = None
        self.outcome: Outcome | None = None
        self.cancelled = False

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def after(self, events: list[Event]) -> list[Event]:
        """The driver's rules after one pass of the run; returns the events to publish."""
        run = self.run
        if self.t_prefilled is None and run.prefilled:
            self.t_prefilled = time.perf_counter()
        out = list(events)
        if not run.finished and events:
            if run.passes in self.marks:
                snap = run.snapshot()
                self.snapshots[run.passes] = (snap, time.perf_counter() - self.t0)
                out.append(SnapshotEvent(run.passes, snap))
                if run.passes in self.budgets:
                    self._force(snap)
            if self.stop is not None:
                for ev in events:
                    if isinstance(ev, TokenEvent) and may_close_box(ev.text):
                        self.stop.observe(ev.worker, run.worker_text(ev.worker))
                if not run.finished and self.stop.done(run.stats()):
                    out += run._stop("stop-rule")
            if not run.finished and run.passes >= self.max_passes:
                out += run._stop("budget")
        if run.finished and self.t_stopped is None:
            self.t_stopped = time.perf_counter()
            final = run.snapshot()
            broken = run.stop_reason in ("context", "memory", "cancelled") or run.passes == 0
            if not broken and (not self.budgets or self.budgets[-1] > run.passes):
                self._force(final)  # the final state stands in for the budgets after the stop
        self._collect()
        if run.finished and not run.branches:
            self._finish()
        return out

    def cancel(self) -> None:
        self.cancelled = True

    def _force(self, snap: Snapshot) -> None:
        if self.forced_requests is None:
            return
        for worker in self.forced_requests(snap):
            key = (snap.passes, worker)
            if key not in self.open and key not in self.forced:
                self.open[key] = self.run.branch(worker, self.forced_tokens, _box_closed)

    def _collect(self) -> None:
        for key, branch in list(self.open.items()):
            if branch.done:
                answer, end = open_box_answer(branch.text)
                written = branch.text if end is None else branch.text[:end]
                text = self.decode(branch.view_ids) + branch.suffix_text + written
                self.forced[key] = ForcedAnswer(text, answer, branch.reason or "stop")
                del self.open[key]

    def _finish(self) -> None:
        run, now = self.run, time.perf_counter()
        prefilled = self.t_prefilled if self.t_prefilled is not None else now
        stopped = self.t_stopped if self.t_stopped is not None else now
        views = [self.decode(run.view_token_ids(w)) for w in range(run.num_workers)] if self.keep_views else []
        self.outcome = Outcome(
            script=run.script, requested=self.budgets, snapshots=self.snapshots, final=run.snapshot(),
            final_s=stopped - self.t0, passes=run.passes, stop_reason=run.stop_reason or "budget",
            forced=self.forced, views=views, prompt_text=self.decode(run.script.prompt_ids),
            timings={"prefill_s": prefilled - self.t0, "decode_s": stopped - prefilled, "forced_s": now - stopped})
        run.close()


class Handle:
    """A submitted drive: iterate its events, wait for its outcome, cancel it."""

    def __init__(self, scheduler: Scheduler, drive: Drive):
        self.scheduler, self.drive = scheduler, drive
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.closed = False  # its last event was read

    def events(self) -> Iterator[Event]:
        """This run's events as they happen (steps the scheduler inline when no background
        thread runs it); ends after the run and its forced answers are done."""
        while not self.closed:
            if self.queue.empty() and not self.scheduler.background:
                if not self.scheduler.step() and self.queue.empty():
                    raise RuntimeError("the scheduler has nothing to run but this run is not done")
                continue
            item = self.queue.get()
            if item is None:
                self.closed = True
                return
            yield item

    def result(self) -> Outcome:
        """Wait for the run (and its forced answers) to finish; its outcome."""
        for _ in self.events():
            pass
        if self.drive.outcome is None:
            raise InvalidRequestError("the run was cancelled")
        return self.drive.outcome

    def cancel(self) -> None:
        """Stop the run; its blocks are freed by the next pass of the scheduler."""
        with self.scheduler.lock:
            if self not in self.scheduler.handles:
                raise InvalidRequestError("this run has already finished or was cancelled")
            self.drive.cancel()


class Scheduler:
    """Many drives through one batch (thread-safe; inline or on a background thread)."""

    def __init__(self, batch: Batch):
        self.batch = batch
        self.handles: list[Handle] = []
        self.lock = threading.RLock()
        self.background = False
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def submit(self, drive: Drive) -> Handle:
        handle = Handle(self, drive)
        with self.lock:
            self.handles.append(handle)
        self._wake.set()
        return handle

    def step(self) -> bool:
        """One pass of every drive (cancellations first). False when there was nothing to do."""
        with self.lock:
            for h in [h for h in self.handles if h.drive.cancelled]:
                run = h.drive.run
                h.queue.put(StopEvent(run.passes, "cancelled"))
                run._stop("cancelled")
                run.close()
                self._retire(h)
            if not self.handles:
                return False
            by_run = {h.drive.run: h for h in self.handles}
            results = self.batch.step(list(by_run))
            for run, h in by_run.items():
                for ev in h.drive.after(results.get(run, [])):
                    h.queue.put(ev)
                if h.drive.done:
                    self._retire(h)
            return True

    def _retire(self, handle: Handle) -> None:
        self.handles.remove(handle)
        handle.queue.put(None)

    def load(self) -> dict[str, Any]:
        with self.lock:
            return {"drives": len(self.handles), **self.batch.load().__dict__}

    def start(self) -> None:
        """Step on a background thread until :meth:`shutdown` (for servers)."""
        if self._thread is not None:
            return
        self.background = True
        self._stopping = False

        def loop() -> None:
            while not self._stopping:
                if not self.step():
                    self._wake.wait(0.05)
                    self._wake.clear()

        self._thread = threading.Thread(target=loop, name="hogwild-scheduler", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Cancel every drive and stop the background thread."""
        with self.lock:
            for h in self.handles:
                h.drive.cancel()
        if self._thread is not None:
            while self.handles:
                time.sleep(0.01)
            self._stopping = True
            self._thread.join()
            self._thread = None
        else:
            self.step()
        self.background = False


_SHARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared_scheduler(model: Any, kv: str = "auto") -> Scheduler:
    """The process-wide scheduler of a model (one per KV setting, ``Batch(kv=...)``): its
    batch keeps shared prefixes cached between runs, so the next ``solve`` or eval unit skips
    them."""
    per_kv = _SHARED.setdefault(model, {})
    if kv not in per_kv:
        per_kv[kv] = Scheduler(Batch(model, kv=kv))
    return per_kv[kv]


class Driver:
    """Submits scripts of one protocol on one loaded model, layout and sampling."""

    def __init__(self, loaded: Any, layout: str = "combined", sampling: Sampling | None = None,
                 forced_tokens: int = 48, scheduler: Scheduler | None = None, kv: str = "auto"):
        """``kv``: the KV setting of the model's shared scheduler, used without ``scheduler``."""
        self.loaded = loaded
        self.layout = layout
        self.sampling = sampling or Sampling()
        self.forced_tokens = forced_tokens
        self.decode = make_decoder(loaded)
        self.scheduler = scheduler if scheduler is not None else shared_scheduler(loaded.model, kv)

    def start(self, script: Script) -> Run:
        """A run of ``script`` in the scheduler's batch (prefilled by the batch's passes)."""
        engine = Engine(self.loaded.model, self.layout, self.sampling, decode=self.decode,
                        batch=self.scheduler.batch)
        return engine.submit(script)

    def submit(self, script: Script, max_passes: int, stop: StopRule | None = None,
               budgets: Sequence[int] = (), snapshot_at: Sequence[int] = (),
               forced: ForcedRequests | None = None, keep_views: bool = False) -> Handle:
        drive = Drive(self.start(script), self.decode, max_passes, stop, budgets, snapshot_at,
                      forced, self.forced_tokens, keep_views)
        return self.scheduler.submit(drive)
