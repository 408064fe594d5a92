// The console's phone: it plays the part of Vobiz against this server. It asks /answer
// for the call, opens the media socket the answer names, sends `start` and a mu-law
// frame every 20 ms, plays the agent's audio, says `playedStream` once the audio before a
// checkpoint has left the speaker and `clearedAudio` after a `clearAudio`. Beside it, the
// live view draws the call's log records from the console's read-only feed.
import { api, feedUrl, keepToken } from "./common.js";
import { base64ToBytes, bytesToBase64 } from "./dsp.js";

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), call: $("call"), hangup: $("hangup"), mute: $("mute"),
  transcript: $("transcript"), transitions: $("transitions"), state: $("current-state"),
  diagram: $("diagram"), latency: document.querySelector("#live-latency tbody"),
  bargeIns: document.querySelector("#live-barge-ins tbody"), logLink: $("log-link"),
};

// What the page has seen, for the meters (and for tests to read).
const stats = {
  framesSent: 0, agentFrames: 0, played: 0, queued: 0, underruns: 0,
  marksPlayed: 0, clears: 0, droppedOnClear: 0, clearedSent: 0, playedSent: 0,
  records: 0, state: null, ended: null,
};
window.phoneStats = stats;

let muted = false;
let call = null; // the call in progress, or the one whose feed is still open

function setStatus(text, status) {
  ui.status.textContent = text;
  ui.status.dataset.status = status;
}

function line(cls, who, text, t) {
  const el = document.createElement("div");
  el.className = `line ${cls}`;
  const time = document.createElement("span");
  time.className = "t";
  time.textContent = t === undefined ? "" : `${t.toFixed(2)}s`;
  const whoEl = document.createElement("span");
  whoEl.className = "who";
  whoEl.textContent = who;
  const textEl = document.createElement("span");
  textEl.className = "text";
  textEl.textContent = text;
  el.append(time, whoEl, textEl);
  const interim = ui.transcript.querySelector(".interim");
  ui.transcript.insertBefore(el, interim);
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
  return el;
}

function showInterim(text, t) {
  let el = ui.transcript.querySelector(".interim");
  if (!text) {
    el?.remove();
    return;
  }
  if (!el) {
    el = line("caller interim", "caller", "", t);
    ui.transcript.append(el);
  }
  el.querySelector(".text").textContent = `${text}…`;
}

// -- the phone ---------------------------------------------------------------------------

class Call {
  constructor() {
    this.id = null;
    this.streamId = `console-stream-${crypto.getRandomValues(new Uint32Array(2)).join("")}`;
    this.seq = 0;
    this.media = null;
    this.feed = null;
    this.ctx = null;
    this.node = null;
    this.mic = null;
    this.source = null;
    this.live = false;
    this.clearGeneration = 0;
    this.startedAt = 0;
    this.latency = new LiveLatency();
  }

  send(message) {
    if (this.media && this.media.readyState === WebSocket.OPEN) {
      this.media.send(JSON.stringify({ sequenceNumber: this.seq++, ...message }));
    }
  }

