"""The evaluation runner: tasks x strategies x worker counts, resumable, with progress.

A *unit* is one task run by one strategy with one worker count; it yields answers at every
budget and is appended to ``DIR/results.jsonl`` as one line (flushed and fsynced) as soon
as it finishes. Rerunning the same command skips finished units, so a killed run loses at
most the unit in flight. ``DIR/config.json`` records the settings; resuming into a
directory made with different settings is refused. Units run task by task (every strategy
on task 1, then task 2, ...), so a partial run compares strategies on the same tasks.

``single`` and ``early-stop`` always use one worker; ``independent`` and ``hogwild-*`` run
once for each worker count of at least 2 in ``workers``.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..core.batch import Batch
from ..core.cache import check_kv
from ..driver import Scheduler
from ..errors import HogwildError
from ..protocol import DEFAULT_FEW_SHOT, DEFAULT_NO_REPEAT_NGRAM
from . import report as rep
from .bundles import make_bundles, score_answer
from .datasets import Task, load_tasks
from .strategies import make_strategy, strategy_names

DEFAULT_STRATEGIES = ("single", "early-stop", "independent", "hogwild-combined")
#: Settings added to EvalConfig later, with the value that gives the behaviour from before
#: they existed: a config.json without them ran that way (and resumes only that way).
BEFORE_SETTING = {"no_repeat_ngram": 0, "kv": "auto"}
#: Settings whose default changed: name -> (the old default, the new one). A directory made
#: with the old default resumes with it when the new default is asked for.
CHANGED_DEFAULTS = {"few_shot": (None, DEFAULT_FEW_SHOT)}
#: Engine runs in flight at once (one batch; see docs/eval.md, "Concurrency").
DEFAULT_CONCURRENCY = 8


@dataclass
class EvalConfig:
    """Everything that decides the results (saved as config.json)."""

    dataset: str = "gsm_symbolic"
    strategies: list[str] = field(default_factory=lambda: list(DEFAULT_STRATEGIES))
    workers: list[int] = field(default_factory=lambda: [2])
    budgets: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    model: str = "smollm2-135m"
    dtype: str = "float32"
    limit: int | None = 12
    seed: int = 0
    bundle: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    forced_tokens: int = 32
    check_in_every: int = 1024
    few_shot: bool | None = DEFAULT_FEW_SHOT
    redirect_loops: bool = True
    no_repeat_ngram: int = DEFAULT_NO_REPEAT_NGRAM
    question_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    kv: str = "auto"  # how the KV cache keeps keys and values (hogwild.core.cache.KV_MODES)

    def validate(self) -> None:
        known = strategy_names()
        unknown = [s for s in self.strategies if s not in known]
        if unknown or not self.strategies:
            raise HogwildError(f"unknown strategies {unknown or '(none)'}; choose from {', '.join(known)}")
        if not self.budgets or min(self.budgets) < 1:
            raise HogwildError(f"budgets must be positive numbers of passes (got {self.budgets})")
        if not self.workers or min(self.workers) < 1:
            raise HogwildError(f"worker counts must be at least 1 (got {self.workers})")
        multi = [s for s in self.strategies if s not in ("single", "early-stop")]
        if multi and not any(w >= 2 for w in self.workers):
            raise HogwildError(f"{', '.join(multi)} need a worker count of at least 2 in --workers")
        if self.bundle < 1:
            raise HogwildError(f"--bundle must be at least 1 (got {self.bundle})")
        check_kv(self.kv)
        self.budgets = sorted(set(self.budgets))
        self.workers = sorted(set(self.workers))

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Unit:
    task: Task
    strategy: str
    workers: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.task.id, self.strategy, self.workers)


def plan_units(tasks: Sequence[Task], config: EvalConfig) -> list[Unit]:
    units = []
    for task in tasks:
        for name in config.strategies:
            counts = [1] if name in ("single", "early-stop") else [w for w in config.workers if w >= 2]
            units += [Unit(task, name, w) for w in counts]
    return units


def load_eval_tasks(config: EvalConfig) -> list[Task]:
    """The config's tasks; with bundles, ``limit`` counts bundles (limit x k questions)."""
    n = None if config.limit is None else config.limit * config.bundle
    tasks = load_tasks(config.dataset, limit=n, seed=config.seed, question_field=config.question_field,
                       answer_field=config.answer_field, id_field=config.id_field)
    return make_bundles(tasks, config.bundle)


