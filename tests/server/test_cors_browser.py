"""Defect 7 of issue 14: a page on a second origin streams over WebRTC from a server that allows it.

Before the fix the preflight OPTIONS of ``/v1/offer`` answered 405 and no Access-Control-Allow-Origin was
sent, so ``--allowed-origin`` did not make cross-origin browsers work. Real Chromium, real page, real peer.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import threading

import httpx
import pytest

pytest.importorskip("playwright")
from playwright.sync_api import sync_playwright  # noqa: E402

from .conftest import free_port, running_server  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]

# A page of its own (not the server's): offer with a JSON body (a non-simple request, so Chromium sends
# the preflight first), then count decoded frames.
PAGE = """<!doctype html><meta charset="utf-8"><title>second origin</title><video id="v" muted autoplay playsinline></video>
<script>
window.result = {state: "starting", frames: 0};
async function stream(server) {
  const pc = new RTCPeerConnection({iceServers: []});
  pc.addTransceiver("video", {direction: "recvonly"});
  pc.createDataChannel("control");
  pc.ontrack = (e) => {
    const v = document.getElementById("v");
    v.srcObject = new MediaStream([e.track]);
    const count = () => { window.result.frames += 1; v.requestVideoFrameCallback(count); };
    v.requestVideoFrameCallback(count);
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((ok) => { if (pc.iceGatheringState === "complete") ok();
                              else pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && ok(); });
  try {
    const r = await fetch(server + "/v1/offer", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({sdp: pc.localDescription.sdp, type: "offer", model: "tiny", seed: 0, version: 1})});
    const answer = await r.json();
    window.result.status = r.status;
    await pc.setRemoteDescription({type: "answer", sdp: answer.sdp});
    window.result.state = "answered";
  } catch (e) { window.result.state = "failed: " + e; }
}
</script>"""


@contextlib.contextmanager
def page_server(tmp_path):
    (tmp_path / "index.html").write_text(PAGE)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_second_origin_page_streams_over_webrtc(tmp_path):
    with page_server(tmp_path) as page_origin, running_server(max_sessions=2, allowed_origins=[page_origin]) as server:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
            try:
                page = browser.new_page()
                page.goto(page_origin + "/index.html")
                page.evaluate(f"stream({server.url!r})")
                page.wait_for_function("window.result.frames >= 5 || window.result.state.startsWith('failed')",
                                       timeout=30_000)
                result = page.evaluate("window.result")
            finally:
                browser.close()
        # The preflight is answered for the allowed origin, and refused for another.
        pre = {"Origin": page_origin, "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "content-type"}
        allowed = httpx.options(server.url + "/v1/offer", headers=pre)
        other = httpx.options(server.url + "/v1/offer", headers={**pre, "Origin": "http://127.0.0.1:1"})
    assert result["state"] == "answered" and result["status"] == 200, result
    assert result["frames"] >= 5, result
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == page_origin
    assert "access-control-allow-origin" not in other.headers
