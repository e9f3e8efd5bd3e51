"""The web page of ``hogwild serve`` (``src/hogwild/serve/static/index.html``) in headless Chromium.

Chromium is Debian's ``chromium`` package (``apt-get install -y chromium``), driven by the
``playwright`` Python package through ``executable_path``; Playwright never downloads a browser
here. Without either, every test skips and says what to install.

- ``test_page_*_fake``: the page against a small scripted server in this module that speaks the
  streaming contract (docs/serve.md) deterministically: lanes, header and check-in highlighting,
  the shared history, the answer, errors (HTTP and inside the stream) and Stop closing the
  connection.
- ``test_page_real_server``: a real ``hogwild serve`` subprocess on 127.0.0.1 with the default
  model: one run fills two lanes and ends with an answer; Stop ends a second run.

Set ``HOGWILD_WEB_SCREENSHOT=docs/serve-page.png`` to save a screenshot of the page after the
real run (that is how ``docs/serve-page.png`` is made).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "src" / "hogwild" / "serve" / "static" / "index.html"
LAPTOP = {"width": 1366, "height": 768}


def _chromium() -> str | None:
    found = os.environ.get("HOGWILD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return found if found and Path(found).exists() else None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the web page test needs Playwright: pip install playwright "
                    "(or make install; no browser download: it drives Debian's chromium)")
    exe = _chromium()
    if exe is None:
        pytest.skip("the web page test needs a Chromium browser: apt-get install -y chromium "
                    "(or point HOGWILD_CHROMIUM at one)")
    with sync_playwright() as pw:
        try:
            chrome = pw.chromium.launch(executable_path=exe, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        except PlaywrightError as exc:  # a broken browser install: say so rather than fail obscurely
            pytest.skip(f"could not start {exe} through Playwright: {exc}")
        yield chrome
        chrome.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=LAPTOP)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)
    pg.problems = problems
    yield pg
    context.close()


def _lane_text(pg, i: int) -> str:
    return pg.locator(f'.lane[data-worker="{i}"] .lane-text').inner_text()


def _wait_state(pg, state: str, timeout_ms: int) -> None:
    pg.wait_for_selector(f'#status[data-state="{state}"]', timeout=timeout_ms)


# ---- a scripted server speaking the streaming contract ------------------------------------------


def _chunk(choices, **extra) -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
            "model": "fake-model", "choices": choices, **extra}


def _piece(i: int, text: str, **extra) -> dict:
    return _chunk([{"index": i, "delta": {"reasoning_content": text}, "finish_reason": None}], **extra)


def _header(i: int, text: str, pass_: int, check_in: bool = False) -> dict:
    hw = {"event": "header", "worker": i, "pass": pass_, "text": text, "check_in": check_in}
    return _piece(i, text, hogwild=hw)


def _step(i: int, step: int, pass_: int, text: str) -> dict:
    return _chunk([], hogwild={"event": "step", "worker": i, "step": step, "pass": pass_, "text": text})


CHECK_IN = " Quick check: am I doing redundant work? (yes/no):"

SCRIPT = [
    _chunk([{"index": 0, "delta": {"role": "assistant", "reasoning_content": ""}, "finish_reason": None}]),
    _chunk([{"index": 1, "delta": {"role": "assistant", "reasoning_content": ""}, "finish_reason": None}]),
    _header(0, "**Alice [1]:**", 0),
    _header(1, "**Bob [2]:**", 0),
    _piece(0, " I add"), _piece(1, " I double"),
    _piece(0, " 3 + 5 = 8.\n\n"), _piece(1, " 8 * 2 = 16.\n\n"),
    _step(0, 1, 4, "**Alice [1]:** I add 3 + 5 = 8."),
    _header(1, CHECK_IN, 5, check_in=True),
    _piece(1, " no"),
    _step(1, 2, 6, "**Bob [2]:** I double 8 * 2 = 16."),
    _header(0, "**Alice [3]:**", 7),
    _piece(0, " Together 8 + 16 = \\boxed{24}"),
    _chunk([{"index": 0, "delta": {"content": "24"}, "finish_reason": "stop"}]),
    _chunk([{"index": 1, "delta": {"content": "24"}, "finish_reason": "stop"}]),
    _chunk([], hogwild={"event": "done", "answer": "24", "stop_reason": "answer", "passes": 9}),
    _chunk([], usage={"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}),
]


class _Fake(BaseHTTPRequestHandler):
    server: _FakeServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/":
            data = PAGE.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        else:
            self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"body": body, "auth": self.headers.get("Authorization")})
        problem = body["messages"][-1]["content"]
        if problem == "bad":
            self._json(400, {"error": {"message": "max_tokens is beyond the cap of 4096",
                                       "type": "invalid_request_error", "param": "max_tokens"}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            if problem == "slow":
                self._send(SCRIPT[0])
                for k in range(10_000):
                    self._send(_piece(0, f" w{k}"))
                    time.sleep(0.03)
                return
            if problem == "broken":
                for event in SCRIPT[:4]:
                    self._send(event)
                self._send({"error": {"message": "the batch failed: out of memory", "type": "server_error"}})
                return
            for k, event in enumerate(SCRIPT):
                self._send(event, split=(k == 5))
                time.sleep(0.01)
            self.wfile.write(b": a comment line, ignored\n\ndata: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnected.set()

    def _send(self, event: dict, split: bool = False) -> None:
        data = f"data: {json.dumps(event)}\n\n".encode()
        if split:  # one event across two network writes: the page must buffer
            self.wfile.write(data[:20])
            self.wfile.flush()
            time.sleep(0.05)
            data = data[20:]
        self.wfile.write(data)
        self.wfile.flush()


class _FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Fake)
        self.requests: list[dict] = []
        self.disconnected = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


@pytest.fixture
def fake():
    server = _FakeServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_page_renders_the_stream_fake(page, fake):
    page.goto(fake.url)
    page.wait_for_function("document.getElementById('model').textContent.includes('fake-model')")
    page.fill("#problem", "What is 3 + 5 doubled, plus 8?")
    page.select_option("#workers", "2")
    page.select_option("#layout", "interleaved")
    page.fill("#budget", "64")
    page.fill("#apikey", "sk-test")
    page.click("#solve")
    _wait_state(page, "done", 10_000)

    assert fake.requests[-1] == {
        "auth": "Bearer sk-test",
        "body": {"model": "fake-model", "messages": [{"role": "user", "content": "What is 3 + 5 doubled, plus 8?"}],
                 "stream": True, "max_tokens": 64, "n": 2,
                 "hogwild": {"workers": 2, "layout": "interleaved"}},
    }
    assert page.locator(".lane .lane-name").all_inner_texts() == ["Alice", "Bob"]
    assert _lane_text(page, 0) == "**Alice [1]:** I add 3 + 5 = 8.\n\n**Alice [3]:** Together 8 + 16 = \\boxed{24}"
    assert _lane_text(page, 1) == "**Bob [2]:** I double 8 * 2 = 16.\n\n" + CHECK_IN + " no"
    # headers are marked; the check-in is highlighted, in Bob's lane only
    assert page.locator('.lane[data-worker="0"] .hdr').all_inner_texts() == ["**Alice [1]:**", "**Alice [3]:**"]
    assert page.locator('.lane[data-worker="0"] .checkin').count() == 0
    assert page.locator('.lane[data-worker="1"] .checkin').all_inner_texts() == [CHECK_IN]
    # the shared history, in completion order, with the worker's name
    steps = page.locator("#history li")
    assert steps.count() == 2
    assert steps.nth(0).locator(".step-who").inner_text() == "Alice [1]"
    assert steps.nth(1).locator(".step-who").inner_text() == "Bob [2]"
    assert "I double 8 * 2 = 16." in steps.nth(1).locator(".step-text").inner_text()
    # the answer, per lane and for the team
    assert page.locator("#answer").inner_text() == "24"
    assert page.get_attribute("#answer-panel", "data-state") == "answered"
    assert "9 passes" in page.locator("#answer-meta").inner_text()
    assert "30 generated tokens" in page.locator("#answer-meta").inner_text()
    assert [page.get_attribute(f'.lane[data-worker="{i}"]', "data-state") for i in (0, 1)] == ["stop", "stop"]
    assert page.locator('.lane[data-worker="1"] .lane-answer').inner_text().endswith("24")
    assert page.is_hidden("#error")
    assert page.is_enabled("#solve") and page.is_disabled("#stop")
    assert page.problems == []


def test_page_shows_errors_fake(page, fake):
    page.goto(fake.url)
    page.wait_for_function("document.getElementById('model').textContent.includes('fake-model')")
    page.fill("#problem", "bad")
    page.click("#solve")
    _wait_state(page, "error", 10_000)
    assert "HTTP 400: max_tokens is beyond the cap of 4096" in page.inner_text("#error")

    page.fill("#problem", "broken")
    page.click("#solve")
    _wait_state(page, "error", 10_000)
    error = page.inner_text("#error")
    assert "the batch failed: out of memory" in error and "HTTP 400" not in error
    assert _lane_text(page, 0) == "**Alice [1]:**"
    assert page.get_attribute('.lane[data-worker="0"]', "data-state") == "stopped"
    assert page.is_enabled("#solve") and page.is_disabled("#stop")


def test_page_stop_closes_the_stream_fake(page, fake):
    page.goto(fake.url)
    page.fill("#problem", "slow")
    page.click("#solve")
    page.wait_for_function("document.querySelector('.lane[data-worker=\"0\"] .lane-text').textContent.length > 20")
    page.click("#stop")
    _wait_state(page, "stopped", 5_000)
    assert fake.disconnected.wait(5), "the server never saw the client go away"
    frozen = _lane_text(page, 0)
    time.sleep(0.3)
    assert _lane_text(page, 0) == frozen
    assert page.get_attribute('.lane[data-worker="0"]', "data-state") == "stopped"
    assert page.is_hidden("#error")
    assert page.get_attribute("#answer-panel", "data-state") == "waiting"
    assert page.is_enabled("#solve") and page.is_disabled("#stop")


# ---- the real server ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def real_server(tmp_path):
    port = _free_port()
    log_path = tmp_path / "serve.log"
    cmd = [sys.executable, "-c", "from hogwild.cli import main; main()", "serve",
           "--host", "127.0.0.1", "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k != "HOGWILD_API_KEY"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"

    def tail() -> str:
        return log_path.read_text()[-3000:]

    try:
        deadline = time.monotonic() + 40
        while True:
            if proc.poll() is not None:
                pytest.fail(f"hogwild serve exited with {proc.returncode}:\n{tail()}")
            try:
                if _get(url + "health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"hogwild serve was not healthy within 40 s:\n{tail()}")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.slow
def test_page_real_server(browser, real_server):
    context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(real_server)
        page.wait_for_function("document.getElementById('model').textContent.includes('smollm2')")
        page.fill("#problem", "Alice has 3 apples and buys 5 more. Bob has twice as many apples as Alice. "
                              "How many apples do they have together?")
        page.select_option("#workers", "2")
        page.select_option("#layout", "combined")
        page.fill("#budget", "96")
        page.click("#solve")
        _wait_state(page, "done", 30_000)
        assert page.is_hidden("#error"), page.inner_text("#error")
        assert page.locator(".lane").count() == 2
        # the problem's people are Alice and Bob, so the workers are not (the stream's
        # first chunk names them, and the lanes carry those names from the start)
        assert page.locator(".lane .lane-name").all_inner_texts() == ["Carol", "Dave"]
        for i, name in enumerate(["Carol", "Dave"]):
            text = _lane_text(page, i)
            assert len(text) > 40 and name in text, text
            assert page.get_attribute(f'.lane[data-worker="{i}"]', "data-state") in ("stop", "length")
        assert page.locator(".lane .hdr").count() >= 2          # the step headers are marked
        assert page.get_attribute("#answer-panel", "data-state") == "answered"
        assert page.inner_text("#answer").strip()
        shot = os.environ.get("HOGWILD_WEB_SCREENSHOT")
        if shot:
            page.screenshot(path=str(ROOT / shot))

        # a second, long run: Stop ends it, the page stays usable
        page.fill("#budget", "2000")
        page.click("#solve")
        page.wait_for_function(
            "[0, 1].every(i => document.querySelector(`.lane[data-worker=\"${i}\"] .lane-text`)"
            ".textContent.length > 30)", timeout=20_000)
        page.click("#stop")
        _wait_state(page, "stopped", 5_000)
        frozen = [_lane_text(page, i) for i in (0, 1)]
        time.sleep(0.5)
        assert [_lane_text(page, i) for i in (0, 1)] == frozen
        assert page.get_attribute("#answer-panel", "data-state") == "waiting" and page.is_hidden("#error")
        assert page.is_enabled("#solve") and page.is_disabled("#stop")
        # the server cancels a run whose client went away (its /health reports the batch's load)
        deadline = time.monotonic() + 10
        while True:
            status, body = _get(real_server + "health")
            assert status == 200, body
            runs = json.loads(body).get("load", {}).get("runs", 0)
            if runs == 0:
                break
            assert time.monotonic() < deadline, f"the stopped run is still in the batch: {body}"
            time.sleep(0.2)
        assert errors == []
    finally:
        context.close()
