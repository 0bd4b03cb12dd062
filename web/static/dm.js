// DM pages work without JavaScript; this file only adds small conveniences.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // "Copy" buttons next to a secret: shown only when the clipboard can be used.
  for (const btn of document.querySelectorAll("button[data-copy]")) {
    const target = document.getElementById(btn.dataset.copy);
    if (!target || !navigator.clipboard || !window.isSecureContext) continue;
    btn.hidden = false;
    btn.addEventListener("click", async () => {
      const label = btn.textContent;
      try {
        await navigator.clipboard.writeText(target.textContent.trim());
        btn.textContent = btn.dataset.copied || label;
        setTimeout(() => { btn.textContent = label; }, 2000);
      } catch (_) {
        const range = document.createRange();
        range.selectNodeContents(target);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
      }
    });
  }

  // Close the user menu when clicking elsewhere or pressing Escape.
  const menus = document.querySelectorAll("details.usermenu");
  document.addEventListener("click", (ev) => {
    for (const d of menus) if (d.open && !d.contains(ev.target)) d.open = false;
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key !== "Escape") return;
    for (const d of menus) if (d.open) { d.open = false; d.querySelector("summary").focus(); }
  });
  // A node's page: refresh the live metrics, and reload when the node's status changes
  // (for example when a new node comes online after `dmc run`).
  const live = document.querySelector("[data-metrics-url]");
  if (live && window.fetch) watchNode(live);
  // Instances: the status badge follows the API every 2 s; the logs can be followed.
  const inst = document.getElementById("inst-live");
  if (inst && window.fetch) watchInstance(inst);
  const table = document.querySelector("table.instances-table");
  if (table && window.fetch) watchInstanceRows(table);
  const follow = document.getElementById("logs-follow");
  if (follow && inst && window.fetch && window.ReadableStream && window.TextDecoder) followLogs(follow, inst);
});

function fmtPct(v) {
  if (typeof v !== "number") return "—";
  return (v >= 10 || v === 0 ? v.toFixed(0) : v.toFixed(1)) + " %";
}

function fmtMib(v) {
  if (typeof v !== "number") return "—";
  for (const [unit, size] of [["TiB", 1024 * 1024], ["GiB", 1024]]) {
    if (Math.abs(v) >= size) {
      const n = v / size;
      return (n >= 100 ? n.toFixed(0) : n.toFixed(1)) + " " + unit;
    }
  }
  return v.toFixed(0) + " MiB";
}

function fmtLoad(v) { return typeof v === "number" ? v.toFixed(2) : "—"; }

const num = (v) => (typeof v === "number" ? v : null);

function gpusOf(s) { return Array.isArray(s.gpus) ? s.gpus.filter((g) => g && typeof g === "object") : []; }

const SERIES = {
  cpu: (s) => num(s.cpu_pct),
  mem: (s) => (num(s.memory_used_mb) !== null && s.memory_total_mb ? 100 * s.memory_used_mb / s.memory_total_mb : null),
  gpu: (s) => {
    const v = gpusOf(s).map((g) => num(g.utilization_pct)).filter((x) => x !== null);
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
  },
  gpumem: (s) => {
    const g = gpusOf(s);
    if (!g.length || g.some((x) => num(x.memory_used_mb) === null || !x.memory_total_mb)) return null;
    return 100 * g.reduce((a, x) => a + x.memory_used_mb, 0) / g.reduce((a, x) => a + x.memory_total_mb, 0);
  },
};

function sparkPoints(items, key, history, w, h) {
  // As the server draws it: the last `history` seconds, spread over the width by time.
  const now = Date.now() / 1000;
  const seen = [];
  for (const s of items) {
    const t = num(s.received_at);
    const v = SERIES[key](s);
    if (t === null || v === null || t < now - history || t > now + 60) continue;
    seen.push([t, Math.max(0, Math.min(100, v))]);
  }
  if (seen.length < 2) return "";
  const t0 = seen[0][0];
  const t1 = seen[seen.length - 1][0];
  if (t1 <= t0) return "";
  return seen.map(([t, v]) => ((t - t0) / (t1 - t0) * w).toFixed(1) + "," + (h - 1 - v / 100 * (h - 2)).toFixed(1)).join(" ");
}

function setText(root, sel, text) {
  for (const el of root.querySelectorAll(sel)) el.textContent = text;
}

