"""Progress bars and spinners for command steps that can take more than a couple of seconds: shown on
stderr, only when both stdout and stderr are a terminal and the output is not `--json`."""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator


def on_terminal(as_json: bool = False) -> bool:
    """Whether progress may be shown: a person is watching (terminal) and no machine reads stdout."""
    return not as_json and sys.stdout.isatty() and sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(label: str, total: int | None, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar for `total` units (a spinner when None) while the block runs; yields
    `advance_to(done)`. With `enabled` False it shows nothing and the callback does nothing."""
    if not enabled:
        yield lambda _done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task(label, total=total)
        yield lambda done: prog.update(task, completed=done)
