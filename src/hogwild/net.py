"""Whether the network can be reached, asked with one short TCP connect.

Loading a model by hub id and loading a hub dataset both ask before the hub clients are
touched: those retry for minutes, so a machine without a network would hang instead of
getting a clear error in seconds.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

TIMEOUT_S = 3.0
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def reachable(address: tuple[str, int], timeout: float = TIMEOUT_S) -> bool:
    """One TCP connect to (host, port), bounded by ``timeout``; DNS failures count as no network."""
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable(timeout: float = TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub (``HF_ENDPOINT``, else huggingface.co) can be reached.

    Behind a proxy a direct connect says nothing, so then the download itself reports."""
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return True
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    return reachable((host, port), timeout)
