"""Running the app with uvicorn: signals drain the server before it stops.

On SIGINT or SIGTERM: new requests get 503, queued ones too; running runs have
``shutdown_grace`` seconds to finish, then they are cancelled and their streams end with an
error chunk and ``[DONE]``; uvicorn then closes the connections and the scheduler stops. A
second Ctrl-C quits at once. A model that fails to load stops the server with its error.
"""

from __future__ import annotations

import logging
from types import FrameType

import uvicorn

from ..errors import HogwildError
from .app import create_app
from .config import ServeConfig


class DrainingServer(uvicorn.Server):
    """uvicorn's server, telling the runner to drain on the first exit signal."""

    def __init__(self, config: uvicorn.Config, runner, grace: float):
        super().__init__(config)
        self.runner, self.grace = runner, grace

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            self.runner.begin_drain(self.grace)
        super().handle_exit(sig, frame)


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until a signal; raises HogwildError when the model cannot be loaded."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(levelname)s:     %(name)s: %(message)s")
    app = create_app(config)
    runner = app.state.runner
    uv_config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                               timeout_graceful_shutdown=config.shutdown_grace + 5, access_log=False)
    server = DrainingServer(uv_config, runner, config.shutdown_grace)

    def stop_on_failure(error: BaseException) -> None:
        server.should_exit = True

    runner.on_load_failure = stop_on_failure
    server.run()
    if runner.load_error is not None:
        error = runner.load_error
        raise error if isinstance(error, HogwildError) else HogwildError(f"loading {config.model} failed: {error}")
