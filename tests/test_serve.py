"""``hogwild serve`` end to end: real server processes on 127.0.0.1, the official ``openai``
client, raw HTTP for streams, disconnects and every bad input (docs/serve.md).

Two servers run for the whole module, both on the default model with one torch thread:
``main`` (no key, default limits, a small budget cap) and ``tight`` (an API key, one run at
a time and no queue, a small body limit, no shutdown grace), which the last test stops with
SIGTERM during a stream. Requests keep budgets small and turn the forced answer off where
it is not the point, so the module stays well under two minutes on two busy cores.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="pip install openai (the test extra: pip install -e '.[dev]')")

MODEL = "smollm2-135m"
KEY = "test-key-123"
START_TIMEOUT_S = 180
FAST = {"few_shot": False, "forced_answer": False}  # short prompts, no forced-answer passes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name: str, args: list[str], tmp: Path):
        self.name, self.port = name, _free_port()
        self.log = tmp / f"{name}.log"
        command = [sys.executable, "-c", "from hogwild.cli import main; main()", "serve", "--model", MODEL,
                   "--host", "127.0.0.1", "--port", str(self.port), "--threads", "1", *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(command, stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=env)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} server exited:\n{self.log.read_text()}")
            try:
                status, _, _ = request(self, "GET", "/health")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{self.name} server not ready in {START_TIMEOUT_S} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def request(server: Server, method: str, path: str, body: bytes | dict | None = None,
            headers: dict | None = None, timeout: float = 120) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        response = conn.getresponse()
        text = response.read().decode()
        return response.status, dict(response.getheaders()), text
    finally:
        conn.close()


def stream(server: Server, body: dict, headers: dict | None = None) -> list:
    """POST a streaming request; the parsed data events (the last is the string [DONE])."""
    status, _, text = request(server, "POST", "/v1/chat/completions", {**body, "stream": True}, headers)
    assert status == 200, text
    events = []
    for block in text.split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln.startswith("data: ")]
        for line in lines:
            payload = line[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def metric(server: Server, name: str) -> float:
    status, _, text = request(server, "GET", "/metrics")
    assert status == 200
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    assert found, f"{name} not in /metrics"
    return total


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    main = Server("main", ["--workers", "2", "--max-tokens-cap", "256", "--default-max-tokens", "8"], tmp)
    tight = Server("tight", ["--api-key", KEY, "--max-running", "1", "--max-queue", "0", "--max-body-bytes", "2048",
                             "--max-tokens-cap", "400", "--shutdown-grace", "0"], tmp)
    try:
        main.wait_ready()
        tight.wait_ready()
        yield {"main": main, "tight": tight}
    finally:
        main.stop()
        tight.stop()


@pytest.fixture(scope="module")
def main(servers):
    return servers["main"]


@pytest.fixture(scope="module")
def tight(servers):
    return servers["tight"]


def client(server: Server, key: str = "none"):
    return openai.OpenAI(base_url=server.base + "/v1", api_key=key, max_retries=0, timeout=120)


def chat_body(problem: str, **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": problem}], "max_tokens": 10,
            "hogwild": dict(FAST), **extra}


# ---------------------------------------------------------------------- the API with the official client

def test_health_models_and_page(main):
    status, _, text = request(main, "GET", "/health")
    assert status == 200 and json.loads(text)["status"] == "ok"
    models = client(main).models.list()
    assert [m.id for m in models.data] == [MODEL]
    status, _, _ = request(main, "GET", "/")
    assert status in (200, 404)  # the page is its own package file (tests/test_web.py)


def test_chat_non_streaming(main):
    out = client(main).chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "What is 6 times 7?"}],
        max_tokens=10, extra_body={"hogwild": FAST})
    assert out.object == "chat.completion" and out.model == MODEL
    assert [c.index for c in out.choices] == [0, 1]  # default team size: two workers
    lanes = [c.message.reasoning_content for c in out.choices]
    assert lanes[0].startswith("**Alice [1]:**") and lanes[1].startswith("**Bob [1]:**")
    info = out.hogwild
    assert info["passes"] == 10 and info["stop_reason"] == "budget" and info["workers"] == ["Alice", "Bob"]
    assert all(c.message.content == (info["answer"] or "") for c in out.choices)
    assert all(c.finish_reason == "length" for c in out.choices)
    assert out.usage.prompt_tokens > 50
    assert out.usage.completion_tokens == 20  # one token per worker per pass
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_stream_lanes_equal_non_streaming(main):
    body = chat_body("A shop sells pens at 3 dollars each. How much do 4 pens cost?", max_tokens=14)
    full = client(main).chat.completions.create(**{k: v for k, v in body.items() if k != "hogwild"},
                                                extra_body={"hogwild": body["hogwild"]})
    chunks = list(client(main).chat.completions.create(
        **{k: v for k, v in body.items() if k != "hogwild"}, extra_body={"hogwild": body["hogwild"]},
        stream=True, stream_options={"include_usage": True}))
    # the first chunks open the choices in order 0..n-1 (the client's accumulator needs that)
    assert [c.choices[0].index for c in chunks[:2]] == [0, 1]
    assert all(c.choices[0].delta.role == "assistant" for c in chunks[:2])
    lanes, content, finish, events = ["", ""], ["", ""], [None, None], []
    for c in chunks:
        assert c.id == chunks[0].id and c.object == "chat.completion.chunk"
        for choice in c.choices:
            lanes[choice.index] += getattr(choice.delta, "reasoning_content", None) or ""
            content[choice.index] += choice.delta.content or ""
            finish[choice.index] = choice.finish_reason or finish[choice.index]
        if getattr(c, "hogwild", None):
            events.append(c.hogwild)
    assert lanes == [c.message.reasoning_content for c in full.choices]
    assert content == [c.message.content for c in full.choices]
    assert finish == [c.finish_reason for c in full.choices]
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == full.usage.model_dump()
    done = [e for e in events if e["event"] == "done"]
    assert len(done) == 1 and done[0]["answer"] == full.hogwild["answer"] and done[0]["passes"] == 14
    headers = [e for e in events if e["event"] == "header"]
    assert {e["worker"] for e in headers} == {0, 1} and all(e["check_in"] is False for e in headers)
    steps = [e for e in events if e["event"] == "step"]
    assert [(s["worker"], s["text"]) for s in steps] == [(h["worker"], h["text"]) for h in full.hogwild["history"]]


def test_extra_body_settings_and_stop_strings(main):
    out = client(main).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is 10 minus 3?"}], n=2, max_tokens=6,
        extra_body={"hogwild": {"workers": 3, "layout": "interleaved", "names": ["Ann", "Ben", "Cy"],
                                "check_in_every": 4, "stop": "none", "no_repeat_ngram": 6, **FAST}})
    assert len(out.choices) == 3  # hogwild.workers overrides n
    assert [c.message.reasoning_content.split("]")[0] for c in out.choices] == ["**Ann [1", "**Ben [1", "**Cy [1"]
    assert out.hogwild["workers"] == ["Ann", "Ben", "Cy"] and out.hogwild["passes"] == 6
    # OpenAI's stop strings end the run once a worker writes one after its opening
    out = client(main).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is 10 minus 3?"}], max_tokens=40, stop=[" "],
        extra_body={"hogwild": FAST})
    assert out.hogwild["stop_reason"] == "stop-string" and out.hogwild["passes"] < 40
    assert all(c.finish_reason == "stop" for c in out.choices)


def test_completions_endpoint(main):
    out = client(main).completions.create(model=MODEL, prompt="What is 2 plus 2?", max_tokens=6,
                                          extra_body={"hogwild": {**FAST, "workers": 1}})
    assert out.object == "text_completion" and len(out.choices) == 1
    choice = out.choices[0]
    assert choice.text == (out.hogwild["answer"] or "") and choice.reasoning_content.startswith("**Alice [1]:**")
    assert out.usage.completion_tokens == 6
    chunks = list(client(main).completions.create(model=MODEL, prompt="What is 2 plus 2?", max_tokens=6, stream=True,
                                                  extra_body={"hogwild": {**FAST, "workers": 1}}))
    assert all(c.object == "text_completion" for c in chunks)
    lane = "".join(getattr(ch, "reasoning_content", None) or "" for c in chunks for ch in c.choices)
    assert lane == choice.reasoning_content
    assert [ch.text for c in chunks for ch in c.choices if ch.finish_reason] == [choice.text]


# ---------------------------------------------------------------------- concurrency, cancellation, limits

def test_sixteen_concurrent_streams(main):
    problems = ["What is 3 + 4?", "What is 9 - 2?", "Name a prime above 10.", "What is 5 * 5?"]
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results[i] = stream(main, chat_body(problems[i % 4], max_tokens=8))
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors and len(results) == 16
    lanes_of: dict[int, list] = {}
    for i, events in results.items():
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        assert len({c["id"] for c in chunks}) == 1  # one stream, one id
        lanes = ["", ""]
        for c in chunks:
            for choice in c["choices"]:
                lanes[choice["index"]] += choice["delta"].get("reasoning_content", "")
        assert lanes[0].startswith("**Alice [1]:**") and lanes[1].startswith("**Bob [1]:**")
        assert chunks[0]["hogwild"] == {"event": "start", "workers": ["Alice", "Bob"]}
        assert chunks[-1]["hogwild"]["event"] == "done" and chunks[-1]["hogwild"]["passes"] == 8
        lanes_of.setdefault(i % 4, []).append(lanes)
    for group in lanes_of.values():  # greedy and batch-invariant: same problem, same lanes
        assert all(lanes == group[0] for lanes in group)
    assert metric(main, "hogwild_runs_running") == 0


def test_disconnect_cancels_the_run(main):
    before = metric(main, "hogwild_runs_finished_total")
    conn = http.client.HTTPConnection("127.0.0.1", main.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(chat_body("Count to one hundred.", max_tokens=250,
                                                                           stream=True)),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    seen = b""
    while b"\"pass\": 0" not in seen:
        piece = response.read1(4096)
        assert piece, seen
        seen += piece
    assert metric(main, "hogwild_batch_runs") == 1
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if metric(main, "hogwild_batch_runs") == 0 and metric(main, "hogwild_runs_running") == 0:
            break
        time.sleep(0.1)
    assert metric(main, "hogwild_batch_runs") == 0 and metric(main, "hogwild_runs_running") == 0
    assert metric(main, "hogwild_runs_finished_total") == before + 1
    status, _, text = request(main, "GET", "/metrics")
    assert 'hogwild_runs_finished_total{how="disconnect"} 1.0' in text
    assert metric(main, "hogwild_passes_total") > 0 and metric(main, "hogwild_kv_bytes_allocated") > 0


def test_queue_full_is_429_and_auth(tight):
    auth = {"Authorization": f"Bearer {KEY}"}
    assert request(tight, "GET", "/v1/models")[0] == 401
    with pytest.raises(openai.AuthenticationError):
        client(tight, "wrong").models.list()
    assert client(tight, KEY).models.list().data[0].id == MODEL
    # one run at a time and no queue: a second request while the first streams is refused
    conn = http.client.HTTPConnection("127.0.0.1", tight.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(chat_body("Count to fifty.", max_tokens=300,
                                                                           stream=True)),
                 headers={"Content-Type": "application/json", **auth})
    response = conn.getresponse()
    assert response.status == 200
    response.read1(100)
    status, _, text = request(tight, "POST", "/v1/chat/completions", chat_body("Hi?"), auth)
    assert status == 429 and json.loads(text)["error"]["code"] == "queue_full"
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    deadline = time.monotonic() + 20
    while metric(tight, "hogwild_runs_running") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    out = client(tight, KEY).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi?"}],
                                                     max_tokens=3, extra_body={"hogwild": FAST})
    assert len(out.choices) == 2


LONG = "word " * 9000

BAD_INPUTS = [
    # (name, body, status, code, param)
    ("malformed json", b'{"messages": [', 400, "invalid_json", None),
    ("not an object", b"[1, 2]", 400, "invalid_json", None),
    ("wrong type max_tokens", {"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}, 400,
     "invalid_type", "max_tokens"),
    ("wrong type messages", {"messages": "hello"}, 400, "invalid_type", "messages"),
    ("missing messages", {"model": MODEL}, 400, "missing_field", "messages"),
    ("empty messages", {"messages": []}, 400, "empty_messages", "messages"),
    ("empty user message", {"messages": [{"role": "user", "content": "  "}]}, 400, "empty_messages", "messages"),
    ("last message not user", {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
     400, "invalid_value", "messages"),
    ("unknown role", {"messages": [{"role": "wizard", "content": "a"}]}, 400, "invalid_value", "messages.0.role"),
    ("unknown model", {"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}, 404, "model_not_found",
     "model"),
    ("prompt longer than the context", {"messages": [{"role": "user", "content": LONG}]}, 400,
     "context_length_exceeded", "messages"),
    ("max_tokens zero", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "invalid_value",
     "max_tokens"),
    ("max_tokens negative", {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -5}, 400,
     "invalid_value", "max_completion_tokens"),
    ("max_tokens beyond cap", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 257}, 400,
     "invalid_value", "max_tokens"),
    ("n zero", {"messages": [{"role": "user", "content": "x"}], "n": 0}, 400, "invalid_value", "n"),
    ("n too large", {"messages": [{"role": "user", "content": "x"}], "n": 9}, 400, "invalid_value", "n"),
    ("workers too large", {"messages": [{"role": "user", "content": "x"}], "hogwild": {"workers": 99}}, 400,
     "invalid_value", "hogwild.workers"),
    ("unknown extension field", {"messages": [{"role": "user", "content": "x"}], "hogwild": {"wokers": 2}}, 400,
     "unknown_field", "hogwild.wokers"),
    ("bad layout", {"messages": [{"role": "user", "content": "x"}], "hogwild": {"layout": "spiral"}}, 400,
     "invalid_value", "hogwild.layout"),
    ("n-gram of one", {"messages": [{"role": "user", "content": "x"}], "hogwild": {"no_repeat_ngram": 1}}, 400,
     "invalid_value", "hogwild.no_repeat_ngram"),
    ("bad temperature", {"messages": [{"role": "user", "content": "x"}], "temperature": 7}, 400, "invalid_value",
     "temperature"),
    ("empty prompt", {"prompt": ""}, 400, "empty_prompt", "prompt"),
]


@pytest.mark.parametrize("name,body,status,code,param", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input(main, name, body, status, code, param):
    path = "/v1/completions" if isinstance(body, dict) and "prompt" in body else "/v1/chat/completions"
    got, headers, text = request(main, "POST", path, body)
    assert got == status, text
    assert headers.get("content-type", "").startswith("application/json")
    error = json.loads(text)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["param"] == param and error["message"]
    assert "Traceback" not in text


def test_bad_input_on_the_tight_server_and_still_serving(main, tight):
    auth = {"Authorization": f"Bearer {KEY}"}
    body = chat_body("x" * 4000)
    got, _, text = request(tight, "POST", "/v1/chat/completions", body, auth)
    assert got == 413 and json.loads(text)["error"]["code"] == "body_too_large"
    got, _, text = request(tight, "POST", "/v1/chat/completions", chat_body("Hi?"))
    assert got == 401 and json.loads(text)["error"]["code"] == "missing_api_key"
    got, _, text = request(tight, "POST", "/v1/chat/completions", chat_body("Hi?"), {"Authorization": "Bearer nope"})
    assert got == 401 and json.loads(text)["error"]["code"] == "invalid_api_key"
    got, _, text = request(main, "GET", "/v1/nothing-here")
    assert got == 404 and json.loads(text)["error"]["code"] == "not_found"
    assert metric(main, "hogwild_errors_total") >= len(BAD_INPUTS)
    # after all that, both still answer
    assert request(main, "GET", "/health")[0] == 200 and request(tight, "GET", "/health")[0] == 200
    out = client(main).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi?"}],
                                               max_tokens=2, extra_body={"hogwild": FAST})
    assert out.hogwild["passes"] == 2


def test_shutdown_ends_streams_cleanly(tight):
    """SIGTERM during a stream (no grace on this server): the run is cancelled, the stream
    ends with an error chunk and [DONE], and the process exits."""
    conn = http.client.HTTPConnection("127.0.0.1", tight.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(chat_body("Count to fifty.", max_tokens=300,
                                                                           stream=True)),
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    response = conn.getresponse()
    seen = response.read1(100)
    tight.proc.send_signal(signal.SIGTERM)
    seen += response.read()  # to the end of the stream
    conn.close()
    text = seen.decode()
    assert text.rstrip().endswith("data: [DONE]")
    last = [block for block in text.split("\n\n") if block.startswith("data: {")][-1]
    assert json.loads(last[len("data: "):])["error"]["code"] == "server_shutdown"
    tight.proc.wait(30)


# ---------------------------------------------------------------------- pieces without a server

def test_messages_become_one_problem():
    from hogwild.serve.schemas import Message, problem_from_messages

    messages = [Message(role="system", content="Answer in words."), Message(role="user", content="2+2?"),
                Message(role="assistant", content="four"),
                Message(role="user", content=[{"type": "text", "text": "And 3+3?"}])]
    assert problem_from_messages(messages) == (
        "Answer in words.\n\nConversation so far:\nUser: 2+2?\nAssistant: four\n\nAnd 3+3?")


def test_check_in_headers_are_recognised():
    from hogwild.protocol import Protocol
    from hogwild.serve.stream import is_check_in

    protocol = Protocol(num_workers=2)
    assert is_check_in(protocol.header_text(1, 3, check_in=True))
    assert not is_check_in(protocol.header_text(1, 3))
