"""``hogwild eval --ray``: one evaluation spread over Ray actors, surviving lost actors.

The driver (this process) opens the output directory exactly as the local runner does
(:func:`~.runner.open_eval`: config check, resume), cuts the units still to run into work
items (:func:`.ray_actor.work_items`) and hands them to a ``ray.util.ActorPool`` of
:class:`~.ray_actor.UnitActor` slots: each actor gets ``concurrency`` slots, so it always has
about that many runs in its batch, and a slot that finishes pulls the next item (nothing is
pre-split, so a slow actor takes fewer items). Records come back per item and the driver alone
appends them to results.jsonl (:func:`~.runner.save_records`: one fsynced line per unit), so a
``kill -9`` of the driver loses only the items in flight and a rerun resumes.

Faults: when an actor dies (its process killed, its node lost), every item it held is
re-queued on the pool, i.e. on the surviving actors, and its slots leave the pool. A record is
written only if its unit has not been written in this run, so an item that was re-queued
while its first try was in fact still running cannot be written twice. When every actor is
gone the run stops with an error naming how many units are left; rerunning resumes them. Why
an actor pool and not Ray Data is in docs/scale-out.md.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HogwildError
from . import report as rep
from .ray_actor import UnitActor, WorkItem, work_items
from .runner import (
    DEFAULT_CONCURRENCY,
    EvalConfig,
    EvalRun,
    finish_eval,
    open_eval,
    save_records,
)

#: what to install when Ray is missing
RAY_EXTRA = "pip install 'hogwild[ray]'"
#: seconds between progress refreshes while no item finishes
POLL_S = 0.5
#: seconds to wait for a live actor's answer when finding out which actor died
PROBE_S = 10.0


def import_ray() -> Any:
    """The ``ray`` module, or a clear error naming the extra to install."""
    try:
        import ray
        from ray.util.actor_pool import ActorPool  # noqa: F401  (the pool must be there too)
    except ImportError:
        raise HogwildError(f"--ray needs Ray, an optional extra: {RAY_EXTRA}") from None
    return ray


@dataclass
class RayOptions:
    """Where and on what the actors run (none of this changes a result)."""

    address: str | None = None  # None: start a local cluster; "auto": join the running one; or an address
    actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    concurrency: int = DEFAULT_CONCURRENCY  # work items in flight per actor (its batch's runs)
    threads: int | None = None  # torch threads per actor (None: the driver's count)
    device: str | None = None  # None: cuda when gpus_per_actor > 0, else cpu
    reproducible: bool = True
    num_cpus: int | None = None  # CPUs of a local cluster started here (None: Ray's default)
    ready_timeout: float = 900.0  # seconds to wait for the first actor (placement + model load)

    def validate(self) -> None:
        if self.actors < 1:
            raise HogwildError(f"--ray-actors must be at least 1 (got {self.actors})")
        if self.cpus_per_actor < 0 or self.gpus_per_actor < 0:
            raise HogwildError("--ray-cpus-per-actor and --ray-gpus-per-actor must be 0 or more")
        if self.concurrency < 1:
            raise HogwildError(f"--concurrency must be at least 1 (got {self.concurrency})")
        if self.device not in (None, "cpu") and self.gpus_per_actor == 0:
            raise HogwildError(f"--device {self.device} with --ray needs --ray-gpus-per-actor (Ray hides "
                               f"GPUs from actors that reserve none)")

    @property
    def actor_device(self) -> str:
        return self.device or ("cuda" if self.gpus_per_actor > 0 else "cpu")


@dataclass(eq=False)
class ActorState:
    """One actor as the driver sees it: where it runs and what it has done."""

    index: int
    handle: Any
    info: dict = field(default_factory=dict)
    ready_at: float = 0.0
    alive: bool = True
    units: int = 0
    passes: int = 0
    requeued: int = 0  # units it held when it died

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self.ready_at
        return self.passes / elapsed if self.ready_at and elapsed > 0 else 0.0


@dataclass(eq=False)
class Slot:
    """One of an actor's places in the pool (the pool tells its members apart by identity)."""

    actor: ActorState


