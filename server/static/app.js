// streamgen web page: model choice, connect (WebRTC, or the WebSocket fallback when WebRTC cannot connect),
// keys / mouse / prompt, stats, recording (docs/protocol.md, docs/serving.md). No build step.
"use strict";

const { RtcTransport, WsTransport, ServerRefusal } = window.streamgenTransports;
const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"), seed: $("seed"), token: $("token"), transport: $("transport"), connect: $("connect"),
  reconnect: $("reconnect"), pause: $("pause"), record: $("record"), mute: $("mute"), volume: $("volume"),
  fullscreen: $("fullscreen"), screen: $("screen"), video: $("video"), canvas: $("canvas"), hint: $("hint"),
  promptForm: $("prompt-form"), prompt: $("prompt"), sendPrompt: $("send-prompt"), error: $("error"),
  avatarForm: $("avatar-form"), microphone: $("microphone"), sayText: $("say-text"), say: $("say"),
  reference: $("reference"), referencePreview: $("reference-preview"), identities: $("identities"),
};
const MAX_REFERENCE_CHARS = 15000; // protocol.py MAX_REFERENCE_CHARS
const isAvatar = (m) => !!(m && m.audio_in_rate);
const MAX_MOUSE = 4096;
const STATS = ["st-fps", "st-rtt", "st-latency", "st-block", "st-queue", "st-dropped", "st-frames", "st-keys"];

// Everything the page knows; also read by the browser tests (window.streamgen).
const state = {
  models: [], model: null, transport: null, pending: null, seq: 1, sessionId: null, paused: false,
  connected: false, held: new Set(), keysSent: 0, mouse: { dx: 0, dy: 0 }, telemetry: null, rttMs: null,
  latencyMs: null, sentAt: new Map(), fps: 0, framesDecoded: 0, clientDropped: 0, timers: [], lastStats: null,
  audioEnergy: 0, audioSamples: 0, status: "idle", endReason: null, recorder: null, downloads: 0,
  microphone: null, references: 0, identities: [], identity: null,
};
window.streamgen = state;

function setStatus(s) { state.status = s; $("st-status").textContent = s; }
function showError(msg) { ui.error.textContent = msg || ""; }
function clearStats() { for (const id of STATS) $(id).textContent = "–"; }

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
  ui.avatarForm.hidden = !isAvatar(state.model);
  loadIdentities().catch((e) => showError(`could not list the shipped identities: ${e.message || e}`));
  fitScreen();
}

