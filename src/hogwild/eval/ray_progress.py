"""The terminal view of a Ray evaluation: the local runner's progress bar, and under it one
line per actor (units done, passes/s, node, and whether it died).

The bar is the runner's own (:meth:`~.runner.EvalRun.progress`), so a Ray run reads like a
local one; the two are drawn by one ``rich.live.Live`` that re-reads the actors' counters at
every refresh, so a line moves even while no unit finishes.
"""

from __future__ import annotations

from typing import Any, Self

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text


class ActorLines:
    """A renderable: one row per actor of a :class:`~.ray_runner.RayEval`, built at each refresh."""

    def __init__(self, fleet: Any):
        self.fleet = fleet

    def __rich__(self) -> Table:
        table = Table.grid(padding=(0, 2))
        for _ in range(5):
            table.add_column(no_wrap=True)
        for actor in self.fleet.actors:
            info = actor.info
            where = f"{info.get('host', '?')} ({info.get('ip', '?')}) pid {info.get('pid', '?')}" if info else "starting"
            if not actor.alive:
                state = Text(f"died, {actor.requeued} units re-queued", style="red")
            elif actor.ready_at:
                state = Text(f"{info.get('device')} x{info.get('threads')} threads", style="dim")
            else:
                state = Text("loading the model", style="yellow")
            table.add_row(f"  actor {actor.index}", where, f"{actor.units} units",
                          f"{actor.rate:.1f} passes/s", state)
        return table


class RayProgress:
    """The runner's bar plus the actor lines, with the bar's ``update`` interface."""

    def __init__(self, bar: Any, fleet: Any, console: Any):
        self.bar = bar
        self.live = Live(Group(bar.progress, ActorLines(fleet)), console=console, refresh_per_second=4,
                         transient=False)

    def __enter__(self) -> Self:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(*exc)

    def update(self, record: dict) -> None:
        self.bar.update(record)
