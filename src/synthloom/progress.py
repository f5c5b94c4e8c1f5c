"""Progress bars on stderr (rich), or nothing when turned off or there is no one to see them.

with progress_bar(None, total, "train", "loss {task.fields[loss]}", loss="–") as update:
    update(step, loss="0.9000")            # and update(step, total=new_total) where the end moves

While a bar is live, log lines (the epoch summaries) print above it, not over it.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

Update = Callable[..., None]


def shows_progress(enabled: bool | None) -> bool:
    """enabled=None: when stderr is a terminal, or in a Jupyter notebook (rich draws it there)."""
    if enabled is not None:
        return enabled
    if sys.stderr.isatty():
        return True
    try:
        from rich.console import Console
    except ImportError:
        return False
    return Console(stderr=True).is_jupyter


@contextmanager
def progress_bar(enabled: bool | None, total: int, label: str, *field_columns: str, **fields: Any) -> Iterator[Update]:
    """Yields `update(completed, total=None, **fields)`."""
    if not shows_progress(enabled):
        yield lambda completed, total=None, **values: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(c) for c in field_columns] + [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True)) as bar, _logs_above(bar.console):
        task = bar.add_task(label, total=total, **fields)

        def update(completed: int, total: int | None = None, **values: Any) -> None:
            bar.update(task, completed=completed, total=total, **values)

        yield update


class _ConsoleStream:
    """A file-like stream that prints through a rich console (above its live bar)."""

    def __init__(self, console) -> None:
        self.console = console

    def write(self, text: str) -> int:
        if text.strip():
            self.console.print(text.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        pass


@contextmanager
def _logs_above(console) -> Iterator[None]:
    """Logging handlers that write to stderr write through `console` meanwhile: a log line comes out
    above the bar instead of over it."""
    stream = _ConsoleStream(console)
    swapped = []
    for logger in (logging.getLogger(), logging.getLogger("synthloom")):
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr, sys.__stderr__):
                swapped.append((handler, handler.setStream(stream)))
    try:
        yield
    finally:
        for handler, old in swapped:
            handler.setStream(old)
