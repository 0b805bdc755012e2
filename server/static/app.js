// streamgen web client: WebRTC media + the "control" data channel (docs/protocol.md). No build step.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"), seed: $("seed"), token: $("token"), connect: $("connect"), pause: $("pause"),
  video: $("video"), hint: $("hint"), promptForm: $("prompt-form"), prompt: $("prompt"),
  sendPrompt: $("send-prompt"), error: $("error"),
};
const MAX_MOUSE = 4096;

// Everything the page knows; also read by the browser test (window.streamgen).
const state = {
  models: [], model: null, pc: null, channel: null, seq: 1, sessionId: null, paused: false,
  connected: false, held: new Set(), keysSent: 0, mouse: { dx: 0, dy: 0 },
  telemetry: null, rttMs: null, fps: 0, framesDecoded: 0, clientDropped: 0, timers: [],
  lastStats: null, audioEnergy: 0, audioSamples: 0,
};
window.streamgen = state;

function setStatus(s) { $("st-status").textContent = s; }
function showError(msg) { ui.error.textContent = msg || ""; }

async function loadModels() {
  const r = await fetch("/v1/models");
  const info = await r.json();
  state.models = info.models;
  ui.model.innerHTML = "";
  for (const m of info.models) {
    const o = document.createElement("option");
    o.value = m.name;
    o.textContent = `${m.name} (${m.width}×${m.height} @ ${m.fps} fps${m.sample_rate ? ", audio" : ""})`;
    if (m.name === info.default) o.selected = true;
    ui.model.appendChild(o);
  }
  $("token-label").hidden = !info.auth;
  onModelChange();
}

function onModelChange() {
  state.model = state.models.find((m) => m.name === ui.model.value) || null;
  ui.promptForm.hidden = !(state.model && state.model.takes_prompt);
}

function send(msg) {
  const ch = state.channel;
  if (!ch || ch.readyState !== "open") return false;
  msg.seq = state.seq++;
  ch.send(JSON.stringify(msg));
  return true;
}

function authHeaders() {
  const t = ui.token.value.trim();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

function waitForIce(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); } };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ms); // host candidates come at once; do not wait for slow STUN-less gathering
  });
}

async function connect() {
  showError("");
  const model = state.model;
  if (!model) return;
  const pc = new RTCPeerConnection({ iceServers: [] });
  state.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const ch = pc.createDataChannel("control", { ordered: true });
  state.channel = ch;
  ch.onmessage = (e) => onMessage(JSON.parse(e.data));
  ch.onopen = () => { state.timers.push(setInterval(() => send({ type: "ping", t_ms: Date.now() }), 2000)); };
  const stream = new MediaStream();
  pc.ontrack = (e) => {
    stream.addTrack(e.track);
    ui.video.srcObject = stream;
    ui.video.play().catch(() => { /* autoplay policy: the Connect click normally allows it */ });
  };
  pc.onconnectionstatechange = () => {
    setStatus(pc.connectionState);
    if (["failed", "closed"].includes(pc.connectionState)) disconnect();
  };
  setStatus("connecting");
  ui.connect.textContent = "Disconnect";
  ui.connect.classList.add("on");
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIce(pc, 1500);
  const body = {
    sdp: pc.localDescription.sdp, type: "offer", model: model.name, seed: Number(ui.seed.value) || 0,
    prompt: model.takes_prompt && ui.prompt.value.trim() ? ui.prompt.value.trim() : null, options: {}, version: 1,
  };
  let r;
  try {
    r = await fetch("/v1/offer", { method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() }, body: JSON.stringify(body) });
  } catch (e) { showError(`offer failed: ${e}`); return disconnect(); }
  const answer = await r.json();
  if (!r.ok) {
    const retry = answer.retry_after_s ? ` (retry in ${answer.retry_after_s} s)` : "";
    showError(`${answer.code}: ${answer.message}${retry}`);
    return disconnect();
  }
  state.sessionId = answer.session_id;
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  state.connected = true;
  ui.pause.disabled = false;
  ui.hint.textContent = hintFor(model);
  ui.video.focus();
  state.timers.push(setInterval(pollStats, 500));
  state.timers.push(setInterval(flushMouse, 16));
}

function hintFor(m) {
  const parts = [];
  if (m.keys.length) parts.push(`keys: ${m.keys.join(" ")}`);
  else parts.push("keys are forwarded to the model");
  if (m.takes_mouse) parts.push("click the video to capture the mouse (Esc releases it)");
  if (m.takes_prompt) parts.push("type a prompt on the right");
  return parts.join(" · ");
}

