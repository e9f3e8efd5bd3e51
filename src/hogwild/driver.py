"""The one driver loop: run a script to its budgets, stop by rule, force an answer if needed.

Everything that runs workers goes through :class:`Driver`: ``hogwild solve`` (and so the
CLI) and every evaluation strategy. It starts a :class:`~hogwild.core.engine.Run`, steps it
until the largest budget, the end of every worker, or the stop rule; takes snapshots at the
requested passes; and, when a budget is reached without an answer, decodes the forced
answer (the protocol's "time is up ... \\boxed{" text after the transcript).

What a "stop rule" sees: each time a worker's new token may close a box, the worker's whole
text (:meth:`StopRule.observe`); after every pass, the run's read-only stats
(:meth:`StopRule.done`). The driver itself knows nothing of how answers are compared.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .answers import may_close_box, open_box_answer
from .core.engine import Engine, Run
from .core.events import Event, RunStats, Snapshot, SnapshotEvent, StopEvent, TokenEvent
from .core.sampling import Sampling
from .core.script import Script


class Forcing(Protocol):
    """What a protocol provides for forced answers (``Protocol``, ``PlainProtocol``)."""

    def forced_answer_text(self, prompt_text: str, history: Sequence[tuple[int, str]],
                           unfinished: Sequence[tuple[int, str]]) -> str: ...


class StopRule(Protocol):
    """Ends a run early once the workers have answered."""

    def observe(self, worker: int, text: str) -> None:
        """``worker`` wrote a token that may close a box; ``text`` is all it wrote."""

    def done(self, stats: RunStats) -> bool:
        """Called after every pass: stop now?"""


@dataclass
class Outcome:
    """A finished drive: the snapshot behind every requested pass, and the end state."""

    run: Run
    script: Script
    requested: list[int]  # the passes snapshots were asked for, ascending
    snapshots: dict[int, tuple[Snapshot, float]]  # pass -> (snapshot, seconds since start)
    final: Snapshot
    final_s: float  # seconds from start to the end of the run
    passes: int
    stop_reason: str
    timings: dict[str, float] = field(default_factory=dict)  # prefill_s, decode_s

    def at(self, budget: int) -> tuple[Snapshot, float]:
        """The state behind ``budget``: its snapshot, or the final state if the run ended
        before it."""
        return self.snapshots.get(budget, (self.final, self.final_s))


@dataclass(frozen=True)
class DriveEnd:
    """The last item of :meth:`Driver.stream`."""

    outcome: Outcome


def make_decoder(loaded: Any):
    """Token ids -> text with the model's tokenizer (special tokens kept)."""
    tok = loaded.tokenizer

    def decode(ids: Sequence[int]) -> str:
        return tok.decode(list(ids), skip_special_tokens=False)

    return decode


class Driver:
    """Runs scripts of one protocol on one loaded model with one layout and sampling."""

    def __init__(self, loaded: Any, forcing: Forcing, layout: str = "combined",
                 sampling: Sampling | None = None, forced_tokens: int = 48):
        self.loaded = loaded
        self.forcing = forcing
        self.layout = layout
        self.sampling = sampling or Sampling()
        self.forced_tokens = forced_tokens
        self.decode = make_decoder(loaded)

    def start(self, script: Script) -> Run:
        """Start the engine on ``script`` (prefills the prompt)."""
        return Engine(self.loaded.model, self.layout, self.sampling, decode=self.decode).start(script)

    def stream(self, script: Script, max_passes: int, stop: StopRule | None = None,
               snapshot_at: Sequence[int] = ()) -> Iterator[Event | DriveEnd]:
        """Yield the engine's events as they happen, then one :class:`DriveEnd`."""
        t0 = time.perf_counter()
        run = self.start(script)
        t_prefill = time.perf_counter() - t0

        def stop_rule(run: Run, events: list[Event]) -> bool:
            if stop is None:
                return False
            for ev in events:
                if isinstance(ev, TokenEvent) and may_close_box(ev.text):
                    stop.observe(ev.worker, run.worker_text(ev.worker))
            return stop.done(run.stats())

        snaps: dict[int, tuple[Snapshot, float]] = {}
        stop_reason = "budget"
        for ev in run.run(max_passes, stop=stop_rule, snapshot_at=snapshot_at):
            if isinstance(ev, SnapshotEvent):
                snaps[ev.passes] = (ev.snapshot, time.perf_counter() - t0)
            elif isinstance(ev, StopEvent):
                stop_reason = ev.reason
            yield ev
        final_s = time.perf_counter() - t0
        yield DriveEnd(Outcome(
            run=run, script=script, requested=sorted(set(snapshot_at)), snapshots=snaps, final=run.snapshot(), final_s=final_s,
            passes=run.passes, stop_reason=stop_reason,
            timings={"prefill_s": t_prefill, "decode_s": final_s - t_prefill},
        ))

    def run(self, script: Script, budgets: Sequence[int], stop: StopRule | None = None) -> Outcome:
        """Drive to the largest budget with a snapshot at every budget; return the outcome."""
        budgets = sorted({int(b) for b in budgets})
        if not budgets or budgets[0] < 1:
            raise ValueError(f"budgets must be positive integers (got {budgets})")
        for item in self.stream(script, budgets[-1], stop, snapshot_at=budgets):
            if isinstance(item, DriveEnd):
                return item.outcome
        raise AssertionError("the stream ended without an outcome")

    def forced_answer(self, script: Script, snapshot: Snapshot) -> tuple[str, str | None]:
        """Decode greedily from the transcript plus the protocol's forced-answer text.

        The text ends inside an open ``\\boxed{``; decoding stops when the box closes, at
        end of sequence, or after ``forced_tokens``. Returns (the text fed plus what was
        decoded, the answer or None). A single sequence through its own engine (one worker,
        no protocol text), prefilled in chunks; the oldest history steps are dropped if the
        transcript would not fit the context.
        """
        loaded, budget = self.loaded, self.forced_tokens
        prompt_text = self.decode(script.prompt_ids)
        history = list(snapshot.history)
        while True:
            text = self.forcing.forced_answer_text(prompt_text, history, list(snapshot.current))
            ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) + budget <= loaded.context_length or not history:
                break
            history = history[1:]
        ids = ids[-(loaded.context_length - budget) :]
        engine = Engine(loaded.model, "independent", Sampling(), decode=self.decode)
        run = engine.start(Script(prompt_ids=ids, opening_ids=[[]], stop_ids=script.stop_ids))
        out = ""
        for ev in run.run(budget):
            if isinstance(ev, TokenEvent):
                out += ev.text
                if open_box_answer(out)[1] is not None:
                    break
        answer, end = open_box_answer(out)
        return text + (out if end is None else out[:end]), answer