function busy() {
  // Never reload under someone typing into a form, nor while a terminal is on the page (its
  // session, or the message of how it ended, would go).
  if (document.querySelector("#terminals .term")) return true;
  const el = document.activeElement;
  return el && (el.tagName === "INPUT" || el.tagName === "SELECT" || el.tagName === "TEXTAREA");
}

function watchNode(box) {
  const status = box.dataset.status;
  const history = Number(box.dataset.history) || 900;
  const w = Number(box.dataset.sparkW) || 120;
  const h = Number(box.dataset.sparkH) || 32;
  const lang = document.documentElement.lang || undefined;
  const opts = { credentials: "same-origin", headers: { Accept: "application/json" } };

  async function tick() {
    try {
      const nr = await fetch(box.dataset.nodeUrl, opts);
      if (nr.status === 404) return; // deleted meanwhile: stop
      if (nr.ok) {
        const node = await nr.json();
        if (node.status !== status && !busy()) { window.location.reload(); return; }
      }
      if (status === "online") {
        const mr = await fetch(box.dataset.metricsUrl, opts);
        if (mr.ok) update(box, (await mr.json()).items || [], history, w, h, lang);
      }
    } catch (_) {
      // dmd restarting or the network gone: try again on the next tick
    }
    setTimeout(tick, status === "online" ? 10000 : 4000);
  }
  setTimeout(tick, status === "online" ? 10000 : 4000);
}

function update(box, items, history, w, h, lang) {
  if (!items.length) return;
  if (!box.querySelector("[data-metric]")) { if (!busy()) window.location.reload(); return; }
  const s = items[items.length - 1];
  setText(box, "[data-metric=cpu_pct]", fmtPct(s.cpu_pct));
  setText(box, "[data-metric=mem_pct]", fmtPct(SERIES.mem(s)));
  setText(box, "[data-metric=mem]", fmtMib(s.memory_used_mb) + " / " + fmtMib(s.memory_total_mb));
  setText(box, "[data-metric=load]", fmtLoad(s.load_1));
  setText(box, "[data-metric=gpu_util]", fmtPct(SERIES.gpu(s)));
  setText(box, "[data-metric=gpu_mem_pct]", fmtPct(SERIES.gpumem(s)));
  const more = box.querySelector("[data-metric=load_more]");
  if (more) {
    // "5 min 0.41 · 15 min 0.30": replace the two numbers, keep the translated words.
    let i = 0;
    const vals = [fmtLoad(s.load_5), fmtLoad(s.load_15)];
    more.textContent = more.textContent.replace(/(\d+\.\d+|—)(?=\s*(·|$))/g, (m) => (i < 2 ? vals[i++] : m));
  }
  if (typeof s.received_at === "number") {
    setText(box, "[data-metric=at]", new Date(s.received_at * 1000).toLocaleTimeString(lang));
  }
  for (const line of box.querySelectorAll("polyline[data-spark]")) {
    line.setAttribute("points", sparkPoints(items, line.dataset.spark, history, w, h));
  }
  for (const g of gpusOf(s)) {
    const row = document.querySelector(`tr[data-gpu="${CSS.escape(String(g.uuid || g.index))}"]`);
    if (!row) continue;
    setText(row, "[data-gpu-metric=util]", fmtPct(g.utilization_pct));
    if (typeof g.memory_used_mb === "number") {
      setText(row, "[data-gpu-metric=mem]", fmtMib(g.memory_used_mb) + " / " + fmtMib(g.memory_total_mb));
    }
    if (typeof g.temperature_c === "number") setText(row, "[data-gpu-metric=temp]", g.temperature_c.toFixed(0) + " °C");
  }
}

// --- instances ---------------------------------------------------------------------------

const INSTANCE_POLL_MS = 2000;
const TRANSITIONAL = new Set(["pending", "creating", "deleting"]);
const jsonOpts = { credentials: "same-origin", headers: { Accept: "application/json" } };

function labelsOf(el) {
  try { return JSON.parse(el.dataset.labels || "{}"); } catch (_) { return {}; }
}

function setBadge(root, status, labels) {
  const badge = root.querySelector("[data-inst-status]");
  if (!badge || badge.dataset.instStatus === status) return;
  badge.classList.remove("badge-i-" + badge.dataset.instStatus);
  badge.classList.add("badge-i-" + status);
  badge.dataset.instStatus = status;
  const text = badge.querySelector(".badge-text");
  if (text) text.textContent = labels[status] || status;
}

function setMessage(root, message) {
  for (const el of root.querySelectorAll("[data-inst-message]")) el.textContent = message || "";
}

