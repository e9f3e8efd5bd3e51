"""The ``hogwild`` command line: models, solve (plain), save/show, errors, Ctrl-C, rendering.

One real solve on the default model (2 workers, 8 passes, no few-shot, no forced answer:
the protocol tests cover that path) is shared by the
tests that need model output; everything else runs without the model.
"""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

import hogwild.loader as loading
from hogwild.cli import render
from hogwild.cli import app
from hogwild.core.events import HeaderEvent, StepEvent, StopEvent, TokenEvent

PROBLEM = "What is 12 + 30?"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def fast_loader(monkeypatch, request):
    """The CLI's load_model, answering the default model from the session fixture."""
    real = loading.load_model
    model = request.getfixturevalue("default_model")

    def load(name_or_path="smollm2-135m", dtype="float32", device="cpu", optimize=True):
        if name_or_path == "smollm2-135m" and dtype == "float32" and str(device) == "cpu":
            return model
        return real(name_or_path, dtype=dtype, device=device, optimize=optimize)

    monkeypatch.setattr(loading, "load_model", load)
    return model


@pytest.fixture
def solved(fast_loader, tmp_path):
    path = tmp_path / "run.json"
    result = invoke(
        "solve", PROBLEM, "--workers", "2", "--max-passes", "8", "--plain", "--no-few-shot",
        "--no-forced-answer", "--device", "cpu", "--save", str(path), "--show-view", "Bob",
    )
    return result, path


def test_models_lists_default():
    result = invoke("models")
    assert result.exit_code == 0, result.output
    assert "smollm2-135m" in result.stdout
    assert "qwen2.5-coder-0.5b" in result.stdout


def test_solve_plain_save_and_show(solved):
    result, path = solved
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "\x1b[" not in out  # no ANSI codes in a pipe
    assert "Traceback" not in result.output
    # both workers stream lines, prefixed with their names
    assert any(line.startswith("[Alice] ") for line in out.splitlines())
    assert any(line.startswith("[Bob] ") for line in out.splitlines())
    answer_lines = [line for line in out.splitlines() if line.startswith("final answer: ")]
    assert len(answer_lines) == 1
    assert any(line.startswith("passes: ") for line in out.splitlines())
    # --show-view prints Bob's view: the prompt with the problem, and Bob's own step
    view = out.split("===== view of Bob", 1)[1]
    assert PROBLEM in view and "Bob" in view

    data = json.loads(path.read_text())
    assert data["problem"] == PROBLEM
    assert data["names"][:2] == ["Alice", "Bob"]
    assert len(data["workers"]) == 2 and all(data["workers"])
    assert data["passes"] <= 8
    assert {"load_s", "wall_s", "total_s"} <= set(data["timings"])
    assert len(data["views"]) == 2

    shown = invoke("show", str(path), "--plain")
    assert shown.exit_code == 0, shown.output
    assert PROBLEM in shown.stdout
    assert answer_lines[0] in shown.stdout.splitlines()
    # the transcript is the same one solve printed
    transcript = out.split("===== transcript", 1)[1].split("===== result =====")[0]
    assert transcript in shown.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["solve", ""], "problem is empty"),
        (["solve", "   "], "problem is empty"),
        (["solve", PROBLEM, "--workers", "0"], "at least one worker"),
        (["solve", PROBLEM, "--layout", "zigzag"], "unknown layout 'zigzag'"),
        (["solve", PROBLEM, "--stop", "never"], "stop must be"),
    ],
)
def test_bad_arguments_fail_before_loading(args, message, monkeypatch):
    def no_load(*a, **k):
        raise AssertionError("the model must not be loaded for bad arguments")

    monkeypatch.setattr(loading, "load_model", no_load)
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_unknown_model_path(tmp_path):
    result = invoke("solve", PROBLEM, "--model", str(tmp_path / "missing.gguf"), "--plain")
    assert result.exit_code == 2
    assert "error: " in result.stderr and "missing.gguf" in result.stderr
    assert "Traceback" not in result.output


