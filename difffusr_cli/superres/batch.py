"""What a batch of many inputs needs besides running scenes: the inputs, the report, the checks.

- :func:`read_inputs_file` (``--inputs-from FILE``) and :func:`shard` (``--shard I/N``) build the
  list of inputs;
- :class:`SceneJob` is one input with its product path and what its up-front checks found;
- :class:`BatchReport` is ``DIR/difffusr-batch.json``, rewritten atomically as the batch goes;
- :func:`check_complete` decides whether an existing product may be skipped (its recorded
  settings fingerprint must match), :func:`warn_about_radiometry` the warnings of an input.

Scenes are run by :mod:`difffusr_cli.superres.run` (one process) or
:mod:`difffusr_cli.superres.distributed` (a Dask cluster); both use these pieces.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from difffusr_cli.bands import SCALE
from difffusr_cli.errors import DifffusrError, InputError, OutputError
from difffusr_cli.superres.atomic import write_atomically
from difffusr_cli.superres.compute import resolve_compute
from difffusr_cli.superres.models import Models
from difffusr_cli.superres.options import SuperresOptions
from difffusr_cli.superres.outputs import RunSummary
from difffusr_cli.superres.progress import ProgressSink
from difffusr_cli.superres.region import context_region
from difffusr_cli.superres.render import make_layout, resolve_region
from difffusr_cli.superres.resume import (
    FINGERPRINT_TAG,
    changed_settings,
    fingerprint,
    fingerprint_text,
)

if TYPE_CHECKING:
    from difffusr_cli.io import Scene

#: File name of the batch report in the output folder.
REPORT_NAME = "difffusr-batch.json"

Status = Literal["pending", "running", "done", "skipped", "failed"]


def read_inputs_file(path: str | Path) -> list[Path]:
    """The inputs listed in ``path``: one a line; blank lines and ``#`` comments are ignored.

    A relative path is relative to the folder holding the list (not the current directory), so
    a list stays valid wherever the batch job starts. Surrounding whitespace is stripped; a
    ``#`` only starts a comment at the start of a line (file names may contain ``#``).

    Raises:
        InputError: the file cannot be read, or lists no input.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise InputError(f"--inputs-from {path}: cannot read the list ({reason})") from None
    base = path.resolve().parent
    inputs = []
    for line in text.splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            item = Path(entry).expanduser()
            inputs.append(item if item.is_absolute() else base / item)
    if not inputs:
        raise InputError(f"--inputs-from {path}: the list names no input")
    return inputs


def parse_shard(spec: str) -> tuple[int, int]:
    """``"I/N"`` → ``(I, N)`` with ``0 <= I < N``.

    Raises:
        InputError: not of that form.
    """
    try:
        index_text, count_text = spec.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise InputError(f"--shard {spec}: expected I/N, e.g. 0/8 (shard I of N, from 0)") from None
    if count < 1 or not 0 <= index < count:
        raise InputError(f"--shard {spec}: expected 0 <= I < N")
    return index, count


def shard(inputs: list[Path], index: int, count: int) -> list[Path]:
    """Every ``count``-th input from the ``index``-th (0-based): the shards partition the list."""
    return inputs[index::count]


def fingerprint_sha256(value: dict) -> str:
    """sha256 of :func:`~difffusr_cli.superres.resume.fingerprint_text` (the batch report's id)."""
    return hashlib.sha256(fingerprint_text(value).encode()).hexdigest()


@dataclass
class SceneJob:
    """One input of a batch: its product path and what the up-front checks found.

    Attributes:
        index: position in the batch (report order).
        source: the input as given; target: its product.
        complete: the product exists and ``--overwrite`` is not given (kept only if its
            settings match, in folder mode and for a single ``-o FILE`` with ``--resume``).
        scene: the checked scene (closed; reopens on the first read), None if a check failed.
        error: the check's one-line failure, or None.
    """

    index: int
    source: Path
    target: Path
    complete: bool = False
    scene: Scene | None = None
    error: str | None = None


