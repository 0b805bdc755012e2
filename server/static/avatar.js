// Avatar mode of the page (docs/protocol.md section 8): the microphone over WebSocket (binary s16 speech
// messages at the model's speech-in rate), and the reference image cropped and resized here, in the browser.
// Over WebRTC the microphone is the peer connection's own audio track (transport.js). No build step.
"use strict";
(() => {

// One binary speech message: the 32-byte media header (little-endian) + s16 mono samples.
function speechMessage(samples, rate, index, firstSample) {
  const buf = new ArrayBuffer(32 + samples.length * 2);
  const h = new DataView(buf);
  [0x53, 0x47, 0x4d, 0x42].forEach((b, i) => h.setUint8(i, b)); // "SGMB"
  h.setUint8(4, 1); h.setUint8(5, 2); h.setUint8(6, 1); h.setUint8(7, 0); // version, kind s16, mono, flags
  h.setUint32(8, 0, true); h.setUint32(12, index >>> 0, true);
  h.setBigInt64(16, BigInt(Math.round((firstSample * 1e6) / rate)), true);
  h.setUint32(24, rate, true); h.setUint32(28, samples.length * 2, true);
  const pcm = new Int16Array(buf, 32);
  for (let i = 0; i < samples.length; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(samples[i] * 32767)));
  return buf;
}

// The microphone over WebSocket: a stream's audio resampled by an AudioContext running at the model's rate,
// sent in chunks of 2048 samples (128 ms at 16 kHz).
class WsMicrophone {
  constructor(stream, rate, sendBinary) {
    this.context = new AudioContext({ sampleRate: rate });
    this.source = this.context.createMediaStreamSource(stream);
    this.node = this.context.createScriptProcessor(2048, 1, 1);
    this.index = 0; this.sent = 0;
    this.node.onaudioprocess = (e) => {
      const samples = e.inputBuffer.getChannelData(0);
      if (sendBinary(speechMessage(samples, rate, this.index++, this.sent))) this.sent += samples.length;
    };
    this.source.connect(this.node);
    this.node.connect(this.context.destination); // a ScriptProcessor runs only while connected (it outputs silence)
  }

  stop() { this.node.onaudioprocess = null; this.source.disconnect(); this.node.disconnect(); this.context.close().catch(() => {}); }
}

// A picked image file as base64 JPEG of width x height, centre-cropped to that aspect; lower quality until it
// fits the reference message's limit.
async function referenceImage(file, width, height, maxChars) {
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(bitmap.width / width, bitmap.height / height);
  const cw = width * scale, ch = height * scale;
  const canvas = document.createElement("canvas");
  canvas.width = width; canvas.height = height;
  canvas.getContext("2d").drawImage(bitmap, (bitmap.width - cw) / 2, (bitmap.height - ch) / 2, cw, ch, 0, 0, width, height);
  bitmap.close();
  for (const quality of [0.92, 0.8, 0.6, 0.4, 0.2]) {
    const data = canvas.toDataURL("image/jpeg", quality).split(",")[1];
    if (data.length <= maxChars) return { data, canvas };
  }
  throw new Error(`the reference image does not fit ${maxChars} base64 characters at ${width}×${height}`);
}

window.streamgenAvatar = { speechMessage, WsMicrophone, referenceImage };
})();
