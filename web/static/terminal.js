// The instance page's terminals (xterm.js, served from /static/vendor) and its file upload.
//
// One WebSocket per terminal, to /instances/{id}/terminal/ws?csrf=…&cols=…&rows=… (the page's
// session cookie goes with it; dmd checks the Origin and the CSRF token before upgrading).
// Binary frames both ways are the terminal's bytes; text frames are JSON: {"resize": [cols, rows]}
// to dmd, {"end": {code, reason, exit_status}} or {"error": …} from it.
"use strict";

// xterm.js makes <style> elements, which the page's Content-Security-Policy lets in only with
// this response's nonce (dmd/csp.py): stamp it on each one when it is made, before it is inserted.
// Its DOM renderer also sets some cells' colours with setAttribute("style", …), which the policy
// refuses; the same declarations through the CSSOM (element.style), which it allows, do the same.
// Neither lets markup in the page style itself: only these scripts' own calls change.
(() => {
  const nonce = document.currentScript && document.currentScript.nonce;
  if (!nonce) return;
  const create = Document.prototype.createElement;
  Document.prototype.createElement = function createElement(name, options) {
    const el = create.call(this, name, options);
    if (String(name).toLowerCase() === "style") el.setAttribute("nonce", nonce);
    return el;
  };
  const setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function setStyleToo(name, value) {
    if (String(name).toLowerCase() === "style" && this.style) {
      this.style.cssText = String(value);
      return;
    }
    setAttribute.call(this, name, value);
  };
})();

