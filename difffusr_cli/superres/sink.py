"""Writing a product block by block: flushed, read back and recorded before the next one.

:class:`BlockSink` owns the open :class:`~difffusr_cli.io.ProductWriter` of one run and its
:class:`~difffusr_cli.superres.resume.ProgressFile`: each block is written, the partial file
closed (flushed), the block read back and its digest recorded, then the file reopened. Blocks a
resumed run keeps after a gap are copied in their turn from the interrupted file
(:func:`~difffusr_cli.superres.resume.rebuild_partial`), so the file is written in the same
order as by an uninterrupted run and :meth:`BlockSink.finish` only verifies and renames it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from difffusr_cli.errors import OutputError
from difffusr_cli.superres.resume import ProgressFile, block_digest, copy_block

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

    from difffusr_cli.io import ProductWriter


class BlockSink:
    """The writing side of one run.

    Args:
        open_writer: ``resume → ProductWriter`` with the run's settings (the partial file).
        partial: the partial file.
        progress: the run's record (kept blocks already in it).
        block_rows: each block's output rows ``(start, stop)``.
        columns: width of the pieces kept blocks are copied in.
        later: kept blocks still to copy from ``source``, in order.
        source: the interrupted partial file they are copied from.
        on_block_done: called with each computed block's index once it is recorded.
    """

    def __init__(
        self,
        open_writer: Callable[[bool], ProductWriter],
        partial: Path,
        progress: ProgressFile,
        block_rows: list[tuple[int, int]],
        columns: int,
        later: list[int],
        source: Path,
        on_block_done: Callable[[int], None],
    ) -> None:
        self.open_writer, self.partial, self.progress = open_writer, partial, progress
        self.block_rows, self.columns = block_rows, columns
        self.later, self.source_path = list(later), source
        self.on_block_done = on_block_done
        self.written = 0
        self._source: DatasetReader | None = None
        self.writer: ProductWriter = open_writer(partial.exists())

    def write(self, index: int, pieces: Iterable[tuple[Window, np.ndarray, np.ndarray]]) -> None:
        """Write computed block ``index`` (its pieces: window, reflectance, validity)."""
        self._copy_before(index)
        for window, data, valid in pieces:
            self.writer.write(window, data, valid)
        self._close_block(index)
        self.written += 1
        self.on_block_done(index)

    def _copy_before(self, limit: int) -> None:
        """Copy the kept blocks below ``limit`` from the interrupted file."""
        while self.later and self.later[0] < limit:
            index = self.later.pop(0)
            if self._source is None:
                try:
                    self._source = rasterio.open(self.source_path)
                except (RasterioError, OSError) as exc:
                    raise OutputError(f"cannot resume: {self.source_path}: {exc}") from None
            recorded = self.progress.digests[index]
            copy_block(self._source, self.writer, self.block_rows[index], self.columns)
            if self._close_block(index) != recorded:
                raise OutputError(f"cannot write {self.partial}: a kept block does not read back")

    def _close_block(self, index: int) -> str:
        """Flush block ``index`` (close the file), read it back, record it, reopen; its digest."""
        # Closing flushes the block to disk before it is recorded as done; reopen to go on.
        self.writer.abort()
        digest = block_digest(self.partial, self.block_rows[index], writing=True)
        self.progress.digests[index] = digest
        self.writer = self.open_writer(True)
        self.progress.done.add(index)
        self.progress.save()
        return digest

    def finish(self) -> None:
        """Copy what is left, check no block is missing, verify every block and commit.

        Raises:
            OutputError: a block was never written, or the file does not read back.
        """
        self._copy_before(len(self.block_rows))
        self._drop_source()
        missing = [i for i in range(len(self.block_rows)) if i not in self.progress.done]
        if missing:  # never finish a product with a hole
            self.writer.abort()
            raise OutputError(
                f"{self.partial}: blocks {missing[:5]} were never written; run with --overwrite"
            )
        self.writer.commit(compact=False, verify=self._verify)

    def _verify(self, path: Path) -> None:
        # Before the partial file is renamed into place: every block reads back as recorded.
        dropped = self.progress.verify(path, self.block_rows)
        if dropped:
            raise OSError(f"blocks {dropped[:5]} do not read back as they were written")

    def abort(self) -> None:
        """Close the partial file (kept for ``--resume``) and drop the interrupted file."""
        try:
            self.writer.abort()
        finally:
            self._drop_source()

    def _drop_source(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
        with contextlib.suppress(OSError):
            self.source_path.unlink(missing_ok=True)