  async openMic() {
    // Echo cancellation keeps the agent from hearing itself through laptop speakers; the
    // browser's noise suppression and gain control clip word endings the recognizer needs.
    this.mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
    });
    this.source = this.ctx.createMediaStreamSource(this.mic);
    this.source.connect(this.node);
  }

  closeMic() {
    this.source?.disconnect();
    for (const track of this.mic?.getTracks() || []) track.stop();
    this.mic = this.source = null;
  }

  async setMuted(value) {
    this.node?.port.postMessage({ type: "mute", muted: value });
    if (!this.live) return;
    // A muted phone lets go of the microphone; unmuting takes it again.
    if (value) this.closeMic();
    else if (!this.mic) await this.openMic();
  }

  async start() {
    this.ctx = new AudioContext({ latencyHint: "interactive" });
    await this.ctx.audioWorklet.addModule("static/phone-worklet.js");
    this.node = new AudioWorkletNode(this.ctx, "phone", {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
      channelCount: 1, channelCountMode: "explicit",
    });
    this.node.port.onmessage = (e) => this.onWorklet(e.data);
    this.node.connect(this.ctx.destination);
    this.node.port.postMessage({ type: "mute", muted });
    this.live = true;
    if (!muted) await this.openMic();

    const created = await api("api/calls", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
    });
    if (!created.ok) throw new Error(`console refused the call: ${await created.text()}`);
    this.id = (await created.json()).call_id;
    this.openFeed();

    // The answer webhook, as Vobiz calls it.
    const form = new URLSearchParams({
      CallUUID: this.id, From: "console", To: "agent", Direction: "inbound",
      Event: "StartApp", CallStatus: "ringing",
    });
    const answer = await fetch("/answer", { method: "POST", body: form });
    const xml = await answer.text();
    const stream = new DOMParser().parseFromString(xml, "application/xml").querySelector("Stream");
    if (!answer.ok || !stream) {
      const spoken = new DOMParser().parseFromString(xml, "application/xml").querySelector("Speak");
      throw new Error(`the server did not answer with a stream: ${spoken?.textContent || answer.status}`);
    }
    this.media = new WebSocket(stream.textContent.trim());
    this.media.onopen = () => this.onOpen();
    this.media.onmessage = (e) => this.onAgent(JSON.parse(e.data));
    this.media.onclose = () => this.end("the media socket closed", "Vobiz");
  }

  onOpen() {
    this.startedAt = performance.now();
    this.send({
      event: "start",
      start: {
        callId: this.id, streamId: this.streamId, accountId: "console", tracks: ["inbound"],
        mediaFormat: { encoding: "audio/x-mulaw", sampleRate: 8000 },
      },
      extra_headers: "{}",
    });
    this.node.port.postMessage({ type: "start" });
    setStatus("in call", "in-call");
    ui.hangup.disabled = false;
    for (const key of document.querySelectorAll("#keypad button")) key.disabled = false;
  }

  onWorklet(msg) {
    switch (msg.type) {
      case "frame": {
        const chunk = stats.framesSent;
        stats.framesSent++;
        this.send({
          streamId: this.streamId, event: "media",
          media: { track: "inbound", timestamp: String(chunk * 20), chunk, payload: bytesToBase64(msg.bytes) },
        });
        break;
      }
      case "played": {
        // Out of the worklet; the speaker is outputLatency behind it.
        const generation = this.clearGeneration;
        stats.marksPlayed++;
        setTimeout(() => {
          if (generation !== this.clearGeneration || !this.live) return;
          stats.playedSent++;
          this.send({ event: "playedStream", name: msg.name });
        }, (this.ctx.outputLatency || 0) * 1000);
        break;
      }
      case "cleared":
        stats.droppedOnClear += msg.dropped;
        stats.clearedSent++;
        this.send({ event: "clearedAudio", streamId: this.streamId });
        break;
      case "stats":
        Object.assign(stats, { played: msg.played, queued: msg.queued, underruns: msg.underruns });
        meters();
        break;
    }
  }

  onAgent(msg) {
    switch (msg.event) {
      case "playAudio": {
        const bytes = base64ToBytes(msg.media.payload);
        // A message carries up to 100 ms: count the 20 ms frames (160 bytes of mu-law).
        stats.agentFrames += Math.max(1, Math.round(bytes.length / 160));
        this.node.port.postMessage({ type: "play", ulaw: bytes }, [bytes.buffer]);
        break;
      }
      case "checkpoint":
        this.node.port.postMessage({ type: "mark", name: msg.name });
        break;
      case "clearAudio":
        stats.clears++;
        this.clearGeneration++;
        this.node.port.postMessage({ type: "clear" });
        break;
      case "stop": // the agent hung up: Vobiz ends the stream and the call
        this.end("the agent hung up", "Vobiz");
        break;
    }
    meters();
  }

  sendDigit(digit) {
    this.send({ event: "dtmf", dtmf: { digit } });
  }

  openFeed() {
    this.feed = new WebSocket(feedUrl(`api/feed?call=${encodeURIComponent(this.id)}`));
    this.feed.onmessage = (e) => showRecord(JSON.parse(e.data), this);
  }

  /** The call is over on the phone's side: the socket goes, Vobiz posts its hang-up. */
  async end(why, source) {
    if (!this.live) return;
    this.live = false;
    this.node?.port.postMessage({ type: "stop" });
    this.closeMic();
    if (this.media && this.media.readyState <= WebSocket.OPEN) this.media.close(1000);
    await this.ctx?.close();
    setStatus(`call over: ${why}`, "idle");
    ui.call.disabled = false;
    ui.hangup.disabled = true;
    for (const key of document.querySelectorAll("#keypad button")) key.disabled = true;
    const seconds = Math.ceil((performance.now() - this.startedAt) / 1000);
    const agent = source === "Vobiz";
    await fetch("/hangup", {
      method: "POST",
      body: new URLSearchParams({
        CallUUID: this.id, Event: "Hangup", CallStatus: "completed", HangupCause: "NORMAL_CLEARING",
        HangupCauseCode: agent ? "4010" : "4000", HangupSource: agent ? "Vobiz" : "Caller",
        Duration: String(seconds),
      }),
    }).catch(() => {});
  }
}

