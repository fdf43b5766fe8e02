"""Progress for humans, on a terminal and only there: per PostgreSQL table copied (the initial copy, a
resync, a table added later), rows copied of the catalog's estimate, rate and time left.

Off a terminal (ECS, a pipe, CI) nothing here writes anything: the JSON log lines stay as they are, and
``table_copied`` still logs each table's rows and seconds. Drawn by ``rich`` (Textualize, widely used and
kept up): its progress display is thread-safe (the copy's workers advance it), redraws in place, and sends
what is written to stderr meanwhile above the bars, so log lines and bars do not tear each other. tqdm
would draw the bars too, but one bar per thread with ``position=`` bookkeeping and no table renderer.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text


def on_terminal() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


class _Rows(ProgressColumn):
    def render(self, task: Task) -> Text:
        if task.fields.get("done"):
            estimate = task.fields.get("estimate")
            about = f"estimated ~{estimate:,.0f}" if estimate else "no estimate"
            return Text(f"{task.completed:,.0f} rows ({about})")
        total = f"~{task.total:,.0f}" if task.total is not None else "?"
        return Text(f"{task.completed:,.0f} of {total} rows")


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished_time is not None else task.elapsed
        return Text(f"{task.completed / elapsed:,.0f} rows/s" if elapsed and task.completed else "")


def columns() -> list[ProgressColumn]:
    """Per table: its name, a bar, rows of the estimate, rows a second, time left."""
    return [
        TextColumn("copy [bold]{task.description}"), BarColumn(), _Rows(), _Rate(),
        TextColumn("left"), TimeRemainingColumn(),
    ]  # fmt: skip


class Bar:
    """One table's copy. ``advance`` and ``done`` may be called from any thread."""

    def __init__(self, board: _Board | None, task: Any = None) -> None:
        self._board, self._task = board, task

    def advance(self, rows: int) -> None:
        if self._board is not None:
            self._board.progress.advance(self._task, rows)

    def done(self) -> None:
        if self._board is not None:
            self._board.finish(self._task)
            self._board = None


class _Board:
    def __init__(self) -> None:
        self.progress = Progress(
            *columns(), console=Console(file=sys.stderr), redirect_stderr=True, redirect_stdout=False
        )
        self.active = 0

    def finish(self, task: Any) -> None:
        with _lock:
            done = next(t for t in self.progress.tasks if t.id == task).completed
            self.progress.update(task, total=done, done=True)  # the estimate was the catalog's: end full
            self.active -= 1
            if self.active == 0:
                self.progress.stop()
                if _shown.board is self:
                    _shown.board = None


class _Shown:
    board: _Board | None = None  # the bars on screen, while a copy runs


_lock = threading.Lock()
_shown = _Shown()


def copying(table: str, estimate: int | None) -> Bar:
    """A bar for ``table``'s copy of about ``estimate`` rows (``None``: unknown); nothing off a terminal."""
    if not on_terminal():
        return Bar(None)
    with _lock:
        board = _shown.board
        if board is None:
            board = _shown.board = _Board()
            board.progress.start()
        board.active += 1
        total = float(estimate) if estimate is not None and estimate > 0 else None
        return Bar(board, board.progress.add_task(table, total=total, estimate=total))
