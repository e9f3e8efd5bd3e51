"""Terminal output for ``hogwild solve`` and ``hogwild show``: live panels, plain lines, transcripts.

Everything here consumes the event stream of :func:`hogwild.solve.solve_stream` (or a saved
result) and knows nothing of the model. Three parts:

* :class:`RunState` folds events into what a viewer needs: each worker's text, its current
  step, the history in completion order, counters and the latest answer.
* :class:`PlainPrinter` (pipes, logs): one ``[Alice] text`` line per completed line of a
  worker's output, flushed as it arrives, no ANSI codes.
* :class:`LiveView` (terminals): a rich renderable with one panel per worker (side by side,
  or in rows for many workers) and a status line; redraw it with ``rich.live.Live``.

The transcript helpers (:func:`transcript_parts`, :func:`plain_transcript`,
:func:`rich_transcript`) format a finished or interrupted run for both outputs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..answers import extract_boxed
from ..core.events import HeaderEvent, SnapshotEvent, StepEvent, StopEvent, TokenEvent

#: colours cycled over workers in the live view and the rich transcript
WORKER_STYLES = ("cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta")
#: a plain line is broken at a space once a worker's pending text gets this long
PLAIN_WRAP = 120
#: characters of each worker's recent text kept for the live panels
LIVE_KEEP = 6000


def worker_style(worker: int) -> str:
    return WORKER_STYLES[worker % len(WORKER_STYLES)]


@dataclass
class WorkerView:
    """What a viewer knows about one worker, built from events."""

    name: str
    text: str = ""  # everything it wrote (headers included)
    current: str = ""  # its unfinished step (header included)
    steps_done: int = 0
    tokens: int = 0
    answer: str | None = None
    done: bool = False


@dataclass
class RunState:
    """The run as seen through its events (also what is printed on Ctrl-C)."""

    names: list[str]
    max_passes: int | None = None
    workers: list[WorkerView] = field(default_factory=list)
    history: list[tuple[int, str]] = field(default_factory=list)
    passes: int = 0
    tokens: int = 0
    answer: str | None = None
    answer_by: int | None = None
    stop_reason: str | None = None
    started: float = field(default_factory=time.perf_counter)
    first_event: float | None = None  # when pass 1 arrived: rates exclude the prefill
    first_pass: int = 0
    tokens_after_first: int = 0  # tokens of passes after the first one (for tokens/s)

    def __post_init__(self) -> None:
        if not self.workers:
            self.workers = [WorkerView(name) for name in self.names]

    def name(self, worker: int) -> str:
        return self.names[worker] if 0 <= worker < len(self.names) else f"worker {worker}"

    def update(self, event: Any) -> None:
        now = time.perf_counter()
        if self.first_event is None and isinstance(event, (TokenEvent, HeaderEvent, StepEvent)):
            self.first_event, self.first_pass = now, max(event.passes, 1)
        if isinstance(event, TokenEvent):
            w = self.workers[event.worker]
            w.text += event.text
            w.current += event.text
            w.tokens += 1
            self.tokens += 1
            if event.passes > self.first_pass:
                self.tokens_after_first += 1
            self.passes = max(self.passes, event.passes)
            if "}" in event.text:
                found = extract_boxed(w.current) or extract_boxed(w.text)
                if found is not None:
                    w.answer = found
                    self.answer, self.answer_by = found, event.worker
        elif isinstance(event, HeaderEvent):
            w = self.workers[event.worker]
            w.text += event.text
            w.current += event.text
        elif isinstance(event, StepEvent):
            w = self.workers[event.worker]
            self.history.append((event.worker, event.text))
            w.steps_done += 1
            w.current = ""
        elif isinstance(event, StopEvent):
            self.stop_reason = event.reason
            self.passes = max(self.passes, event.passes)
        elif isinstance(event, SnapshotEvent):
            self.passes = max(self.passes, event.passes)

    # ------------------------------------------------------------ rates
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def rates(self) -> tuple[float, float]:
        """(tokens/s, passes/s) since the first pass (prefill excluded)."""
        if self.first_event is None:
            return 0.0, 0.0
        dt = time.perf_counter() - self.first_event
        if dt <= 0:
            return 0.0, 0.0
        return self.tokens_after_first / dt, max(self.passes - self.first_pass, 0) / dt

    def unfinished(self) -> list[tuple[int, str]]:
        return [(i, w.current) for i, w in enumerate(self.workers) if w.current.strip()]

    def status_line(self) -> str:
        if self.first_event is None:
            return f"prefilling the prompt ... {self.elapsed():.1f} s"
        tps, pps = self.rates()
        budget = f"/{self.max_passes}" if self.max_passes else ""
        answer = "-" if self.answer is None else f"{self.answer} ({self.name(self.answer_by or 0)})"
        if self.stop_reason == "budget" and self.answer is None:
            answer = "- (budget spent: forcing an answer ...)"
        return (
            f"pass {self.passes}{budget} · {tps:.1f} tok/s · {pps:.1f} passes/s · "
            f"{len(self.history)} steps merged · answer: {answer} · {self.elapsed():.1f} s"
        )


# ---------------------------------------------------------------------------- plain
class PlainPrinter:
    """Streams ``[Name] line`` for each completed line of each worker, for pipes and logs.

    Worker text is buffered per worker and written a line at a time (a long line without a
    newline is broken at a space after :data:`PLAIN_WRAP` characters), so the output of
    several workers interleaves by line, not by token. A finished step prints a short marker.
    """

    def __init__(self, state: RunState, out: IO[str], wrap: int = PLAIN_WRAP):
        self.state = state
        self.out = out
        self.wrap = wrap
        self.pending = ["" for _ in state.names]

    def _emit(self, worker: int, line: str) -> None:
        line = line.rstrip()
        if line:
            self.out.write(f"[{self.state.name(worker)}] {line}\n")

    def _drain(self, worker: int, final: bool = False) -> None:
        buf = self.pending[worker]
        while "\n" in buf:
            line, buf = buf.split("\n", 1)
            self._emit(worker, line)
        while len(buf) > self.wrap:
            cut = buf.rfind(" ", 0, self.wrap)
            cut = cut if cut > 0 else self.wrap
            self._emit(worker, buf[:cut])
            buf = buf[cut:].lstrip(" ")
        if final and buf:
            self._emit(worker, buf)
            buf = ""
        self.pending[worker] = buf

    def handle(self, events: Sequence[Any]) -> None:
        """Write what ``events`` (already folded into the state) add, then flush."""
        for ev in events:
            if isinstance(ev, (TokenEvent, HeaderEvent)):
                self.pending[ev.worker] += ev.text
                self._drain(ev.worker)
            elif isinstance(ev, StepEvent):
                self._drain(ev.worker, final=True)
                self.out.write(f"-- {self.state.name(ev.worker)} finished step {ev.step} (pass {ev.passes})\n")
            elif isinstance(ev, StopEvent):
                self.finish()
                self.out.write(f"-- stopped after {ev.passes} passes ({ev.reason})\n")
        self.out.flush()

    def finish(self) -> None:
        for w in range(len(self.pending)):
            self._drain(w, final=True)
        self.out.flush()


# ---------------------------------------------------------------------------- live
class LiveView:
    """A rich renderable of the run: worker panels plus a status line, sized to the terminal.

    Up to three workers sit side by side; more go into rows (two per row on a wide
    terminal, else one). Each panel shows the tail of its worker's text that fits.
    """

    def __init__(self, state: RunState, title: str = ""):
        self.state = state
        self.title = title

    def layout(self, width: int, height: int) -> tuple[int, int, int]:
        """(columns, rows, lines of text per panel) for the current terminal size."""
        n = max(len(self.state.workers), 1)
        cols = n if n <= 3 else (2 if width >= 100 else 1)
        cols = max(1, min(cols, width // 28 or 1))
        rows = math.ceil(n / cols)
        # title + status take 2 lines; each panel has 2 border lines
        lines = max(1, (height - 3) // rows - 2)
        return cols, rows, lines

    def _panel(self, console: Console, worker: int, width: int, lines: int) -> Panel:
        w = self.state.workers[worker]
        text = Text(w.text[-LIVE_KEEP:])
        inner = max(width - 4, 8)
        wrapped = text.wrap(console, inner)
        tail = Text("\n").join(list(wrapped)[-lines:])
        pad = lines - len(tail.plain.split("\n")) if tail.plain else lines
        if pad > 0:
            tail = Text("\n" * pad) + tail
        subtitle = f"step {w.steps_done + 1} · {w.tokens} tok"
        if w.answer is not None:
            subtitle += f" · answer {w.answer}"
        return Panel(
            tail,
            title=Text(w.name, style=f"bold {worker_style(worker)}"),
            subtitle=Text(subtitle, style="dim"),
            border_style=worker_style(worker),
            width=width,
            height=lines + 2,
        )

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        height = options.height or console.size.height
        cols, rows, lines = self.layout(width, height)
        col_width = width // cols
        grid = Table.grid(expand=True)
        for _ in range(cols):
            grid.add_column(ratio=1)
        n = len(self.state.workers)
        for r in range(rows):
            cells = [
                self._panel(console, i, col_width, lines) if i < n else Text("")
                for i in range(r * cols, (r + 1) * cols)
            ]
            grid.add_row(*cells)
        header = Text(self.title, style="bold", no_wrap=True, overflow="ellipsis")
        status = Text(self.state.status_line(), style="bold", no_wrap=True, overflow="ellipsis")
        yield Group(header, grid, status)


# ---------------------------------------------------------------------------- transcripts
@dataclass
class TranscriptPart:
    section: str  # "history" or "unfinished"
    worker: int
    text: str


def transcript_parts(history: Sequence[Sequence[Any]], unfinished: Sequence[Sequence[Any]]) -> list[TranscriptPart]:
    parts = [TranscriptPart("history", int(w), str(t)) for w, t in history]
    parts += [TranscriptPart("unfinished", int(w), str(t)) for w, t in unfinished if str(t).strip()]
    return parts


def unfinished_from_texts(workers: Sequence[str], history: Sequence[Sequence[Any]]) -> list[tuple[int, str]]:
    """Each worker's text after its finished steps (for results saved without that field)."""
    out = []
    for w, text in enumerate(workers):
        rest = text
        for hw, step in history:
            if int(hw) == w and rest.startswith(step):
                rest = rest[len(step) :]
        if rest.strip():
            out.append((w, rest))
    return out


