"""Progress for humans, on a terminal and only there:

- per PostgreSQL table copied (the initial copy, a resync, a table added later): rows copied of the
  catalog's estimate, the rate and the time left (``copying``);
- per table, while ``run --once`` (and so the demo) works through a backlog: changes merged of the changes
  captured so far, the ones known (``merging``).

Off a terminal (ECS, a pipe, CI) nothing here writes anything: the JSON log lines stay as they are, and
``table_copied`` still logs each table's rows and seconds. Drawn by ``rich`` (Textualize, widely used and
kept up): its progress display is thread-safe (the copy's workers advance it), redraws in place, and sends
what is written to stderr meanwhile above the bars (``replicator.obs.logging`` looks ``sys.stderr`` up at
each line for that), so log lines and bars do not tear each other. tqdm would draw bars too, but one per
thread with ``position=`` bookkeeping, and it has no table renderer for ``status``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from replicator.obs import metrics

POLL_SECONDS = 0.3


def on_terminal() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


class _Count(ProgressColumn):
    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "rows")
        if task.fields.get("done") and unit == "rows":
            estimate = task.fields.get("estimate")
            about = f"estimated ~{estimate:,.0f}" if estimate else "no estimate"
            return Text(f"{task.completed:,.0f} rows ({about})")
        if unit == "changes":
            return Text(f"{task.completed:,.0f} of {task.total or 0:,.0f} changes merged")
        total = f"~{task.total:,.0f}" if task.total is not None else "?"
        return Text(f"{task.completed:,.0f} of {total} rows")


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished_time is not None else task.elapsed
        unit = task.fields.get("unit", "rows")
        return Text(f"{task.completed / elapsed:,.0f} {unit}/s" if elapsed and task.completed else "")


def columns() -> list[ProgressColumn]:
    """Per table: what is done to it, its name, a bar, done of the total, a rate, time left."""
    return [
        TextColumn("{task.fields[verb]} [bold]{task.description}"), BarColumn(), _Count(), _Rate(),
        TextColumn("left"), TimeRemainingColumn(),
    ]  # fmt: skip


class _Board:
    """The bars on screen; shown while someone uses them (copies, a ``run --once``)."""

    def __init__(self) -> None:
        console = Console(file=sys.stderr)
        self.progress = Progress(*columns(), console=console, redirect_stderr=True, redirect_stdout=False)
        self.users = 0


class _Shown:
    board: _Board | None = None


_lock = threading.Lock()
_shown = _Shown()


def _join() -> _Board:
    with _lock:
        board = _shown.board
        if board is None:
            board = _shown.board = _Board()
            board.progress.start()
        board.users += 1
        return board


def _leave(board: _Board) -> None:
    with _lock:
        board.users -= 1
        if board.users == 0:
            board.progress.stop()
            if _shown.board is board:
                _shown.board = None


class Bar:
    """One table's copy. ``advance`` and ``done`` may be called from any thread."""

    def __init__(self, board: _Board | None = None, task: Any = None) -> None:
        self._board, self._task = board, task

    def advance(self, rows: int) -> None:
        if self._board is not None:
            self._board.progress.advance(self._task, rows)

    def done(self) -> None:
        board, self._board = self._board, None
        if board is not None:
            with _lock:
                copied = next(t for t in board.progress.tasks if t.id == self._task).completed
                # The estimate was the catalog's: the bar ends full, at the rows copied.
                board.progress.update(self._task, total=copied, done=True)
            _leave(board)


def copying(table: str, estimate: int | None) -> Bar:
    """A bar for ``table``'s copy of about ``estimate`` rows (``None``: unknown); nothing off a terminal."""
    if not on_terminal():
        return Bar()
    board = _join()
    total = float(estimate) if estimate is not None and estimate > 0 else None
    return Bar(board, board.progress.add_task(table, total=total, estimate=total, verb="copy", unit="rows"))


def _by_table(metric: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith("_total"):
                table = str(s.labels.get("table", ""))
                out[table] = out.get(table, 0.0) + float(s.value)
    return out


@contextmanager
def merging() -> Iterator[None]:
    """While the block runs (``run --once``): per table, changes merged of those captured so far."""
    if not on_terminal():
        yield
        return
    board = _join()
    base_captured = _by_table(metrics.CHANGES_CAPTURED)
    base_merged = _by_table(metrics.CHANGES_MERGED)
    tasks: dict[str, Any] = {}
    stop = threading.Event()

    def poll() -> None:
        captured, merged = _by_table(metrics.CHANGES_CAPTURED), _by_table(metrics.CHANGES_MERGED)
        for table in sorted(captured):
            known = captured[table] - base_captured.get(table, 0.0)
            if known <= 0:
                continue
            if table not in tasks:
                tasks[table] = board.progress.add_task(table, total=known, verb="merge", unit="changes")
            done = min(known, merged.get(table, 0.0) - base_merged.get(table, 0.0))
            board.progress.update(tasks[table], total=known, completed=done)

    def loop() -> None:
        while not stop.wait(POLL_SECONDS):
            poll()

    watcher = threading.Thread(target=loop, name="progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join(timeout=5)
        poll()
        _leave(board)
