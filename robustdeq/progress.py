"""Progress bars (rich) for training and attacks; a quiet variant for library use and tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from robustdeq import distributed


class Progress:
    """Hands out ``advance(n)`` callbacks for named tasks; shows them as rich bars when enabled.

    Under torchrun only rank 0 shows bars and messages.
    """

    def __init__(self, console: Console | None = None, enabled: bool = True) -> None:
        main = distributed.is_main()
        self.console = console or Console(stderr=True, quiet=not main)
        self.enabled = enabled and main

    @classmethod
    def quiet(cls) -> Progress:
        return cls(enabled=False)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        if not self.enabled:
            yield lambda n: None
            return
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with RichProgress(*columns, console=self.console, transient=False) as bar:
            task_id = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task_id, n)
