// The console's list of recent calls, and its inspector page (one script for both).
import { api, keepToken, withToken } from "./common.js";

const sec = (t) => (t === null || t === undefined ? "-" : `${Number(t).toFixed(1)} s`);

async function listCalls() {
  const body = document.querySelector("#calls tbody");
  const reply = await api("api/logs");
  const { logs, log_dir: dir } = await reply.json();
  document.getElementById("log-dir").textContent = `logs in ${dir}`;
  document.getElementById("calls-empty").hidden = logs.length > 0;
  for (const log of logs) {
    const link = document.createElement("a");
    link.href = `inspect.html?log=${encodeURIComponent(log.name)}`;
    link.textContent = "inspect";
    const row = document.createElement("tr");
    for (const text of [log.started_at || "-", log.call_id || "-", log.caller || "-", sec(log.duration),
      log.reason || (log.finished ? "-" : "incomplete"), log.audio ? "yes" : "-"]) {
      const td = document.createElement("td");
      td.textContent = text;
      row.append(td);
    }
    const td = document.createElement("td");
    td.append(link, " ", Object.assign(document.createElement("span"), { className: "muted", textContent: log.name }));
    row.append(td);
    body.append(row);
  }
  keepToken();
}

async function inspectOne(name) {
  const root = document.getElementById("inspector");
  const reply = await api(`api/logs/${encodeURIComponent(name)}`);
  if (!reply.ok) {
    root.replaceChildren(Object.assign(document.createElement("p"), {
      className: "error-box", textContent: `${name}: ${await reply.text()}`,
    }));
    root.dataset.rendered = "error";
    return;
  }
  const view = await reply.json();
  const audio = view.audio ? withToken(`api/logs/${encodeURIComponent(name)}/audio`) : null;
  window.Inspector.render(root, view, audio);
  keepToken();
}

const log = new URLSearchParams(location.search).get("log");
if (document.getElementById("inspector")) inspectOne(log);
else listCalls();
