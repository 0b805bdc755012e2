"""Raw-socket HTTP for the tests that must send what no HTTP client library would (oversized heads,
bodies cut short, connections dropped mid-upload)."""
from __future__ import annotations

import socket


def raw_request(port: int, data: bytes, *, close_after: bool = False, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh loopback connection and return the answer's head (b'' if none came).

    A send cut short by the server (it refused an oversized head before reading all of it) is not an
    error: its answer may still be waiting. ``close_after``: hang up at once without reading."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if close_after:
            return b""
        s.settimeout(timeout)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return answer
