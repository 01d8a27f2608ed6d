"""How the weights library reports progress.

A Protocol the caller implements, and a plain stderr default. Rendering (rich bars) lives in
:mod:`difffusr_cli.cli.console`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, Protocol

# ---------------------------------------------------------------------------------------------
# Progress reporting (the library reports; the CLI decides how it looks)


class Reporter(Protocol):
    """Where long operations report.

    ``note`` is a one-line message for the user; ``progress`` yields an ``advance(n_bytes)``
    callback; ``download_bar`` is handed to huggingface_hub as its ``tqdm_class`` (None:
    huggingface_hub's own bars).
    """

    def note(self, message: str) -> None:
        """Tell the user ``message`` (one line)."""

    def progress(
        self, description: str, total: int | None
    ) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        """Report progress of a block of ``total`` units; yields an ``advance(n)`` callback."""

    @property
    def download_bar(self) -> Callable[..., Any] | None:
        """The ``tqdm_class`` for huggingface_hub downloads (None: its own bars)."""


class StderrReporter:
    """Notes on stderr, no progress bars: the default for library calls (notebooks, scripts)."""

    def note(self, message: str) -> None:
        """Print ``message`` on stderr."""
        print(message, file=sys.stderr)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """No bar: yields an ``advance(n)`` callback that does nothing."""
        yield lambda n: None

    @property
    def download_bar(self) -> Callable[..., Any] | None:
        """None: huggingface_hub draws its own bars."""
        return None
