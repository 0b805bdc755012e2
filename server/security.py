"""Optional bearer-token auth and the allowed-origins check, for HTTP requests and WebSockets alike."""
from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from .settings import ServerSettings


def check_token(conn: HTTPConnection, settings: ServerSettings) -> str | None:
    """None when allowed; else why not. Browsers cannot set headers on a WebSocket: ``?token=`` works too."""
    if not settings.auth_token:
        return None
    header = conn.headers.get("authorization", "")
    given = header[7:].strip() if header.lower().startswith("bearer ") else conn.query_params.get("token", "")
    if not given:
        return "a bearer token is required (Authorization: Bearer TOKEN)"
    if not hmac.compare_digest(given.encode(), settings.auth_token.encode()):
        return "the bearer token is wrong"
    return None


def check_origin(conn: HTTPConnection, settings: ServerSettings) -> str | None:
    """None when allowed. No Origin (non-browser clients) and same-origin pages are always allowed."""
    origin = conn.headers.get("origin")
    if not origin:
        return None
    if "*" in settings.allowed_origins or origin in settings.allowed_origins:
        return None
    host = conn.headers.get("host", "")
    parts = urlsplit(origin)
    if parts.netloc and parts.netloc == host:
        return None
    return f"origin {origin!r} is not allowed (allowed: same origin{', ' if settings.allowed_origins else ''}" \
           f"{', '.join(settings.allowed_origins)})"
