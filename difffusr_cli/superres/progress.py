"""How the library reports a run's progress: a small callback protocol, no UI.

The library never draws a progress bar nor prints: it calls a :class:`ProgressSink`. The CLI
passes one that renders with rich (:mod:`difffusr_cli.cli.progress`); library callers pass their
own or get :class:`LoggingProgress` (messages to the ``difffusr`` logger, nothing else).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger("difffusr")


class ProgressSink(Protocol):
    """Receives the progress of a ``superres`` run.

    Calls for one product: ``on_start`` once its checks passed (``total`` = diffusion patches this
    run goes through), ``on_advance`` per finished patches, ``on_end`` when it is done or failed.
    ``on_message`` may come at any time: one line for the user (warnings start ``warning:``).

    Two optional methods, called when a sink has them: ``on_result(summary)`` receives each
    product's :class:`~difffusr_cli.superres.outputs.RunSummary` instead of its summary line
    (``on_message(summary.paragraph())`` otherwise); ``on_batch(state)`` receives a
    :class:`BatchState` of a distributed batch (whose products run elsewhere: no ``on_start``).
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


class RateMeter:
    """Patches done, rate and ETA of one run, from the first finished patch on.

    The rate is patches done over the time to the latest finished patch, so a slow run (one
    patch every 25 s) has a rate, and an ETA, as soon as its first patch is done.
    """

    def __init__(self, total: int = 0) -> None:
        self.total = total
        self.done = 0
        self.started = time.perf_counter()
        self._last = self.started

    def advance(self, n: int) -> None:
        """``n`` more patches are done (now)."""
        self.done += n
        self._last = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.started

    @property
    def rate(self) -> float | None:
        """Patches per second, None before the first patch."""
        span = self._last - self.started
        return self.done / span if self.done and span > 0 else None

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, None before the first patch."""
        rate = self.rate
        return max(self.total - self.done, 0) / rate if rate else None


@dataclass(frozen=True)
class BatchState:
    """Where a distributed batch stands (what ``on_batch`` receives).

    Attributes:
        scenes: inputs in the batch; done, skipped, failed, running: how many are each.
        patches_done, patches_total: patches of the scenes started so far (this session).
        rate: patches per second summed over the running scenes (None: none measured yet).
        elapsed: seconds since the batch started.
        eta: seconds left (None: unknown), counting scenes not started yet as the mean of those
            started.
    """

    scenes: int
    done: int
    skipped: int
    failed: int
    running: int
    patches_done: int
    patches_total: int
    rate: float | None
    elapsed: float
    eta: float | None