def _indent(text: str, prefix: str) -> str:
    lines = text.strip("\n").split("\n")
    return "\n".join(prefix + line if line.strip() else prefix.rstrip() for line in lines)


def plain_transcript(names: Sequence[str], parts: Sequence[TranscriptPart]) -> str:
    """The transcript as plain text: finished steps, then unfinished work, one indented paragraph each."""
    out = ["===== transcript ====="]
    for section, title in (("history", "finished steps, in completion order"), ("unfinished", "unfinished work")):
        chosen = [p for p in parts if p.section == section]
        out.append(f"--- {title}{'' if chosen else ': none'} ---")
        for part in chosen:
            name = names[part.worker] if 0 <= part.worker < len(names) else f"worker {part.worker}"
            out.append(f"[{name}]")
            out.append(_indent(part.text, "    "))
    return "\n".join(out)


def rich_transcript(names: Sequence[str], parts: Sequence[TranscriptPart]) -> Group:
    items: list[Any] = []
    section = None
    for part in parts:
        if part.section != section:
            section = part.section
            title = "Transcript: finished steps, in completion order" if section == "history" else "Unfinished work"
            items.append(Text(f"\n{title}", style="bold underline"))
        name = names[part.worker] if 0 <= part.worker < len(names) else f"worker {part.worker}"
        style = worker_style(part.worker)
        label = name if part.section == "history" else f"{name} (unfinished)"
        items.append(
            Panel(Text(part.text.strip("\n")), title=Text(label, style=f"bold {style}"), title_align="left",
                  border_style=style if part.section == "history" else "dim")
        )
    if not parts:
        items.append(Text("Transcript: nothing was generated", style="bold"))
    return Group(*items)


