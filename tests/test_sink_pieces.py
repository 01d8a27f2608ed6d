"""The writing thread encodes pieces while the next one is made, in the renderer's own buffers.

The renderer makes each piece in one of two buffers in turn (``scratch.ScratchRing``): piece
``k + 2`` overwrites piece ``k``. The sink must have encoded a piece before the piece after next
is made, however slow the disk; these tests make the writing thread slow and check the product.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from difffusr_cli.errors import OutputError
from difffusr_cli.io import ProductWriter
from difffusr_cli.scratch import ScratchRing
from difffusr_cli.superres.resume import ProgressFile
from difffusr_cli.superres.sink import BlockSink

HEIGHT, WIDTH, PIECE = 64, 96, 16  # two blocks of 32 rows, six pieces of 16 columns each


def _expected(rows: slice, cols: slice) -> np.ndarray:
    """Reflectance that differs in every band, row and column (so a mixed-up piece shows)."""
    band = np.arange(12, dtype=np.float32)[:, None, None] * 0.05
    y = np.arange(HEIGHT, dtype=np.float32)[rows, None] * 1e-3
    x = np.arange(WIDTH, dtype=np.float32)[None, cols] * 1e-4
    return (0.01 + band + y + x).astype(np.float32)


def _pieces(rows: tuple[int, int], ring: ScratchRing, made: list[int]):
    """Yield a block's pieces as the renderer does: each made in the ring's next buffer."""
    for start in range(0, WIDTH, PIECE):
        data = ring.array((12, rows[1] - rows[0], PIECE))
        data[:] = _expected(slice(*rows), slice(start, start + PIECE))
        made.append(start)
        yield Window(start, rows[0], PIECE, rows[1] - rows[0]), data, np.ones(data.shape[1:], bool)


def _run(tmp_path: Path, monkeypatch, delay: float) -> tuple[np.ndarray, list[int]]:
    out = tmp_path / "p.tif"
    writer = ProductWriter(
        out,
        crs="EPSG:32632",
        transform=rasterio.Affine(2.5, 0, 0, 0, -2.5, 0),
        width=WIDTH,
        height=HEIGHT,
        overwrite=True,
    )
    real_write = writer.write_stored

    def slow_write(window, stored):  # a slow disk: the next pieces are made meanwhile
        time.sleep(delay)
        real_write(window, stored)

    writer.write_stored = slow_write
    progress = ProgressFile(tmp_path / "p.progress.json", {"test": 1})
    block_rows = [(0, 32), (32, 64)]
    sink = BlockSink(
        writer,
        writer.partial_path,
        progress,
        block_rows,
        PIECE,
        [],
        tmp_path / "none.tif",
        lambda index: None,
    )
    ring, made = ScratchRing(2), []
    try:
        for index, rows in enumerate(block_rows):
            sink.write(index, _pieces(rows, ring, made))
        sink.finish()
    except BaseException:
        sink.abort()
        raise
    with rasterio.open(out) as ds:
        return ds.read(), made


def test_pieces_are_encoded_before_their_buffer_is_made_again(tmp_path, monkeypatch):
    stored, made = _run(tmp_path, monkeypatch, delay=0.05)
    expected = np.rint(_expected(slice(None), slice(None)) / np.float32(1e-4)).astype(np.uint16)
    assert len(made) == 2 * WIDTH // PIECE
    np.testing.assert_array_equal(stored, expected)


def test_the_writing_thread_does_the_encoding(tmp_path, monkeypatch):
    # The caller's thread hands reflectance over; the writing thread turns it into DN.
    threads: set[str] = set()
    real_encode = ProductWriter.encode

    def spy(self, data, valid, out=None):
        threads.add(threading.current_thread().name)
        return real_encode(self, data, valid, out=out)

    monkeypatch.setattr(ProductWriter, "encode", spy)
    _run(tmp_path, monkeypatch, delay=0.0)
    assert threads == {"difffusr-writer"}


@pytest.mark.parametrize("fails", ["encode", "write"])
def test_a_failure_in_the_writing_thread_ends_the_wait(tmp_path, monkeypatch, fails):
    # The caller waits for pieces to be encoded; an error in the writing thread (encoding the
    # second piece, or writing it) must end the wait with that error, not hang.
    calls = {"n": 0}
    real_encode, real_write = ProductWriter.encode, ProductWriter.write_stored

    def encode(self, data, valid, out=None):
        calls["n"] += 1
        if fails == "encode" and calls["n"] == 2:
            raise OutputError("cannot write p.tif: broken encoder")
        return real_encode(self, data, valid, out=out)

    def write(self, window, stored):
        if fails == "write" and calls["n"] == 2:
            raise OutputError("cannot write p.tif: broken disk")
        real_write(self, window, stored)

    monkeypatch.setattr(ProductWriter, "encode", encode)
    monkeypatch.setattr(ProductWriter, "write_stored", write)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            _run(tmp_path, monkeypatch, delay=0.0)
        except BaseException as exc:  # noqa: BLE001 - looked at below
            raised.append(exc)

    caller = threading.Thread(target=run, daemon=True)
    caller.start()
    caller.join(20)
    assert not caller.is_alive(), "the caller hung waiting for the writing thread"
    assert len(raised) == 1 and isinstance(raised[0], OutputError)
    assert "broken" in str(raised[0])
