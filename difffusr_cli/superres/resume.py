"""Resume bookkeeping: the progress record of an output and the fingerprint of its settings."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import torch
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from difffusr_cli import __version__
from difffusr_cli.bands import BAND_NAMES
from difffusr_cli.device import precision_name
from difffusr_cli.errors import OutputError
from difffusr_cli.superres.atomic import write_atomically
from difffusr_cli.superres.joint import effective_sampling, joint_margin_of
from difffusr_cli.superres.models import Models
from difffusr_cli.superres.options import SuperresOptions
from difffusr_cli.tiling import Layout

if TYPE_CHECKING:
    from difffusr_cli.io import ProductWriter, Scene


def progress_path_for(output: Path) -> Path:
    """Where a run records its finished blocks: ``<dir>/.<name>.progress.json``."""
    return output.parent / f".{output.name}.progress.json"


def fingerprint(
    scene: Scene,
    region: Window,
    layout: Layout,
    options: SuperresOptions,
    models: Models,
    device: torch.device,
    dtype: torch.dtype,
) -> dict:
    """Everything that affects the pixels of a product; ``--resume`` requires it unchanged."""
    radiometry = scene.radiometry
    return {
        "difffusr_version": __version__,
        "input": str(Path(scene.path).resolve()),
        # A built-in model (bicubic) has no weights to hash: its name stands for them.
        "rgb_model_sha256": models.rgb_info.sha256 or models.rgb_info.file,
        "fusion": options.fusion,
        "fusion_model_sha256": models.fusion_info.sha256 if models.fusion_info else None,
        "steps": options.steps,
        "seed": options.seed,
        "sampling": effective_sampling(options, models),
        "joint_margin": joint_margin_of(options, models),
        "patch_size": layout.patch,
        "overlap": layout.overlap,
        "fusion_tile": layout.tile,
        # only when the tiles are not square: runs and products made before the option match
        **(
            {"fusion_tile_rows": layout.tile_height}
            if layout.tile_height not in (0, layout.tile)
            else {}
        ),
        "fusion_overlap": layout.tile_overlap,
        "fusion_halo": layout.halo,
        "block_rows": layout.block_rows,
        "consistency": options.consistency,
        # The processed region (window + context) in output pixels: what the patches read.
        "context": [layout.height, layout.width, *layout.product],
        "batch_size": options.batch_size,
        "fusion_batch_size": options.fusion_batch_size,
        # other kernels, other rounding: never mixed within one product
        "compile": options.compile,
        "channels_last": options.channels_last,
        "window": [int(region.col_off), int(region.row_off), int(region.width), int(region.height)],
        "dtype": options.dtype,
        "precision": precision_name(dtype),
        "device": device.type,
        "scale": {n: radiometry.scale[n] for n in BAND_NAMES},
        "offset": {n: radiometry.offset[n] for n in BAND_NAMES},
        # The CPU thread count changes reductions in the networks (±1 DN on a few pixels).
        "torch_threads": torch.get_num_threads(),
    }


#: The product tag holding :func:`fingerprint_text` of the settings it was made with.
FINGERPRINT_TAG = "difffusr_fingerprint"


def fingerprint_text(value: dict) -> str:
    """The fingerprint as written to a product's ``difffusr_fingerprint`` tag (sorted JSON)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def changed_settings(stored: dict, expected: dict) -> str:
    """``"key old → new, ..."`` for the keys that differ (at most four), or ``""``."""
    changed = sorted(k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k))
    return ", ".join(
        f"{k} {_short(stored.get(k))} → {_short(expected.get(k))}" for k in changed[:4]
    )


#: Columns read at a time when digesting a block (bounds memory on wide scenes).
_DIGEST_COLUMNS = 4096


