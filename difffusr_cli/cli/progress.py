"""Rendering of a ``superres`` run for the CLI, on stderr.

- :class:`RichProgress` (stderr is a terminal): a rich progress bar per product (patches
  done/total, patches/s, elapsed, ETA) or, for a distributed batch, one bar over the scenes;
- :class:`LogProgress` (stderr is a log file, or ``--log-format json``): a line every
  ``--log-interval`` seconds, from a timer thread so that a slow run still reports, and one
  summary line per product; ``json`` writes one JSON object a line.

Both implement :class:`difffusr_cli.superres.progress.ProgressSink` (with its optional
``on_result`` and ``on_batch``); the library itself prints nothing.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import IO, Any, Literal

from difffusr_cli.superres.outputs import RunSummary
from difffusr_cli.superres.progress import BatchState, RateMeter

LogFormat = Literal["text", "json"]


def clock(seconds: float | None) -> str:
    """``H:MM:SS``, or ``-`` when unknown."""
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _rate_text(rate: float | None) -> str:
    return f"{rate:.3g} patches/s" if rate else "rate -"


class RichProgress:
    """A :class:`~difffusr_cli.superres.progress.ProgressSink` drawing on stderr.

    ``bar=False`` (``--quiet``) draws no bar but still prints the messages the library sends
    (in quiet mode those are warnings and failures only). The rate and ETA are patches done over
    the time to the latest patch (:class:`RateMeter`): a slow run has both after its first patch.
    """

    def __init__(self, bar: bool = True) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bar = bar
        self._progress: Any = None
        self._task: Any = None
        self._meter = RateMeter()

    def _start_bar(self, label: str, total: int, unit: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        label = label if len(label) <= 32 else label[:29] + "..."
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[times]}"),
            console=self.console,
        )
        self._progress.start()
        self._task = self._progress.add_task(label, total=total, rate="", times="")

    def on_start(self, label: str, total: int) -> None:
        """Start a bar for a product of ``total`` patches (ends any previous one)."""
        self.on_end()
        self._meter = RateMeter(total)
        if self.bar:
            self._start_bar(label, total, "patches")

    def on_advance(self, n: int) -> None:
        """Advance the bar by ``n`` patches and update the rate and ETA."""
        self._meter.advance(n)
        if self._progress is None:
            return
        meter = self._meter
        self._progress.update(
            self._task,
            completed=meter.done,
            rate=_rate_text(meter.rate),
            times=f"{clock(meter.elapsed)} ETA {clock(meter.eta)}",
        )

    def on_batch(self, state: BatchState) -> None:
        """One bar over the scenes of a distributed batch."""
        if not self.bar:
            return
        if self._progress is None:
            self._start_bar("batch", state.scenes, "scenes")
        finished = state.done + state.skipped + state.failed
        self._progress.update(
            self._task,
            completed=finished,
            rate=f"{state.running} running, {state.failed} failed, {_rate_text(state.rate)}",
            times=f"{clock(state.elapsed)} ETA {clock(state.eta)}",
        )

    def on_end(self) -> None:
        """Stop the current bar, if any."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def on_message(self, text: str) -> None:
        """Print a message of the run on stderr."""
        # Warnings stay one line (grep-able); summaries wrap to the terminal.
        soft = text.startswith(("warning:", "failed:"))
        self.console.print(text, highlight=False, soft_wrap=soft, markup=False)


