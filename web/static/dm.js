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
});