def summary_lines(
    answer: str | None, forced: bool, passes: int, max_passes: int | None, stop_reason: str,
    timings: dict[str, float],
) -> list[tuple[str, str]]:
    """(label, value) rows of the end-of-run summary."""
    shown = "(none)" if answer is None else answer
    if answer is not None:
        shown += " (forced: the budget ran out before a boxed answer)" if forced else " (not forced)"
    budget = f" of {max_passes}" if max_passes else ""
    rows = [("final answer", shown), ("passes", f"{passes}{budget} (stop: {stop_reason})")]
    total = timings.get("wall_s", timings.get("total_s"))
    if total is not None:
        detail = ", ".join(
            f"{k[:-2]} {timings[k]:.2f} s" for k in ("load_s", "prefill_s", "decode_s", "forced_s") if k in timings
        )
        pps = timings.get("passes_per_s")
        time_str = f"{total:.2f} s" + (f" ({detail})" if detail else "")
        if pps:
            time_str += f", {pps:.1f} passes/s"
        rows.append(("time", time_str))
    return rows


def plain_summary(rows: Sequence[tuple[str, str]]) -> str:
    return "\n".join(f"{label}: {value}" for label, value in rows)


def rich_summary(rows: Sequence[tuple[str, str]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        style = "bold green" if label == "final answer" else ""
        table.add_row(label, Text(value, style=style))
    return table