function disconnect() {
  releaseAllKeys();
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  if (state.channel && state.channel.readyState === "open") send({ type: "stop" });
  if (state.pc) state.pc.close();
  state.pc = null; state.channel = null; state.connected = false; state.paused = false; state.seq = 1;
  ui.connect.textContent = "Connect";
  ui.connect.classList.remove("on");
  ui.pause.disabled = true;
  ui.pause.textContent = "Pause";
  setStatus("idle");
}

function onMessage(m) {
  switch (m.type) {
    case "started": setStatus("streaming"); break;
    case "telemetry":
      state.telemetry = m;
      $("st-block").textContent = `${(m.timings_ms.step ?? m.timings_ms.total ?? 0).toFixed(1)} ms (#${m.block_index})`;
      $("st-queue").textContent = `${m.queue_depth} frames`;
      break;
    case "pong": state.rttMs = Date.now() - m.t_ms; $("st-rtt").textContent = `${state.rttMs.toFixed(0)} ms`; break;
    case "error": showError(`${m.code}: ${m.message}`); break;
    case "bye": setStatus(`ended (${m.reason})`); disconnect(); break;
  }
}

async function pollStats() {
  if (!state.pc) return;
  const report = await state.pc.getStats();
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      state.audioEnergy = s.totalAudioEnergy || 0;
      state.audioSamples = s.totalSamplesReceived || 0;
      return;
    }
    if (s.type !== "inbound-rtp" || s.kind !== "video") return;
    const prev = state.lastStats;
    if (prev && s.timestamp > prev.timestamp) {
      state.fps = ((s.framesDecoded - prev.framesDecoded) * 1000) / (s.timestamp - prev.timestamp);
    }
    state.lastStats = { timestamp: s.timestamp, framesDecoded: s.framesDecoded || 0 };
    state.framesDecoded = s.framesDecoded || 0;
    state.clientDropped = s.framesDropped || 0;
  });
  $("st-fps").textContent = state.fps.toFixed(1);
  $("st-frames").textContent = `${state.framesDecoded} decoded`;
  const serverDropped = state.telemetry ? state.telemetry.dropped_frames : 0;
  $("st-dropped").textContent = `${serverDropped} server · ${state.clientDropped} client`;
  $("st-keys").textContent = state.held.size ? [...state.held].join(" ") : "–";
}

// ---- keyboard: key edges (press and release), never auto-repeat
function keyWanted(code) {
  const m = state.model;
  if (!state.connected || !m) return false;
  if (document.activeElement === ui.prompt || document.activeElement === ui.seed) return false;
  return m.keys.length ? m.keys.includes(code) : true;
}

function sendKey(code, down) {
  if (send({ type: "action", kind: "key", key: code, down, t_ms: Date.now() })) state.keysSent++;
}

window.addEventListener("keydown", (e) => {
  if (!keyWanted(e.code) || e.repeat) return;
  if (!/^[A-Za-z0-9_+\-.]{1,32}$/.test(e.code)) return;
  e.preventDefault();
  state.held.add(e.code);
  sendKey(e.code, true);
});
window.addEventListener("keyup", (e) => {
  if (!state.held.has(e.code)) return;
  e.preventDefault();
  state.held.delete(e.code);
  sendKey(e.code, false);
});
function releaseAllKeys() { for (const k of state.held) sendKey(k, false); state.held.clear(); }
window.addEventListener("blur", releaseAllKeys);

// ---- mouse: relative moves under pointer lock, batched every 16 ms
ui.video.addEventListener("click", () => {
  ui.video.focus();
  if (state.connected && state.model && state.model.takes_mouse) ui.video.requestPointerLock();
});
document.addEventListener("mousemove", (e) => {
  if (document.pointerLockElement !== ui.video) return;
  state.mouse.dx += e.movementX; state.mouse.dy += e.movementY;
});
function flushMouse() {
  const { dx, dy } = state.mouse;
  if (!dx && !dy) return;
  state.mouse = { dx: 0, dy: 0 };
  const c = (v) => Math.max(-MAX_MOUSE, Math.min(MAX_MOUSE, v));
  send({ type: "action", kind: "mouse", dx: c(dx), dy: c(dy), t_ms: Date.now() });
}

// ---- buttons
ui.connect.addEventListener("click", () => (state.pc ? disconnect() : connect().catch((e) => { showError(String(e)); disconnect(); })));
ui.pause.addEventListener("click", () => {
  state.paused = !state.paused;
  send({ type: state.paused ? "pause" : "resume" });
  ui.pause.textContent = state.paused ? "Resume" : "Pause";
});
ui.sendPrompt.addEventListener("click", () => {
  const p = ui.prompt.value.trim();
  if (p) send({ type: "prompt", prompt: p });
});
ui.model.addEventListener("change", onModelChange);
window.addEventListener("beforeunload", disconnect);
loadModels().catch((e) => showError(`could not list models: ${e}`));