(() => {
  const CHUNK = 32 * 1024; // a paste goes out in pieces below dmd's frame limit (64 KiB)
  const encoder = new TextEncoder();

  function wsUrl(section, term) {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const q = new URLSearchParams({ csrf: section.dataset.csrf, cols: term.cols, rows: term.rows });
    if (term.dmShell) q.set("shell", term.dmShell); // the user's choice; else the agent picks bash or sh
    return `${scheme}//${window.location.host}${section.dataset.wsUrl}?${q}`;
  }

  function sendBytes(ws, bytes) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    for (let i = 0; i < bytes.length; i += CHUNK) ws.send(bytes.subarray(i, i + CHUNK));
  }

  function copyText(text) {
    if (text && navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).catch(() => {});
  }

  function openTerminal(section, list, template, n, shell) {
    const el = template.content.firstElementChild.cloneNode(true);
    const box = el.querySelector(".term-box");
    const state = el.querySelector(".term-state");
    const reconnect = el.querySelector(".term-reconnect");
    el.querySelector(".term-title").textContent = section.dataset.name.replace("{n}", String(n));
    list.appendChild(el);

    const term = new window.Terminal({
      cursorBlink: true,
      scrollback: 5000,
      fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace",
      fontSize: 14,
      theme: { background: "#0f1217" }, // the box's own colour (dm.css .term)
    });
    term.dmShell = shell || "";
    const fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(box);
    fit.fit();
    // Ctrl+Shift+C copies the selection; Ctrl+Shift+V is left to the browser, whose paste event
    // xterm turns into input (Cmd+C / Cmd+V on a Mac work as they are).
    term.attachCustomKeyEventHandler((ev) => {
      if (ev.ctrlKey && ev.shiftKey && (ev.code === "KeyC" || ev.code === "KeyV")) {
        if (ev.type === "keydown" && ev.code === "KeyC") copyText(term.getSelection());
        return false;
      }
      return true;
    });

    let ws = null;
    let ended = null;

    function finish(text) {
      if (ended !== null) return;
      ended = text;
      term.write(`\r\n\x1b[2m[${section.dataset.ended}: ${text}]\x1b[0m\r\n`);
      state.textContent = `${section.dataset.ended}: ${text}`;
      el.dataset.state = "ended";
      reconnect.hidden = false;
    }

    function connect() {
      ended = null;
      reconnect.hidden = true;
      state.textContent = "";
      el.dataset.state = "connecting";
      const sock = new WebSocket(wsUrl(section, term));
      ws = sock;
      sock.binaryType = "arraybuffer";
      sock.addEventListener("open", () => {
        el.dataset.state = "open";
        term.focus();
      });
      sock.addEventListener("message", (ev) => {
        if (typeof ev.data !== "string") {
          term.write(new Uint8Array(ev.data)); // xterm decodes UTF-8, also split across frames
          return;
        }
        let msg = null;
        try { msg = JSON.parse(ev.data); } catch (_) { return; }
        if (msg && msg.end) {
          const e = msg.end;
          let text = e.reason || e.code || "";
          if (e.exit_status !== null && e.exit_status !== undefined) {
            text += ` (${section.dataset.exitStatus} ${e.exit_status})`;
          }
          finish(text);
        } else if (msg && msg.error) {
          state.textContent = String(msg.error);
        }
      });
      sock.addEventListener("close", () => {
        if (ws === sock) finish(section.dataset.lost);
      });
    }

    term.onData((data) => sendBytes(ws, encoder.encode(data)));
    term.onBinary((data) => sendBytes(ws, Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
    term.onResize(({ cols, rows }) => {
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ resize: [cols, rows] }));
    });
    reconnect.addEventListener("click", () => {
      term.write("\r\n");
      connect();
    });
    el.querySelector(".term-close").addEventListener("click", () => {
      const sock = ws;
      ws = null;
      if (sock) sock.close(1000);
      term.dispose();
      el.remove();
    });
    // The box can be made taller by hand (CSS resize): the terminal follows, as with the window.
    if (window.ResizeObserver) new ResizeObserver(() => { if (el.isConnected) fit.fit(); }).observe(box);
    connect();
    return { el, fit };
  }

  function setUpTerminals() {
    const section = document.getElementById("terminal");
    const button = document.getElementById("term-open");
    const list = document.getElementById("terminals");
    const template = document.getElementById("term-template");
    if (!section || !button || !list || !template || !window.Terminal || !window.FitAddon || !window.WebSocket) return;
    const open = [];
    let count = 0;
    button.hidden = false;
    const shell = document.getElementById("term-shell");
    const shellLabel = section.querySelector('label[for="term-shell"]');
    if (shell) shell.hidden = false;
    if (shellLabel) shellLabel.hidden = false;
    button.addEventListener("click", () => {
      if (shell && !shell.checkValidity()) {
        shell.reportValidity();
        return;
      }
      count += 1;
      open.push(openTerminal(section, list, template, count, shell ? shell.value.trim() : ""));
    });
    // Each terminal fits its box: when the window changes, and when its box does.
    let pending = false;
    const refit = () => {
      if (pending) return;
      pending = true;
      window.requestAnimationFrame(() => {
        pending = false;
        for (const t of open) if (t.el.isConnected) t.fit.fit();
      });
    };
    window.addEventListener("resize", refit);
  }

  function setUpUpload() {
    const form = document.getElementById("upload-form");
    const status = document.getElementById("upload-status");
    if (!form || !status || !window.fetch) return;
    form.hidden = false;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const file = form.querySelector("input[type=file]").files[0];
      const dir = form.querySelector("input[name=dir]").value.trim();
      if (!file || !dir) return;
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      status.hidden = false;
      status.className = "small";
      status.textContent = form.dataset.uploading;
      try {
        const q = new URLSearchParams({ dir, name: file.name });
        const r = await fetch(`${form.getAttribute("action")}?${q}`, {
          method: "POST",
          body: file,
          credentials: "same-origin",
          headers: { "X-CSRF-Token": form.dataset.csrf, "Content-Type": "application/octet-stream" },
        });
        let data = null;
        try { data = await r.json(); } catch (_) { data = null; }
        if (r.ok && data) {
          status.textContent = `${form.dataset.uploaded} ${data.path}`;
          status.dataset.result = "ok";
        } else {
          const why = data && data.error ? data.error.message : `HTTP ${r.status}`;
          status.textContent = `${form.dataset.failed} ${why}`;
          status.className = "small error-text";
          status.dataset.result = "failed";
        }
      } catch (e) {
        status.textContent = `${form.dataset.failed} ${e}`;
        status.dataset.result = "failed";
      } finally {
        button.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    setUpTerminals();
    setUpUpload();
  });
})();
