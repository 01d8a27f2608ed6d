"""Progress bars of ``difffusr eval ...`` and ``difffusr train ...`` on stderr.

The library reports progress through small callables (``progress(label, done, total)``); each
context manager here yields such a callable drawing a bar, or None when bars are off.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from difffusr_cli.evaluate.fusion import ProgressFn
from difffusr_cli.train.common import StepProgress


@contextmanager
def block_bars(enabled: bool) -> Iterator[ProgressFn | None]:
    """A rich progress display over the blocks of each product (``eval fusion``).

    Args:
        enabled: False (``--quiet``) yields None and draws nothing.

    Yields:
        ``update(label, blocks done, blocks total)``; one bar per label, removed at the end.
    """
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("blocks"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def update(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = progress.add_task(label[:40], total=total)
        progress.update(tasks[label], completed=done)

    with progress:
        yield update


@contextmanager
def image_bars(enabled: bool = True) -> Iterator[ProgressFn | None]:
    """A tqdm bar per dataset over its images (``eval opensr``), kept on screen when done.

    Args:
        enabled: False yields None and draws nothing.

    Yields:
        ``update(dataset, images done, images total)``; a new dataset closes the previous bar.
    """
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def close(label: str) -> None:
        bar = bars.pop(label, None)
        if bar is not None:
            bar.close()

    def update(label: str, done: int, total: int) -> None:
        for other in [name for name in bars if name != label]:
            close(other)
        bar = bars.get(label)
        if bar is None:
            bar = bars[label] = tqdm(total=total, desc=label, unit="img", leave=True)
        bar.update(done - bar.n)
        if done >= total:
            close(label)

    try:
        yield update
    finally:
        for label in list(bars):
            close(label)


@contextmanager
def step_bar(enabled: bool) -> Iterator[StepProgress | None]:
    """A tqdm bar over the optimisation steps of a training run.

    Args:
        enabled: False (``--no-progress``) yields None and draws nothing.

    Yields:
        ``advance(title, steps done, steps total, **postfix)``: the first call (``done`` = the
        resumed step) opens the bar; the postfix values (loss, epoch) are shown beside it.
    """
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    bar: Any = None

    def advance(title: str, done: int, total: int, **postfix: float) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(
                total=total,
                initial=done,
                desc=title,
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
            )
        if postfix:
            bar.set_postfix(
                {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in postfix.items()},
                refresh=False,
            )
        if done > bar.n:
            bar.update(done - bar.n)

    try:
        yield advance
    finally:
        if bar is not None:
            bar.close()
