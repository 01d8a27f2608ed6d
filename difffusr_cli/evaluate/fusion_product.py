"""``difffusr eval fusion --product FILE --source SCENE``: the paper's no-reference check.

The 2.5 m product is area-averaged onto each band's native grid (4 × 4, 8 × 8 and 24 × 24 product
pixels) and compared with its source scene; ERGAS ratios are 4, 8 and 24 (the product's pixel
over the native one). For comparison, Gram–Schmidt and bilinear fusions of the source, guided by
the product's own B04, B03, B02, are scored the same way. A native pixel is scored where the
source is valid and every product pixel over it holds data. The area is processed in blocks as in
Wald mode (see :mod:`difffusr_cli.evaluate.fusion`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from rasterio.io import DatasetReader
from rasterio.windows import Window
from torch import Tensor

from difffusr_cli.bands import BAND_NAMES, GROUP_RATIO, GROUPS, RGB, SCALE, WINDOW_ALIGN, indices
from difffusr_cli.errors import InputError
from difffusr_cli.evaluate.fusion import (
    BILINEAR,
    DEFAULT_BLOCK,
    GRAM_SCHMIDT,
    PRODUCT,
    FusionEvalOptions,
    FusionFn,
    FusionReport,
    ProductResult,
    ProgressFn,
    ScoreAccumulators,
    baselines,
    default_halo,
    method_results,
    region_label,
)
from difffusr_cli.evaluate.fusion_blocks import (
    Block,
    all_in_cell,
    area_mean,
    centre_block,
    crop_core,
    plan_blocks,
    repeat_cells,
    to_device,
)
from difffusr_cli.evaluate.quicklook import QUICKLOOK_BANDS, Quicklook
from difffusr_cli.metrics import DATA_RANGE
from difffusr_cli.tiling import fill_invalid, round_up

if TYPE_CHECKING:
    from difffusr_cli.io.scene import Scene


class ProductFile:
    """A 12-band 2.5 m product read by windows of its source scene's 10 m grid.

    Checks that the product nests the source grid: same CRS, pixel size a quarter of the source's,
    origin on a source pixel corner. Reflectance = value · scale + offset with each band's
    scale/offset metadata (float32 products: the values themselves); a uint16 product without
    scale metadata is read with the source scene's convention. Nodata: the file's nodata value,
    DN 0 for integers, NaN for floats.

    Args:
        path: the product GeoTIFF.
        source: the opened source :class:`~difffusr_cli.io.scene.Scene`.

    Raises:
        InputError: unreadable file, bands missing, or a grid that does not nest the source's.
    """

    def __init__(self, path: str | Path, source: Scene) -> None:
        from difffusr_cli.io.geotiff import described_bands, open_raster

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(
                f"{self.path} does not exist (expected the 2.5 m GeoTIFF of `difffusr superres`)"
            )
        self.dataset: DatasetReader = open_raster(str(self.path))
        try:
            layout = described_bands(self.dataset)
            lacking = [n for n in BAND_NAMES if n not in layout]
            if lacking:
                raise InputError(
                    f"{self.path}: no band described as {', '.join(lacking)} (expected the 12 "
                    "bands B01 … B12 of a difffusr product)"
                )
            self.bidx = [layout[n] for n in BAND_NAMES]
            self.footprint = self._footprint(source)
            self.scale, self.offset, self.radiometry = self._radiometry(source)
        except BaseException:
            self.dataset.close()
            raise

    def _footprint(self, source: Scene) -> Window:
        """The product's extent as a window of the source's 10 m grid (whole 10 m pixels)."""
        t, st = self.dataset.transform, source.transform
        where = f"{self.path} does not nest the 10 m grid of {source.path}"
        if self.dataset.crs != source.crs:
            raise InputError(f"{where}: CRS {self.dataset.crs} differs from {source.crs}")
        if (
            t.b != 0
            or t.d != 0
            or not (
                math.isclose(t.a * SCALE, st.a, rel_tol=1e-6)
                and math.isclose(t.e * SCALE, st.e, rel_tol=1e-6)
            )
        ):
            raise InputError(
                f"{where}: pixel size {t.a:g} × {-t.e:g} is not a quarter of {st.a:g} × {-st.e:g}"
            )
        col, row = (t.c - st.c) / st.a, (t.f - st.f) / st.e
        if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
            raise InputError(
                f"{where}: its origin is not on a 10 m pixel corner ({col:.3f}, {row:.3f})"
            )
        return Window(
            round(col), round(row), self.dataset.width // SCALE, self.dataset.height // SCALE
        )

    def _radiometry(self, source: Scene) -> tuple[np.ndarray, np.ndarray, str]:
        from difffusr_cli.io.geotiff import file_scale_offset

        declared = [file_scale_offset(self.dataset, b) for b in self.bidx]
        floating = np.issubdtype(np.dtype(self.dataset.dtypes[0]), np.floating)
        pairs = [d for d in declared if d is not None]
        if len(pairs) == len(declared):
            scale = np.array([d[0] for d in pairs], dtype=np.float32)
            offset = np.array([d[1] for d in pairs], dtype=np.float32)
            return scale, offset, "the product's band scale/offset metadata"
        if floating:
            return np.ones(12, np.float32), np.zeros(12, np.float32), "float reflectance"
        radiometry = source.radiometry
        scale = np.array([radiometry.scale[n] for n in BAND_NAMES], dtype=np.float32)
        offset = np.array([radiometry.offset[n] for n in BAND_NAMES], dtype=np.float32)
        return scale, offset, "no scale/offset metadata: the source scene's convention"

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """The product under a window of the source's 10 m grid.

        Returns ``(data (12, 4h, 4w) float32 reflectance (0 where invalid), valid (4h, 4w) bool)``,
        valid where every band holds data; outside the product nothing is valid.
        """
        from difffusr_cli.io.geotiff import read_boundless

        region = Window(
            (int(window.col_off) - int(self.footprint.col_off)) * SCALE,
            (int(window.row_off) - int(self.footprint.row_off)) * SCALE,
            int(window.width) * SCALE,
            int(window.height) * SCALE,
        )
        h, w = int(region.height), int(region.width)
        data = np.empty((12, h, w), dtype=np.float32)
        valid = np.ones((h, w), dtype=bool)
        nodata = self.dataset.nodata
        for i, bidx in enumerate(self.bidx):
            raw, inside = read_boundless(self.dataset, str(self.path), bidx, region)
            valid &= inside
            if np.issubdtype(raw.dtype, np.floating):
                valid &= np.isfinite(raw)
            else:
                valid &= raw != 0
            if nodata is not None and not math.isnan(nodata):
                valid &= raw != nodata
            data[i] = raw.astype(np.float32) * self.scale[i] + self.offset[i]
        data[:, ~valid] = 0.0
        return data, valid

    def close(self) -> None:
        """Close the GeoTIFF."""
        self.dataset.close()

    def __enter__(self) -> ProductFile:  # noqa: PYI034 - as Scene
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _product_block(
    scene: Scene,
    product: ProductFile,
    block: Block,
    fusers: Mapping[str, FusionFn],
    acc: ScoreAccumulators,
    device: torch.device,
    keep: dict[str, np.ndarray] | None,
) -> None:
    """Score the product and the baselines on one block (see the module docstring)."""
    window = block.expanded
    data, valid = product.read(window)
    product_hr, product_valid = torch.from_numpy(data), torch.from_numpy(valid)
    native: dict[str, tuple[Tensor, Tensor]] = {}
    inputs: dict[str, Tensor] = {}
    inputs_valid = product_valid.clone()
    for group, ratio in GROUP_RATIO.items():
        g_data, g_valid = scene.read_native(group, window)
        native[group] = (torch.from_numpy(g_data), torch.from_numpy(g_valid))
        inputs[group] = to_device(fill_invalid(g_data, g_valid)[None], device)
        inputs_valid &= repeat_cells(native[group][1], ratio * SCALE)
    outputs = {PRODUCT: product_hr}
    guidance = torch.from_numpy(fill_invalid(data[indices(RGB)], valid))[None]
    for method, fuse in fusers.items():
        with torch.no_grad():
            outputs[method] = (
                fuse(to_device(guidance, device), inputs, to_device(inputs_valid[None], device))[0]
                .float()
                .cpu()
            )
    for group, ratio in GROUP_RATIO.items():
        ref, ref_valid = native[group]
        data_valid = ref_valid & all_in_cell(product_valid, ratio * SCALE)
        scored = data_valid & block.core_mask(ratio)
        for method, out in outputs.items():
            pred = area_mean(out[indices(GROUPS[group])], ratio * SCALE)
            acc.update(method, group, pred, ref, scored, data_valid)
    if keep is not None:
        for method, out in outputs.items():
            keep[method] = crop_core(out[indices(QUICKLOOK_BANDS)], block, SCALE).numpy()
        source = torch.empty(
            (len(QUICKLOOK_BANDS), int(window.height) * SCALE, int(window.width) * SCALE)
        )
        for i, name in enumerate(QUICKLOOK_BANDS):
            group = next(g for g, members in GROUPS.items() if name in members)
            source[i] = repeat_cells(
                native[group][0][GROUPS[group].index(name)], GROUP_RATIO[group] * SCALE
            )
        keep["source"] = crop_core(source, block, SCALE).numpy()
        keep["valid"] = crop_core(product_valid[None], block, SCALE)[0].numpy()


def _product_region(scene: Scene, product: ProductFile, options: FusionEvalOptions) -> Window:
    """The evaluated window, shrunk to whole 60 m pixels of the scene's grid.

    It is the product's footprint ∩ the scene ∩ ``--window``/``--bbox``.
    """
    from difffusr_cli.superres import resolve_region

    asked = resolve_region(scene, options.window, options.bbox)
    fp = product.footprint
    col0 = max(int(asked.col_off), int(fp.col_off))
    row0 = max(int(asked.row_off), int(fp.row_off))
    col1 = min(int(asked.col_off + asked.width), int(fp.col_off + fp.width))
    row1 = min(int(asked.row_off + asked.height), int(fp.row_off + fp.height))
    col0, row0 = round_up(col0, WINDOW_ALIGN), round_up(row0, WINDOW_ALIGN)
    col1, row1 = col1 // WINDOW_ALIGN * WINDOW_ALIGN, row1 // WINDOW_ALIGN * WINDOW_ALIGN
    if col1 <= col0 or row1 <= row0:
        raise InputError(
            f"{product.path} and {region_label(options, scene)} share no whole 60 m pixel of "
            f"{scene.path}"
        )
    return Window(col0, row0, col1 - col0, row1 - row0)


def evaluate_product(
    product_path: str | Path,
    source_path: str | Path,
    options: FusionEvalOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    quicklooks: bool = False,
) -> FusionReport:
    """The no-reference check of a 2.5 m product against its source.

    The product is area-averaged to each band's native grid and scored against its source, next to
    Gram–Schmidt and bilinear fusions of the source guided by the product's RGB.

    Args:
        product_path: the 12-band GeoTIFF of ``difffusr superres``.
        source_path: the scene it was made from.
        options: ``window``/``bbox``, ``block``, ``halo``, ``device``, ``scale``/``offset`` and
            ``gs_pan`` apply; the nets are not run (the product holds their result).
        progress: called with ``(product label, blocks done, blocks total)``.
        quicklooks: keep the central block's panels for :mod:`.quicklook`.

    Raises:
        InputError: unreadable files, missing bands, a product that does not nest the source's
            grid or does not overlap the window, bad options.
    """
    from difffusr_cli.device import select_device
    from difffusr_cli.io.scene import open_scene

    options = options if options is not None else FusionEvalOptions()
    options.validate("product")
    device = select_device(options.device)
    fusers = baselines(options.gs_pan)
    block_size = options.block or DEFAULT_BLOCK["product"]
    halo = options.halo if options.halo is not None else default_halo("product", 0)
    with open_scene(source_path, scale=options.scale, offset=options.offset) as scene:
        scene.require_bands()
        with ProductFile(product_path, scene) as product:
            region = _product_region(scene, product, options)
            blocks = plan_blocks(region, block_size, halo)
            centre = centre_block(blocks, region)
            acc = ScoreAccumulators([PRODUCT, *fusers], {g: SCALE * GROUP_RATIO[g] for g in GROUPS})
            label = product.path.stem
            keep: dict[str, np.ndarray] | None = None
            for i, block in enumerate(blocks):
                keep_this: dict[str, np.ndarray] | None = {} if quicklooks and i == centre else None
                _product_block(scene, product, block, fusers, acc, device, keep_this)
                if keep_this is not None:
                    keep = keep_this
                if progress is not None:
                    progress(label, i + 1, len(blocks))
            details = {
                PRODUCT: str(product.path),
                GRAM_SCHMIDT: "guided by the product's B04, B03, B02",
                BILINEAR: None,
            }
            result = ProductResult(
                label=label,
                path=str(product.path),
                region=region,
                pixels=acc.pixels(),
                methods=method_results(acc, (PRODUCT, GRAM_SCHMIDT, BILINEAR), {}, details),
            )
            settings = {
                "protocol": "product",
                "source": str(scene.path),
                "product_radiometry": product.radiometry,
                "reference": "the source's bands on their native grids; the product area-averaged "
                "onto them",
                "ergas_ratio": {g: SCALE * GROUP_RATIO[g] for g in GROUPS},
                "data_range": DATA_RANGE,
                "block": block_size,
                "halo": halo,
                "gs_pan": options.gs_pan,
                "device": str(device),
            }
    kept: tuple[Quicklook, ...] = ()
    if keep is not None:
        panels = {
            "input": keep[BILINEAR],
            "gram-schmidt": keep[GRAM_SCHMIDT],
            "product": keep[PRODUCT],
            "source": keep["source"],
        }
        kept = (Quicklook(label=label, grid="2.5 m", panels=panels, valid=keep["valid"]),)
    return FusionReport(
        mode="product", products=(result,), mean=None, settings=settings, quicklooks=kept
    )
