"""The HTTP side: :func:`create_app` builds the FastAPI app of one server.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``,
``GET /health``, ``GET /metrics``, and the web page at ``/`` (``static/index.html``, read
from the package at request time). Bodies are read and validated here (not by FastAPI's
model binding) so that every bad input gets an OpenAI-style error with the right status.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import HogwildError
from .config import ServeConfig
from .errors import APIError
from .metrics import Metrics
from .responses import chat_body, completion_body
from .runner import END, Runner, RunningJob
from .schemas import Job, chat_job, completion_job, parse_json
from .stream import DONE, KEEP_ALIVE, ChunkWriter, sse

log = logging.getLogger("hogwild.serve")

#: seconds without events after which a stream sends a comment and checks the client
KEEP_ALIVE_S = 1.0


def create_app(config: ServeConfig, load: bool = True) -> FastAPI:
    """The app of one server. ``load``: load the model on startup (tests of the HTTP layer
    alone pass False; every request is then answered 503)."""
    config.validate()
    metrics = Metrics()
    runner = Runner(config, metrics)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner.loop = asyncio.get_running_loop()
        if load:
            runner.start_loading()
        yield
        await asyncio.to_thread(runner.shutdown)

    app = FastAPI(title="hogwild", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runner, app.state.metrics, app.state.config = runner, metrics, config

    def fail(error: APIError, endpoint: str = "other") -> JSONResponse:
        metrics.errors.labels(error.code).inc()
        metrics.requests.labels(endpoint, str(error.status)).inc()
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return fail(error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        message = f"{request.method} {request.url.path}: {error.detail}"
        return fail(APIError(error.status_code, message, code))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("internal error")
        return fail(APIError(500, "Internal server error; the server logged the details.", "internal_error"))

    def check_key(request: Request) -> None:
        if config.api_key is None:
            return
        header = request.headers.get("authorization", "")
        if not header:
            raise APIError(401, "No API key given: send 'Authorization: Bearer <key>'.", "missing_api_key")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), config.api_key.encode()):
            raise APIError(401, "Incorrect API key.", "invalid_api_key")

    async def read_body(request: Request) -> bytes:
        limit = config.max_body_bytes
        too_big = APIError(413, f"The body is larger than {limit} bytes (--max-body-bytes).", "body_too_large")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------------ pages and probes
    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        try:
            html = (resources.files("hogwild.serve") / "static" / "index.html").read_text(encoding="utf-8")
        except (FileNotFoundError, OSError):
            raise APIError(404, "The web page is not installed (hogwild/serve/static/index.html).",
                           "not_found") from None
        return HTMLResponse(html)

    @app.get("/health")
    async def health() -> JSONResponse:
        if runner.load_error is not None:
            return JSONResponse({"status": "error", "model": config.model, "error": str(runner.load_error)},
                                status_code=503)
        if runner.draining:
            return JSONResponse({"status": "shutting_down", "model": config.model}, status_code=503)
        if not runner.ready.is_set():
            return JSONResponse({"status": "loading", "model": config.model}, status_code=503)
        load = await asyncio.to_thread(runner.load)
        return JSONResponse({"status": "ok", "model": config.model, "workers": config.workers, "load": load})

    @app.get("/metrics")
    async def metrics_page() -> Response:
        metrics.set_load(await asyncio.to_thread(runner.load))
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        check_key(request)
        return JSONResponse({"object": "list", "data": [model_card()]})

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> JSONResponse:
        check_key(request)
        if model_id != config.model:
            raise APIError(404, f"The model {model_id!r} does not exist; this server serves {config.model!r}.",
                           "model_not_found", "model")
        return JSONResponse(model_card())

    def model_card() -> dict[str, Any]:
        return {"id": config.model, "object": "model", "created": created, "owned_by": "hogwild",
                "hogwild": {"workers": config.workers, "max_workers": config.max_workers,
                            "max_tokens_cap": config.max_tokens_cap}}

    # ------------------------------------------------------------------ completions
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await complete(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await complete(request, "completion")

    async def complete(request: Request, kind: str) -> Response:
        started = time.perf_counter()
        endpoint = "chat" if kind == "chat" else "completions"
        try:
            check_key(request)
            body = parse_json(await read_body(request))
            job = chat_job(body, config) if kind == "chat" else completion_job(body, config)
            running = await runner.open(job, request.is_disconnected, endpoint, started)
        except APIError as error:
            return fail(error, endpoint)
        prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
        request_id, now = prefix + uuid.uuid4().hex[:24], int(time.time())
        if job.stream:
            writer = ChunkWriter(kind, request_id, now, job.model, running.names)
            return StreamingResponse(stream_body(running, writer, request, endpoint, started),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            await wait(running, request)
        finally:
            running.close()
        if running.result is None:
            return fail(run_error(running), endpoint)
        build = chat_body if kind == "chat" else completion_body
        stop_hit = running.stop.hit if running.stop is not None else None
        out = build(running.result, request_id, now, job.model, running.prompt_tokens, stop_hit)
        metrics.requests.labels(endpoint, "200").inc()
        metrics.latency.labels(endpoint, "false").observe(time.perf_counter() - started)
        return JSONResponse(out)

    async def wait(running: RunningJob, request: Request) -> None:
        """Until the run ends; a client that goes away cancels it."""
        while not running.ended:
            items = await running.next_items(KEEP_ALIVE_S)
            if items is None and await request.is_disconnected():
                running.cancel("disconnect")

    def run_error(running: RunningJob) -> APIError:
        if running.cancel_reason == "shutdown":
            return APIError(503, "The server is shutting down; the run was cancelled.", "server_shutdown")
        if running.cancel_reason is not None:
            return APIError(499, "The run was cancelled.", "cancelled")
        error = running.error
        if isinstance(error, HogwildError):
            return APIError(500, f"The run failed: {error}", "run_failed")
        return APIError(500, "The run failed; the server logged the details.", "internal_error")

    async def stream_body(running: RunningJob, writer: ChunkWriter, request: Request, endpoint: str,
                          started: float) -> AsyncIterator[str]:
        job: Job = running.job
        status = "200"
        try:
            yield "".join(sse(c) for c in writer.opening())
            while not running.ended:
                items = await running.next_items(KEEP_ALIVE_S)
                if items is None:
                    if await request.is_disconnected():
                        running.cancel("disconnect")
                        status = "499"
                        return
                    yield KEEP_ALIVE
                    continue
                chunks = writer.events([item for item in items if item is not END])
                if chunks:
                    yield "".join(sse(c) for c in chunks)
            if running.result is not None:
                stop_hit = running.stop.hit if running.stop is not None else None
                chunks = writer.closing(running.result, running.prompt_tokens, job.include_usage, stop_hit)
                yield "".join(sse(c) for c in chunks)
            else:
                error = run_error(running)
                status = str(error.status)
                metrics.errors.labels(error.code).inc()
                yield sse(error.body())
            yield DONE
        except BaseException:
            status = "499"  # the client went away (the task was cancelled)
            raise
        finally:
            running.close()
            metrics.requests.labels(endpoint, status).inc()
            metrics.latency.labels(endpoint, "true").observe(time.perf_counter() - started)

    return app
