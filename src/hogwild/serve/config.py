"""The server's settings: which model, the team size, and every limit a request meets."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.cache import check_kv
from ..errors import InvalidRequestError
from ..models.registry import DEFAULT_MODEL


@dataclass
class ServeConfig:
    model: str = DEFAULT_MODEL  # short name, local dir, .gguf or hub id; also the served model id
    dtype: str = "float32"
    device: str = "cpu"
    workers: int = 2  # the team size when a request gives neither n nor hogwild.workers
    max_workers: int = 8  # n / hogwild.workers may be 1..max_workers
    max_running: int = 16  # runs in the batch at once; later requests wait in the queue
    max_queue: int = 64  # requests waiting for a slot; one more is answered 429
    max_tokens_cap: int = 4096  # max_tokens (the budget in forward passes) may be 1..cap
    default_max_tokens: int = 512  # budget when a request gives none (at most the cap)
    max_body_bytes: int = 1 << 20
    api_key: str | None = None  # when set, /v1/* needs "Authorization: Bearer <key>"
    shutdown_grace: float = 10.0  # on SIGINT/SIGTERM: seconds runs may finish before cancel
    threads: int | None = None  # torch CPU threads (None: torch's default)
    kv: str = "auto"  # how the shared KV cache keeps keys and values (hogwild.core.cache.KV_MODES)

    def validate(self) -> None:
        checks = [
            (self.workers >= 1, f"--workers must be at least 1 (got {self.workers})"),
            (self.max_workers >= self.workers,
             f"--max-workers ({self.max_workers}) must be at least --workers ({self.workers})"),
            (self.max_running >= 1, f"--max-running must be at least 1 (got {self.max_running})"),
            (self.max_queue >= 0, f"--max-queue must be 0 or more (got {self.max_queue})"),
            (self.max_tokens_cap >= 1, f"--max-tokens-cap must be at least 1 (got {self.max_tokens_cap})"),
            (self.max_body_bytes >= 256, f"--max-body-bytes must be at least 256 (got {self.max_body_bytes})"),
            (self.shutdown_grace >= 0, f"--shutdown-grace must be 0 or more (got {self.shutdown_grace})"),
            (self.api_key is None or self.api_key != "", "--api-key must not be empty"),
        ]
        check_kv(self.kv)
        for ok, message in checks:
            if not ok:
                raise InvalidRequestError(message)

    @property
    def budget_default(self) -> int:
        return min(self.default_max_tokens, self.max_tokens_cap)
