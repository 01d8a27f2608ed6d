"""The notebook entry point: a small area's 12-band 2.5 m result as an ``xarray.DataArray``.

>>> import difffusr_cli
>>> da = difffusr_cli.super_resolve("S2B_MSIL2A_….SAFE", window=(0, 0, 120, 120))
>>> da.sel(band="B08").plot()        # reflectance, NaN where nodata
>>> da.rio.crs, da.rio.transform()   # the product's CRS and 2.5 m grid (rioxarray)

Needs the ``xarray`` extra (``pip install "difffusr[xarray]"``: xarray and rioxarray), imported
only when :func:`super_resolve` is called. The pixels are those of ``difffusr superres`` with the
same options and ``--dtype float32``: the product is rendered by the same
:func:`~difffusr_cli.superres.superres_many` into a temporary file and read back.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from difffusr_cli.bands import BAND_NAMES

if TYPE_CHECKING:
    from difffusr_cli.superres import Models, ProgressSink

_EXTRA_HINT = 'pip install "difffusr[xarray]"'


def _import_xarray() -> Any:
    try:
        import rioxarray  # noqa: F401  (registers the .rio accessor)
        import xarray
    except ImportError as exc:
        raise ImportError(
            f"difffusr_cli.super_resolve needs xarray and rioxarray ({exc.name} is missing): "
            f"{_EXTRA_HINT}"
        ) from None
    return xarray


def super_resolve(
    path: str | os.PathLike[str],
    *,
    window: tuple[int, int, int, int] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    models: Models | None = None,
    progress: ProgressSink | None = None,
    **options: Any,
) -> Any:
    """Super-resolve (part of) one scene into memory.

    Args:
        path: a scene in any format ``difffusr superres`` reads.
        window: ``(col, row, width, height)`` on the scene's 10 m grid (widened to whole 60 m
            pixels, as ``--window``); None with ``bbox`` None: the whole scene (mind the size).
        bbox: ``(xmin, ymin, xmax, ymax)`` in the scene's CRS, as ``--bbox``.
        models: preloaded :class:`~difffusr_cli.superres.Models` (reuse them over calls);
            None loads those the options name.
        progress: a :class:`~difffusr_cli.superres.ProgressSink` (default: logging only).
        **options: any other :class:`~difffusr_cli.superres.SuperresOptions` field
            (``rgb_model``, ``fusion``, ``steps``, ``seed``, ``device``, ...); ``dtype`` is
            float32.

    Returns:
        ``xarray.DataArray`` of shape ``(12, H, W)``, dims ``("band", "y", "x")``, float32
        reflectance with NaN nodata; ``band`` coordinates are the band names (B01 … B12),
        ``x``/``y`` the 2.5 m pixel centres in the scene's CRS, ``.rio.crs`` and
        ``.rio.transform()`` the product grid; ``attrs`` hold the product's provenance tags
        (source, window, models and their sha256, options, radiometry).

    Raises:
        ImportError: xarray or rioxarray is not installed (names the extra).
        InputError, OutputError, WeightsError: as ``difffusr superres``.
    """
    xarray = _import_xarray()
    import numpy as np
    import rasterio

    from difffusr_cli.superres import SuperresOptions, superres_many

    if options.get("dtype", "float32") != "float32":
        raise ValueError("super_resolve returns float32 reflectance; do not pass dtype")
    settings = SuperresOptions(
        **{**options, "window": window, "bbox": bbox, "dtype": "float32", "quiet": True}
    )
    with tempfile.TemporaryDirectory(prefix="difffusr-xarray-") as tmp:
        product = Path(tmp) / "product.tif"
        superres_many([Path(path)], product, settings, models=models, progress=progress)
        with rasterio.open(product) as ds:
            data = ds.read().astype(np.float32, copy=False)
            transform, crs, tags = ds.transform, ds.crs, ds.tags()
    height, width = data.shape[1:]
    xs = transform.c + transform.a * (np.arange(width) + 0.5)
    ys = transform.f + transform.e * (np.arange(height) + 0.5)
    attrs = {"units": "reflectance", "long_name": "surface reflectance (2.5 m)"}
    attrs.update({key: _attr(value) for key, value in tags.items() if key != "AREA_OR_POINT"})
    array = xarray.DataArray(
        data,
        dims=("band", "y", "x"),
        coords={"band": list(BAND_NAMES), "y": ys, "x": xs},
        attrs=attrs,
        name="reflectance",
    )
    array = array.rio.write_crs(crs).rio.write_transform(transform)
    return array.rio.write_nodata(np.nan, encoded=False)


def _attr(text: str) -> Any:
    """A tag as an attribute: a number as a number, anything else (JSON too) as its text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float) and not isinstance(value, bool) else text
