"""The engine side of the server: the model, ONE scheduler, the admission queue, and each
request's run bridged from the scheduler's thread to the event loop.

* :class:`Runner` loads the model on a thread (``/health`` is 503 until it is ready), then
  starts a :class:`MeteredScheduler` on its background thread. Every admitted request becomes
  a run of that scheduler (:func:`hogwild.solve.start_solve`), so concurrent requests share
  forward passes.
* :class:`Admission`: at most ``max_running`` runs at once; up to ``max_queue`` more requests
  wait (first come, first served); one more is answered 429.
* :class:`RunningJob`: a thread reads the run's events (:meth:`Solving.events`, which blocks)
  and hands them to an :class:`asyncio.Queue`; the HTTP side reads them from there. Cancel
  (client gone, shutdown) goes through the run's handle and frees its blocks in the next pass.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..core.events import TokenEvent
from ..driver import Scheduler
from ..errors import ContextLengthError, HogwildError, InvalidRequestError
from ..solve import SolveResult, Solving, start_solve
from .config import ServeConfig
from .errors import APIError
from .metrics import Metrics
from .schemas import Job

log = logging.getLogger("hogwild.serve")

#: put on a job's queue after its last event
END = object()


class MeteredScheduler(Scheduler):
    """A scheduler that reports each step's duration and rows to the metrics."""

    def __init__(self, batch: Any, metrics: Metrics):
        super().__init__(batch)
        self.metrics = metrics

    def step(self) -> bool:
        started = time.perf_counter()
        try:
            did = super().step()
        except Exception:  # noqa: BLE001 - a broken pass must not leave every request hanging
            log.exception("a pass of the batch failed; its runs are ended")
            self.metrics.errors.labels("engine_error").inc()
            self._fail_all()
            return True
        if did:
            self.metrics.on_step(time.perf_counter() - started, self.batch.rows_last_pass)
        return did

    def _fail_all(self) -> None:
        with self.lock:
            for handle in list(self.handles):
                try:
                    handle.drive.run.close()
                except Exception:  # noqa: BLE001
                    pass
                self._retire(handle)


class StopStrings:
    """OpenAI's ``stop``: the run stops once a worker has written one of these strings after
    its opening (protocol headers of later steps count as its text)."""

    def __init__(self, strings: list[str]):
        self.strings = strings
        self.run: Any = None
        self.skip: list[int] = []
        self.hit: str | None = None

    def bind(self, run: Any, decode: Callable[[Any], str]) -> None:
        self.skip = [len(decode(ids)) for ids in run.script.opening_ids]
        self.run = run

    def observe(self, worker: int, text: str) -> None:
        pass

    def done(self, stats: Any) -> bool:
        run = self.run
        if run is None or self.hit is not None:
            return self.hit is not None
        for w, skip in enumerate(self.skip):
            text = run.worker_text(w)[skip:]
            for s in self.strings:
                if s in text:
                    self.hit = s
                    return True
        return False


class Admission:
    """At most ``max_running`` admitted requests; up to ``max_queue`` waiting (event loop only)."""

    def __init__(self, max_running: int, max_queue: int):
        self.max_running, self.max_queue = max_running, max_queue
        self.running = 0
        self.waiters: deque[asyncio.Future] = deque()

    @property
    def queued(self) -> int:
        return len(self.waiters)

    async def enter(self, gone: Callable[[], Awaitable[bool]]) -> None:
        if self.running < self.max_running and not self.waiters:
            self.running += 1
            return
        if len(self.waiters) >= self.max_queue:
            raise APIError(429, f"The server is busy: {self.running} runs and {len(self.waiters)} queued "
                                "requests (the queue is full). Retry later.", "queue_full")
        future = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        try:
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(future), 0.5)
                    return  # the slot was handed over by leave()
                except TimeoutError:
                    if await gone():
                        raise APIError(499, "The client closed the connection.", "client_closed") from None
        except BaseException:
            if future in self.waiters:
                self.waiters.remove(future)
            elif future.done() and not future.cancelled() and future.exception() is None:
                self.leave()  # handed a slot we will not use
            raise

    def leave(self) -> None:
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_result(None)  # the slot passes on; running stays the same
                return
        self.running -= 1

    def fail_waiting(self, error: APIError) -> None:
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_exception(error)


