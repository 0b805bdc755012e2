"""What a SyncClient user sees: telemetry, round trip, errors and an audio drain while streaming; a typed
``StreamEnded`` with the reason when the server stops (``bye shutdown``, both transports) or dies
(SIGKILL), instead of iteration that just ends."""
from __future__ import annotations

import signal
import time

import pytest

from streamgen_client import StreamEnded, SyncClient

from .conftest import WORLD, spawn_server


def frames_until_end(client: SyncClient) -> tuple[int, StreamEnded | None]:
    n = 0
    try:
        for _ in client.frames(timeout=30):
            n += 1
    except StreamEnded as e:
        return n, e
    return n, None


def test_sync_client_reports_and_raises_the_end_reason(tmp_path):
    pytest.importorskip("aiortc")
    with spawn_server(tmp_path, WORLD) as (url, proc):
        ws = SyncClient(url, transport="ws", model=WORLD, timeout=60)
        rtc = SyncClient(url, transport="webrtc", model=WORLD, timeout=60)
        try:
            assert ws.next_frame(30) is not None and rtc.next_frame(30) is not None
            ws.send_action("KeyZ", True)  # not one of the world's keys: an out_of_range error comes back
            deadline = time.monotonic() + 20
            while (ws.rtt_ms is None or ws.telemetry is None or not ws.errors) and time.monotonic() < deadline:
                ws.next_frame(10)
            assert ws.rtt_ms is not None and ws.rtt_ms >= 0  # pings every 2 s
            assert ws.telemetry is not None and ws.telemetry.block_index >= 0
            assert [e.code for e in ws.errors] == ["out_of_range"] and "KeyZ" in ws.errors[0].message
            audio = ws.drain_audio()
            assert audio and all(a.samples.ndim == 2 and a.sample_rate == ws.info.sample_rate for a in audio)
            times = [a.timestamp_us for a in audio]
            assert times == sorted(set(times))  # in order, none twice
            ws.next_frame(10)
            later = ws.drain_audio()  # only what arrived since the first drain
            assert all(a.timestamp_us > times[-1] for a in later)
            assert rtc.telemetry is not None and rtc.drain_telemetry() is not None

            proc.send_signal(signal.SIGTERM)  # a clean stop: the server says bye to every session
            ends = [frames_until_end(c) for c in (ws, rtc)]
        finally:
            ws.close()
            rtc.close()
    (_, ws_end), (_, rtc_end) = ends
    assert rtc_end is not None and rtc_end.reason == "the server ended the session: shutdown", rtc_end
    assert rtc_end.bye is not None and rtc_end.bye.reason == "shutdown"
    # uvicorn closes WebSockets itself at shutdown (1012, service restart), before the app can say bye.
    assert ws_end is not None and ws_end.reason in ("the server ended the session: shutdown",
                                                    "the server closed the connection: close code 1012"), ws_end
    assert ws.end_reason == ws_end.reason

    with spawn_server(tmp_path, "tiny") as (url, proc):
        with SyncClient(url, transport="ws", model="tiny", timeout=60) as c:
            assert c.next_frame(30) is not None
            proc.send_signal(signal.SIGKILL)  # dies: no bye, the connection just goes
            n, err = frames_until_end(c)
            assert err is not None and err.bye is None
            assert err.reason.startswith("connection to the server lost"), err.reason
            with pytest.raises(StreamEnded):  # and so does every later read
                c.next_frame(1)
