"""``hogwild serve``: an OpenAI-compatible HTTP server over one shared batch.

One model per server. Every request becomes a run (:func:`hogwild.solve.start_solve`) in
ONE :class:`~hogwild.driver.Scheduler` stepping on a background thread, so concurrent
requests share forward passes. Each worker is one choice of the response; its text is the
choice's ``reasoning_content`` and the team's answer is every choice's ``content``.

* :mod:`.config`: :class:`ServeConfig`, the server's limits and defaults.
* :mod:`.errors`: OpenAI-style error bodies (:class:`APIError`).
* :mod:`.schemas`: request validation, and a request turned into a :class:`~.schemas.Job`.
* :mod:`.runner`: the model, the scheduler, the admission queue, and each request's run
  bridged from the scheduler's thread to the event loop.
* :mod:`.stream`: server-sent event chunks of a run (the streaming contract, docs/serve.md).
* :mod:`.responses`: the non-streaming bodies.
* :mod:`.metrics`: Prometheus metrics (prometheus-client).
* :mod:`.app`: :func:`create_app`, the FastAPI routes; :mod:`.server`: uvicorn, signals.
"""

from .app import create_app
from .config import ServeConfig

__all__ = ["ServeConfig", "create_app"]
