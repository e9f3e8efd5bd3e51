"""The Ray side of a scaled-out evaluation: work items, and the actor that runs them.

A *work item* is the smallest piece of an evaluation that can move between machines without
changing a result: the units of one task that make the same engine run (``single`` and
``early-stop`` share one; every other unit is an item of its own). Items are what the driver
hands out (:mod:`.ray_runner`), one at a time per free slot, and what it re-queues when an
actor dies.

:class:`UnitActor` is a stateful Ray actor: it loads the model once, keeps ONE
:class:`~hogwild.driver.Scheduler` (one batch, so the prompt prefixes every task shares are
computed once per actor) and runs each item through :func:`~.runner.run_units`, the local
runner's own loop. Several items run at once (the actor is threaded; each call submits its
run to the shared scheduler, and whichever thread holds the scheduler's lock steps every run),
so an actor's batch holds about as many runs as the local runner's ``--concurrency``. The
batch is reproducible and the actor uses the driver's torch thread count, so a unit's record
is the same whichever actor runs it, next to whichever other units (docs/eval.md,
"Concurrency").
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from .runner import EvalConfig, Unit, make_unit_strategy, run_units


@dataclass(frozen=True)
class WorkItem:
    """Units that share one engine run, in plan order; ``id`` is the position in the plan."""

    id: int
    units: tuple[Unit, ...]

    @property
    def keys(self) -> list[tuple[str, str, int]]:
        return [u.key for u in self.units]


def work_items(units: list[Unit], config: EvalConfig) -> list[WorkItem]:
    """Group ``units`` by the engine run they read (the runner's sharing rule), keeping the
    plan's task-by-task order, so a partial run compares strategies on the same tasks."""
    groups: dict[tuple, list[Unit]] = {}
    for unit in units:
        key = make_unit_strategy(unit, config).decode_key()
        groups.setdefault((unit.task.id, key) if key is not None else unit.key, []).append(unit)
    return [WorkItem(i, tuple(g)) for i, g in enumerate(groups.values())]


class UnitActor:
    """One model, one batch, many work items at once (see the module docstring).

    Made remote by :func:`.ray_runner.start_actors` (``ray.remote`` with the requested CPUs,
    GPUs and ``max_concurrency``), so this module imports without Ray."""

    def __init__(self, config: dict, device: str, threads: int | None, concurrency: int, reproducible: bool):
        import torch

        from ..core.batch import Batch
        from ..driver import Scheduler
        from ..loader import load_model

        if threads is not None:
            torch.set_num_threads(threads)  # the driver's count: results must not depend on the node
        self.config = EvalConfig(**config)
        self.device = device
        t0 = time.perf_counter()
        self.loaded = load_model(self.config.model, dtype=self.config.dtype, device=device)
        self.load_s = time.perf_counter() - t0
        self.scheduler = Scheduler(Batch(self.loaded.model, reproducible=reproducible, kv=self.config.kv))
        self.concurrency = concurrency

    def info(self) -> dict[str, Any]:
        """Where this actor runs: process id, node, device, threads, model load time."""
        import ray
        import torch

        return {"actor_id": ray.get_runtime_context().get_actor_id(), "pid": os.getpid(), "host": socket.gethostname(), "ip": ray.util.get_node_ip_address(),
                "node_id": ray.get_runtime_context().get_node_id(), "device": self.device,
                "threads": torch.get_num_threads(), "load_s": round(self.load_s, 2)}

    def run(self, item: WorkItem) -> tuple[int, list[dict]]:
        """Run one item to the end; its records (one per unit), in completion order."""
        records = list(run_units(self.loaded, list(item.units), self.config, self.concurrency,
                                 scheduler=self.scheduler))
        return item.id, records
