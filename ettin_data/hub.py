"""The Hugging Face hub as ettin-data reaches it (a tokenizer or a dataset named by its hub name): one check of
whether the hub answers, so that an offline run fails in one line at once instead of after the libraries'
retries (``datasets`` retries every request for ~45 s, twice per hub input)."""

from __future__ import annotations

import os
import socket
import urllib.request
from urllib.parse import urlparse

__all__ = ["endpoint", "offline", "reachable"]

DEFAULT_ENDPOINT = "https://huggingface.co"


def endpoint() -> str:
    """The hub's URL: ``HF_ENDPOINT`` (a mirror, a private hub), as huggingface_hub reads it, else huggingface.co."""
    return os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT


def offline() -> bool:
    """``HF_HUB_OFFLINE`` set to a true value (1, on, yes, true), as huggingface_hub reads it: the cache only."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` seconds (name lookup included): to its
    endpoint, or to the proxy the environment sets for it (``HTTPS_PROXY``, ``NO_PROXY``...). No request is
    sent."""
    url = urlparse(endpoint())
    scheme = url.scheme or "https"
    host, port = url.hostname or "huggingface.co", url.port or (80 if scheme == "http" else 443)
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname or host, p.port or (443 if p.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False
