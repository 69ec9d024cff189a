"""The progress bar of the commands that upload: one rich bar on stderr, or none.

``bupmesh upload-direct`` (bytes pass through this process: rich measures the
speed and time left itself) and ``bupmesh upload --wait`` (the hub reports
status, speed and ETA: shown as given) draw the same bar. It is drawn only on a
terminal; piped or logged, each command prints sparse plain lines of its own
instead, and stdout stays free for results either way.
"""

from __future__ import annotations

import sys
from typing import Any


class ProgressBar:
    """A context manager around one rich progress bar; inert when ``enabled`` is false.

    ``reported``: the figures come from elsewhere (``update(status=, speed=, eta=)``
    as text) rather than being measured from the updates.
    """

    def __init__(self, name: str, *, enabled: bool, total: float | None = None,
                 reported: bool = False) -> None:
        self._bar: Any = None
        if not enabled:
            return
        # rich takes ~60 ms to import; a command that draws no bar does not pay it.
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns: list[ProgressColumn] = [TextColumn("[bold]{task.description}")]
        if reported:
            columns += [TextColumn("{task.fields[status]}"), BarColumn(), DownloadColumn(),
                        TextColumn("{task.fields[speed]}"), TextColumn("{task.fields[eta]}")]
        else:
            columns += [BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TimeRemainingColumn()]
        self._bar = Progress(*columns, console=Console(file=sys.stderr))
        self._task = self._bar.add_task(name, total=total, status="", speed="", eta="")

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def __enter__(self) -> ProgressBar:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, completed: float, *, total: float | None = None, **fields: str) -> None:
        """Move the bar; ``total`` None keeps the current one. No-op when not enabled."""
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, total=total, **fields)