def check_config(out: Path, config: EvalConfig) -> None:
    """Write config.json, or refuse if the directory holds a run with other settings. A
    directory made under an old default (:data:`CHANGED_DEFAULTS`, e.g. few-shot examples
    "auto") resumes with it when the new default is asked for: ``config`` is changed to match."""
    path = out / rep.CONFIG
    mine = config.to_json()
    if path.exists():
        try:
            theirs = json.loads(path.read_text())
        except (OSError, ValueError):
            raise HogwildError(f"{path} is unreadable; remove it or choose another --out") from None
        # a setting added after the directory was made: it ran with the behaviour from before
        theirs = {**BEFORE_SETTING, **theirs}
        for name, (old, new) in CHANGED_DEFAULTS.items():
            if name in theirs and theirs[name] == old and getattr(config, name) == new:
                setattr(config, name, old)  # made under the old default: it resumes as it ran
                mine = config.to_json()
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if diff:
            lines = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
            raise HogwildError(
                f"{out} holds results of a run with different settings ({lines}). Resume with the "
                f"same settings, or choose another --out.")
    elif (out / rep.RESULTS).exists():
        raise HogwildError(f"{out} has {rep.RESULTS} but no {rep.CONFIG}; choose another --out")
    else:
        path.write_text(json.dumps(mine, indent=2) + "\n")


def unit_seed(config: EvalConfig, unit: Unit) -> int:
    family = "plain-1" if unit.strategy in ("single", "early-stop") else unit.strategy
    return (config.seed * 1_000_003 + zlib.crc32(f"{unit.task.id}|{family}|{unit.workers}".encode())) % (2**31)


def make_unit_strategy(unit: Unit, config: EvalConfig):
    return make_strategy(unit.strategy, unit.workers, temperature=config.temperature, top_p=config.top_p,
                         forced_tokens=config.forced_tokens, check_in_every=config.check_in_every,
                         few_shot=config.few_shot, redirect_loops=config.redirect_loops,
                         no_repeat_ngram=config.no_repeat_ngram,
                         seed=unit_seed(config, unit))


