"""Quicklook PNGs for ``eval fusion --plot DIR``.

A true-colour and a SWIR false-colour composite of each panel (input, Gram–Schmidt, net or product,
reference) of one block per product.

Every panel of a composite shares one stretch, taken from the reference panel (2nd–98th
percentile of each channel over valid pixels), so brightness differences between panels are real.
Invalid pixels are black. Files are written with rasterio's PNG driver (no imaging library).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from difffusr_cli.errors import OutputError
from difffusr_cli.png import write_png

#: Composites: name → (red, green, blue) bands. "swir" is the SWIR-2 / narrow-NIR / red composite
#: (B12, B8A, B04): vegetation green, bare soil and built-up areas brown-pink, water black.
COMPOSITES: dict[str, tuple[str, str, str]] = {
    "truecolour": ("B04", "B03", "B02"),
    "swir": ("B12", "B8A", "B04"),
}
#: The bands a quicklook panel holds, in this order.
QUICKLOOK_BANDS: tuple[str, ...] = tuple(
    dict.fromkeys(b for bands in COMPOSITES.values() for b in bands)
)
_PERCENTILES = (2.0, 98.0)


@dataclass(frozen=True)
class Quicklook:
    """The panels of one block.

    Attributes:
        label: the product's label (used in file names).
        grid: the panels' pixel size, for the record (``"10 m"`` Wald, ``"2.5 m"`` product mode).
        panels: panel name → ``(len(QUICKLOOK_BANDS), H, W)`` float32 reflectance, or None for a
            method that did not run (written as a grey panel). The last panel is the reference
            whose statistics set the stretch.
        valid: ``(H, W)`` bool, pixels with data.
    """

    label: str
    grid: str
    panels: Mapping[str, np.ndarray | None]
    valid: np.ndarray


def _stretch(reference: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (low, high) of ``reference`` ``(3, H, W)`` over valid pixels."""
    pixels = reference[:, valid] if valid.any() else reference.reshape(3, -1)
    low, high = np.percentile(pixels, _PERCENTILES, axis=1)
    high = np.where(high > low, high, low + 1e-6)
    return low.astype(np.float32), high.astype(np.float32)


def to_rgb8(
    composite: np.ndarray, valid: np.ndarray, low: np.ndarray, high: np.ndarray
) -> np.ndarray:
    """``(3, H, W)`` reflectance → ``(3, H, W)`` uint8 with a linear stretch; invalid pixels 0."""
    scaled = (composite - low[:, None, None]) / (high - low)[:, None, None]
    out = np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
    out[:, ~valid] = 0
    return out


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "product"


def write_quicklooks(quicklooks: Sequence[Quicklook], directory: str | Path) -> list[Path]:
    """Write ``<label>_<composite>_<panel>.png`` for every quicklook, composite and panel.

    Args:
        quicklooks: from :func:`~difffusr_cli.evaluate.fusion.evaluate_wald` or
            ``evaluate_product`` with ``quicklooks=True``.
        directory: created if missing; existing files of the same names are replaced.

    Returns:
        The PNG paths written.

    Raises:
        OutputError: the directory cannot be created or a file cannot be written.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create the plot folder {directory}: {exc.strerror or exc}"
        ) from None
    written: list[Path] = []
    for look in quicklooks:
        reference = list(look.panels.values())[-1]
        assert reference is not None, "the last panel is the reference"
        for composite, names in COMPOSITES.items():
            channels = [QUICKLOOK_BANDS.index(n) for n in names]
            low, high = _stretch(reference[channels], look.valid)
            for panel, data in look.panels.items():
                if data is None:
                    rgb = np.full((3, *look.valid.shape), 96, dtype=np.uint8)  # not available: grey
                else:
                    rgb = to_rgb8(data[channels], look.valid, low, high)
                path = directory / f"{_safe_name(look.label)}_{composite}_{panel}.png"
                write_png(path, rgb)
                written.append(path)
    return written