function accessOf(sshState, maps) {
  return (sshState || "") + "|" + (maps || "");
}

function watchInstance(box) {
  const labels = labelsOf(box);
  let status = box.dataset.status;
  // SSH and port map states as the page shows them: a change reloads the page too.
  let access = accessOf(box.dataset.sshState, box.dataset.maps);
  // The node going offline or coming back changes what the page offers: reload it then too.
  let nodeOnline = box.dataset.nodeOnline;
  async function tick() {
    try {
      const r = await fetch(box.dataset.instanceUrl, jsonOpts);
      if (r.status === 404) {
        // Deleted (its container is gone): say so, then go back to the list.
        setBadge(box, "deleted", labels);
        setMessage(box, "");
        setTimeout(() => { window.location.assign(box.dataset.goneUrl || "/instances"); }, 1500);
        return;
      }
      if (r.ok) {
        const data = await r.json();
        if (typeof data.node_online === "boolean" && String(data.node_online) !== nodeOnline) {
          if (!following && !busy()) { window.location.reload(); return; }
          nodeOnline = String(data.node_online);
        }
        if (data.status !== status) {
          // A new state: show the whole page as it is now (container, actions, logs), unless
          // the reader is following the logs or typing; then only the badge changes.
          if (!following && !busy()) { window.location.reload(); return; }
          status = data.status;
        }
        const now = accessOf(data.ssh ? data.ssh.state : "",
          (data.port_maps || []).map((pm) => pm.id + ":" + pm.state).join(","));
        if (now !== access) {
          if (!following && !busy()) { window.location.reload(); return; }
          access = now;
        }
        setBadge(box, data.status, labels);
        setMessage(box, data.status_message);
      }
    } catch (_) {
      // dmd restarting or the network gone: try again on the next tick
    }
    setTimeout(tick, INSTANCE_POLL_MS);
  }
  setTimeout(tick, INSTANCE_POLL_MS);
}

function watchInstanceRows(table) {
  const labels = labelsOf(table);
  const rows = () => Array.from(table.querySelectorAll("tr[data-instance-url]"));
  if (!rows().length) return;
  async function tick() {
    for (const row of rows()) {
      try {
        const r = await fetch(row.dataset.instanceUrl, jsonOpts);
        if (r.status === 404) {
          setBadge(row, "deleted", labels);
          setMessage(row, "");
          row.classList.add("row-gone");
          delete row.dataset.instanceUrl;
          continue;
        }
        if (!r.ok) continue;
        const data = await r.json();
        setBadge(row, data.status, labels);
        setMessage(row, data.status_message);
        if (!TRANSITIONAL.has(data.status)) delete row.dataset.instanceUrl;
      } catch (_) {
        // try again on the next tick
      }
    }
    if (rows().length) setTimeout(tick, INSTANCE_POLL_MS);
  }
  setTimeout(tick, INSTANCE_POLL_MS);
}

let following = null; // the AbortController of the running follow, if any

function showLogs(text) {
  const pre = document.getElementById("logs-text");
  const note = document.getElementById("logs-note");
  if (!pre) return null;
  if (text !== null) pre.textContent = text;
  if (pre.textContent) {
    pre.hidden = false;
    if (note) note.hidden = true;
  }
  return pre;
}

function followLogs(btn, box) {
  btn.hidden = false;
  const setPressed = (on) => {
    btn.setAttribute("aria-pressed", on ? "true" : "false");
    btn.textContent = on ? btn.dataset.on : btn.dataset.off;
  };
  btn.addEventListener("click", async () => {
    if (following) { following.abort(); return; }
    const ctrl = new AbortController();
    following = ctrl;
    setPressed(true);
    const url = box.dataset.logsUrl + (box.dataset.logsUrl.includes("?") ? "&" : "?") + "follow=true";
    try {
      const r = await fetch(url, { credentials: "same-origin", signal: ctrl.signal });
      if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let first = true;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const chunk = decoder.decode(value, { stream: true });
        const pre = document.getElementById("logs-text");
        if (!pre) break;
        // Keep the newest line in view, unless the reader scrolled up to read.
        const atEnd = first || pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
        // The stream starts with the last lines again: it replaces what the page showed.
        if (first) pre.textContent = chunk; else pre.textContent += chunk;
        first = false;
        showLogs(null);
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      }
    } catch (_) {
      // stopped by the user, or the stream ended
    } finally {
      following = null;
      setPressed(false);
    }
  });
}
