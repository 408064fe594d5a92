// The call inspector: draws one call's view (adapters/console/inspect.py builds it).
// A classic script, so a page written by `voice-agent inspect` can inline it and open
// from a file. Every text from the log goes in as text, never as markup.
"use strict";

const Inspector = (() => {
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "style") Object.assign(el.style, value);
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const sec = (t) => (t === null || t === undefined ? "-" : `${Number(t).toFixed(2)} s`);
  const ms = (t) => (t === null || t === undefined ? "-" : `${Math.round(t * 1000)} ms`);

  function stateClass(view, state) {
    const i = view.states.indexOf(state);
    return `s${i < 0 ? 7 : i % 8}`;
  }

  function tickStep(pxPerSec) {
    for (const step of [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300]) {
      if (step * pxPerSec >= 70) return step;
    }
    return 600;
  }

  // Items of one lane, each as wide as its own span but never running into the next one.
  function placeItems(items, px, startKey, endKey) {
    const sorted = [...items].sort((a, b) => a[startKey] - b[startKey]);
    return sorted.map((item, i) => {
      const left = item[startKey] * px;
      const own = item[endKey] !== null && item[endKey] !== undefined
        ? (item[endKey] - item[startKey]) * px : 0;
      const next = i + 1 < sorted.length ? sorted[i + 1][startKey] * px - 3 : Infinity;
      const width = Math.max(16, Math.min(Math.max(own, 90), next - left));
      return { item, left, width };
    });
  }

  function drawWave(canvas, peaks, rate, px, height, color) {
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = color;
    const mid = height / 2;
    const perColumn = px / rate;
    for (let i = 0; i < peaks.length; i++) {
      const [lo, hi] = peaks[i];
      const x = i * perColumn;
      const top = mid - hi * mid;
      const bottom = mid - lo * mid;
      ctx.fillRect(x, top, Math.max(1, perColumn), Math.max(1, bottom - top));
    }
  }

  function render(root, view, audioUrl) {
    root.replaceChildren();
    const call = view.call || {};
    const duration = Math.max(view.duration || 0, (view.audio && view.audio.duration) || 0, 1);
    let px = Math.max(30, Math.min(140, 1100 / duration));

    const head = h("section", { class: "call-head" },
      h("h1", {}, `Call ${call.call_id || view.log || ""}`),
      h("span", { class: "muted" }, `from ${call.caller || "?"} to ${call.callee || "?"}`),
      call.started_at ? h("span", { class: "muted" }, call.started_at) : null,
      h("span", {}, `duration ${sec(view.duration)}`),
      h("span", {}, `ended: ${view.end_reason || "-"}`),
      view.finished ? null : h("span", { class: "badge" }, "incomplete: no footer"),
    );
    const legend = h("div", { class: "legend" },
      view.states.map((s) => h("span", { class: `chip ${stateClass(view, s)}` }, s)));
    const zoomLabel = h("span", { class: "muted" });
    const zoom = h("div", { class: "zoom" },
      h("button", { id: "zoom-out", onclick: () => redraw(px / 1.5) }, "−"),
      h("button", { id: "zoom-in", onclick: () => redraw(px * 1.5) }, "+"),
      zoomLabel, legend);
    const scroller = h("div", { class: "scroller" });
    const audio = audioUrl ? h("audio", { id: "call-audio", src: audioUrl, preload: "auto" }) : null;

    root.append(head, zoom, scroller);
    if (audio) root.append(audio);
    root.append(tables(view), transcript(view), problems(view));

    function redraw(newPx) {
      px = Math.max(8, Math.min(400, newPx));
      zoomLabel.textContent = `${Math.round(px)} px/s`;
      scroller.replaceChildren(timeline(view, duration, px, audio));
    }
    redraw(px);
    root.dataset.rendered = "true";
  }

  function timeline(view, duration, px, audio) {
    const width = Math.ceil(duration * px) + 40;
    const tl = h("div", { class: "timeline", style: { width: `${width}px` } });

    const axis = h("div", { class: "row axis" });
    const step = tickStep(px);
    for (let t = 0; t <= duration + 1e-9; t += step) {
      axis.append(h("div", { class: "tick", style: { left: `${t * px}px` } }, `${+t.toFixed(1)}s`));
    }
    tl.append(axis);

    const bands = h("div", { class: "row bands" }, h("span", { class: "label" }, "state"));
    for (const band of view.bands) {
      const w = Math.max(2, (band.end - band.start) * px);
      bands.append(h("div", {
        class: `band ${stateClass(view, band.state)}`, "data-state": band.state,
        title: `${band.state}: ${sec(band.start)} → ${sec(band.end)}`,
        style: { left: `${band.start * px}px`, width: `${w}px` },
      }, w > 40 ? band.state : ""));
    }
    tl.append(bands);

    const caller = h("div", { class: "row lane caller" }, h("span", { class: "label" }, "caller"));
    for (const s of view.speech) {
      caller.append(h("div", {
        class: "speech", title: `voice ${sec(s.start)} → ${sec(s.end)} (${s.source || "?"})`,
        style: { left: `${s.start * px}px`, width: `${Math.max(2, (s.end - s.start) * px)}px` },
      }));
    }
    for (const { item, left, width } of placeItems(view.caller, px, "start", "t")) {
      caller.append(h("div", {
        class: `utt ${item.kind}`, title: `${sec(item.t)}: ${item.text}`,
        style: { left: `${left}px`, width: `${width}px` },
      }, item.text));
    }
    tl.append(caller);

    const agent = h("div", { class: "row lane agent" }, h("span", { class: "label" }, "agent"));
    const sentences = view.agent.map((s) => ({ ...s, at: s.played ? s.start : s.asked }));
    const played = placeItems(sentences.filter((s) => s.played), px, "at", "end");
    const unplayed = placeItems(sentences.filter((s) => !s.played), px, "at", "end");
    for (const { item, left, width } of [...played, ...unplayed]) {
      const state = item.cut ? "cut" : item.played ? "heard" : "unplayed";
      const how = item.cut ? "cut off by clearAudio" : item.played ? (item.heard ? "heard" : "sent") : "never played";
      agent.append(h("div", {
        class: `sentence ${state}`, "data-turn": item.utterance,
        title: `turn ${item.utterance}.${item.seq} at ${sec(item.at)} (${how}): ${item.text}`,
        style: { left: `${left}px`, width: `${width}px` },
      }, item.text));
    }
    tl.append(agent);

    if (view.audio) tl.append(...waves(view, px, width, audio));

    const labels = h("div", { class: "row marks" });
    for (const mark of view.marks) {
      tl.append(h("div", { class: `mark ${mark.kind}`, style: { left: `${mark.t * px}px` },
        title: `${mark.label} at ${sec(mark.t)}` }));
      labels.append(h("span", { class: `mark-label ${mark.kind}`, style: { left: `${mark.t * px}px` } },
        mark.label));
    }
    tl.insertBefore(labels, caller);
    return tl;
  }

  function waves(view, px, width, audio) {
    const rows = [];
    const playhead = h("div", { class: "playhead" });
    const colors = { caller: "#1f6fb2", agent: "#2e7d4f" };
    for (const lane of ["caller", "agent"]) {
      const peaks = view.audio.peaks[lane];
      if (!peaks) continue;
      const canvas = h("canvas", { width: String(width), height: "64" });
      const row = h("div", {
        class: `row wave ${lane}`, title: "click to play from here",
        onclick: (e) => {
          if (!audio) return;
          const rect = row.getBoundingClientRect();
          audio.currentTime = Math.max(0, (e.clientX - rect.left) / px);
          audio.play().catch(() => {});
        },
      }, h("span", { class: "label" }, `${lane} audio`), canvas);
      drawWave(canvas, peaks, view.audio.rate, px, 64, colors[lane]);
      rows.push(row);
    }
    if (audio) {
      const move = () => {
        playhead.style.display = "block";
        playhead.style.left = `${audio.currentTime * px}px`;
      };
      audio.ontimeupdate = move;
      audio.onplay = move;
      rows.push(playhead);
    }
    return rows;
  }

  function tables(view) {
    const turns = h("table", { id: "latency" },
      h("thead", {}, h("tr", {}, ["turn", "caller stopped", "voice-to-voice", "llm first text",
        "tts first audio"].map((c) => h("th", {}, c)))),
      h("tbody", {}, view.turns.map((t) => h("tr", {},
        h("td", {}, t.utterance), h("td", {}, sec(t.caller_stopped)), h("td", {}, ms(t.voice_to_voice)),
        h("td", {}, ms(t.llm_first_text)), h("td", {}, ms(t.tts_first_audio))))));
    const barges = h("table", { id: "barge-ins" },
      h("thead", {}, h("tr", {}, ["caller spoke", "clearAudio", "barge-in → clear"].map((c) => h("th", {}, c)))),
      h("tbody", {}, view.barge_ins.map((b) => h("tr", {},
        h("td", {}, sec(b.speech_at)), h("td", {}, sec(b.clear_at)), h("td", {}, ms(b.latency))))));
    return h("section", { class: "tables" },
      h("div", { class: "panel" }, h("h2", {}, "Latency per turn"),
        view.turns.length ? turns : h("p", { class: "muted" }, "no turn was answered")),
      h("div", { class: "panel" }, h("h2", {}, "Barge-ins"),
        view.barge_ins.length ? barges : h("p", { class: "muted" }, "none")));
  }

  function transcript(view) {
    const lines = [
      ...view.caller.map((c) => ({ t: c.t, who: "caller", text: c.text, cls: "caller" })),
      ...view.agent.filter((a) => a.played).map((a) => ({
        t: a.start, who: "agent", text: a.text, cls: a.cut ? "agent cut" : "agent",
      })),
    ].sort((a, b) => a.t - b.t);
    return h("section", { class: "panel" }, h("h2", {}, "Transcript"),
      h("ol", { class: "inspector-transcript" }, lines.map((l) =>
        h("li", { class: l.cls }, h("span", { class: "muted" }, `${sec(l.t)} `), `${l.who}: `, l.text))));
  }

  function problems(view) {
    const row = (e) => h("li", {}, `${sec(e.t)} (line ${e.line}) ${e.what}${e.detail ? `: ${e.detail}` : ""}`);
    return h("section", { class: "tables" },
      h("div", { class: "panel" }, h("h2", {}, "Provider errors"),
        view.errors.length ? h("ul", { class: "problems", id: "errors" }, view.errors.map(row))
          : h("p", { class: "muted" }, "none")),
      h("div", { class: "panel" }, h("h2", {}, "Notes"),
        view.notes.length ? h("ul", { id: "notes" }, view.notes.map(row)) : h("p", { class: "muted" }, "none"),
        h("p", { class: "muted" }, `${view.dropped} event(s) dropped by the engine (stale or late)`)));
  }

  return { render, h };
})();
window.Inspector = Inspector;
