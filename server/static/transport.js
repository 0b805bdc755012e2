// streamgen page transports (docs/protocol.md): WebRTC (media tracks + "control" data channel) and the
// WebSocket fallback (JSON control + binary media: JPEG frames drawn on a canvas, PCM played by WebAudio).
// Both take the same hooks: onMessage(msg), onEnd(reason or null = lost), onFrame(); and both expose
// send(msg), close(), stream() (a MediaStream to record) and setVolume(volume, muted).
(() => {
"use strict";

// The server refused (busy, unauthorized, bad field): not a reason to try another transport.
class ServerRefusal extends Error {}

const RTC_CONNECT_TIMEOUT_MS = 6000; // ICE on a LAN takes well under a second; beyond this, fall back

function waitForIce(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); } };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ms); // host candidates come at once; do not wait for slow STUN-less gathering
  });
}

async function refusal(r) {
  let body = {};
  try { body = await r.json(); } catch (e) { /* not JSON */ }
  const retry = body.retry_after_s ? ` (retry in ${body.retry_after_s} s)` : "";
  return new ServerRefusal(`${body.code || r.status}: ${body.message || r.statusText}${retry}`);
}

// The server's STUN / TURN servers (GET /v1/ice, behind the session token); none on a LAN or loopback.
async function iceServers(headers) {
  try {
    const r = await fetch("/v1/ice", { headers });
    if (r.ok) return (await r.json()).iceServers || [];
  } catch (err) { /* no answer: host candidates only */ }
  return [];
}

class RtcTransport {
  constructor(video, hooks) { this.video = video; this.hooks = hooks; this.kind = "webrtc"; this.media = new MediaStream(); this.ended = false; }

  // Resolves once the peer connection is connected; rejects (RTC failure or ServerRefusal) otherwise.
  // ``speech``: avatars: the audio m-line is sendrecv so that the microphone can be put on it later
  // (setMicrophone), without a new offer.
  async open(start, headers, speech) {
    const pc = new RTCPeerConnection({ iceServers: await iceServers(headers) });
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    this.audioTx = pc.addTransceiver("audio", { direction: speech ? "sendrecv" : "recvonly" });
    const ch = pc.createDataChannel("control", { ordered: true });
    this.channel = ch;
    ch.onmessage = (e) => { try { this.hooks.onMessage(JSON.parse(e.data)); } catch (err) { /* not JSON: ignore */ } };
    ch.onclose = () => this.end(null);
    pc.ontrack = (e) => {
      this.media.addTrack(e.track);
      this.video.srcObject = this.media;
      this.video.play().catch(() => { /* autoplay policy: the Connect click normally allows it */ });
    };
    const connected = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`not connected after ${RTC_CONNECT_TIMEOUT_MS / 1000} s`)), RTC_CONNECT_TIMEOUT_MS);
      pc.onconnectionstatechange = () => {
        const s = pc.connectionState;
        if (s === "connected") { clearTimeout(timer); resolve(); }
        if (s === "failed" || s === "closed") { clearTimeout(timer); reject(new Error(`connection ${s}`)); this.end(null); }
        if (s === "disconnected") this.end(null);
      };
    });
    connected.catch(() => {}); // handled by the await below; no unhandled rejection meanwhile
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc, 1500);
    const r = await fetch("/v1/offer", {
      method: "POST", headers: { "Content-Type": "application/json", ...headers },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", ...start, version: 1 }),
    });
    if (!r.ok) throw await refusal(r);
    const answer = await r.json();
    this.sessionId = answer.session_id;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    await connected;
  }

  send(text) {
    if (!this.channel || this.channel.readyState !== "open") return false;
    this.channel.send(text);
    return true;
  }

  end(reason) { if (!this.ended) { this.ended = true; this.hooks.onEnd(reason); } }

  close() { this.ended = true; if (this.pc) this.pc.close(); this.video.srcObject = null; }

  stream() { return this.media; }

  // Avatars: the microphone's track up (a MediaStream), or none (null).
  async setMicrophone(stream) { await this.audioTx.sender.replaceTrack(stream ? stream.getAudioTracks()[0] : null); }

  setVolume(volume, muted) { this.video.volume = volume; this.video.muted = muted; }

  async stats() {
    const out = { framesDecoded: 0, framesDropped: 0, audioEnergy: 0, audioSamples: 0, timestamp: performance.now() };
    if (!this.pc) return out;
    (await this.pc.getStats()).forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      if (s.kind === "audio") { out.audioEnergy = s.totalAudioEnergy || 0; out.audioSamples = s.totalSamplesReceived || 0; }
      if (s.kind === "video") { out.framesDecoded = s.framesDecoded || 0; out.framesDropped = s.framesDropped || 0; }
    });
    return out;
  }
}

// Binary media header (docs/protocol.md section 5): 32 bytes, little-endian.
const HEADER_BYTES = 32;
const KIND_JPEG = 1, KIND_S16 = 2, KIND_F32 = 3;

