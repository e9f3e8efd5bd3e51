"""Server-sent events of one run: the streaming contract of docs/serve.md, "Streaming".

Chunks are OpenAI ``chat.completion.chunk`` objects (``text_completion`` objects for
``/v1/completions``, with ``text`` for ``content``). In order:

1. one chunk per worker, 0..n-1, opening its choice (``role``, empty ``reasoning_content``);
2. every piece of text a worker writes (its tokens and the protocol's headers) as that
   choice's ``delta.reasoning_content``; a header chunk also carries ``"hogwild": {"event":
   "header", "worker", "pass", "text", "check_in"}``; a step that joins the shared history
   is a chunk with ``choices: []`` and ``"hogwild": {"event": "step", "worker", "step",
   "pass", "text"}``;
3. per worker the team's answer as ``delta.content`` with ``finish_reason``;
4. ``choices: []`` with ``"hogwild": {"event": "done", "answer", "stop_reason", "passes", ...}``;
5. the usage chunk (``choices: []``) when ``stream_options.include_usage``;
6. ``data: [DONE]``. An error ends the stream with ``{"error": {...}}`` and ``[DONE]``.
"""

from __future__ import annotations

import json
from typing import Any

from ..core.events import HeaderEvent, StepEvent, TokenEvent
from ..protocol.texts import CHECK_IN_TEXT, CHECK_IN_TEXT_SOLO
from ..solve import SolveResult
from .responses import finish_reason, hogwild_summary, usage

DONE = "data: [DONE]\n\n"
KEEP_ALIVE = ": keep-alive\n\n"


def sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def is_check_in(header: str) -> bool:
    return CHECK_IN_TEXT in header or CHECK_IN_TEXT_SOLO in header


class ChunkWriter:
    """Turns a run's events into chunks, keeping each lane's text to close it exactly."""

    def __init__(self, kind: str, request_id: str, created: int, model: str, names: list[str]):
        self.kind, self.id, self.created, self.model = kind, request_id, created, model
        self.names = list(names)  # the run's worker names (they avoid the problem's names)
        self.lanes = [""] * len(self.names)

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "choices": choices, **extra}

    def _choice(self, worker: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if self.kind == "chat":
            return {"index": worker, "delta": delta, "logprobs": None, "finish_reason": finish}
        choice = {"index": worker, "text": delta.get("content", ""), "logprobs": None, "finish_reason": finish}
        if "reasoning_content" in delta:
            choice["reasoning_content"] = delta["reasoning_content"]
        return choice

    def opening(self) -> list[dict[str, Any]]:
        """One chunk per lane; the first also says the workers' names (``hogwild.event``
        "start"), which depend on the problem."""
        delta = {"role": "assistant", "reasoning_content": ""} if self.kind == "chat" else {"reasoning_content": ""}
        out = [self.chunk([self._choice(w, dict(delta))]) for w in range(len(self.lanes))]
        out[0]["hogwild"] = {"event": "start", "workers": self.names}
        return out

    def lane(self, worker: int, text: str, **extra: Any) -> dict[str, Any]:
        self.lanes[worker] += text
        return self.chunk([self._choice(worker, {"reasoning_content": text})], **extra)

    def events(self, events: list[Any]) -> list[dict[str, Any]]:
        """Chunks for a run of events (adjacent tokens of one worker become one chunk)."""
        out: list[dict[str, Any]] = []
        pending_worker, pending = -1, ""
        for ev in events:
            if isinstance(ev, TokenEvent) and ev.worker == pending_worker:
                pending += ev.text
                continue
            if pending:
                out.append(self.lane(pending_worker, pending))
            pending_worker, pending = -1, ""
            if isinstance(ev, TokenEvent):
                pending_worker, pending = ev.worker, ev.text
            elif isinstance(ev, HeaderEvent):
                info = {"event": "header", "worker": ev.worker, "pass": ev.passes, "text": ev.text,
                        "check_in": is_check_in(ev.text)}
                out.append(self.lane(ev.worker, ev.text, hogwild=info))
            elif isinstance(ev, StepEvent):
                out.append(self.chunk([], hogwild={"event": "step", "worker": ev.worker, "step": ev.step,
                                                   "pass": ev.passes, "text": ev.text}))
        if pending:
            out.append(self.lane(pending_worker, pending))
        return out

    def closing(self, result: SolveResult, prompt_tokens: int, include_usage: bool,
                stop_hit: str | None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for w, text in enumerate(result.workers):
            lane = self.lanes[w]
            if text != lane and text.startswith(lane):  # text the incremental decoder held back
                out.append(self.lane(w, text[len(lane):]))
        answer = result.answer or ""
        finish = finish_reason(result)
        for w in range(len(self.lanes)):
            out.append(self.chunk([self._choice(w, {"content": answer}, finish)]))
        out.append(self.chunk([], hogwild={"event": "done", **hogwild_summary(result, stop_hit, history=False)}))
        if include_usage:
            out.append(self.chunk([], usage=usage(result, prompt_tokens)))
        return out
