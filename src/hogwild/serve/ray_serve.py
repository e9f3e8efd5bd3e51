"""``hogwild serve`` replicas behind one endpoint, with Ray Serve (docs/scale-out.md).

Each replica is a Ray actor holding one whole server: the FastAPI app of
:func:`~hogwild.serve.app.create_app`, with its model, its one batch and its admission queue.
Ray Serve's proxy is the single endpoint and spreads requests over the replicas; streaming
(server-sent events) passes through it. The app is built inside the replica
(``__serve_build_asgi_app__``), never pickled: it owns threads and a model. Ray Serve runs
the app's lifespan, so a replica loads its model on start exactly as ``hogwild serve`` does,
and a replica whose model failed to load reports itself unhealthy (Serve replaces it).

Run it with ``serve run hogwild.serve.ray_serve:build replicas=2 gpus_per_replica=1`` (any
:class:`~hogwild.serve.config.ServeConfig` field may be given the same way), or from Python
with ``serve.run(deployment(ServeConfig(...), replicas=2, gpus_per_replica=1))``.
"""

from __future__ import annotations

import asyncio
from dataclasses import fields
from functools import cache
from typing import Any

from ..errors import HogwildError
from .config import ServeConfig

#: what to install when Ray Serve is missing
SERVE_EXTRA = "pip install 'hogwild[ray]'"


def _serve() -> Any:
    try:
        from ray import serve
    except ImportError:
        raise HogwildError(f"Ray Serve is not installed: {SERVE_EXTRA}") from None
    return serve


@cache
def replica_class() -> Any:
    """The Serve deployment class (made on first use, so this module imports without Ray)."""
    serve = _serve()

    @serve.deployment(name="hogwild")
    @serve.ingress()
    class HogwildReplica:
        """One hogwild server: its app is built here, in the replica's process."""

        def __init__(self, config: dict):
            self.config = ServeConfig(**config)
            self.config.validate()

        def __serve_build_asgi_app__(self) -> Any:
            from .app import create_app

            self.hogwild_app = create_app(self.config)  # not "app": Serve's wrapper owns that name
            return self.hogwild_app

        async def reconfigure(self, settings: dict) -> None:
            """Serve calls this after the app's startup and before the replica gets traffic:
            wait for the model, so a replica never answers 503 for a model still loading."""
            runner = self.hogwild_app.state.runner
            loaded = await asyncio.to_thread(runner.ready.wait, float(settings.get("load_timeout_s", 900)))
            if runner.load_error is not None:
                raise RuntimeError(f"loading {self.config.model} failed: {runner.load_error}")
            if not loaded:
                raise RuntimeError(f"{self.config.model} did not load within {settings.get('load_timeout_s')} s")

        def check_health(self) -> None:
            app = getattr(self, "hogwild_app", None)
            error = app.state.runner.load_error if app is not None else None
            if error is not None:
                raise RuntimeError(f"loading {self.config.model} failed: {error}")

    return HogwildReplica


def deployment(config: ServeConfig, replicas: int | None = None, gpus_per_replica: float = 0.0,
               cpus_per_replica: float = 1.0, load_timeout_s: float = 900.0) -> Any:
    """A bound Serve application of ``replicas`` hogwild servers (None: one per GPU of the
    cluster, which needs ``gpus_per_replica`` > 0; on a CPU cluster give the number). A replica
    gets traffic once its model is loaded (at most ``load_timeout_s`` seconds)."""
    config.validate()
    if replicas is None:
        if gpus_per_replica <= 0:
            raise HogwildError("give replicas=N, or gpus_per_replica > 0 for one replica per GPU")
        import ray

        gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
        replicas = int(gpus // gpus_per_replica)
        if replicas < 1:
            raise HogwildError(f"the Ray cluster has {gpus:g} GPUs: no replica of {gpus_per_replica:g} GPUs fits")
    if replicas < 1:
        raise HogwildError(f"replicas must be at least 1 (got {replicas})")
    if gpus_per_replica > 0 and config.device == "cpu":
        config.device = "cuda"  # Ray gives the replica its GPU as cuda:0
    options = {"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica}
    # a replica takes as many requests as its server admits; the server answers 429 beyond
    return replica_class().options(
        num_replicas=replicas, ray_actor_options=options,
        max_ongoing_requests=config.max_running + config.max_queue + 1,
        user_config={"load_timeout_s": load_timeout_s},
    ).bind(vars(config).copy())


def build(args: dict[str, str]) -> Any:
    """The application builder of ``serve run hogwild.serve.ray_serve:build key=value ...``:
    ``replicas``, ``gpus_per_replica``, ``cpus_per_replica`` and any ServeConfig field."""
    args = dict(args)
    replicas = int(args.pop("replicas")) if "replicas" in args else None
    gpus = float(args.pop("gpus_per_replica", 0))
    cpus = float(args.pop("cpus_per_replica", 1))
    known = {f.name: f for f in fields(ServeConfig)}
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise HogwildError(f"unknown settings {unknown}; ServeConfig has {sorted(known)}")
    values: dict[str, Any] = {}
    for name, text in args.items():
        kind = str(known[name].type)  # "int", "float", "str | None", ... (postponed annotations)
        convert = int if kind.startswith("int") else float if kind.startswith("float") else str
        try:
            values[name] = convert(text)
        except ValueError:
            raise HogwildError(f"{name}={text!r}: expected {kind}") from None
    if replicas is None and gpus <= 0:
        replicas = 1
    return deployment(ServeConfig(**values), replicas, gpus, cpus)
