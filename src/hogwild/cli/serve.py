"""``hogwild serve``: the OpenAI-compatible server (``hogwild.serve``, docs/serve.md)."""

from __future__ import annotations

from typing import Optional

import typer

from ..models.registry import DEFAULT_MODEL
from ..core.cache import KV_HELP
from ..quant.plan import WEIGHTS_HELP, cli_setting
from .app import _default_device, app


@app.command()
def serve(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Short name, local dir, .gguf file or hub id."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (localhost unless told otherwise)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar="HOGWILD_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1/*."),
    workers: int = typer.Option(2, "--workers", "-n", help="Team size when a request gives neither n nor hogwild.workers."),
    max_workers: int = typer.Option(8, "--max-workers", help="Largest n / hogwild.workers a request may ask for."),
    max_running: int = typer.Option(16, "--max-running", help="Runs in the shared batch at once."),
    max_queue: int = typer.Option(64, "--max-queue", help="Requests waiting for a slot; more are answered 429."),
    max_tokens_cap: int = typer.Option(4096, "--max-tokens-cap", help="Largest max_tokens (budget in forward passes)."),
    default_max_tokens: int = typer.Option(512, "--default-max-tokens", help="Budget when a request gives none."),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", help="Largest request body; larger is 413."),
    shutdown_grace: float = typer.Option(
        10.0, "--shutdown-grace", help="On SIGINT/SIGTERM: seconds runs may finish before they are cancelled."),
    weights: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Deprecated: the old name of --weights."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    kv: str = typer.Option("auto", "--kv", help=KV_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Serve the model over an OpenAI-compatible HTTP API, with live worker lanes and a web page."""
    from ..errors import InvalidRequestError
    from ..serve.config import ServeConfig
    from ..serve.server import serve as run_server

    if not 0 < port < 65536:
        raise InvalidRequestError(f"--port must be between 1 and 65535 (got {port})")
    if threads is not None and threads < 1:
        raise InvalidRequestError(f"--threads must be at least 1 (got {threads})")
    config = ServeConfig(
        model=model, dtype=cli_setting(weights, dtype), device=device or _default_device(), workers=workers, max_workers=max_workers,
        max_running=max_running, max_queue=max_queue, max_tokens_cap=max_tokens_cap,
        default_max_tokens=default_max_tokens, max_body_bytes=max_body_bytes, api_key=api_key,
        shutdown_grace=shutdown_grace, threads=threads, kv=kv,
    )
    config.validate()
    run_server(config, host=host, port=port, log_level=log_level.lower())
