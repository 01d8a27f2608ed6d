"""Console rendering for the CLI.

Rich progress bars and notes on stderr (the library only reports through
:class:`difffusr_cli.weights.Reporter`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass

if TYPE_CHECKING:
    pass


class _RichDownloadBar:
    """The tqdm-shaped object huggingface_hub drives during a download.

    It is drawn as a task of a rich progress display. It implements the part of tqdm's interface
    that huggingface_hub's HTTP and Xet downloaders use (``update``, ``n``, ``total``,
    ``set_postfix_str``, ``refresh``, ``close``, context manager); everything else of tqdm is
    deliberately absent.
    """

    def __init__(
        self,
        progress: Any,
        *,
        desc: str = "download",
        total: int | None = None,
        initial: int = 0,
        **_: Any,
    ) -> None:
        self._progress = progress
        self._task = progress.add_task(desc, total=total, completed=initial)
        self.n = initial
        self._total = total

    @property
    def total(self) -> int | None:
        return self._total

    @total.setter
    def total(self, value: int | None) -> None:
        self._total = value
        self._progress.update(self._task, total=value)

    @property
    def format_dict(self) -> dict[str, Any]:
        return {"n": self.n, "total": self._total}

    def update(self, n: int = 1) -> None:
        self.n += n
        self._progress.advance(self._task, n)

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        """Speed text; the rich columns show the speed already."""

    def refresh(self) -> None:
        self._progress.refresh()

    def close(self) -> None:
        """Stop the progress display if it was shown."""
        self._progress.stop_task(self._task)

    def __enter__(self) -> _RichDownloadBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ConsoleReporter:
    """Rich progress bars (download, checksum) and notes on stderr.

    What ``difffusr weights`` uses.
    """

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            transient=True,
        )

    def note(self, message: str) -> None:
        """Print a one-line message on stderr."""
        self._console.print(message, markup=False, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """A progress bar for the block; yields its ``advance(n)`` callback."""
        if not self._console.is_terminal:  # no bars into logs (stopping one prints a blank line)
            yield lambda n: None
            return
        with self._progress:
            task = self._progress.add_task(description, total=total)
            try:
                yield lambda n: self._progress.advance(task, n)
            finally:
                self._progress.remove_task(task)

    @property
    def download_bar(self) -> Callable[..., Any] | None:
        """The tqdm class for huggingface_hub (None when stderr is no terminal)."""
        progress = self._progress

        if not self._console.is_terminal:
            return None

        def make_bar(**kwargs: Any) -> _RichDownloadBar:
            progress.start()
            return _RichDownloadBar(progress, **kwargs)

        return make_bar

    def close(self) -> None:
        """Stop the progress display if it was shown."""
        if self._progress.live.is_started:  # stopping a display never shown prints a blank line
            self._progress.stop()
