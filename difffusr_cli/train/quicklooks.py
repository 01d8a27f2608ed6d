"""Training quicklooks: shared percentile stretch, panel mosaics and PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from difffusr_cli.errors import OutputError


def to_uint8(
    images: Sequence[np.ndarray], low_pct: float = 1.0, high_pct: float = 99.0
) -> list[np.ndarray]:
    """Stretch ``(3, H, W)`` float images to uint8 with one shared percentile stretch."""
    stacked = np.concatenate(
        [np.asarray(im, dtype=np.float32).reshape(3, -1) for im in images], axis=1
    )
    finite = stacked[np.isfinite(stacked)]
    low, high = np.percentile(finite, [low_pct, high_pct]) if finite.size else (0.0, 1.0)
    scale = 255.0 / max(float(high - low), 1e-6)
    return [np.clip((np.nan_to_num(im) - low) * scale, 0, 255).astype(np.uint8) for im in images]


def mosaic(rows: Sequence[Sequence[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Lay ``(3, h, w)`` uint8 panels out in rows (nearest-neighbour resized to the largest)."""
    height = max(p.shape[1] for row in rows for p in row)
    width = max(p.shape[2] for row in rows for p in row)
    columns = max(len(row) for row in rows)
    canvas = np.full(
        (3, len(rows) * (height + gap) - gap, columns * (width + gap) - gap), 255, np.uint8
    )
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            ry = np.arange(height) * panel.shape[1] // height
            rx = np.arange(width) * panel.shape[2] // width
            y0, x0 = r * (height + gap), c * (width + gap)
            canvas[:, y0 : y0 + height, x0 : x0 + width] = panel[:, ry][:, :, rx]
    return canvas


def write_png(path: Path, image: np.ndarray) -> Path:
    """Write a ``(3, H, W)`` uint8 image as PNG, creating its folder; returns ``path``.

    The writing itself is :func:`difffusr_cli.png.write_png`'s.
    """
    from difffusr_cli.png import write_png as write_rgb_png

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path.parent}: cannot create the quicklook folder ({exc})") from None
    write_rgb_png(path, image)
    return path
