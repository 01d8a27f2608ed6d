"""Terminal rendering of a ``superres`` run for the CLI.

A rich progress bar per product (patches done/total, patches/s, elapsed, ETA) and its messages on
stderr.

Implements :class:`difffusr_cli.superres.progress.ProgressSink`; the library itself prints nothing.
"""

from __future__ import annotations

from typing import Any


class RichProgress:
    """A :class:`~difffusr_cli.superres.progress.ProgressSink` drawing on stderr.

    ``bar=False`` (``--quiet``) draws no bar but still prints the messages the library sends
    (in quiet mode those are warnings only).
    """

    def __init__(self, bar: bool = True) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bar = bar
        self._progress: Any = None
        self._task: Any = None

    def on_start(self, label: str, total: int) -> None:
        """Start a bar for a product of ``total`` patches (ends any previous one)."""
        self.on_end()
        if not self.bar:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        label = label if len(label) <= 32 else label[:29] + "..."
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("patches"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._progress.start()
        self._task = self._progress.add_task(label, total=total, rate="")

    def on_advance(self, n: int) -> None:
        """Advance the bar by ``n`` patches and update the rate."""
        if self._progress is None:
            return
        self._progress.advance(self._task, n)
        speed = self._progress.tasks[0].speed
        self._progress.update(self._task, rate=f"{speed:.2f}/s" if speed else "")

    def on_end(self) -> None:
        """Stop the current bar, if any."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def on_message(self, text: str) -> None:
        """Print a message of the run on stderr."""
        # Warnings stay one line (grep-able); summaries wrap to the terminal.
        soft = text.startswith("warning:")
        self.console.print(text, highlight=False, soft_wrap=soft, markup=False)
