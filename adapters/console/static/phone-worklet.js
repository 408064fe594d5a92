// The phone, on the audio thread: it turns the microphone into 20 ms mu-law frames at
// 8 kHz, and plays the agent's frames through a small jitter buffer, telling the page
// when the audio before each checkpoint has actually gone out to the speaker.
import { Resampler, ulawDecode, ulawEncodeSample } from "./dsp.js";

const FRAME = 160; // 20 ms at 8 kHz
const PREBUFFER = 0.06; // seconds of agent audio held before playback (re)starts
const PREBUFFER_WAIT = 0.1; // ... unless it has waited this long for them

class Phone extends AudioWorkletProcessor {
  constructor() {
    super();
    this.down = new Resampler(sampleRate, 8000);
    this.up = new Resampler(8000, sampleRate);
    this.frame = new Uint8Array(FRAME);
    this.fill = 0;
    this.sending = false;
    this.muted = false;
    this.chunks = []; // agent audio at the context's rate, oldest first
    this.offset = 0; // read position in chunks[0]
    this.queued = 0;
    this.written = 0; // samples ever queued
    this.played = 0; // samples ever sent to the speaker
    this.marks = []; // {name, at}: played once `played` reaches `at`
    this.playing = false;
    this.waitingSince = null;
    this.underruns = 0;
    this.frames = 0;
    this.lastStats = 0;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  enqueue(samples) {
    if (!samples.length) return;
    this.chunks.push(samples);
    this.queued += samples.length;
    this.written += samples.length;
    if (this.waitingSince === null) this.waitingSince = currentTime;
  }

  onMessage(msg) {
    switch (msg.type) {
      case "start":
        this.sending = true;
        break;
      case "stop":
        this.sending = false;
        break;
      case "mute":
        this.muted = msg.muted;
        break;
      case "play":
        this.enqueue(this.up.push(ulawDecode(msg.ulaw)));
        break;
      case "mark":
        // The filter holds back a few samples; the mark comes after them.
        this.enqueue(this.up.flush());
        this.up.reset();
        this.marks.push({ name: msg.name, at: this.written });
        break;
      case "clear": {
        const dropped = this.queued;
        this.chunks = [];
        this.offset = 0;
        this.queued = 0;
        this.marks = [];
        this.playing = false;
        this.waitingSince = null;
        this.up.reset();
        this.port.postMessage({ type: "cleared", dropped });
        break;
      }
    }
  }

  capture(input, length) {
    const x = input && !this.muted ? input : new Float32Array(length);
    const down = this.down.push(x);
    for (let i = 0; i < down.length; i++) {
      this.frame[this.fill++] = ulawEncodeSample(Math.max(-1, Math.min(1, down[i])) * 32767);
      if (this.fill === FRAME) {
        this.fill = 0;
        if (this.sending) {
          this.frames++;
          this.port.postMessage({ type: "frame", bytes: this.frame.slice() });
        }
      }
    }
  }

  playout(out) {
    if (!this.playing && this.queued > 0) {
      const endOfSpeech = this.marks.length && this.marks[this.marks.length - 1].at >= this.written;
      const waited = this.waitingSince !== null && currentTime - this.waitingSince >= PREBUFFER_WAIT;
      if (this.queued >= PREBUFFER * sampleRate || endOfSpeech || waited) this.playing = true;
    }
    let i = 0;
    if (this.playing) {
      while (i < out.length && this.chunks.length) {
        const chunk = this.chunks[0];
        const take = Math.min(out.length - i, chunk.length - this.offset);
        out.set(chunk.subarray(this.offset, this.offset + take), i);
        i += take;
        this.offset += take;
        if (this.offset === chunk.length) {
          this.chunks.shift();
          this.offset = 0;
        }
      }
      this.queued -= i;
      this.played += i;
      if (this.queued === 0) {
        const midSpeech = !this.marks.length || this.marks[this.marks.length - 1].at < this.written;
        if (midSpeech && i < out.length) this.underruns++;
        this.playing = false;
        this.waitingSince = null;
      }
    }
    out.fill(0, i);
    while (this.marks.length && this.marks[0].at <= this.played) {
      this.port.postMessage({ type: "played", name: this.marks.shift().name });
    }
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    this.capture(inputs[0] && inputs[0][0], out.length);
    this.playout(out);
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if (currentTime - this.lastStats >= 0.1) {
      this.lastStats = currentTime;
      this.port.postMessage({
        type: "stats", queued: this.queued / sampleRate, played: this.played / sampleRate,
        underruns: this.underruns, frames: this.frames,
      });
    }
    return true;
  }
}

registerProcessor("phone", Phone);
