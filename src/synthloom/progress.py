"""Progress bars on stderr (rich), or nothing when turned off or stderr is not a terminal.

with progress_bar(None, total, "train", "loss {task.fields[loss]:.4f}", loss=float("nan")) as update:
    update(step, loss=0.9)
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

Update = Callable[..., None]


@contextmanager
def progress_bar(enabled: bool | None, total: int, label: str, *field_columns: str, **fields: Any) -> Iterator[Update]:
    """Yields `update(completed, **fields)`. enabled=None: only when stderr is a terminal."""
    if not (sys.stderr.isatty() if enabled is None else enabled):
        yield lambda completed, **values: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(c) for c in field_columns] + [TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total, **fields)
        yield lambda completed, **values: bar.update(task, completed=completed, **values)
