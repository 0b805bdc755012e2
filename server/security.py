"""Who may talk to the server: bearer token, allowed origins, allowed Host names; and tokens kept out of logs.

``check_token`` / ``check_origin`` answer "why not" (None when allowed) for HTTP requests and WebSockets
alike. :class:`HostGuard` refuses requests whose ``Host`` header names a domain the server was not told
about (DNS rebinding: an attacker's page re-pointing its own name at 127.0.0.1 would otherwise be
"same-origin"). :class:`RedactTokens` rewrites ``token=...`` and bearer credentials out of log records.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from .settings import ServerSettings

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
# A refused Host header is echoed in the answer up to this many characters.
MAX_ECHO_CHARS = 100


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
    return f"origin {origin[:MAX_ECHO_CHARS]!r} is not allowed (allowed: same origin" \
           f"{', ' if settings.allowed_origins else ''}{', '.join(settings.allowed_origins)})"


# ----------------------------------------------------------------------------- Host header
def host_name(host_header: str) -> str:
    """The name part of a Host header: without the port, IPv6 brackets removed, lower case."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h[1:]
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def check_host(host_header: str | None, settings: ServerSettings) -> str | None:
    """None when the Host header is allowed. IP literals always are (a rebinding attack needs a domain
    name), and so are localhost names, the bound host and ``allowed_hosts`` ("*" allows any)."""
    if "*" in settings.allowed_hosts:
        return None
    if not host_header:
        return "the request has no Host header"
    name = host_name(host_header)
    allowed = {h.lower() for h in settings.allowed_hosts} | LOCAL_NAMES | {settings.host.lower()}
    if name in allowed or _is_ip(name):
        return None
    return f"host {host_header[:MAX_ECHO_CHARS]!r} is not allowed (set allowed_hosts / STREAMGEN_ALLOWED_HOSTS)"


class HostGuard:
    """ASGI middleware: a request or WebSocket with a Host header that ``check_host`` refuses gets 421
    (HTTP) or a 403 handshake refusal (WebSocket) and never reaches a route."""

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), None)
        why = check_host(host, self.settings)
        if why is None:
            return await self.app(scope, receive, send)
        logging.getLogger("streamgen.server.security").info("refused: %s", why)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008, "reason": "host not allowed"})
        body = json.dumps({"type": "error", "seq": 0, "code": "unauthorized", "message": why}).encode()
        await send({"type": "http.response.start", "status": 421,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------- logs
_SECRET = re.compile(r"((?:[?&]|\b)(?:token|access_token)=)[^&\s\"']+|(\b[Bb]earer\s+)[^\s\"',]+")


def redact(text: str) -> str:
    """``text`` with ``token=...`` query values and bearer credentials replaced by ``***``."""
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)


class RedactTokens(logging.Filter):
    """A log filter that formats each record once and removes credentials from the result."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that does not format is left to the handler
            return True
        clean = redact(text)
        if clean != text:
            record.msg, record.args = clean, None
        return True


REDACT = RedactTokens()
# Loggers that can carry a request line or a query string: uvicorn's access and error logs, and ours.
REDACTED_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn", "streamgen")


def install_log_redaction() -> None:
    """Attach the filter to the loggers above and to their handlers and the root logger's (idempotent;
    called again once uvicorn has configured its logging)."""
    loggers = [logging.getLogger(name) for name in REDACTED_LOGGERS]
    for target in loggers + [h for lg in loggers + [logging.getLogger()] for h in lg.handlers]:
        if REDACT not in target.filters:
            target.addFilter(REDACT)
