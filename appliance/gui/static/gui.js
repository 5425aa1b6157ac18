// Keeps a server-rendered page current: every 2 s it fetches the same URL again and swaps in the
// sections marked data-live (matched by id). Rendering stays on the server; this file only swaps.
"use strict";
(function () {
  const EVERY_MS = 2000;
  const status = document.getElementById("live-status");
  let timer = null;

  function show(text, stale) {
    if (!status) return;
    status.textContent = text;
    status.classList.toggle("stale", stale);
  }

  async function refresh() {
    try {
      const resp = await fetch(window.location.href, {
        cache: "no-store", credentials: "same-origin", headers: { "X-Kuma-Gui-Refresh": "1" },
      });
      if (!resp.ok) {
        show("control plane answered " + resp.status, true);
        return;
      }
      const fresh = new DOMParser().parseFromString(await resp.text(), "text/html");
      for (const section of document.querySelectorAll("[data-live]")) {
        const next = fresh.getElementById(section.id);
        if (next && next.innerHTML !== section.innerHTML) section.innerHTML = next.innerHTML;
      }
      show("updated " + new Date().toLocaleTimeString(), false);
    } catch (e) {
      show("control plane unreachable", true);
    }
  }

  function schedule() {
    if (timer !== null) clearInterval(timer);
    timer = document.hidden ? null : setInterval(refresh, EVERY_MS);
  }

  document.addEventListener("visibilitychange", function () {
    schedule();
    if (!document.hidden) refresh();
  });
  schedule();
})();