def unit_record(unit: Unit, out: Any, wall: float) -> dict:
    """The record of a finished unit (see docs/eval.md for the fields)."""
    results = []
    for r in out.results:
        score = score_answer(r.answer, unit.task.answer)
        row = {"budget": r.budget, "answer": r.answer, "score": score, "correct": score == 1.0,
               "forced": r.forced, "copied": r.copied, "passes": r.passes, "tokens": r.tokens,
               "wall_s": r.wall_s}
        if r.votes is not None:
            row["votes"] = r.votes
        results.append(row)
    return {
        "task": unit.task.id, "strategy": unit.strategy, "workers": unit.workers,
        "k": unit.task.k, "gold": unit.task.answer, "passes": out.passes,
        "stop_reason": out.stop_reason, "wall_s": round(wall, 3), "timings": out.timings,
        "results": results, "analytics": out.analytics,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run_units(loaded: Any, units: Sequence[Unit], config: EvalConfig, concurrency: int = DEFAULT_CONCURRENCY,
              scheduler: Scheduler | None = None, reproducible: bool = True) -> Iterator[dict]:
    """Run units ``concurrency`` engine runs at a time through one batch; yield each record
    as its unit finishes (completion order).

    Strategies that make the same engine run (single and early-stop, same task) share it.
    Results never depend on how units were batched (docs/eval.md, "Concurrency")."""
    if concurrency < 1:
        raise HogwildError(f"--concurrency must be at least 1 (got {concurrency})")
    if scheduler is None:
        scheduler = Scheduler(Batch(loaded.model, reproducible=reproducible, kv=config.kv))
    pending = list(units)
    users: dict[tuple, int] = defaultdict(int)  # runs -> units still to read them
    strategies = {u.key: make_unit_strategy(u, config) for u in units}
    for u in units:
        key = strategies[u.key].decode_key()
        users[(u.task.id, key) if key is not None else u.key] += 1
    runs: dict[tuple, Any] = {}  # (task, decode key) or unit key -> handle
    read: set[tuple] = set()  # shared runs a unit has already turned into a record
    active: list[tuple[Unit, Any, tuple, float]] = []
    try:
        while pending or active:
            while pending and len({id(h) for _, h, _, _ in active}) < concurrency:
                unit = pending.pop(0)
                strategy = strategies[unit.key]
                key = strategy.decode_key()
                share = (unit.task.id, key) if key is not None else unit.key
                if share not in runs:
                    runs[share] = strategy.submit(loaded, unit.task, config.budgets, scheduler)
                active.append((unit, runs[share], share, time.perf_counter()))
            if not any(h.drive.done for _, h, _, _ in active):
                scheduler.step()
            for entry in [e for e in active if e[1].drive.done]:
                unit, handle, share, t0 = entry
                active.remove(entry)
                strategy = strategies[unit.key]
                out = strategy.answers(loaded, unit.task, handle.result())
                if share in read:
                    out.timings["shared_decode"] = True  # its passes were counted once already
                read.add(share)
                users[share] -= 1
                if users[share] <= 0:
                    runs.pop(share, None)
                    read.discard(share)
                yield unit_record(unit, out, time.perf_counter() - t0)
    finally:
        for _, handle, _, _ in active:
            handle.cancel()
        scheduler.step()


class _Progress:
    """A rich progress bar (tasks done, accuracy per strategy at the top budget, passes/s)."""

    def __init__(self, console: Any, total: int, done: int, records: list[dict], top_budget: int):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.top = top_budget
        self.scores: dict[str, list[float]] = defaultdict(list)
        self.passes = 0
        self.decode_s = 0.0
        for rec in records:
            self._add(rec)
        self.progress = Progress(
            TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TextColumn("units"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[acc]}"),
            console=console, transient=False)
        self.task = self.progress.add_task("eval", total=total, completed=done, rate="", acc=self._acc())

    def _add(self, rec: dict) -> None:
        top = [r for r in rec["results"] if r["budget"] == self.top]
        if top:
            self.scores[rep.series_name(rec["strategy"], rec["workers"])].append(float(top[0]["score"]))

    def _acc(self) -> str:
        return "  ".join(f"{k} {sum(v) / len(v):.2f}" for k, v in self.scores.items()) + \
            (f"  (accuracy at {self.top})" if self.scores else "")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def update(self, rec: dict) -> None:
        self._add(rec)
        if not rec["timings"].get("shared_decode"):
            self.passes += rec["passes"]
            self.decode_s += rec["timings"].get("decode_s", 0.0)
        rate = f"{self.passes / self.decode_s:.1f} passes/s" if self.decode_s else ""
        self.progress.update(self.task, advance=1, rate=rate, acc=self._acc())


@dataclass
class EvalRun:
    """An output directory opened for a (resumed) evaluation: the units still to run, and the
    records already there. The local runner and the Ray runner (:mod:`.ray_runner`) share it, so
    both resume, write and summarise the same way."""

    config: EvalConfig
    out: Path
    tasks: list[Task]
    units: list[Unit]
    todo: list[Unit]
    records: list[dict]

    @property
    def results_path(self) -> Path:
        return self.out / rep.RESULTS

    def progress(self, console: Any) -> _Progress:
        """The progress bar of this run (not started)."""
        ids = {t.id for t in self.tasks}
        return _Progress(console, len(self.units), len(self.units) - len(self.todo),
                         [r for r in self.records if r["task"] in ids], self.config.budgets[-1])


def open_eval(config: EvalConfig, out: str | Path, console: Any = None) -> EvalRun:
    """Validate the settings, create or check ``out`` (config.json), load the tasks and read
    the finished units (a corrupt last line is cut off)."""
    config.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_config(out, config)
    tasks = load_eval_tasks(config)
    if not tasks:
        raise HogwildError(f"no tasks from {config.dataset!r} (with --bundle {config.bundle})")
    records = rep.read_results(out / rep.RESULTS, repair=True)
    done = {rep.unit_key(r) for r in records}
    units = plan_units(tasks, config)
    todo = [u for u in units if u.key not in done]
    if console is not None and done:
        console.print(f"resuming: {len(units) - len(todo)} of {len(units)} units already in {out / rep.RESULTS}")
    return EvalRun(config, out, tasks, units, todo, records)


def save_records(run: EvalRun, stream: Iterable[dict], bar: Any = None,
                 on_unit: Callable[[dict], None] | None = None) -> None:
    """Append each record of ``stream`` to results.jsonl (fsynced) as it comes, the only
    writer of that file; ``bar`` (a started progress bar) and ``on_unit`` see it after."""
    for record in stream:
        rep.append_result(run.results_path, record)
        run.records.append(record)
        if bar is not None:
            bar.update(record)
        if on_unit is not None:
            on_unit(record)


def finish_eval(run: EvalRun, console: Any = None) -> list[dict]:
    """summary.json, the plots and the tables from this run's tasks; the summary rows."""
    ids = {t.id for t in run.tasks}
    mine = [r for r in run.records if r["task"] in ids]
    rows = rep.write_all(run.out, mine, run.config.to_json(), console)
    if console is not None:
        console.print(f"results: {run.results_path}")
    return rows


def evaluate(
    config: EvalConfig,
    out: str | Path,
    loaded: Any = None,
    console: Any = None,
    progress: bool = True,
    on_unit: Callable[[dict], None] | None = None,
    device: str = "cpu",
    concurrency: int = DEFAULT_CONCURRENCY,
    reproducible: bool = True,
) -> list[dict]:
    """Run (or resume) an evaluation into ``out``; returns the summary rows.

    ``loaded``: a LoadedModel (else ``config.model`` is loaded on ``device``).
    ``on_unit``: called with each new record after it is saved (tests interrupt here).
    ``concurrency``: engine runs in flight at once, in one batch. ``reproducible`` (default):
    only paths whose results do not depend on the batch (docs/low-level-api.md).
    """
    run = open_eval(config, out, console)
    if run.todo and loaded is None:
        from ..loader import load_model

        loaded = load_model(config.model, dtype=config.dtype, device=device)
    bar = run.progress(console) if progress and console is not None else None
    try:
        if bar is not None:
            bar.__enter__()
        if run.todo:  # a finished directory loads no model and only rewrites its summary
            save_records(run, run_units(loaded, run.todo, config, concurrency, reproducible=reproducible), bar,
                         on_unit)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    return finish_eval(run, console)
