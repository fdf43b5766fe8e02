// The replicator console (replicator/ops/console.py says how it is built). No framework, no build step.
// The admin token lives in sessionStorage only; every request carries it in the Authorization header.
"use strict";
(() => {
  const KEY = "replicator.console.token";
  const WHO = "replicator.console.who";
  const $ = (id) => document.getElementById(id);
  let loading = false;
  let pending = null; // {action, table} of the open dialog

  const token = () => sessionStorage.getItem(KEY);

  function say(text, kind) {
    const el = $("message");
    el.textContent = text;
    el.dataset.kind = kind || "info";
  }

  function signedIn(yes) {
    $("login").hidden = yes;
    $("controls").hidden = !yes;
    if (!yes) {
      $("live").replaceChildren();
      $("token").focus();
    }
  }

  function refused() {
    sessionStorage.removeItem(KEY);
    signedIn(false);
    say("The admin token was refused (401): check http.admin_token and enter it again.", "error");
  }

  function swap(html) {
    const focused = document.activeElement ? document.activeElement.id : "";
    const tpl = document.createElement("template");
    tpl.innerHTML = html; // rendered and escaped by the daemon; the CSP runs no inline script
    $("live").replaceChildren(tpl.content);
    arrange();
    if (focused) {
      const el = document.getElementById(focused);
      if (el && el !== document.activeElement) el.focus({ preventScroll: true });
    }
  }

  function arrange() {
    const body = document.querySelector("#tables tbody");
    if (!body) return;
    const q = $("filter").value.trim().toLowerCase();
    const how = $("sort").value;
    const rows = Array.from(body.rows);
    let shown = 0;
    for (const r of rows) {
      const hit = !q || r.dataset.table.toLowerCase().includes(q) || r.dataset.state.includes(q);
      r.hidden = !hit;
      if (hit) shown += 1;
    }
    const byName = (a, b) => a.dataset.table.localeCompare(b.dataset.table);
    const order = {
      lag: (a, b) => Number(b.dataset.lag) - Number(a.dataset.lag) || byName(a, b),
      state: (a, b) => Number(a.dataset.order) - Number(b.dataset.order) || byName(a, b),
      name: byName,
    }[how] || byName;
    rows.sort(order);
    body.append(...rows);
    $("count").textContent = shown + " of " + rows.length + " tables";
  }

  async function refresh() {
    const t = token();
    if (!t || loading || document.hidden) return; // a tab in the background asks for nothing
    loading = true;
    try {
      const r = await fetch("console/state", {
        headers: { Authorization: "Bearer " + t }, cache: "no-store", credentials: "omit",
      });
      if (r.status === 401) return refused();
      const text = await r.text();
      if (!r.ok) {
        say("The daemon answered " + r.status + ": " + text.slice(0, 300), "error");
        return;
      }
      signedIn(true);
      swap(text);
      $("updated").textContent = "Updated " + new Date().toLocaleTimeString();
      if ($("message").dataset.kind === "stale") say("");
    } catch (e) {
      say("Cannot reach the daemon (" + e.message + "); retrying.", "stale");
    } finally {
      loading = false;
    }
  }

  const WHAT = {
    pause: "Stop merging {t} until resumed. Its changes keep being captured and staged.",
    resume: "Merge {t} again, from where it stopped.",
    resync: "Copy {t} again from the source: the warehouse table is rebuilt. This can take long.",
    retry: "Read what stopped {t} again (after fixing the cause).",
    skip: "Leave what stopped {t} in the quarantine and go on past it.",
  };

  function openDialog(action, table) {
    pending = { action, table };
    const name = action.charAt(0).toUpperCase() + action.slice(1);
    $("act-title").textContent = name + " " + table + "?";
    $("act-what").textContent = WHAT[action].replace("{t}", table);
    $("act-reason").value = "";
    $("act-reason").required = action === "pause";
    $("act-who").value = sessionStorage.getItem(WHO) || "";
    $("act-confirm").textContent = "Confirm " + action;
    $("act").showModal();
    $("act-reason").focus();
  }

  async function act() {
    const { action, table } = pending;
    const who = $("act-who").value.trim();
    if (who) sessionStorage.setItem(WHO, who);
    const body = JSON.stringify({ reason: $("act-reason").value.trim(), who: who || "console" });
    try {
      const r = await fetch("tables/" + encodeURIComponent(table) + "/" + action, {
        method: "POST", body, cache: "no-store", credentials: "omit",
        headers: { Authorization: "Bearer " + token(), "Content-Type": "application/json" },
      });
      if (r.status === 401) return refused();
      let doc = {};
      try { doc = await r.json(); } catch (e) { doc = {}; }
      if (r.ok) say(table + ": " + action + " done.", "ok");
      else say(table + ": " + action + " refused (" + r.status + "): " + (doc.error || r.statusText), "error");
    } catch (e) {
      say(table + ": " + action + " failed: " + e.message, "error");
    }
    refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = $("token").value.trim();
      $("token").value = "";
      if (!value) return;
      sessionStorage.setItem(KEY, value);
      say("Loading...", "info");
      refresh();
    });
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      signedIn(false);
      say("The token is forgotten.", "info");
    });
    $("filter").addEventListener("input", arrange);
    $("sort").addEventListener("change", arrange);
    $("live").addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-action]");
      if (b) openDialog(b.dataset.action, b.dataset.table);
    });
    $("act-cancel").addEventListener("click", () => $("act").close("cancel"));
    $("act").addEventListener("close", () => {
      if ($("act").returnValue === "confirm" && pending) act();
      pending = null;
      $("act").returnValue = "";
    });
    signedIn(Boolean(token()));
    refresh();
    setInterval(refresh, 1000 * Number(document.body.dataset.refresh || 3));
    document.addEventListener("visibilitychange", refresh);
  });
})();