function meters() {
  $("m-frames").textContent = stats.framesSent;
  $("m-agent").textContent = `${stats.agentFrames} frames`;
  $("m-played").textContent = `${stats.played.toFixed(1)} s`;
  $("m-queued").textContent = `${Math.round(stats.queued * 1000)} ms`;
  $("m-underruns").textContent = stats.underruns;
  $("m-marks").textContent = stats.marksPlayed;
  $("m-clears").textContent = stats.clears;
}

// -- the live view -----------------------------------------------------------------------

// Per turn: caller stopped -> first agent audio; per barge-in: caller speech -> clearAudio.
class LiveLatency {
  constructor() {
    this.lastStop = null;
    this.lastStart = null;
    this.turns = new Map();
  }

  add(r) {
    if (r.kind === "event" && r.event === "CallerSpeechStopped") this.lastStop = r.at;
    if (r.kind === "event" && r.event === "CallerSpeechStarted") this.lastStart = r.at;
    if (r.kind !== "command") return;
    if (r.command === "StartCompletion") {
      const stopped = this.lastStop !== null && this.lastStop <= r.t ? this.lastStop : r.t;
      this.turns.set(r.utterance, { stopped, first: null });
      row(ui.latency, `turn-${r.utterance}`, [r.utterance, `${stopped.toFixed(2)} s`, "…"]);
    } else if (r.command === "PlayAudio") {
      const turn = this.turns.get(r.utterance);
      if (turn && turn.first === null) {
        turn.first = r.t;
        row(ui.latency, `turn-${r.utterance}`, [r.utterance, `${turn.stopped.toFixed(2)} s`,
          `${Math.round((r.t - turn.stopped) * 1000)} ms`]);
      }
    } else if (r.command === "ClearAudio") {
      const began = this.lastStart !== null && r.t - this.lastStart < 10 ? this.lastStart : r.t;
      row(ui.bargeIns, null, [`${began.toFixed(2)} s`, `${r.t.toFixed(2)} s`,
        `${Math.round((r.t - began) * 1000)} ms`]);
    }
  }
}

function row(body, key, cells) {
  let tr = key ? body.querySelector(`tr[data-key="${key}"]`) : null;
  if (!tr) {
    tr = document.createElement("tr");
    if (key) tr.dataset.key = key;
    body.append(tr);
  }
  tr.replaceChildren(...cells.map((c) => Object.assign(document.createElement("td"), { textContent: c })));
}

function lightState(state, from) {
  stats.state = state;
  ui.state.textContent = state;
  for (const g of ui.diagram.querySelectorAll(".state")) {
    g.classList.toggle("active", g.dataset.state === state);
  }
  for (const edge of ui.diagram.querySelectorAll(".edge")) {
    edge.classList.toggle("taken", edge.dataset.from === from && edge.dataset.to === state);
  }
}