// An avatar model's shipped identities (GET /v1/identities, docs/protocol.md section 8): one button each,
// beside the upload; picking one sends it as a reference, exactly as an uploaded image is sent.
async function loadIdentities() {
  ui.identities.innerHTML = "";
  state.identities = []; state.identity = null;
  const m = state.model;
  if (!isAvatar(m)) return;
  const token = ui.token.value.trim();
  const r = await fetch(`/v1/identities?model=${encodeURIComponent(m.name)}`,
                        { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  if (r.status === 401) return; // shown once a token is typed (connect lists them again)
  if (!r.ok) throw new Error(`HTTP ${r.status}`);
  const info = await r.json();
  if (state.model !== m) return; // another model was chosen meanwhile
  state.identities = info.identities;
  for (const id of info.identities) {
    const b = document.createElement("button");
    b.type = "button"; b.title = id.name; b.dataset.index = id.index; b.disabled = !state.connected;
    const img = document.createElement("img");
    img.src = `data:image/png;base64,${id.png}`; img.alt = id.name;
    b.appendChild(img);
    b.addEventListener("click", () => pickIdentity(id, b, img));
    ui.identities.appendChild(b);
  }
}

function pickIdentity(id, button, img) {
  if (!send({ type: "reference", image: id.png })) return;
  state.references++;
  state.identity = id.index;
  for (const other of ui.identities.children) other.classList.toggle("on", other === button);
  const preview = ui.referencePreview;
  preview.hidden = false;
  preview.getContext("2d").drawImage(img, 0, 0, preview.width, preview.height);
}

// Small models at an integer scale with crisp pixels; big ones scaled down to fit.
function fitScreen() {
  const m = state.model;
  if (!m) return;
  const room = ui.screen.parentElement.clientWidth || m.width;
  const tall = Math.max(m.height, window.innerHeight - 220);
  const fit = Math.min(room / m.width, tall / m.height);
  const scale = fit >= 1 ? Math.floor(fit) : fit;
  for (const el of [ui.video, ui.canvas]) {
    el.style.width = `${Math.round(m.width * scale)}px`;
    el.style.height = `${Math.round(m.height * scale)}px`;
  }
}

function send(msg) {
  const t = state.transport;
  if (!t) return false;
  msg.seq = state.seq++;
  return t.send(JSON.stringify(msg)) ? msg.seq : false;
}

function setLocked(locked) {
  for (const el of [ui.model, ui.seed, ui.token, ui.transport]) el.disabled = locked;
  ui.pause.disabled = ui.record.disabled = !locked;
  ui.microphone.disabled = ui.say.disabled = ui.reference.disabled = !locked;
  for (const b of ui.identities.children) b.disabled = !locked;
  ui.connect.textContent = locked ? "Disconnect" : "Connect";
  ui.connect.classList.toggle("on", locked);
}

function hooksFor(getT) {
  const mine = () => { const t = getT(); return t && (t === state.transport || t === state.pending); };
  return {
    onMessage: (m) => { if (mine()) onMessage(m); },
    onEnd: (reason) => { if (getT() === state.transport) finish(reason === null ? "server lost" : `ended: ${reason}`, true); },
    onFrame: () => {},
  };
}

async function connect() {
  const model = state.model;
  if (!model) return;
  showError(""); clearStats();
  ui.reconnect.hidden = true;
  state.seq = 1; state.telemetry = null; state.latencyMs = null; state.sentAt.clear(); state.lastStats = null;
  state.fps = 0; state.framesDecoded = 0; state.endReason = null;
  setLocked(true);
  setStatus("connecting");
  const start = { model: model.name, seed: Number(ui.seed.value) || 0, options: {},
                  prompt: model.takes_prompt && ui.prompt.value.trim() ? ui.prompt.value.trim() : null };
  const token = ui.token.value.trim();
  const want = ui.transport.value;
  let t = null;
  if (want !== "ws" && window.RTCPeerConnection) {
    t = new RtcTransport(ui.video, hooksFor(() => t));
    state.pending = t;
    try {
      await t.open(start, token ? { Authorization: `Bearer ${token}` } : {}, isAvatar(model));
    } catch (e) {
      t.close();
      state.pending = null;
      if (e instanceof ServerRefusal || want === "webrtc") throw e;
      showError(`WebRTC could not connect (${e.message}); streaming over WebSocket instead`);
      t = null;
    }
  }
  if (!t) {
    if (want === "webrtc") throw new Error("this browser has no WebRTC");
    t = new WsTransport(ui.canvas, hooksFor(() => t));
    state.pending = t;
    try {
      await t.open({ ...start, seq: state.seq++ }, token);
    } catch (e) { t.close(); state.pending = null; throw e; }
  }
  if (state.pending !== t) { t.close(); return; } // disconnected while connecting
  state.pending = null;
  state.transport = t;
  state.sessionId = t.sessionId;
  state.connected = true;
  if (isAvatar(model) && !state.identities.length) loadIdentities().catch(() => {}); // a token typed since
  ui.video.hidden = t.kind !== "webrtc";
  ui.canvas.hidden = t.kind !== "ws";
  $("st-transport").textContent = t.kind === "ws" ? "WebSocket" : "WebRTC";
  t.setVolume(Number(ui.volume.value), ui.mute.checked);
  setStatus("streaming");
  ui.hint.textContent = hintFor(model);
  (t.kind === "ws" ? ui.canvas : ui.video).focus();
  state.timers.push(setInterval(() => send({ type: "ping", t_ms: Date.now() }), 2000));
  state.timers.push(setInterval(pollStats, 500));
  state.timers.push(setInterval(flushMouse, 16));
}

function hintFor(m) {
  if (isAvatar(m)) return "press Microphone and speak, or type text and press Say; pick a reference image for the face";
  const parts = [];
  if (m.keys.length) parts.push(`keys: ${m.keys.join(" ")}`);
  else parts.push("keys are forwarded to the model");
  if (m.takes_mouse) parts.push("click the video to capture the mouse (Esc releases it)");
  if (m.takes_prompt) parts.push("type a prompt on the right");
  return parts.join(" · ");
}

// End of a session: by the user (status "idle"), by the server ("ended: REASON") or lost ("server lost").
function finish(status, offerReconnect) {
  releaseAllKeys();
  stopMicrophone();
  stopRecording();
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  const t = state.transport || state.pending;
  state.transport = null; state.pending = null;
  if (t) t.close();
  state.connected = false; state.paused = false; state.sessionId = null;
  state.endReason = offerReconnect ? status : null;
  ui.pause.textContent = "Pause";
  setLocked(false);
  setStatus(status);
  ui.reconnect.hidden = !offerReconnect;
}

function disconnect() {
  if (state.transport) send({ type: "stop" });
  finish("idle", false);
}

function onMessage(m) {
  switch (m.type) {
    case "started": setStatus("streaming"); break;
    case "telemetry": onTelemetry(m); break;
    case "pong": state.rttMs = Date.now() - m.t_ms; $("st-rtt").textContent = `${state.rttMs.toFixed(0)} ms`; break;
    case "error": showError(`${m.code}: ${m.message}`); break;
    case "bye": finish(`ended: ${m.reason}`, m.reason !== "stop"); break;
  }
}

// Input-to-frame latency: from sending a key to the block that applied it (telemetry.applied_seq), plus
// the frames queued ahead of that block's first frame.
function onTelemetry(m) {
  state.telemetry = m;
  $("st-block").textContent = `${(m.timings_ms.step ?? m.timings_ms.total ?? 0).toFixed(1)} ms (#${m.block_index})`;
  $("st-queue").textContent = `${m.queue_depth} frames`;
  if (m.applied_seq === null || m.applied_seq === undefined) return;
  let sent = null;
  for (const [seq, at] of state.sentAt) {
    if (seq > m.applied_seq) break;
    sent = at;
    state.sentAt.delete(seq);
  }
  if (sent === null) return;
  const fps = state.model ? state.model.fps : 1;
  state.latencyMs = performance.now() - sent + (m.queue_depth * 1000) / fps;
  $("st-latency").textContent = `${state.latencyMs.toFixed(0)} ms`;
}

async function pollStats() {
  const t = state.transport;
  if (!t) return;
  const s = await t.stats();
  const prev = state.lastStats;
  if (prev && s.timestamp > prev.timestamp) state.fps = ((s.framesDecoded - prev.framesDecoded) * 1000) / (s.timestamp - prev.timestamp);
  state.lastStats = s;
  state.framesDecoded = s.framesDecoded; state.clientDropped = s.framesDropped;
  state.audioEnergy = s.audioEnergy; state.audioSamples = s.audioSamples;
  $("st-fps").textContent = state.fps.toFixed(1);
  $("st-frames").textContent = `${state.framesDecoded} decoded`;
  const serverDropped = state.telemetry ? state.telemetry.dropped_frames : 0;
  $("st-dropped").textContent = `${serverDropped} server · ${state.clientDropped} client`;
  $("st-keys").textContent = state.held.size ? [...state.held].join(" ") : "–";
}

// ---- recording: MediaRecorder over what is shown and heard; the file downloads when recording stops
function startRecording() {
  const stream = state.transport.stream();
  const type = ["video/webm;codecs=vp8,opus", "video/webm"].find((t) => MediaRecorder.isTypeSupported(t)) || "";
  const rec = new MediaRecorder(stream, type ? { mimeType: type } : {});
  const parts = [];
  rec.ondataavailable = (e) => { if (e.data.size) parts.push(e.data); };
  rec.onstop = () => {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob(parts, { type: rec.mimeType || "video/webm" }));
    a.download = `streamgen-${state.model ? state.model.name : "stream"}-${new Date().toISOString().replace(/[:.]/g, "-")}.webm`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
    state.downloads++;
  };
  rec.start(250);
  state.recorder = rec;
  ui.record.textContent = "Stop recording";
  ui.record.classList.add("on");
}

function stopRecording() {
  if (state.recorder && state.recorder.state !== "inactive") state.recorder.stop();
  state.recorder = null;
  ui.record.textContent = "Record";
  ui.record.classList.remove("on");
}

// ---- keyboard: key edges (press and release), never auto-repeat
function keyWanted(code) {
  const m = state.model;
  if (!state.connected || !m || isAvatar(m)) return false; // an avatar takes speech, not keys
  if ([ui.prompt, ui.seed, ui.volume, ui.sayText].includes(document.activeElement)) return false;
  return m.keys.length ? m.keys.includes(code) : true;
}

function sendKey(code, down) {
  const seq = send({ type: "action", kind: "key", key: code, down, t_ms: Date.now() });
  if (!seq) return;
  state.keysSent++;
  state.sentAt.set(seq, performance.now());
  if (state.sentAt.size > 64) state.sentAt.delete(state.sentAt.keys().next().value);
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
for (const el of [ui.video, ui.canvas]) {
  el.addEventListener("click", () => {
    el.focus();
    if (state.connected && state.model && state.model.takes_mouse) el.requestPointerLock();
  });
}
document.addEventListener("mousemove", (e) => {
  if (![ui.video, ui.canvas].includes(document.pointerLockElement)) return;
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
function connectOrReport() {
  connect().catch((e) => { const why = String(e.message || e); finish("idle", false); showError(why); });
}
ui.connect.addEventListener("click", () => (state.transport || state.pending ? disconnect() : connectOrReport()));
ui.reconnect.addEventListener("click", connectOrReport);
ui.pause.addEventListener("click", () => {
  state.paused = !state.paused;
  send({ type: state.paused ? "pause" : "resume" });
  ui.pause.textContent = state.paused ? "Resume" : "Pause";
});
ui.record.addEventListener("click", () => (state.recorder ? stopRecording() : startRecording()));
const applyVolume = () => { if (state.transport) state.transport.setVolume(Number(ui.volume.value), ui.mute.checked); };
ui.mute.addEventListener("change", applyVolume);
ui.volume.addEventListener("input", applyVolume);
ui.fullscreen.addEventListener("click", () => (document.fullscreenElement ? document.exitFullscreen() : ui.screen.requestFullscreen()));
ui.sendPrompt.addEventListener("click", () => {
  const p = ui.prompt.value.trim();
  if (p) send({ type: "prompt", prompt: p });
});
ui.model.addEventListener("change", onModelChange);

// ---- avatars: microphone, say, reference image
async function startMicrophone() {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
  if (!state.transport) { stream.getTracks().forEach((tr) => tr.stop()); return; }
  await state.transport.setMicrophone(stream, state.model.audio_in_rate);
  state.microphone = stream;
  ui.microphone.textContent = "Microphone off";
  ui.microphone.classList.add("on");
}
function stopMicrophone() {
  if (!state.microphone) return;
  if (state.transport) state.transport.setMicrophone(null).catch(() => {});
  state.microphone.getTracks().forEach((tr) => tr.stop());
  state.microphone = null;
  ui.microphone.textContent = "Microphone";
  ui.microphone.classList.remove("on");
}
ui.microphone.addEventListener("click", () => {
  if (state.microphone) stopMicrophone();
  else startMicrophone().catch((e) => showError(`microphone: ${e.message || e}`));
});
ui.say.addEventListener("click", () => {
  const text = ui.sayText.value.trim();
  if (text) send({ type: "say", text });
});
ui.reference.addEventListener("change", async () => {
  const file = ui.reference.files[0];
  const m = state.model;
  if (!file || !m) return;
  try {
    const { data, canvas } = await window.streamgenAvatar.referenceImage(file, m.width, m.height, MAX_REFERENCE_CHARS);
    if (send({ type: "reference", image: data })) { state.references++; state.identity = null; }
    for (const b of ui.identities.children) b.classList.remove("on");
    const preview = ui.referencePreview;
    preview.hidden = false;
    preview.getContext("2d").drawImage(canvas, 0, 0, preview.width, preview.height);
  } catch (e) { showError(`reference image: ${e.message || e}`); }
});
window.addEventListener("resize", fitScreen);
window.addEventListener("beforeunload", disconnect);
loadModels().catch((e) => showError(`could not list models: ${e}`));