class WsTransport {
  constructor(canvas, hooks) {
    this.canvas = canvas; this.hooks = hooks; this.kind = "ws"; this.ended = false; this.byeSeen = false;
    this.framesDecoded = 0; this.audioSamples = 0; this.audioEnergy = 0; this.draw = Promise.resolve();
    // Created here, inside the Connect click, so that the autoplay policy lets it play.
    this.audio = new AudioContext({ latencyHint: "interactive" });
    this.gain = this.audio.createGain();
    this.gain.connect(this.audio.destination);
    this.recordOut = this.audio.createMediaStreamDestination();
    this.gain.connect(this.recordOut);
    this.nextAudio = 0;
  }

  open(start, token) {
    const url = new URL("/v1/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (token) url.searchParams.set("token", token); // browsers cannot set headers on a WebSocket
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    return new Promise((resolve, reject) => {
      ws.onopen = () => ws.send(JSON.stringify({ type: "start", seq: start.seq, model: start.model, seed: start.seed, prompt: start.prompt, options: start.options, version: 1 }));
      ws.onmessage = (e) => {
        if (typeof e.data !== "string") { this.onMedia(e.data); return; }
        let msg;
        try { msg = JSON.parse(e.data); } catch (err) { return; }
        if (msg.type === "started") { this.sessionId = msg.session_id; resolve(); }
        if (msg.type === "error" && !this.sessionId) reject(new ServerRefusal(`${msg.code}: ${msg.message}`));
        if (msg.type === "bye") this.byeSeen = true;
        this.hooks.onMessage(msg);
      };
      ws.onerror = () => reject(new Error("WebSocket failed"));
      ws.onclose = (e) => {
        reject(new Error(`WebSocket closed (${e.code})`));
        // 1001 / 1012: the server is going away (uvicorn closes WebSockets itself when it shuts down).
        if (!this.byeSeen) this.end(e.code === 1001 || e.code === 1012 ? "shutdown" : null);
      };
    });
  }

  onMedia(buf) {
    if (buf.byteLength < HEADER_BYTES) return;
    const h = new DataView(buf, 0, HEADER_BYTES);
    const kind = h.getUint8(5), channels = h.getUint8(6), rate = h.getUint32(24, true);
    const payload = buf.slice(HEADER_BYTES);
    if (kind === KIND_JPEG) {
      // Decode off the main thread, draw in arrival order (the server paces and drops stale frames).
      const bitmap = createImageBitmap(new Blob([payload], { type: "image/jpeg" }));
      this.draw = this.draw.then(() => bitmap).then((bmp) => {
        if (this.canvas.width !== bmp.width || this.canvas.height !== bmp.height) {
          this.canvas.width = bmp.width; this.canvas.height = bmp.height;
        }
        this.canvas.getContext("2d").drawImage(bmp, 0, 0);
        bmp.close();
        this.framesDecoded++;
        this.hooks.onFrame();
      }).catch(() => { /* a frame that does not decode is skipped */ });
    } else if ((kind === KIND_S16 || kind === KIND_F32) && channels > 0 && rate > 0) {
      this.playPcm(kind === KIND_S16 ? new Int16Array(payload) : new Float32Array(payload), channels, rate, kind === KIND_S16 ? 32768 : 1);
    }
  }

  playPcm(values, channels, rate, scale) {
    const n = Math.floor(values.length / channels);
    if (!n) return;
    const buffer = this.audio.createBuffer(channels, n, rate);
    let energy = 0;
    for (let c = 0; c < channels; c++) {
      const out = buffer.getChannelData(c);
      for (let i = 0; i < n; i++) { out[i] = values[i * channels + c] / scale; energy += out[i] * out[i]; }
    }
    const src = this.audio.createBufferSource();
    src.buffer = buffer;
    src.connect(this.gain);
    // Back to back; a late chunk starts a little ahead of now rather than in the past.
    this.nextAudio = Math.max(this.nextAudio, this.audio.currentTime + 0.05);
    src.start(this.nextAudio);
    this.nextAudio += buffer.duration;
    this.audioSamples += n;
    this.audioEnergy += energy / channels / rate;
  }

  send(text) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(text);
    return true;
  }

  sendBinary(buf) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(buf);
    return true;
  }

  // Avatars: the microphone (a MediaStream) as binary speech messages at ``rate``, or none (null).
  async setMicrophone(stream, rate) {
    if (this.microphone) { this.microphone.stop(); this.microphone = null; }
    if (stream) this.microphone = new window.streamgenAvatar.WsMicrophone(stream, rate, (b) => this.sendBinary(b));
  }

  end(reason) { if (!this.ended) { this.ended = true; this.hooks.onEnd(reason); } }

  close() {
    this.ended = true;
    if (this.microphone) this.microphone.stop();
    if (this.ws) this.ws.close(1000);
    this.audio.close().catch(() => {});
  }

  stream() {
    const fps = 30;
    return new MediaStream([...this.canvas.captureStream(fps).getVideoTracks(), ...this.recordOut.stream.getAudioTracks()]);
  }

  setVolume(volume, muted) { this.gain.gain.value = muted ? 0 : volume; }

  async stats() {
    return { framesDecoded: this.framesDecoded, framesDropped: 0, audioEnergy: this.audioEnergy, audioSamples: this.audioSamples, timestamp: performance.now() };
  }
}

window.streamgenTransports = { RtcTransport, WsTransport, ServerRefusal };
})();