function showRecord(r, owner) {
  stats.records++;
  owner.latency.add(r);
  switch (r.kind) {
    case "header":
      $("providers").textContent = Object.entries(r.providers || {}).map(([k, v]) => `${k}: ${v}`).join(" · ");
      lightState(ui.diagram.querySelector(".state")?.dataset.state || "greeting", null);
      break;
    case "transition": {
      lightState(r.to, r.from);
      const li = document.createElement("li");
      li.textContent = `${r.t.toFixed(2)}s  ${r.from} → ${r.to}  (${r.trigger})`;
      ui.transitions.append(li);
      ui.transitions.scrollTop = ui.transitions.scrollHeight;
      break;
    }
    case "event":
      if (r.event === "Transcript") {
        if (r.is_final) {
          showInterim("");
          if (r.text.trim()) line("caller final", "caller", r.text, r.t);
        } else {
          showInterim(r.text, r.t);
        }
      } else if (r.event === "DtmfPressed") {
        line("caller", "caller", `[key ${r.digit}]`, r.t);
      } else if (["LlmFailed", "TtsFailed", "SttLost"].includes(r.event)) {
        line("clear", "error", `${r.event}: ${r.reason || ""}`, r.t);
      }
      break;
    case "command":
      if (r.command === "Synthesize") line("agent", "agent", r.text, r.t);
      else if (r.command === "ClearAudio") line("clear", "✂", "clearAudio: the caller barged in", r.t);
      else if (r.command === "Hangup") line("clear", "end", `hang-up (${r.reason})`, r.t);
      else if (r.command === "Transfer") line("clear", "end", `transfer to ${r.to}`, r.t);
      break;
    case "note":
      if (r.ok === false || ["protocol_error", "stt_failed", "vad_failed"].includes(r.what)) {
        line("clear", "note", `${r.what} ${r.reason || r.error || r.problem || ""}`, r.t);
      }
      break;
    case "footer":
      stats.ended = r.reason;
      line("clear", "end", `call ended: ${r.reason}`, r.t);
      owner.feed?.close();
      showLogLink(owner.id);
      owner.end(r.reason, "Vobiz");
      break;
  }
}

async function showLogLink(callId) {
  const reply = await api(`api/calls/${encodeURIComponent(callId)}`);
  if (!reply.ok) return;
  const { log } = await reply.json();
  if (!log) return;
  const a = document.createElement("a");
  a.id = "inspect-link";
  a.href = `inspect.html?log=${encodeURIComponent(log)}`;
  a.textContent = "Open this call in the inspector";
  ui.logLink.replaceChildren(a);
  keepToken();
}

// -- wiring ------------------------------------------------------------------------------

async function loadDiagram() {
  const reply = await api("api/machine.svg");
  if (reply.ok) ui.diagram.innerHTML = await reply.text(); // generated by the server, no log text in it
}

ui.call.onclick = async () => {
  ui.call.disabled = true;
  for (const id of ["transcript", "transitions"]) $(id).replaceChildren();
  ui.latency.replaceChildren();
  ui.bargeIns.replaceChildren();
  ui.logLink.replaceChildren();
  Object.assign(stats, { framesSent: 0, agentFrames: 0, marksPlayed: 0, clears: 0, droppedOnClear: 0,
    clearedSent: 0, playedSent: 0, records: 0, ended: null });
  setStatus("calling…", "dialing");
  call = new Call();
  try {
    await call.start();
  } catch (err) {
    setStatus(`call failed: ${err.message}`, "error");
    call.live = false;
    call.closeMic();
    ui.call.disabled = false;
  }
};
ui.hangup.onclick = () => call?.end("you hung up", "Caller");
ui.mute.onclick = async () => {
  muted = !muted;
  ui.mute.setAttribute("aria-pressed", String(muted));
  ui.mute.textContent = muted ? "Unmute" : "Mute";
  try {
    await call?.setMuted(muted);
  } catch (err) {
    setStatus(`microphone: ${err.message}`, "error");
  }
};
for (const key of document.querySelectorAll("#keypad button")) {
  key.disabled = true;
  key.onclick = () => call?.live && call.sendDigit(key.dataset.digit);
}
keepToken();
loadDiagram();
