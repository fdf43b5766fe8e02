"""The operator console: a page at ``/`` beside the admin API, refreshing itself, that pauses, resumes,
resyncs, retries and skips tables through the admin API.

How it is built, and why:

- ``GET /`` is a server-rendered shell (header, token form, filter, sort, the action dialog) and carries no
  data, so it needs no token. Everything else needs the admin token, as ``GET /status`` does: table names,
  stop reasons and quarantine notes describe the data (a quarantine note can quote a row), and the main port
  is open to load balancer health checks. ``GET /console/state`` answers an HTML fragment rendered here,
  every value through ``html.escape`` (a table named ``<script>`` is text), for a script that fetches it
  every few seconds with ``Authorization: Bearer``.
- The script and the stylesheet are package data (``replicator/ops/static/``), served from the daemon with
  a Subresource Integrity hash: no build step, no external asset, nothing to reach from a private subnet.
  The page's Content-Security-Policy allows scripts, styles and fetches from the daemon only, no inline
  script or style, no forms posting anywhere and no framing.
- The token is typed once and kept in ``sessionStorage`` (gone when the tab closes): never in a URL, a
  cookie or a log. Actions are ``POST /tables/{schema.table}/{action}`` of the admin API with that header,
  so there is no cookie to ride on and no CSRF.
- The console is served where the admin API is: with ``http.admin_port`` set, on that listener (the main
  port's ``/`` then says where); it needs no address of its own and calls the API on its own origin.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import threading
import time
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any, Protocol

from replicator import __version__
from replicator.obs import metrics

STATE_PATH = "/console/state"
REFRESH_SECONDS = 3
QUARANTINE_TTL = 30.0  # listing the quarantine reads every note from staging: not on each refresh
QUARANTINE_SHOWN = 200

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self';"
    " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8", "svg": "image/svg+xml"}
_ASSETS: dict[str, tuple[bytes, str]] = {
    f"/console/{name}": ((resources.files("replicator.ops") / "static" / name).read_bytes(), _TYPES[ext])
    for name, ext in (("app.js", "js"), ("app.css", "css"), ("favicon.svg", "svg"))
}
_STATE_ORDER = {"stopped": 0, "failing": 1, "resyncing": 2, "paused": 3, "active": 4}


class Source(Protocol):
    """What the console reads from the daemon (``replicator.ops.http.Backend``, and the quarantine)."""

    def readiness(self) -> tuple[bool, dict[str, Any]]: ...

    def status(self) -> dict[str, Any]: ...


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def asset(path: str) -> tuple[bytes, str] | None:
    return _ASSETS.get(path)


def page() -> bytes:
    """The shell at ``/``: no data, so no token needed."""
    js, css = _ASSETS["/console/app.js"][0], _ASSETS["/console/app.css"][0]
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>replicator console</title>
<link rel="icon" href="console/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="console/app.css" integrity="{_sri(css)}">
<script src="console/app.js" integrity="{_sri(js)}" defer></script>
</head>
<body data-refresh="{REFRESH_SECONDS}">
<header>
  <h1>replicator <span class="muted">{esc(__version__)}</span></h1>
  <p id="updated" class="muted" aria-live="off">Not loaded yet</p>
</header>
<main>
<form id="login" method="post" autocomplete="off">
  <label for="token">Admin token</label>
  <input id="token" name="token" type="password" required autocomplete="off" spellcheck="false">
  <button type="submit">Open the console</button>
  <p class="muted">The token (<code>http.admin_token</code>) is kept in this tab only (sessionStorage):
  never in a URL or a cookie.</p>
</form>
<p id="message" role="status" aria-live="polite"></p>
<div id="controls" hidden>
  <label for="filter">Filter tables</label>
  <input id="filter" type="search" placeholder="name or state" autocomplete="off">
  <label for="sort">Sort by</label>
  <select id="sort">
    <option value="lag">lag (highest first)</option>
    <option value="state">state (stopped first)</option>
    <option value="name">name</option>
  </select>
  <span id="count" class="muted" aria-live="polite"></span>
  <button id="logout" type="button">Forget the token</button>
</div>
<div id="live"></div>
</main>
<dialog id="act" aria-labelledby="act-title">
<form id="act-form" method="dialog">
  <h2 id="act-title">Action</h2>
  <p id="act-what"></p>
  <label for="act-reason">Reason</label>
  <input id="act-reason" type="text" maxlength="500" autocomplete="off">
  <label for="act-who">Your name (for the audit log)</label>
  <input id="act-who" type="text" maxlength="100" autocomplete="off">
  <div class="buttons">
    <button id="act-confirm" type="submit" value="confirm">Confirm</button>
    <button id="act-cancel" type="button">Cancel</button>
  </div>
</form>
</dialog>
</body>
</html>
""".encode()


