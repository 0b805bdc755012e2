"""Seeded generators of hostile input for the fuzz tests: control messages, offer bodies, HTTP requests.

Every generator takes a ``random.Random`` so a failing case can be replayed from its seed. Messages are
mutations of valid ones (the interesting faults sit next to validity) mixed with plain garbage.
"""
from __future__ import annotations

import json
import random
import string
from typing import Any

from streamgen_client import protocol as P

FIELDS = ["type", "seq", "kind", "key", "down", "dx", "dy", "t_ms", "prompt", "model", "seed", "options",
          "version", "sdp", "reply_to", "extra", "", "__proto__"]
TYPES = ["start", "action", "prompt", "pause", "resume", "ping", "stop", "pong", "error", "bye", "started",
         "telemetry", "", "ACTION", "offer", None, 1, [], {}]
KEYS = ["ArrowUp", "ArrowDown", "Space", "KeyW", "", "x" * 40, "Key W!", "\u0000", "é"]


def value(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value, with a taste for edge cases."""
    r = rng.random()
    if depth > 3 or r < 0.45:
        return rng.choice([
            0, -1, 1, 2**53, 2**53 - 1, -(2**63), 2**64, 10**30, 0.5, -0.0, 1e308, -1e308, 1e-320,
            True, False, None, "", "a", "\u0000", "\ud7ff", "é" * 3, "\U0001f600", " " * 3,
            "x" * rng.choice([1, 100, 5000, 20000]), "ArrowUp", "key", "mouse", "tiny", "start",
        ])
    if r < 0.7:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(FIELDS): value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def valid_message(rng: random.Random, seq: int, model: str = "tiny") -> dict:
    t = rng.choice(["action_key", "action_mouse", "prompt", "pause", "resume", "ping", "start"])
    if t == "action_key":
        return {"type": "action", "seq": seq, "kind": "key", "key": rng.choice(KEYS[:4]), "down": rng.random() < 0.5,
                "t_ms": 1.0}
    if t == "action_mouse":
        return {"type": "action", "seq": seq, "kind": "mouse", "dx": rng.uniform(-10, 10), "dy": 0.0}
    if t == "prompt":
        return {"type": "prompt", "seq": seq, "prompt": "a red square"}
    if t == "start":
        return {"type": "start", "seq": seq, "model": model, "seed": rng.randint(0, 99)}
    return {"type": t, "seq": seq}


def mutate(rng: random.Random, msg: dict) -> dict:
    m = dict(msg)
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        if op < 0.3 and m:
            m[rng.choice(list(m))] = value(rng)  # a field's value replaced by anything
        elif op < 0.5 and m:
            m.pop(rng.choice(list(m)))  # a field dropped
        elif op < 0.7:
            m[rng.choice(FIELDS)] = value(rng)  # a field added (or overwritten)
        elif op < 0.85:
            m["type"] = rng.choice(TYPES)
        else:
            m["seq"] = rng.choice([-1, 0, 2**53, 1.5, "1", None, [], seq_of(m)])
    return m


def seq_of(m: dict) -> Any:
    return m.get("seq", 0)


def control_text(rng: random.Random, seq: int) -> str | bytes:
    """One control message as sent on the wire: mostly mutated JSON, sometimes garbage or binary."""
    r = rng.random()
    if r < 0.55:
        return json.dumps(mutate(rng, valid_message(rng, seq)), ensure_ascii=rng.random() < 0.5)
    if r < 0.7:
        return json.dumps(valid_message(rng, seq))
    if r < 0.78:
        return json.dumps(value(rng))  # not an object, or an object of anything
    if r < 0.84:
        good = json.dumps(valid_message(rng, seq))
        return good[: rng.randint(0, len(good))]  # truncated
    if r < 0.88:
        return "[" * rng.choice([100, 5000, 20000])  # deep nesting
    if r < 0.91:
        return '{"type":"ping","seq":%d,"t_ms":NaN}' % seq
    if r < 0.94:
        return '{"type":"ping","seq":%d,"seq":%d}' % (seq, seq + 1)  # duplicate key
    if r < 0.97:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))  # binary frame
    return "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 200)))


def offer_body(rng: random.Random, sdp: str) -> bytes:
    """A POST /v1/offer body: a mutated offer (its SDP mutated too) or garbage."""
    base = {"sdp": sdp, "type": "offer", "model": "tiny", "seed": 0, "options": {}, "version": P.PROTOCOL_VERSION}
    r = rng.random()
    if r < 0.35:
        lines = sdp.split("\r\n")
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(lines))
            op = rng.random()
            if op < 0.3:
                lines.pop(i)
            elif op < 0.6:
                lines[i] = lines[i][: rng.randint(0, len(lines[i]))]
            elif op < 0.8:
                lines.insert(i, rng.choice(["a=mid:", "m=video 0 RTP/AVP", "a=candidate:x 1 tcp 1 1.2.3.4 9 typ host",
                                            "a=fingerprint:sha-256 zz", "c=IN IP4 999.1.1.1", "\x00", "a=group:BUNDLE"]))
            else:
                lines[i] = lines[i].replace(" ", "  ")
        return json.dumps({**base, "sdp": "\r\n".join(lines)}).encode()
    if r < 0.7:
        return json.dumps(mutate(rng, base)).encode()
    if r < 0.8:
        return json.dumps(value(rng)).encode()
    if r < 0.9:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
    return json.dumps({**base, "sdp": "v=0\r\n" * rng.randint(1, 20000)}).encode()  # oversized


def http_request(rng: random.Random) -> tuple[str, str, dict, bytes | None]:
    """(method, path, headers, body) for the plain HTTP routes."""
    path = rng.choice(["/", "/healthz", "/readyz", "/metrics", "/v1/models", "/v1/stats", "/docs", "/openapi.json",
                       "/static/../../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/static/app.js",
                       "/v1/offer", "/v1/ws", "/nope", "/" + "a" * 3000, "/v1/models?token=" + "x" * 100,
                       "/static/" + "\u00e9", "/%00"])
    method = rng.choice(["GET", "GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH"])
    headers = {}
    if rng.random() < 0.3:
        headers["Origin"] = rng.choice(["http://evil.example", "null", "http://127.0.0.1:1", "x" * 500])
    if rng.random() < 0.2:
        headers["Authorization"] = rng.choice(["Bearer", "Bearer x", "Basic abc", "Bearer " + "y" * 2000])
    if rng.random() < 0.2:
        headers["Content-Type"] = rng.choice(["application/json", "text/plain", "multipart/form-data; boundary=x"])
    body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200))) if method in ("POST", "PUT") else None
    return method, path, headers, body
