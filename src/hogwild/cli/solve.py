"""``hogwild solve`` (live panels or plain text, ``--save``, ``--show-view``) and ``hogwild show``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.live import Live

from ..core.cache import KV_HELP
from ..core.layouts import LAYOUTS
from ..errors import InvalidRequestError
from ..models.registry import DEFAULT_MODEL
from ..protocol import DEFAULT_FEW_SHOT, DEFAULT_NO_REPEAT_NGRAM
from ..quant.plan import WEIGHTS_HELP, cli_setting
from . import render
from .app import EXIT_INTERRUPTED, _default_device, _set_threads, _use_plain, app

SAVE_FORMAT = "hogwild-solve"


def _resolve_worker(spec: str, names: list[str]) -> int:
    """A worker given by name (case-insensitive) or 1-based number -> 0-based index."""
    spec = spec.strip()
    if spec.isdigit():
        number = int(spec)
        if 1 <= number <= len(names):
            return number - 1
        raise InvalidRequestError(f"--show-view {spec}: workers are numbered 1..{len(names)}")
    for i, name in enumerate(names):
        if name.lower() == spec.lower():
            return i
    raise InvalidRequestError(f"--show-view {spec!r}: no such worker; the workers are {', '.join(names)}")


def _protocol_names(protocol: Any, count: int) -> list[str]:
    names = getattr(protocol, "worker_names", None) or getattr(protocol, "names", None)
    return list(names) if names else [f"Worker {i + 1}" for i in range(count)]


def _print_report(
    plain: bool, names: list[str], parts: list[render.TranscriptPart], rows: list[tuple[str, str]],
    header: list[tuple[str, str]] | None = None,
) -> None:
    if plain:
        out = []
        if header:
            out.append(render.plain_summary(header))
        out.append(render.plain_transcript(names, parts))
        out.append("===== result =====")
        out.append(render.plain_summary(rows))
        print("\n".join(out), flush=True)
        return
    console = Console(highlight=False)
    if header:
        console.print(render.rich_summary(header))
    console.print(render.rich_transcript(names, parts))
    console.rule("Result")
    console.print(render.rich_summary(rows))


def _print_view(plain: bool, name: str, view: str) -> None:
    if plain:
        print(f"===== view of {name} (exactly what it attends to) =====\n{view}\n===== end of view =====", flush=True)
        return
    console = Console(highlight=False)
    console.rule(f"View of {name}: exactly what it attends to")
    print(view, flush=True)  # raw: no wrapping, no markup
    console.rule()


@app.command()
def solve(
    problem: str = typer.Argument(..., help="The problem to solve (quote it)."),
    workers: int = typer.Option(2, "--workers", "-n", help="Number of workers."),
    layout: str = typer.Option("combined", "--layout", "-l", help=", ".join(LAYOUTS) + "."),
    max_passes: int = typer.Option(512, "--max-passes", "-b", help="Budget in forward passes."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Short name, local dir, .gguf file or hub id."),
    weights: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Deprecated: the old name of --weights."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    kv: str = typer.Option("auto", "--kv", help=KV_HELP),
    temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 = greedy."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling threshold."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed for sampling."),
    check_in_every: int = typer.Option(
        1024, "--check-in-every", help="Ask 'am I doing redundant work?' every K generated tokens (0 = off)."
    ),
    few_shot: bool = typer.Option(
        bool(DEFAULT_FEW_SHOT), "--few-shot/--no-few-shot", help="Few-shot collaboration examples (default: off)."
    ),
    redirect_loops: bool = typer.Option(
        True, "--redirect-loops/--no-redirect-loops", help="Redirect a worker whose step repeats an earlier step."
    ),
    no_repeat_ngram: int = typer.Option(
        DEFAULT_NO_REPEAT_NGRAM, "--no-repeat-ngram",
        help="No worker writes an N-gram of tokens already written in a step (against copy loops; 0 = off)."),
    stop: str = typer.Option("first", "--stop", help="first boxed answer, agree (k workers agree) or none."),
    agree_k: int = typer.Option(2, "--agree-k", help="With --stop agree: how many workers must agree."),
    forced_answer: bool = typer.Option(
        True, "--forced-answer/--no-forced-answer", help="Force a boxed answer when the budget runs out."
    ),
    plain: Optional[bool] = typer.Option(
        None, "--plain/--live", help="Plain text lines for pipes, or the live panels (default: live on a terminal)."
    ),
    show_view: Optional[str] = typer.Option(
        None, "--show-view", help="At the end print exactly what worker W sees (name or 1-based number)."
    ),
    save: Optional[Path] = typer.Option(None, "--save", help="Write the run as JSON to this file."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
) -> None:
    """Let N workers solve PROBLEM together and print their transcript and answer."""
    started = time.perf_counter()
    if not problem.strip():
        raise InvalidRequestError("the problem is empty: give the text of a problem to solve")
    from ..solve import ResultEvent, SolveSettings, make_protocol

    settings = SolveSettings(
        workers=workers, layout=layout, max_passes=max_passes, temperature=temperature, top_p=top_p,
        seed=seed, check_in_every=check_in_every, few_shot=few_shot, stop=stop, agree_k=agree_k,
        forced_answer=forced_answer, redirect_loops=redirect_loops, no_repeat_ngram=no_repeat_ngram, kv=kv,
    )
    settings.validate()  # before loading the model: bad arguments fail fast
    weights = cli_setting(weights, dtype)
    names = _protocol_names(make_protocol(settings, problem), workers)
    view_of = _resolve_worker(show_view, names) if show_view is not None else None
    if save is not None and save.is_dir():
        raise InvalidRequestError(f"--save {save}: is a directory; give a file name")
    use_plain = _use_plain(plain)
    _set_threads(threads)

    from ..loader import load_model

    err = Console(stderr=True, highlight=False)
    if use_plain:
        print(f"loading {model} ...", file=sys.stderr, flush=True)
        loaded = load_model(model, dtype=weights, device=device or _default_device())
    else:
        with err.status(f"loading {model} ..."):
            loaded = load_model(model, dtype=weights, device=device or _default_device())
    load_s = time.perf_counter() - started

    state = render.RunState(names, max_passes=max_passes)
    result = None
    try:
        result = _stream(loaded, problem, settings, state, use_plain, ResultEvent)
    except KeyboardInterrupt:
        _report_interrupted(state, use_plain)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    assert result is not None

    result.timings["load_s"] = load_s
    result.timings["wall_s"] = time.perf_counter() - started
    parts = render.transcript_parts(result.history, result.unfinished)
    rows = render.summary_lines(
        result.answer, result.forced, result.passes, max_passes, result.stop_reason, result.timings
    )
    header = [("problem", problem), ("model", loaded.name)]
    _print_report(use_plain, names, parts, rows, header=header)
    if view_of is not None and result.views:
        _print_view(use_plain, names[view_of], result.views[view_of])
    if save is not None:
        _save(save, result)
        err.print(f"saved to {save}", soft_wrap=True)


def _stream(loaded: Any, problem: str, settings: Any, state: render.RunState, plain: bool, result_type: type) -> Any:
    """Consume solve_stream, keeping ``state`` current and the display updated; return the result."""
    from ..solve import solve_stream

    title = f"{loaded.name} · {settings.workers} workers · {settings.layout} · budget {settings.max_passes} passes"
    if not plain:
        title += " · " + " ".join(problem.split())
    if plain:
        printer = render.PlainPrinter(state, sys.stdout)
        print(f"# {title}", flush=True)
        batch: list[Any] = []
        for ev in solve_stream(loaded, problem, settings):
            if isinstance(ev, result_type):
                printer.handle(batch)
                printer.finish()
                return ev.result
            state.update(ev)
            batch.append(ev)
            if len(batch) >= max(settings.workers, 1):
                printer.handle(batch)
                batch = []
        printer.finish()
        return None
    view = render.LiveView(state, title=title)
    console = Console(highlight=False)
    with Live(view, console=console, refresh_per_second=8, transient=True, vertical_overflow="crop"):
        for ev in solve_stream(loaded, problem, settings):
            if isinstance(ev, result_type):
                return ev.result
            state.update(ev)
    return None


def _report_interrupted(state: render.RunState, plain: bool) -> None:
    if plain:
        print(file=sys.stdout)
    parts = render.transcript_parts(state.history, state.unfinished())
    rows = [
        ("interrupted", f"after {state.passes} passes, {state.elapsed():.1f} s"),
        ("answer so far", state.answer if state.answer is not None else "(none)"),
    ]
    _print_report(plain, state.names, parts, rows)


def _save(path: Path, result: Any) -> None:
    data = {"format": SAVE_FORMAT, "version": 1, **result.to_json()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as error:
        raise InvalidRequestError(f"could not write {path}: {error.strerror or error}") from None


# ---------------------------------------------------------------------------- show
_REQUIRED = ("problem", "names", "answer", "forced", "passes", "history", "workers")


def load_saved(path: Path) -> dict:
    """Read a run written by ``hogwild solve --save``; a clear error for anything else."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidRequestError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidRequestError(f"{path}: is a directory, not a saved run") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidRequestError(f"{path}: cannot read it ({error})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidRequestError(
            f"{path} is not a saved hogwild run: invalid JSON at line {error.lineno}, column {error.colno}"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequestError(f"{path} is not a saved hogwild run: expected a JSON object")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise InvalidRequestError(f"{path} is not a saved hogwild run: missing {', '.join(missing)}")
    try:
        data["history"] = [(int(w), str(t)) for w, t in data["history"]]
        data["unfinished"] = [(int(w), str(t)) for w, t in data.get("unfinished") or []]
        data["names"] = [str(n) for n in data["names"]]
        data["passes"] = int(data["passes"])
    except (TypeError, ValueError):
        raise InvalidRequestError(f"{path} is not a saved hogwild run: malformed history or names") from None
    if not data["unfinished"] and isinstance(data["workers"], list):
        data["unfinished"] = render.unfinished_from_texts([str(t) for t in data["workers"]], data["history"])
    return data


@app.command()
def show(
    file: Path = typer.Argument(..., help="A JSON file written by 'hogwild solve --save'."),
    show_view: Optional[str] = typer.Option(None, "--show-view", help="Also print what worker W saw at the end."),
    plain: Optional[bool] = typer.Option(None, "--plain/--rich", help="Plain text (default when piped)."),
    analytics: bool = typer.Option(False, "--analytics", help="Also print the teamwork analytics of the run."),
) -> None:
    """Replay a saved run: its problem, transcript and answer (and, with --analytics, how
    the workers worked together: docs/eval.md, "Teamwork")."""
    data = load_saved(file)
    names = data["names"]
    view_of = _resolve_worker(show_view, names) if show_view is not None else None
    settings = data.get("settings") or {}
    header = [("problem", str(data["problem"])), ("model", str(data.get("model", "?")))]
    if settings:
        header.append((
            "settings",
            f"{settings.get('workers', len(names))} workers, layout {settings.get('layout', '?')}, "
            f"budget {settings.get('max_passes', '?')} passes, temperature {settings.get('temperature', '?')}",
        ))
    parts = render.transcript_parts(data["history"], data["unfinished"])
    rows = render.summary_lines(
        data["answer"], bool(data["forced"]), data["passes"], settings.get("max_passes"),
        str(data.get("stop_reason", "?")), data.get("timings") or {},
    )
    use_plain = _use_plain(plain)
    _print_report(use_plain, names, parts, rows, header=header)
    if view_of is not None:
        views = data.get("views") or []
        if view_of >= len(views):
            raise InvalidRequestError(f"{file} holds no view for {names[view_of]}")
        _print_view(use_plain, names[view_of], str(views[view_of]))
    if analytics:
        _print_analytics(use_plain, data, settings)


def _print_analytics(plain: bool, data: dict, settings: dict) -> None:
    from ..analytics import from_saved, summary_rows

    layout = LAYOUTS.get(str(settings.get("layout", "combined")))
    rows = summary_rows(from_saved(data, steps=layout.steps if layout is not None else True))
    if plain:
        print("===== teamwork analytics =====\n" + render.plain_summary(rows), flush=True)
        return
    console = Console(highlight=False)
    console.rule("Teamwork analytics")
    console.print(render.rich_summary(rows))