# -- the live fragment -------------------------------------------------------------------------------------


class QuarantineCache:
    """The quarantine's notes, listed at most every ``QUARANTINE_TTL`` seconds (one per console server)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = -math.inf
        self._items: list[dict[str, Any]] = []
        self._error: str | None = None

    def get(self, backend: object) -> tuple[list[dict[str, Any]], str | None]:
        read = getattr(backend, "quarantined", None)
        if read is None:
            return [], None
        with self._lock:
            if time.monotonic() - self._at > QUARANTINE_TTL:
                try:
                    self._items, self._error = list(read()), None
                except Exception as exc:  # shown on the page; the rest of it still renders
                    self._error = f"{type(exc).__name__}: {exc}"
                self._at = time.monotonic()
            return self._items, self._error


def _samples(metric: Any, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in metric.collect():
        for s in family.samples:
            out[str(s.labels.get(label, ""))] = float(s.value)
    return out


def duration(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def when(iso: Any) -> str:
    from replicator.ops.status import when as fmt

    return fmt(iso)


def _td(label: str, content: str, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<td data-label="{esc(label)}"{klass}>{content}</td>'


def _actions(name: str, state: str, stop: Mapping[str, Any] | None, key: str) -> str:
    acts = ["resume" if state == "paused" else "pause", "resync"]
    acts += [a for a in (stop or {}).get("actions", []) if a in ("retry", "skip")]
    return "".join(
        f'<button type="button" id="{key}-{a}" data-action="{a}" data-table="{esc(name)}"'
        f' aria-label="{esc(a.capitalize())} {esc(name)}">{esc(a.capitalize())}</button>'
        for a in acts
    )


def _state_cell(state: str, control: Mapping[str, Any], stop: Mapping[str, Any] | None, error: Any) -> str:
    parts = [
        f'<span class="state state-{esc(state)}">{esc(state.upper() if state == "stopped" else state)}</span>'
    ]
    if state in ("paused", "resyncing") and control.get("reason"):
        parts.append(f'<span class="why">{esc(control.get("reason"))}</span>')
    if state in ("paused", "resyncing") and control.get("changed_by"):
        parts.append(
            f'<span class="muted">by {esc(control["changed_by"])}, {esc(when(control.get("since")))}</span>'
        )
    if stop:
        parts.append(f'<span class="why">{esc(stop.get("reason"))}: {esc(stop.get("detail"))}</span>')
        where = stop.get("object") or stop.get("position")
        if where:
            row = f", row {esc(stop['row'])}" if stop.get("row") is not None else ""
            parts.append(f'<span class="where">{esc(where)}{row}</span>')
        if stop.get("todo"):
            parts.append(f'<span class="muted">{esc(stop["todo"])}</span>')
    if error:
        parts.append(f'<span class="why">merge failing: {esc(error)}</span>')
    return "<br>".join(parts)


def _tables(doc: Mapping[str, Any], quarantined: Mapping[str, int], source_lag: Mapping[str, float]) -> str:
    controls = {str(c["table"]): c for c in doc.get("control", [])}
    rows = []
    for t in doc.get("tables", []):
        name = str(t["table"])
        control = controls.get(name, {})
        stop = t.get("stopped") or control.get("stopped")
        state = str(t.get("state") or control.get("state") or "active")
        if t.get("error") and state == "active":
            state = "failing"
        key = "t-" + hashlib.sha1(name.encode()).hexdigest()[:12]  # noqa: S324 - an element id, not security
        lag = t.get("lag_seconds")
        applied = (
            f"{esc(when(t.get('last_commit_time')))}<br>"
            f"<span class='muted'>applied {esc(when(t.get('last_applied_at')))}</span>"
        )
        rows.append(
            f'<tr id="{key}" data-table="{esc(name)}" data-state="{esc(state)}"'
            f' data-lag="{-1 if lag is None else float(lag)}" data-order="{_STATE_ORDER.get(state, 5)}">'
            + _td("Table", f'<span class="name">{esc(name)}</span>')
            + _td("State", _state_cell(state, control, stop, t.get("error")))
            + _td("Lag", esc(duration(lag)), "num")
            + _td(
                "Backlog",
                f"{int(t.get('backlog_batches') or 0)} batches<br>{int(t.get('backlog_rows') or 0)} rows",
                "num",
            )
            + _td("Last change applied", applied)
            + _td("Changes merged", f"{int(t.get('applied_changes') or 0):,}", "num")
            + _td("Quarantined", str(quarantined.get(name, 0)), "num")
            + _td("Source lag", esc(duration(source_lag.get(name))), "num")
            + _td("Actions", _actions(name, state, stop, key), "acts")
            + "</tr>"
        )
    head = "".join(
        f'<th scope="col">{h}</th>'
        for h in ("Table", "State", "Lag", "Backlog", "Last change applied", "Changes merged", "Quarantined",
                  "Source lag", "Actions")
    )  # fmt: skip
    return (
        '<section aria-labelledby="h-tables"><h2 id="h-tables">Tables</h2><div class="scroll">'
        f'<table id="tables"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        "</div></section>"
    )


def _section(hid: str, title: str, body: str) -> str:
    return f'<section aria-labelledby="{hid}"><h2 id="{hid}">{title}</h2>{body}</section>'


def _views(views: Iterable[Mapping[str, Any]]) -> str:
    body = "".join(
        "<tr>"
        + _td("View", f'<span class="name">{esc(v.get("view"))}</span>')
        + _td("Mode", esc(v.get("mode")))
        + _td("Policy", esc(v.get("policy") or "-"))
        + _td(
            "Why not incremental",
            esc(v.get("reason") or "-")
            + (f"<br><span class='muted'>{esc(v['note'])}</span>" if v.get("note") else ""),
        )
        + _td("Staleness", esc(duration(v.get("stale_seconds"))), "num")
        + _td("Refreshed", esc(when(v.get("refreshed_at"))))
        + "</tr>"
        for v in views
    )
    if not body:
        return _section("h-views", "Views", '<p class="muted">No views.</p>')
    head = "".join(
        f'<th scope="col">{h}</th>'
        for h in ("View", "Mode", "Policy", "Why not incremental", "Staleness", "Refreshed")
    )
    return (
        '<section aria-labelledby="h-views"><h2 id="h-views">Views</h2><div class="scroll">'
        f'<table id="views"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div></section>'
    )


def _quarantine(items: list[dict[str, Any]], error: str | None) -> str:
    items = sorted(items, key=lambda n: str(n.get("quarantined_at") or ""), reverse=True)
    shown = items[:QUARANTINE_SHOWN]
    note = f"<p class='why'>Could not list the quarantine: {esc(error)}</p>" if error else ""
    if len(items) > len(shown):
        note += (
            f"<p class='muted'>The newest {len(shown)} of {len(items)};"
            " <code>replicator quarantine</code> lists all.</p>"
        )
    body = "".join(
        "<tr>"
        + _td("Table", f'<span class="name">{esc(n.get("table"))}</span>')
        + _td("Reason", esc(n.get("reason")))
        + _td("Detail", esc(n.get("detail")))
        + _td("From", esc(n.get("source")) + (f", row {esc(n['row'])}" if n.get("row") is not None else ""))
        + _td("Rows", esc(n.get("rows") or 1), "num")
        + _td("When", esc(when(n.get("quarantined_at"))))
        + "</tr>"
        for n in shown
    )
    if not body:
        return _section("h-q", "Quarantine", note + '<p class="muted">Nothing quarantined.</p>')
    head = "".join(f'<th scope="col">{h}</th>' for h in ("Table", "Reason", "Detail", "From", "Rows", "When"))
    return (
        f'<section aria-labelledby="h-q"><h2 id="h-q">Quarantine</h2>{note}<div class="scroll">'
        f'<table id="quarantine"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div></section>'
    )


def _overview(
    ready: bool, detail: Mapping[str, Any], doc: Mapping[str, Any] | None, slots: Mapping[str, float]
) -> str:
    reasons = "; ".join(map(str, detail.get("reasons", [])))
    holder = detail.get("owner") if detail.get("phase") == "active" else "another task"
    items = [
        ("Build", esc(__version__)),
        ("Task", f"{esc(detail.get('phase'))} ({'ready' if ready else 'not ready: ' + esc(reasons)})"),
    ]
    if detail.get("mode") == "shared":
        units = ", ".join(map(str, detail.get("units", []))) or "none"
        items.append(("This task", f"{esc(detail.get('owner'))} owns {esc(units)}"))
    else:
        items.append(("Lease holder", f"{esc(holder)} (scope {esc(detail.get('lease_scope'))})"))
    if doc is not None and doc.get("ownership"):
        tasks: dict[str, int] = {}
        for u in doc["ownership"]:
            who = str(u.get("owner") or "UNOWNED")
            tasks[who] = tasks.get(who, 0) + 1
        shown = "; ".join(f"{esc(t)}: {n}" for t, n in sorted(tasks.items()))
        items.append((f"Units of scope {esc(detail.get('lease_scope'))}", shown))
    if doc is not None:
        states: dict[str, int] = {}
        for t in doc.get("tables", []):
            states[str(t.get("state"))] = states.get(str(t.get("state")), 0) + 1
        items.append(("Tables", esc(", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none")))
        lags = [float(t["lag_seconds"]) for t in doc.get("tables", []) if t.get("lag_seconds") is not None]
        items.append(("Highest lag", esc(duration(max(lags)) if lags else "-")))
    for slot, size in sorted(slots.items()):
        items.append((f"Slot {esc(slot)} lag", f"{int(size):,} bytes"))
    body = "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in items)
    return (
        '<section aria-labelledby="h-overview"><h2 id="h-overview" class="sr-only">Overview</h2>'
        f'<dl id="overview">{body}</dl></section>'
    )


def render_state(backend: Source, quarantine: QuarantineCache, not_active: type[Exception]) -> bytes:
    """The fragment ``/console/state`` answers: overview, tables, views and the quarantine, all escaped."""
    ready, detail = backend.readiness()
    source_lag = _samples(metrics.SOURCE_LAG_SECONDS, "table")
    slots = _samples(metrics.SOURCE_LAG_BYTES, "slot")
    try:
        doc: dict[str, Any] | None = backend.status()
    except not_active as exc:
        return (_overview(ready, detail, None, slots) + f"<p class='why'>{esc(exc)}</p>").encode()
    items, error = quarantine.get(backend)
    counts: dict[str, int] = {}
    for n in items:
        counts[str(n.get("table"))] = counts.get(str(n.get("table")), 0) + int(n.get("rows") or 1)
    assert doc is not None
    return (
        _overview(ready, detail, doc, slots)
        + _tables(doc, counts, source_lag)
        + _views(doc.get("views", []))
        + _quarantine(items, error)
    ).encode()
