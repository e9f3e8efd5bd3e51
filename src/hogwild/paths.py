"""Where hogwild keeps converted models and assembled checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "HOGWILD_CACHE"


def cache_dir() -> Path:
    """The cache root: ``$HOGWILD_CACHE`` if set, else ``~/.cache/hogwild``. Created on demand."""
    root = os.environ.get(CACHE_ENV)
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "hogwild"
    path.mkdir(parents=True, exist_ok=True)
    return path