class LogProgress:
    """Progress as log lines on ``stream``: every ``interval`` seconds, and one per product.

    A timer thread writes the progress line (scene, patches done/total, rate, elapsed, ETA)
    every ``interval`` seconds while a product (or a distributed batch) runs, whether or not a
    patch finished since; each product's end writes its summary line. ``fmt="json"`` writes one
    JSON object a line, with an ``event`` of ``progress``, ``batch``, ``product`` or ``message``.
    """

    def __init__(
        self,
        interval: float = 30.0,
        fmt: LogFormat = "text",
        *,
        progress: bool = True,
        stream: IO[str] | None = None,
    ) -> None:
        self.interval = interval
        self.fmt = fmt
        self.progress = progress
        self._stream = stream
        self._lock = threading.Lock()
        self._label: str | None = None
        self._meter = RateMeter()
        self._batch: BatchState | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stream(self) -> IO[str]:
        """Where lines go (stderr as it is at the time: pytest and loggers replace it)."""
        return self._stream if self._stream is not None else sys.stderr

    def _write(self, record: dict, text: str) -> None:
        line = json.dumps(record, default=str) if self.fmt == "json" else text
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def _ensure_timer(self) -> None:
        if self._thread is None and self.progress:
            self._thread = threading.Thread(target=self._tick, name="difffusr-log", daemon=True)
            self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.write_progress()

    def write_progress(self) -> None:
        """Write the progress line now (nothing when no product or batch runs)."""
        if self._batch is not None:
            self._write_batch(self._batch)
            return
        label, meter = self._label, self._meter
        if label is None:
            return
        total = meter.total
        share = f" ({100 * meter.done / total:.0f}%)" if total else ""
        self._write(
            {
                "event": "progress",
                "time": _now(),
                "scene": label,
                "patches_done": meter.done,
                "patches_total": total,
                "rate": meter.rate,
                "elapsed_s": round(meter.elapsed, 1),
                "eta_s": None if meter.eta is None else round(meter.eta, 1),
            },
            f"{_now()} progress {label}: {meter.done}/{total} patches{share}, "
            f"{_rate_text(meter.rate)}, elapsed {clock(meter.elapsed)}, ETA {clock(meter.eta)}",
        )

    def _write_batch(self, state: BatchState) -> None:
        self._write(
            {"event": "batch", "time": _now(), **asdict(state)},
            f"{_now()} batch: {state.done + state.skipped + state.failed}/{state.scenes} scenes "
            f"({state.done} done, {state.skipped} skipped, {state.failed} failed, "
            f"{state.running} running), {state.patches_done}/{state.patches_total} patches, "
            f"{_rate_text(state.rate)}, elapsed {clock(state.elapsed)}, ETA {clock(state.eta)}",
        )

    def on_start(self, label: str, total: int) -> None:
        """A product of ``total`` patches starts."""
        with self._lock:
            self._label, self._meter = label, RateMeter(total)
        self._ensure_timer()

    def on_advance(self, n: int) -> None:
        """``n`` more patches are done."""
        with self._lock:
            self._meter.advance(n)

    def on_batch(self, state: BatchState) -> None:
        """Where a distributed batch stands (written at the next tick)."""
        self._batch = state
        self._ensure_timer()

    def on_end(self) -> None:
        """The product is done or failed: no more progress lines for it."""
        with self._lock:
            self._label = None

    def on_result(self, summary: RunSummary) -> None:
        """One summary line per product."""
        record = {"event": "product", "time": _now(), **asdict(summary)}
        self._write(record, f"{_now()} {summary.paragraph()}")

    def on_message(self, text: str) -> None:
        """A message of the run (``warning:`` lines are warnings)."""
        level = "warning" if text.startswith("warning:") else "info"
        self._write({"event": "message", "time": _now(), "level": level, "text": text}, text)

    def close(self) -> None:
        """Stop the timer thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _SilentBar:
    """A tqdm-shaped download bar that draws nothing (the part huggingface_hub uses)."""

    def __init__(self, *, total: int | None = None, initial: int = 0, **_: Any) -> None:
        self.n, self.total = initial, total

    @property
    def format_dict(self) -> dict[str, Any]:
        return {"n": self.n, "total": self.total}

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        """Nothing to show."""

    def refresh(self) -> None:
        """Nothing to draw."""

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> _SilentBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogReporter:
    """A :class:`~difffusr_cli.weights.Reporter` for log mode: notes as the sink's lines.

    With ``--log-format json`` the notes are JSON objects too; no download or checksum bars.
    """

    def __init__(self, sink: LogProgress) -> None:
        self._sink = sink

    def note(self, message: str) -> None:
        """One line, through the sink."""
        self._sink.on_message(message)

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """No bar."""
        yield lambda n: None

    @property
    def download_bar(self) -> Callable[..., Any] | None:
        """A bar class that draws nothing (huggingface_hub's own bars would break the lines)."""
        return _SilentBar