@contextmanager
def ray_session(address: str | None, num_cpus: int | None = None) -> Iterator[Any]:
    """Connected to Ray for the block: an existing connection in this process is used as is;
    else ``address`` is joined ("auto": the cluster of ``ray start`` on this machine), or
    without one a local cluster is started, and disconnected (stopped) afterwards."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    import logging

    kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
    if address is None:
        kwargs.update(num_cpus=num_cpus, include_dashboard=False)
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except ConnectionError as error:
        raise HogwildError(f"cannot reach a Ray cluster at {address!r}: {error}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


class RayEval:
    """The actors of one evaluation and the pool loop over its work items (module docstring)."""

    def __init__(self, run: EvalRun, options: RayOptions, console: Any = None):
        self.ray = import_ray()
        self.run, self.options, self.console = run, options, console
        self.items = work_items(run.todo, run.config)
        self.actors: list[ActorState] = []
        self.waiting: dict[Any, ActorState] = {}  # info ref -> actor not ready yet
        self.inflight: dict[int, tuple[Slot, WorkItem]] = {}
        self.written: set[tuple[str, str, int]] = set()
        self.requeued = 0  # units re-queued after an actor died
        self.errors: list[str] = []  # why actors failed to start or died

    # ------------------------------------------------------------------ actors
    def start(self) -> None:
        """Create the actors (each loads the model); returns at once, they join when ready."""
        import torch

        o, ray = self.options, self.ray
        threads = o.threads if o.threads is not None else torch.get_num_threads()
        remote = ray.remote(UnitActor)
        run_id = uuid.uuid4().hex[:8]
        for i in range(o.actors):
            # one spare thread for info() while every slot runs; no restarts: the driver re-queues
            handle = remote.options(
                name=f"hogwild-eval-{run_id}-{i}", num_cpus=o.cpus_per_actor, num_gpus=o.gpus_per_actor,
                max_concurrency=o.concurrency + 1, max_restarts=0, max_task_retries=0,
            ).remote(self.run.config.to_json(), o.actor_device, threads, o.concurrency, o.reproducible)
            actor = ActorState(i, handle)
            self.actors.append(actor)
            self.waiting[handle.info.remote()] = actor

    def _admit(self, pool: Any, timeout: float = 0.0) -> None:
        """Put the actors that became ready into the pool (``concurrency`` slots each)."""
        if not self.waiting:
            return
        ready, _ = self.ray.wait(list(self.waiting), num_returns=len(self.waiting), timeout=timeout)
        for ref in ready:
            actor = self.waiting.pop(ref)
            try:
                actor.info = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as error:  # its __init__ failed (model not found, ...)
                actor.alive = False
                self.errors.append(f"actor {actor.index} did not start: {_cause(error)}")
                continue
            actor.ready_at = time.perf_counter()
            for _ in range(self.options.concurrency):
                pool.push(Slot(actor))

    def close(self) -> None:
        """Stop every actor (their runs are cancelled with them)."""
        for actor in self.actors:
            self._kill(actor)

    def _kill(self, actor: ActorState) -> None:
        try:
            self.ray.kill(actor.handle, no_restart=True)
        except self.ray.exceptions.RayError:  # already gone: nothing to stop
            return

    # ------------------------------------------------------------------ the loop
    def _call(self, slot: Slot, item: WorkItem) -> Any:
        self.inflight[item.id] = (slot, item)
        return slot.actor.handle.run.remote(item)

    def records(self, on_start: Callable[[RayEval], None] | None = None) -> Iterator[dict]:
        """Every remaining unit's record, in the order they finish (each exactly once)."""
        from ray.util.actor_pool import ActorPool

        pool = ActorPool([])
        for item in self.items:
            pool.submit(self._call, item)  # queued until a slot is free
        deadline = time.perf_counter() + self.options.ready_timeout
        while not any(a.ready_at for a in self.actors):
            self._admit(pool, timeout=POLL_S)
            if not self.waiting and not any(a.ready_at for a in self.actors):
                raise HogwildError("no Ray actor started: " + "; ".join(self.errors))
            if time.perf_counter() > deadline:
                raise HogwildError(
                    f"no Ray actor was ready after {self.options.ready_timeout:.0f} s; the cluster has "
                    f"{self.ray.cluster_resources()}, each actor asks for {self.options.cpus_per_actor} CPUs "
                    f"and {self.options.gpus_per_actor} GPUs")
        if on_start is not None:
            on_start(self)
        left = sum(len(i.units) for i in self.items)
        while left:
            self._admit(pool)
            if not pool.has_next():
                if self.waiting:  # only late actors can still take the queued items
                    self._admit(pool, timeout=POLL_S)
                    continue
                raise HogwildError(
                    f"every Ray actor is gone ({'; '.join(self.errors)}); {left} units did not run. "
                    f"Rerun the same command to resume them.")
            try:
                item_id, records = pool.get_next_unordered(timeout=POLL_S)
            except TimeoutError:
                continue
            except self.ray.exceptions.RayActorError as error:
                self._lost(pool, error)
                continue
            except self.ray.exceptions.RayTaskError as error:
                raise error.as_instanceof_cause() from None
            entry = self.inflight.pop(item_id, None)
            if entry is None:  # a second copy of a re-queued item (its actor was only unreachable)
                continue
            slot, item = entry
            left -= len(item.units)
            for record in records:
                key = rep.unit_key(record)
                if key in self.written:
                    continue
                self.written.add(key)
                slot.actor.units += 1
                if not record["timings"].get("shared_decode"):
                    slot.actor.passes += record["passes"]
                yield record

    def _lost(self, pool: Any, error: Exception) -> None:
        """An actor died: mark it (and any other whose probe fails) dead, re-queue every item
        it held, and take its idle slots out of the pool."""
        dead_id = getattr(error, "actor_id", None)
        live = [a for a in self.actors if a.alive and a.ready_at]
        probes = {a.handle.info.remote(): a for a in live if a.info.get("actor_id") != dead_id}
        answered, _ = self.ray.wait(list(probes), num_returns=len(probes), timeout=PROBE_S) if probes else ([], [])
        for actor in live:
            gone = actor.info.get("actor_id") == dead_id
            if not gone:
                ref = next(r for r, a in probes.items() if a is actor)
                if ref in answered:
                    try:
                        self.ray.get(ref)
                    except self.ray.exceptions.RayActorError:
                        gone = True
            if gone:
                actor.alive = False
                self.errors.append(f"actor {actor.index} on {actor.info.get('host')} died: {_cause(error)}")
                self._kill(actor)
        dead = {id(a) for a in self.actors if not a.alive}
        keep = []  # the dead actors' idle slots leave first, so no re-queued item lands there
        while (slot := pool.pop_idle()) is not None:
            keep.append(slot)
        for slot in keep:
            if id(slot.actor) not in dead:
                pool.push(slot)
        for item_id, (slot, item) in list(self.inflight.items()):
            if id(slot.actor) in dead:
                del self.inflight[item_id]
                slot.actor.requeued += len(item.units)
                self.requeued += len(item.units)
                pool.submit(self._call, item)