def error_line(exc: BaseException) -> str:
    """One line for the report: a user error's message, else ``Type: message``."""
    text = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, DifffusrError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class BatchReport:
    """``DIR/difffusr-batch.json``: what happened to each input, rewritten as the batch goes.

    Each rewrite is atomic (a temporary file, then ``os.replace``): a reader sees the previous or
    the new report, never half of one. A finish is written at most ``min_interval`` seconds after
    the previous rewrite (at the latest with the next start, or the batch's end), so that a rerun
    that skips thousands of inputs does not spend its time rewriting its report. ``path`` None
    keeps the report in memory only.
    """

    path: Path | None
    entries: list[dict] = field(default_factory=list)
    min_interval: float = 1.0
    started: float = field(default_factory=time.time)
    _saved: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, job: SceneJob) -> None:
        """Register an input (status ``pending``, or ``failed`` when its checks failed)."""
        self.entries.append(
            {
                "input": str(job.source),
                "output": str(job.target),
                "status": "failed" if job.error else "pending",
                "fingerprint": "",
                "seconds": 0.0,
                "patches": 0,
                "error": job.error or "",
            }
        )

    def running(self, index: int) -> None:
        """The input ``index`` has started."""
        with self._lock:
            self.entries[index]["status"] = "running"
        self.save(force=True)  # a start is always recorded (and with it the last finish)

    def finished(self, index: int, summary: RunSummary) -> None:
        """The input ``index`` ended as ``summary`` says (written, skipped or failed)."""
        status = {"written": "done", "skipped": "skipped", "failed": "failed"}[summary.status]
        with self._lock:
            self.entries[index].update(
                status=status,
                fingerprint=summary.fingerprint,
                seconds=round(summary.seconds, 3),
                patches=summary.patches_run,
                error=summary.error,
            )
        self.save()

    def counts(self) -> dict[str, int]:
        """Inputs per status."""
        counts = dict.fromkeys(("pending", "running", "done", "skipped", "failed"), 0)
        for entry in self.entries:
            counts[entry["status"]] += 1
        return counts

    def failed(self) -> list[str]:
        """The inputs that failed."""
        return [e["input"] for e in self.entries if e["status"] == "failed"]

    def save(self, force: bool = False) -> None:
        """Rewrite the report atomically (throttled unless ``force``).

        Raises:
            OutputError: the report cannot be written (names the file and the reason).
        """
        if self.path is None:
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._saved < self.min_interval:
                return
            self._saved = now
            record = {
                "difffusr_batch": 1,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "counts": self.counts(),
                "inputs": self.entries,
            }
            text = json.dumps(record, indent=1)
            write_atomically(
                self.path,
                lambda tmp: tmp.write_text(text, encoding="utf-8"),
                self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp"),
            )


def check_complete(
    scene: Scene,
    target: Path,
    options: SuperresOptions,
    models: Models,
    device: torch.device,
    dtype: torch.dtype,
) -> str:
    """A complete product is skipped only when it was made with these settings.

    Returns:
        :func:`fingerprint_sha256` of the matching settings.

    Raises:
        OutputError: unreadable, no recorded fingerprint, or other settings (naming them).
    """
    import rasterio
    from rasterio.errors import RasterioError

    region = resolve_region(scene, options.window, options.bbox)
    try:
        with rasterio.open(target) as ds:
            text = ds.tags().get(FINGERPRINT_TAG)
        stored = json.loads(text) if text else None
    except (RasterioError, OSError, ValueError) as exc:
        raise OutputError(f"{target} exists but is unreadable ({exc}); pass --overwrite") from None
    if not isinstance(stored, dict):
        raise OutputError(
            f"{target} exists and records no settings fingerprint (an older difffusr); "
            "pass --overwrite to replace it"
        )
    # auto batch sizes: the product's own (they depend on the free GPU memory of its run)
    shape = (int(region.height) * SCALE, int(region.width) * SCALE)
    options = resolve_compute(options, models, device, dtype, shape, stored)
    context = context_region(scene, region, options, models.fusion_halo)
    expected = fingerprint(
        scene,
        region,
        make_layout(context, options, models.fusion_halo, window=region),
        options,
        models,
        device,
        dtype,
    )
    detail = changed_settings(stored, json.loads(fingerprint_text(expected)))
    if detail:
        raise OutputError(
            f"{target} exists but was made with other settings ({detail}); "
            "pass --overwrite to replace it"
        )
    return fingerprint_sha256(expected)


def warn_about_radiometry(scene: Scene, source: Path, sink: ProgressSink) -> None:
    """Data processed on assumptions is processed, but never silently (one ``warning:`` line)."""
    if scene.processing_level == "L1C":
        # A Level-1C SAFE is refused by the reader; COGs and STAC items only say so in their
        # metadata. Their pixels are processed (they are reflectance too), but never silently.
        sink.on_message(
            f"warning: {source}: Level-1C (top-of-atmosphere) data; the models expect Level-2A "
            "surface reflectance, so expect a radiometric bias"
        )
    if getattr(scene.radiometry, "assumed", False):
        sink.on_message(
            f"warning: {source}: no radiometric metadata for some bands, the L2A convention is "
            "assumed (see `difffusr info`; --scale/--offset override it)"
        )