def test_prompt_longer_than_context(fast_loader):
    problem = "Add up: " + " + ".join(["7"] * fast_loader.context_length)
    result = invoke("solve", problem, "--plain", "--max-passes", "2", "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert "\nerror: " in result.stderr and "context" in result.stderr
    assert "Traceback" not in result.output


def test_show_missing_and_malformed(tmp_path):
    result = invoke("show", str(tmp_path / "nope.json"))
    assert result.exit_code == 2 and "no such file" in result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"problem": ')
    result = invoke("show", str(bad))
    assert result.exit_code == 2 and "invalid JSON" in result.stderr
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    result = invoke("show", str(other))
    assert result.exit_code == 2 and "not a saved hogwild run" in result.stderr
    assert "Traceback" not in result.output


def test_show_view_of_unknown_worker(monkeypatch):
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("loaded"))
    result = invoke("solve", PROBLEM, "--workers", "2", "--show-view", "Zed")
    assert result.exit_code == 2 and "no such worker" in result.stderr


class _FakeLoaded:
    name = "fake"


def test_ctrl_c_prints_partial_work_and_exits_130(monkeypatch):
    def stream(loaded, problem, settings, snapshot_at=()):
        yield HeaderEvent(1, 0, "**Alice [1]:** ")
        yield HeaderEvent(1, 1, "**Bob [1]:** ")
        yield TokenEvent(1, 0, 1, "Half done")
        yield TokenEvent(1, 1, 2, "Checking")
        raise KeyboardInterrupt

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: _FakeLoaded())
    monkeypatch.setattr("hogwild.solve.solve_stream", stream)
    result = invoke("solve", PROBLEM, "--plain", "--device", "cpu")
    assert result.exit_code == 130
    assert "**Alice [1]:** Half done" in result.stdout
    assert "**Bob [1]:** Checking" in result.stdout
    assert "interrupted: after 1 passes" in result.stdout


def _events():
    yield HeaderEvent(1, 0, "**Alice [1]:** ")
    yield HeaderEvent(1, 1, "**Bob [1]:** ")
    for p, word in enumerate("We split the work.\n\nI take part one".split(" "), start=1):
        yield TokenEvent(p, 0, 0, word + " ")
        yield TokenEvent(p, 1, 0, "x" * 50 + " ")
    yield StepEvent(9, 0, 1, "**Alice [1]:** We split the work.\n\n")
    yield HeaderEvent(9, 0, "**Alice [2]:** ")
    yield TokenEvent(10, 0, 0, "so \\boxed{42}")
    yield StopEvent(10, "budget")


def test_plain_printer_lines_and_state():
    state = render.RunState(["Alice", "Bob"], max_passes=10)
    out = io.StringIO()
    printer = render.PlainPrinter(state, out)
    for ev in _events():
        state.update(ev)
        printer.handle([ev])
    lines = out.getvalue().splitlines()
    assert "[Alice] **Alice [1]:** We split the work." in lines
    assert lines[0].startswith("[Bob] **Bob [1]:** xxx")  # long lines are broken, not held back
    assert all(len(line) <= render.PLAIN_WRAP + 10 for line in lines)
    assert "-- Alice finished step 1 (pass 9)" in lines
    assert lines[-1] == "-- stopped after 10 passes (budget)"
    assert state.answer == "42" and state.answer_by == 0
    assert state.history == [(0, "**Alice [1]:** We split the work.\n\n")]
    assert state.unfinished()[0] == (0, "**Alice [2]:** so \\boxed{42}")


@pytest.mark.parametrize("workers, width, height", [(1, 80, 20), (2, 100, 24), (5, 120, 30), (8, 70, 40)])
def test_live_view_fits_the_terminal(workers, width, height):
    names = [f"W{i}" for i in range(workers)]
    state = render.RunState(names, max_passes=64)
    for p in range(1, 60):
        for w in range(workers):
            state.update(TokenEvent(p, w, 0, f"word{p} " + ("\n\n" if p % 7 == 0 else "")))
    console = Console(width=width, height=height, record=True, file=io.StringIO())
    console.print(render.LiveView(state, title="demo"))
    text = console.export_text()
    lines = text.rstrip("\n").split("\n")
    assert len(lines) <= height
    assert all(len(line) <= width for line in lines)
    assert "word59" in text  # the tail of each worker's text is shown
    assert all(name in text for name in names)
    assert "pass 59/64" in lines[-1]