def _cause(error: Exception) -> str:
    """The informative line of a Ray error (its last line that is not an indented field)."""
    lines = [line.strip() for line in str(getattr(error, "error_msg", error)).splitlines()
             if line.strip() and not line.startswith(("\t", " "))]
    return lines[-1][:200] if lines else type(error).__name__


def evaluate_ray(
    config: EvalConfig,
    out: str | Path,
    options: RayOptions | None = None,
    console: Any = None,
    progress: bool = True,
    on_unit: Callable[[dict], None] | None = None,
    on_start: Callable[[RayEval], None] | None = None,
) -> list[dict]:
    """Run (or resume) an evaluation into ``out`` on Ray actors; returns the summary rows.

    Same directory, records and resume as :func:`~.runner.evaluate`. ``on_unit``: called with
    each record after it is saved; ``on_start``: called with the :class:`RayEval` once an
    actor is ready (tests kill actors through it)."""
    import_ray()
    options = options or RayOptions()
    options.validate()
    run = open_eval(config, out, console)
    if run.todo:
        from .ray_progress import RayProgress

        with ray_session(options.address, options.num_cpus):
            fleet = RayEval(run, options, console)
            bar = RayProgress(run.progress(console), fleet, console) if progress and console is not None else None
            try:
                fleet.start()
                if bar is not None:
                    bar.__enter__()
                save_records(run, fleet.records(on_start), bar, on_unit)
            finally:
                if bar is not None:
                    bar.__exit__(None, None, None)
                fleet.close()
            if console is not None and fleet.requeued:
                console.print(f"{fleet.requeued} units were re-queued after actors died: {'; '.join(fleet.errors)}")
    return finish_eval(run, console)
