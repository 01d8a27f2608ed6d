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
import ctypes
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from difffusr_cli.errors import OutputError
from difffusr_cli.superres.resume import ProgressFile, block_digest, copy_block, stored_digest

#: A job for the writing thread: ``("piece", window, reflectance, validity)``, or the end of a
#: block:
#: ``("end", index, "")`` (computed) / ``("copy", index, recorded digest)`` (kept, copied).
_Job = tuple

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

    from difffusr_cli.io import ProductWriter


def _libc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _libc_trim()


def release_free_heap() -> None:
    """Give the heap's free pages back to the system (glibc ``malloc_trim``; elsewhere nothing).

    Every piece allocates and frees tens of MB of temporaries of changing sizes in several
    threads (GDAL's compression, this one, the caller's); glibc keeps freed chunks in per-thread
    heaps, and a run's peak RSS crept up by 0.8 GB over a strip. Trimming after each written
    piece, in the writing thread, costs milliseconds and keeps the peak where the buffers put it.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


#: Jobs waiting for the writing thread.
QUEUE_PIECES = 2


class BlockSink:
    """The writing side of one run; encoding, GDAL's writes and compression in their own thread.

    The caller's thread hands each piece's reflectance over; the writing thread encodes it
    (reflectance → stored values), writes it, and at the end of a block flushes, reads back and
    digests it. A piece's arrays are the renderer's buffers, which it reuses for the piece after
    next (:class:`~difffusr_cli.scratch.ScratchRing`): the caller waits, if it must, until the
    piece before is encoded before it lets the renderer go on. So encoding (a tenth of the run
    with free networks) runs on the other core while the next piece is made.

    The block is recorded, and ``on_block_done`` called, in the caller's thread when it next
    hands over work (or in :meth:`finish`): a block is recorded only after it is on disk, and an
    exception from ``on_block_done`` stops the run with the record saying exactly which blocks
    are done. An error in the writing thread is raised in the caller's thread at its next call.

    Args:
        writer: the open writer of the partial file (new, or rebuilt by ``rebuild_partial``).
        partial: the partial file.
        progress: the run's record (kept blocks already in it).
        block_rows: each block's output rows ``(start, stop)``.
        columns: width of the pieces kept blocks are copied in.
        later: kept blocks still to copy from ``source``, in order.
        source: the interrupted partial file they are copied from.
        on_block_done: called with each computed block's index once it is recorded.
        on_handover: called in the caller's thread when a computed block has been handed over,
            before the next one is computed (what a restart after it needs is saved then); its
            result is given to ``on_recorded``.
        on_recorded: called with the block and that result once the block is recorded, before
            ``on_block_done``.
    """

    def __init__(
        self,
        writer: ProductWriter,
        partial: Path,
        progress: ProgressFile,
        block_rows: list[tuple[int, int]],
        columns: int,
        later: list[int],
        source: Path,
        on_block_done: Callable[[int], None],
        on_handover: Callable[[int], object] = lambda i: None,
        on_recorded: Callable[[int, object], None] = lambda i, token: None,
    ) -> None:
        self.on_handover, self.on_recorded = on_handover, on_recorded
        self._tokens: dict[int, object] = {}
        self.writer, self.partial, self.progress = writer, partial, progress
        self.block_rows, self.columns = block_rows, columns
        self.later, self.source_path = list(later), source
        self.on_block_done = on_block_done
        self.written = 0
        self._source: DatasetReader | None = None
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=QUEUE_PIECES)
        self._finished: queue.Queue[tuple[int, str, bool]] = queue.Queue()
        # Pieces handed over / encoded by the writing thread (whose reflectance it no longer
        # needs), and the writing thread's buffer of stored values (reused: fresh memory costs
        # a page fault per page).
        self._handed = self._encoded = 0
        self._encoded_changed = threading.Condition()
        self._stored: np.ndarray | None = None
        self._error: BaseException | None = None
        self._pending = 0  # blocks queued and not yet recorded
        self._stop = threading.Event()
        # Set when the writing thread has returned. Waited on instead of Thread.join(), whose
        # state a KeyboardInterrupt during a join can leave saying "finished" while the thread
        # is still inside GDAL (closing the file under it then crashed GDAL).
        self._exited = threading.Event()
        self._thread = threading.Thread(target=self._work, name="difffusr-writer", daemon=True)
        self._thread.start()

    # -- the caller's thread ---------------------------------------------------------------
    def write(self, index: int, pieces: Iterable[tuple[Window, np.ndarray, np.ndarray]]) -> None:
        """Queue computed block ``index`` (its pieces: window, reflectance, validity)."""
        self._copy_before(index)
        for window, data, valid in pieces:
            self._put(("piece", window, data, valid))
            self._handed += 1
            # The renderer makes the piece after next in this piece's buffers: the one handed
            # over before it must be encoded by then (the writing thread does it while the next
            # piece is made, on the other core).
            self._wait_encoded(outstanding=1)
            self._record_finished()
        self._tokens[index] = self.on_handover(index)
        self._put(("end", index, ""))
        self._pending += 1
        # One block in flight: this block is written while the next one is computed, and the
        # block before it is recorded (on_block_done called) before that computation starts.
        self._record_finished(wait_until=1)

    def _wait_encoded(self, outstanding: int) -> None:
        """Wait until at most ``outstanding`` handed-over pieces are not yet encoded."""
        with self._encoded_changed:
            while self._handed - self._encoded > outstanding:
                self._raise_if_failed()
                if self._exited.is_set():  # (its error was raised before: never wait forever)
                    raise RuntimeError("the writing thread has stopped")
                self._encoded_changed.wait(0.2)

    def _copy_before(self, limit: int) -> None:
        """Queue the copies of the kept blocks below ``limit`` from the interrupted file."""
        while self.later and self.later[0] < limit:
            index = self.later.pop(0)
            self._put(("copy", index, self.progress.digests[index]))
            self._pending += 1

    def _put(self, job: _Job | None) -> None:
        while True:
            self._raise_if_failed()
            try:
                self._jobs.put(job, timeout=0.2)
                return
            except queue.Full:
                continue

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _record_finished(self, wait_until: int | None = None) -> None:
        """Record the blocks the writing thread has finished; call ``on_block_done``.

        With ``wait_until``, first wait until at most that many blocks are still in flight.
        """
        while True:
            wait = wait_until is not None and self._pending > wait_until
            try:
                index, digest, computed = (
                    self._finished.get(timeout=0.2) if wait else (self._finished.get_nowait())
                )
            except queue.Empty:
                if not wait:
                    return
                self._raise_if_failed()
                continue
            self._pending -= 1
            self.progress.digests[index] = digest
            self.progress.done.add(index)
            self.progress.save()
            if computed:
                self.on_recorded(index, self._tokens.pop(index, None))
                self.written += 1
                self.on_block_done(index)

    def finish(self, tags: Callable[[], Mapping[str, object]] = dict) -> None:
        """Copy what is left, wait for the writes, check no block is missing, verify, commit.

        ``tags`` gives tags to add once every block is recorded (before the commit).

        Raises:
            OutputError: a block was never written, or the file does not read back.
        """
        self._copy_before(len(self.block_rows))
        self._put(None)
        self._wait_for_thread()
        self._raise_if_failed()
        self._record_finished()
        self._drop_source()
        missing = [i for i in range(len(self.block_rows)) if i not in self.progress.done]
        if missing:  # never finish a product with a hole
            self.writer.abort()
            raise OutputError(
                f"{self.partial}: blocks {missing[:5]} were never written; run with --overwrite"
            )
        self.writer.update_tags(tags())
        self.writer.commit(compact=False, verify=self._verify)

    def _verify(self, path: Path) -> None:
        # Before the partial file is renamed into place. Every block was read back and digested
        # after its own flush (_do); since then only the tags were written and the file closed,
        # which rewrites its directory at the end of the file. So the file must still open as
        # the product, and its last block, the one written last, must read back as recorded.
        # (Reading every block again cost a tenth of a run.)
        last = len(self.block_rows) - 1
        with rasterio.open(path) as ds:
            shape = (ds.count, ds.height, ds.width)
            if shape != (self.writer.count, self.writer.height, self.writer.width):
                raise OSError("the file's size changed after its blocks were written")
        if stored_digest(path, self.block_rows[last]) != self.progress.digests.get(last):
            raise OSError(f"block {last} does not read back as it was written")

    def abort(self) -> None:
        """Stop the writing thread, close the partial file (kept for ``--resume``).

        Blocks written but not yet recorded stay unrecorded (computed again on resume).
        """
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._jobs.get_nowait()
        with contextlib.suppress(queue.Full):
            self._jobs.put_nowait(None)
        self._wait_for_thread()  # at most the piece being written (a second Ctrl-C: no wait)
        try:
            self.writer.abort()
        finally:
            self._drop_source()

    def _wait_for_thread(self) -> None:
        """Wait until the writing thread has returned (see :attr:`_exited`)."""
        # In short waits: a Ctrl-C is handled between them (a plain wait() may defer it).
        while not self._exited.wait(0.1):
            pass

    # -- the writing thread ----------------------------------------------------------------
    def _work(self) -> None:
        try:
            while True:
                job = self._jobs.get()
                if job is None or self._stop.is_set():
                    return
                try:
                    self._do(job)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    self._error = exc
                    self._stop.set()
                    return
        finally:
            self._exited.set()

    def _do(self, job: _Job) -> None:
        kind, *args = job
        if kind == "piece":
            window, data, valid = args
            self._stored = stored = self.writer.encode(data, valid, out=self._stored)
            with self._encoded_changed:
                self._encoded += 1
                self._encoded_changed.notify()
            self.writer.write_stored(window, stored)
            release_free_heap()
            return
        index, recorded = args
        if kind == "copy":
            if self._source is None:
                try:
                    self._source = rasterio.open(self.source_path)
                except (RasterioError, OSError) as exc:
                    raise OutputError(f"cannot resume: {self.source_path}: {exc}") from None
            copy_block(self._source, self.writer, self.block_rows[index], self.columns)
        # The block is flushed to disk and read back before it is recorded as done.
        self.writer.checkpoint()
        digest = block_digest(self.partial, self.block_rows[index], writing=True)
        if kind == "copy" and digest != recorded:
            raise OutputError(f"cannot write {self.partial}: a kept block does not read back")
        self._finished.put((index, digest, kind == "end"))

    def _drop_source(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
        with contextlib.suppress(OSError):
            self.source_path.unlink(missing_ok=True)