def block_digest(partial: Path, rows: tuple[int, int], *, writing: bool = False) -> str:
    """sha256 of the stored pixels of output rows ``[start, stop)`` of ``partial`` (all bands).

    Raises:
        OutputError: the partial file cannot be read: damaged (advises ``--overwrite``), or,
            with ``writing``, a block just written failed (names the file and a full disk).
    """
    try:
        return stored_digest(partial, rows)
    except (RasterioError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if writing:  # the block just written does not read back: a failed write (full disk?)
            from difffusr_cli.io.readback import _write_failure

            raise OutputError(_write_failure(partial, exc)) from None
        raise OutputError(
            f"cannot resume: {partial} is damaged ({first}); run with --overwrite to start again"
        ) from None


def stored_digest(path: Path, rows: tuple[int, int]) -> str:
    """sha256 of the stored pixels of rows ``[start, stop)`` of ``path`` (all bands).

    Raises ``RasterioError``/``OSError`` when the file does not read (:func:`block_digest` says
    what that means to a user).
    """
    digest = hashlib.sha256()
    with rasterio.open(path, NUM_THREADS="ALL_CPUS") as ds:
        start, stop = rows[0], min(rows[1], ds.height)
        # One buffer per chunk width, hashed in place: a fresh array and a ``bytes`` copy per
        # chunk were half the run's page faults (each 4 KiB of fresh memory is one).
        buffers: dict[int, np.ndarray] = {}
        for col in range(0, ds.width, _DIGEST_COLUMNS):
            width = min(_DIGEST_COLUMNS, ds.width - col)
            if width not in buffers:
                buffers[width] = np.empty((ds.count, stop - start, width), dtype=ds.dtypes[0])
            chunk = ds.read(window=Window(col, start, width, stop - start), out=buffers[width])
            digest.update(memoryview(chunk).cast("B"))
    return digest.hexdigest()


@dataclass
class ProgressFile:
    """The progress record of one output: its fingerprint and the blocks already written."""

    path: Path
    fingerprint: dict
    done: set[int] = field(default_factory=set)
    #: block index → :func:`block_digest` of the block as written.
    digests: dict[int, str] = field(default_factory=dict)

    def verify(self, partial: Path, block_rows: list[tuple[int, int]]) -> list[int]:
        """Keep only the recorded blocks whose stored pixels match their digest.

        ``block_rows`` gives each block's output rows ``(start, stop)``. Blocks without a
        digest, out of range, or whose pixels differ (never written, overwritten, damaged) are
        dropped from :attr:`done` so that they are computed again; returns the dropped indices.
        """
        dropped = []
        for index in sorted(self.done):
            ok = (
                0 <= index < len(block_rows)
                and index in self.digests
                and block_digest(partial, block_rows[index]) == self.digests[index]
            )
            if not ok:
                dropped.append(index)
                self.done.discard(index)
                self.digests.pop(index, None)
        return dropped

    def save(self) -> None:
        """Write atomically (a crash leaves the old or the new record, never half of one)."""
        record = {
            "difffusr_progress": 1,
            "fingerprint": self.fingerprint,
            "blocks_done": sorted(self.done),
            "block_digests": {
                str(i): self.digests[i] for i in sorted(self.done) if i in self.digests
            },
        }
        text = json.dumps(record, indent=1)
        write_atomically(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path: Path, expected: dict) -> ProgressFile:
        """Read a record and check it belongs to the same settings.

        Raises:
            OutputError: unreadable record, or different settings (naming what changed).
        """
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            stored, done = record["fingerprint"], {int(i) for i in record["blocks_done"]}
            digests = {int(k): str(v) for k, v in record.get("block_digests", {}).items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OutputError(
                f"cannot resume: {path} is unreadable ({exc}); run with --overwrite to start again"
            ) from None
        if not isinstance(stored, dict):
            raise OutputError(
                f"cannot resume: {path} is unreadable (no fingerprint); "
                "run with --overwrite to start again"
            )
        detail = changed_settings(stored, expected)
        if detail:
            raise OutputError(
                f"cannot resume: {path} was started with other settings ({detail}); "
                "rerun with the original options, or with --overwrite to start again"
            )
        return cls(path, expected, done, digests)


def check_no_interrupted_run(output: Path, options: SuperresOptions) -> None:
    """An interrupted run of ``output`` is continued or discarded only when asked to."""
    from difffusr_cli.io import partial_path_for

    partial = partial_path_for(output)
    if (partial.exists() or progress_path_for(output).exists()) and not (
        options.resume or options.overwrite
    ):
        raise OutputError(
            f"{partial} holds an interrupted run of {output}; pass --resume to continue it or "
            "--overwrite to start again"
        )


def _short(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 24 else text[:21] + "..."


def source_path_for(output: Path) -> Path:
    """Where a resumed run keeps the interrupted partial file while it copies blocks from it."""
    return output.parent / f".{output.name}.resume-source.tif"


def copy_block(
    source: DatasetReader, writer: ProductWriter, rows: tuple[int, int], columns: int
) -> None:
    """Write the stored values of output rows ``rows`` of ``source`` ``columns`` at a time."""
    start, stop = rows
    for col in range(0, source.width, columns):
        window = Window(col, start, min(columns, source.width - col), stop - start)
        writer.write_stored(window, source.read(window=window))


def rebuild_partial(
    partial: Path,
    progress: ProgressFile,
    block_rows: list[tuple[int, int]],
    columns: int,
    open_writer: Callable[[Path, bool], ProductWriter],
    output: Path,
    staging: Path,
    source: Path,
) -> tuple[ProductWriter | None, list[int]]:
    """Start a resumed run's partial file anew with the kept blocks, in running order.

    The partial file of an uninterrupted run is the product itself (no final copy), and its bytes
    follow from the order of its writes. The blocks a resumed run keeps are therefore written
    again (their stored values, not recompressed from reflectance) into a new file, block by
    block and ``columns`` at a time as a run writes them, so that the finished product is byte for
    byte the uninterrupted one. The blocks ``0 … k`` kept from the top are written here into a
    file that replaces ``partial`` once complete (a crash meanwhile loses nothing) and stays
    open in its first session, as an uninterrupted run's file does; kept blocks
    after a gap (a block computed again) are returned, to be copied from ``source`` (the
    interrupted file, moved there) when the run reaches them (:func:`copy_block`).

    Args:
        partial: the interrupted run's partial file.
        progress: its verified record; a block that does not read back as recorded once written
            again is dropped (computed again).
        block_rows: each block's output rows ``(start, stop)``.
        columns: the width of the pieces a run writes.
        open_writer: ``(output path, resume) → ProductWriter`` with the run's settings.
        output: the product; its partial file is replaced by the new file.
        staging: the output path the new file is written for (its partial file is used).
        source: where the interrupted file goes when blocks after a gap are still to be copied.

    Returns:
        The new file's writer, still open for the rest of the run (None when nothing was kept
        from the top), and the kept blocks after the first gap, in order.
    """
    from difffusr_cli.io import partial_path_for

    target = partial_path_for(staging)
    target.unlink(missing_ok=True)
    source.unlink(missing_ok=True)
    prefix: list[int] = []
    while len(prefix) in progress.done:
        prefix.append(len(prefix))
    copied: list[int] = []
    writer = open_writer(staging, False)
    try:
        with rasterio.open(partial) as old:
            for index in prefix:
                copy_block(old, writer, block_rows[index], columns)
                writer.checkpoint()
                if block_digest(target, block_rows[index], writing=True) != progress.digests[index]:
                    progress.done.discard(index)  # computed again; the blocks below it are
                    progress.digests.pop(index, None)  # copied from `source` in their turn
                    break
                copied.append(index)
    except BaseException:
        writer.abort()
        target.unlink(missing_ok=True)
        raise
    later = sorted(set(progress.done) - set(copied))
    if later:
        os.replace(partial, source)
    if copied:
        writer.retarget(output)  # the rebuilt file, still open, becomes the partial file
        return writer, later
    writer.abort()  # nothing copied: the run starts a new file
    target.unlink(missing_ok=True)
    partial.unlink(missing_ok=True)
    return None, later
