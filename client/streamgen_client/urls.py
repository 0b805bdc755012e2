"""Server URLs: the user may give ``http(s)://host:port``, ``ws(s)://host:port`` or an endpoint URL."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

_HTTP = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def http_endpoint(url: str, endpoint: str) -> str:
    """``http://h:p`` / ``ws://h:p`` / ``http://h:p/v1/ws`` -> ``http://h:p`` + ``endpoint`` (e.g. ``/v1/offer``)."""
    parts = urlsplit(url)
    scheme = _HTTP.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"url {url!r} must be http(s):// or ws(s)://host:port")
    path = parts.path.rstrip("/")
    for known in ("/v1/ws", "/v1/offer", "/v1/models"):
        if path.endswith(known):
            path = path[: -len(known)]
    return urlunsplit((scheme, parts.netloc, path + endpoint, parts.query, ""))