class RunningJob:
    """One request's run, its events on an asyncio queue (see the module docstring)."""

    def __init__(self, runner: Runner, job: Job, solving: Solving, loop: asyncio.AbstractEventLoop,
                 started: float, endpoint: str, stop: StopStrings | None):
        self.runner, self.job, self.solving, self.loop = runner, job, solving, loop
        self.started, self.endpoint, self.stop = started, endpoint, stop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.result: SolveResult | None = None
        self.error: BaseException | None = None
        self.cancel_reason: str | None = None
        self.first_token_s: float | None = None
        self.ended = False  # the pump put END
        self.closed = False
        self.prompt_tokens = len(solving.script.prompt_ids)
        self.names = list(solving.protocol.worker_names)  # what the lanes are called
        self.thread = threading.Thread(target=self._pump, name="hogwild-request", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        metrics = self.runner.metrics
        try:
            for event in self.solving.events():
                if isinstance(event, TokenEvent):
                    if self.first_token_s is None:
                        self.first_token_s = time.perf_counter() - self.started
                        metrics.first_token.labels(self.endpoint).observe(self.first_token_s)
                    metrics.on_tokens(1)
                self._put(event)
            if self.cancel_reason is None:
                self.result = self.solving.result()
        except BaseException as error:  # noqa: BLE001 - reported to the client, logged here
            if self.cancel_reason is None:
                self.error = error
                if not isinstance(error, HogwildError):
                    log.exception("run failed")
        finally:
            how = self.cancel_reason or ("error" if self.error is not None else "done")
            metrics.runs_finished.labels(how).inc()
            self._put(END)

    def _put(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed (the process is ending)
            pass

    async def next_items(self, timeout: float) -> list[Any] | None:
        """The events that arrived (at least one), or None after ``timeout`` seconds of none."""
        try:
            first = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        items = [first]
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        if any(item is END for item in items):
            self.ended = True
        return items

    def cancel(self, reason: str) -> None:
        """Stop the run (its blocks are freed by the next pass); a no-op once it has ended."""
        if self.cancel_reason is None and self.result is None and self.error is None:
            self.cancel_reason = reason
            if not self.solving.cancel():
                self.cancel_reason = None  # it had ended on its own: its result stands

    def close(self) -> None:
        """The request is over: give its slot to the next one."""
        if not self.closed:
            self.closed = True
            if not self.ended:
                self.cancel("disconnect")
            self.runner.forget(self)


class Runner:
    """The model, the scheduler and the admission queue of one server."""

    def __init__(self, config: ServeConfig, metrics: Metrics):
        self.config, self.metrics = config, metrics
        self.loaded: Any = None
        self.scheduler: MeteredScheduler | None = None
        self.load_error: BaseException | None = None
        self.ready = threading.Event()
        self.admission = Admission(config.max_running, config.max_queue)
        self.draining = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.jobs: set[RunningJob] = set()
        self.jobs_lock = threading.Lock()
        self.on_load_failure: Callable[[BaseException], None] | None = None
        metrics.watch(lambda: self.admission.running, lambda: self.admission.queued)

    # ------------------------------------------------------------------ model
    def start_loading(self) -> threading.Thread:
        thread = threading.Thread(target=self._load_safely, name="hogwild-load", daemon=True)
        thread.start()
        return thread

    def _load_safely(self) -> None:
        try:
            self.load_model()
        except BaseException as error:  # noqa: BLE001 - reported by /health and the CLI
            self.load_error = error
            log.error("loading %s failed: %s", self.config.model, error)
            if self.on_load_failure is not None:
                self.on_load_failure(error)

    def load_model(self) -> None:
        """Load the model and start the scheduler's background thread (blocking)."""
        from ..core.batch import Batch
        from ..loader import load_model

        if self.config.threads is not None:
            import torch

            torch.set_num_threads(self.config.threads)
        started = time.perf_counter()
        self.loaded = load_model(self.config.model, dtype=self.config.dtype, device=self.config.device)
        self.scheduler = MeteredScheduler(Batch(self.loaded.model, kv=self.config.kv), self.metrics)
        self.scheduler.start()
        self.ready.set()
        self.metrics.ready.set(1)
        log.info("%s loaded in %.1f s; serving", self.config.model, time.perf_counter() - started)

    def load(self) -> dict | None:
        """The scheduler's load (drives, runs, rows, KV bytes), or None before the model is ready."""
        return self.scheduler.load() if self.scheduler is not None else None

    # ------------------------------------------------------------------ requests
    async def open(self, job: Job, gone: Callable[[], Awaitable[bool]], endpoint: str,
                   started: float) -> RunningJob:
        """Admit ``job`` (waiting in the queue if needed) and submit its run."""
        self._check_open()
        queued = time.perf_counter()
        await self.admission.enter(gone)
        self.metrics.queue_wait.observe(time.perf_counter() - queued)
        try:
            self._check_open()
            stop = StopStrings(job.stop_strings) if job.stop_strings else None
            solving = await asyncio.to_thread(self._submit, job, stop)
        except BaseException:
            self.admission.leave()
            raise
        self.metrics.runs_started.inc()
        assert self.loop is not None
        running = RunningJob(self, job, solving, self.loop, started, endpoint, stop)
        with self.jobs_lock:
            self.jobs.add(running)
        return running

    def _check_open(self) -> None:
        if self.draining:
            raise APIError(503, "The server is shutting down.", "server_shutdown")
        if not self.ready.is_set():
            raise APIError(503, "The model is still loading; retry when /health answers 200.", "model_loading")

    def _submit(self, job: Job, stop: StopStrings | None) -> Solving:
        param = "messages" if job.kind == "chat" else "prompt"
        try:
            solving = start_solve(self.loaded, job.problem, job.settings, scheduler=self.scheduler,
                                  also_stop=stop, keep_views=False)
        except ContextLengthError as error:
            raise APIError(400, str(error), "context_length_exceeded", param) from None
        except InvalidRequestError as error:
            raise APIError(400, str(error), "invalid_value") from None
        except HogwildError as error:  # the KV pool is full, ...
            raise APIError(503, str(error), "overloaded") from None
        if stop is not None:
            from ..driver import make_decoder

            stop.bind(solving.run, make_decoder(self.loaded))
        return solving

    def forget(self, running: RunningJob) -> None:
        with self.jobs_lock:
            if running in self.jobs:
                self.jobs.discard(running)
                self.admission.leave()

    # ------------------------------------------------------------------ shutdown
    def begin_drain(self, grace: float) -> None:
        """Refuse new requests; let running runs finish for ``grace`` seconds, then cancel
        them (their streams end with an error chunk and ``[DONE]``). Thread-safe."""
        if self.draining:
            return
        self.draining = True
        if self.loop is not None:
            error = APIError(503, "The server is shutting down.", "server_shutdown")
            self.loop.call_soon_threadsafe(self.admission.fail_waiting, error)

        def later() -> None:
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                with self.jobs_lock:
                    if not self.jobs:
                        return
                time.sleep(0.05)
            with self.jobs_lock:
                jobs = list(self.jobs)
            for job in jobs:
                job.cancel("shutdown")

        threading.Thread(target=later, name="hogwild-drain", daemon=True).start()

    def shutdown(self) -> None:
        """Cancel whatever still runs and stop the scheduler's thread."""
        self.draining = True
        if self.scheduler is not None:
            self.scheduler.shutdown()
