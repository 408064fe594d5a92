// Phone audio in the browser: G.711 mu-law, and a streaming band-limited resampler.
// An ES module shared by the phone's AudioWorklet and by the tests, which check it on
// known signals in the page.

// -- G.711 mu-law -----------------------------------------------------------------------
const BIAS = 0x84;
const CLIP = 32635;

export function ulawEncodeSample(sample) {
  let s = Math.max(-32768, Math.min(32767, Math.round(sample)));
  const sign = s < 0 ? 0x80 : 0;
  if (sign) s = -s;
  if (s > CLIP) s = CLIP;
  s += BIAS;
  let exponent = 7;
  for (let mask = 0x4000; (s & mask) === 0 && exponent > 0; exponent--, mask >>= 1) {}
  const mantissa = (s >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

const DECODE = new Int16Array(256);
for (let i = 0; i < 256; i++) {
  const u = ~i & 0xff;
  const exponent = (u >> 4) & 0x07;
  const magnitude = (((u & 0x0f) << 3) + BIAS) << exponent;
  DECODE[i] = u & 0x80 ? BIAS - magnitude : magnitude - BIAS;
}

/** Mu-law bytes to floats in [-1, 1). */
export function ulawDecode(bytes) {
  const out = new Float32Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = DECODE[bytes[i]] / 32768;
  return out;
}

/** Floats in [-1, 1] to mu-law bytes. */
export function ulawEncode(floats) {
  const out = new Uint8Array(floats.length);
  for (let i = 0; i < floats.length; i++) out[i] = ulawEncodeSample(floats[i] * 32767);
  return out;
}

// -- resampling -------------------------------------------------------------------------
// Windowed-sinc interpolation from a table of fractional phases. The low-pass sits below
// the lower rate's Nyquist frequency, so 48 kHz speech going down to 8 kHz does not fold
// its 4-24 kHz content back into the phone band, and 8 kHz going up has no images.

function blackman(u) {
  return 0.42 + 0.5 * Math.cos(Math.PI * u) + 0.08 * Math.cos(2 * Math.PI * u);
}

export class Resampler {
  constructor(inRate, outRate, { cutoff = 0.45 * Math.min(inRate, outRate), zeros = 12, phases = 256 } = {}) {
    this.step = inRate / outRate;
    const fc = cutoff / inRate; // cycles per input sample
    this.half = Math.max(2, Math.ceil(zeros / (2 * fc))); // taps each side
    const taps = 2 * this.half;
    this.phases = phases;
    this.table = [];
    for (let p = 0; p <= phases; p++) {
      const row = new Float32Array(taps);
      let sum = 0;
      for (let k = 0; k < taps; k++) {
        const x = k - this.half + 1 - p / phases;
        const sinc = x === 0 ? 1 : Math.sin(2 * Math.PI * fc * x) / (2 * Math.PI * fc * x);
        const w = Math.abs(x) >= this.half ? 0 : blackman(x / this.half);
        row[k] = 2 * fc * sinc * w;
        sum += row[k];
      }
      for (let k = 0; k < taps; k++) row[k] /= sum; // unity gain at DC for every phase
      this.table.push(row);
    }
    this.reset();
  }

  reset() {
    this.buf = new Float32Array(4096);
    this.n = this.half - 1; // history: silence before the first sample
    this.pos = this.half - 1;
  }

  /** Take input samples; return the output samples they complete. */
  push(input) {
    if (this.n + input.length > this.buf.length) {
      const bigger = new Float32Array(Math.max(this.buf.length * 2, this.n + input.length));
      bigger.set(this.buf.subarray(0, this.n));
      this.buf = bigger;
    }
    this.buf.set(input, this.n);
    this.n += input.length;
    const count = Math.max(0, Math.ceil((this.n - this.half - this.pos) / this.step) + 1);
    const out = new Float32Array(count);
    let produced = 0;
    const taps = 2 * this.half;
    while (produced < count) {
      let base = Math.floor(this.pos);
      if (base + this.half >= this.n) break;
      let phase = Math.round((this.pos - base) * this.phases);
      const row = this.table[phase];
      const start = base - this.half + 1;
      let acc = 0;
      for (let k = 0; k < taps; k++) acc += this.buf[start + k] * row[k];
      out[produced++] = acc;
      this.pos += this.step;
    }
    const keep = Math.floor(this.pos) - this.half + 1;
    if (keep > 0) {
      this.buf.copyWithin(0, keep, this.n);
      this.n -= keep;
      this.pos -= keep;
    }
    return out.subarray(0, produced);
  }

  /** The samples still held back for the filter's look-ahead, followed by silence. */
  flush() {
    return this.push(new Float32Array(this.half + 1));
  }
}

// -- base64 (the media protocol carries audio as base64 text) ----------------------------
export function bytesToBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

export function base64ToBytes(b64) {
  const text = atob(b64);
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}
