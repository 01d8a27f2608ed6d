"""How the library reports a run's progress: a small callback protocol, no UI.

The library never draws a progress bar nor prints: it calls a :class:`ProgressSink`. The CLI
passes one that renders with rich (:mod:`difffusr_cli.cli.progress`); library callers pass their
own or get :class:`LoggingProgress` (messages to the ``difffusr`` logger, nothing else).
"""

from __future__ import annotations

import logging
from typing import Protocol

logger = logging.getLogger("difffusr")


class ProgressSink(Protocol):
    """Receives the progress of a ``superres`` run.

    Calls for one product: ``on_start`` once its checks passed (``total`` = diffusion patches this
    run goes through), ``on_advance`` per finished patches, ``on_end`` when it is done or failed.
    ``on_message`` may come at any time: one line for the user (warnings start ``warning:``).
    """

    def on_start(self, label: str, total: int) -> None:
        """A run of ``total`` patches starts; ``label`` names it (the input)."""
        ...

    def on_advance(self, n: int) -> None:
        """``n`` more patches are finished."""
        ...

    def on_end(self) -> None:
        """The run is done or failed."""
        ...

    def on_message(self, text: str) -> None:
        """One line for the user; warnings start ``warning:``."""
        ...


class LoggingProgress:
    """The default sink: no bar; warnings to ``logging.warning``, other lines ``logging.info``."""

    def on_start(self, label: str, total: int) -> None:
        """No bar: nothing to start."""
        return None

    def on_advance(self, n: int) -> None:
        """No bar: nothing to advance."""
        return None

    def on_end(self) -> None:
        """No bar: nothing to end."""
        return None

    def on_message(self, text: str) -> None:
        """Log ``text``: ``warning:`` lines as warnings, others as info."""
        if text.startswith("warning:"):
            logger.warning("%s", text)
        else:
            logger.info("%s", text)
