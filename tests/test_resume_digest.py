"""The block digest that resume records and checks: sha256 of the stored pixels, chunk by chunk.

Progress records written by earlier versions hold these digests, so the definition must not
drift: sha256 over 4096-column chunks of ``(bands, rows, columns)`` stored values, C order.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import rasterio

from difffusr_cli.superres.resume import stored_digest


def _write(path: Path, data: np.ndarray) -> None:
    bands, height, width = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=bands,
        dtype=data.dtype,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="zstd",
    ) as ds:
        ds.write(data)


def test_digest_is_sha256_of_stored_pixels_in_column_chunks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 65535, size=(3, 40, 4096 + 300), dtype=np.uint16)
    path = tmp_path / "p.tif"
    _write(path, data)
    rows = (8, 30)
    expected = hashlib.sha256()
    for col in (0, 4096):  # a full chunk, then the narrower last one
        expected.update(
            np.ascontiguousarray(data[:, rows[0] : rows[1], col : col + 4096]).tobytes()
        )
    assert stored_digest(path, rows) == expected.hexdigest()
    # Rows past the end are clipped; another row range gives another digest.
    assert stored_digest(path, (8, 100)) != stored_digest(path, rows)
    data[1, 20, 4200] += 1
    _write(path, data)
    assert stored_digest(path, rows) != expected.hexdigest()
