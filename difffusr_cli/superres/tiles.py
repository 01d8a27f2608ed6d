"""Fusion tiles, one row at a time: band strips read, tiles fused in batches, halo cropped.

:class:`FusionTiles` is the fusion side of :class:`~difffusr_cli.superres.render.Renderer` (as
:class:`~difffusr_cli.superres.patches.PatchRows` is its diffusion side): for a row of fusion
tiles it reads each band group's strip on its native grid, takes each tile's RGB guidance from
the blended diffusion RGB, runs the fusion step on batches of tiles and yields each tile's core
(12 bands + validity) in column order. ``--fusion bilinear`` on the CPU upsamples only the cores,
straight into the tile buffer (:func:`~difffusr_cli.fusion_baselines.bilinear_core_into`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from rasterio.windows import Window
from torch import Tensor

from difffusr_cli.bands import GROUP_RATIO, GROUPS, RGB, SCALE, GroupName, indices
from difffusr_cli.device import autocast, host_threads, to_device
from difffusr_cli.errors import WeightsError
from difffusr_cli.fusion_baselines import bilinear_core_into, bilinear_fuse
from difffusr_cli.superres.models import Models
from difffusr_cli.tiling import Contribution, Layout, Span, blend_weights

__all__ = ["FusionTiles"]

#: ``(group, window of the 10 m grid)`` → the group on its native grid: ``(C, h/r, w/r)``
#: filled reflectance and ``(h/r, w/r)`` validity, reflected beyond the scene.
GroupReader = Callable[[GroupName, Window], tuple[np.ndarray, np.ndarray]]
#: ``(rows, cols)`` of the region's 2.5 m grid → ``(3, h, w)`` blended SR RGB, nodata filled.
GuidanceReader = Callable[[Span, Span], np.ndarray]


class FusionTiles:
    """The rows of fusion tiles of one region.

    Args:
        region: the processed window of the 10 m grid.
        layout: the region's tiling (tile shape, tile rows and columns, halo).
        models: the fusion step (``models.method``, ``models.fuse``).
        read_group: reads a band group's strip (:data:`GroupReader`).
        guidance: reads the RGB guidance (:data:`GuidanceReader`).
        batch_size: tiles per fusion call.
        device, dtype: where and in what precision the fusion nets run.
    """

    def __init__(
        self,
        region: Window,
        layout: Layout,
        models: Models,
        read_group: GroupReader,
        guidance: GuidanceReader,
        batch_size: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.region, self.layout, self.models = region, layout, models
        self.read_group, self.guidance = read_group, guidance
        self.batch_size, self.device, self.dtype = batch_size, device, dtype
        self._staging: Tensor | None = None  # pinned host buffer of the fusion inputs (CUDA)
        self._tile_out: np.ndarray | None = None  # a batch's fused tiles (reused)
        self._zero_tile: np.ndarray | None = None
        self._tile_weights = blend_weights(layout.tile_shape, layout.tile_overlaps)

    def row(self, index: int, top: int) -> Iterator[Contribution]:
        """Fuse one row of tiles: 12 bands + validity per tile, context ``halo`` cropped away.

        Tiles with valid pixels are fused :attr:`batch_size` at a time (one host→device copy
        and one device→host copy per batch); contributions come out in column order whatever the
        batch, so the blended sums are the same.
        """
        layout, halo = self.layout, self.layout.halo
        th, tw = layout.tile_shape
        rows_in = Span(top - halo, top + th + halo)
        strip = Span(-halo, layout.tile_cols[-1] + tw + halo)  # the columns the row's tiles read
        window = Window(
            self.region.col_off + strip.start // SCALE,
            self.region.row_off + rows_in.start // SCALE,
            strip.size // SCALE,
            rows_in.size // SCALE,
        )
        groups: dict[GroupName, np.ndarray] = {}
        valid = np.ones((rows_in.size, strip.size), dtype=bool)
        for group in GROUPS:
            groups[group], group_valid = self.read_group(group, window)
            factor = SCALE * GROUP_RATIO[group]
            _and_repeated(valid, group_valid, factor)
        core = slice(halo, halo + th)
        cols = layout.tile_cols
        tile_valid = [valid[core, left + halo : left + halo + tw] for left in cols]
        todo = [k for k, v in enumerate(tile_valid) if v.any()]
        emitted = 0  # tiles of the row yielded so far (in column order)
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            lefts = [cols[k] for k in batch]
            if self.models.method == "bilinear":
                # Bilinear reads no guidance: only the tiles' cores, which become B04–B02.
                core_rows = Span(top, top + th)
                rgbs = [self.guidance(core_rows, Span(left, left + tw)) for left in lefts]
            else:
                rgbs = [
                    self.guidance(rows_in, Span(left - halo, left + tw + halo)) for left in lefts
                ]
            # One buffer per tile of a batch, reused: the stage copies each contribution in
            # before the next batch is fused.
            if self._tile_out is None or len(self._tile_out) < len(batch):
                self._tile_out = np.empty((len(batch), 13, th, tw), dtype=np.float32)
            # (the built-in bilinear step only: a Models of a caller's own keeps its fuse)
            direct = self.models.fuse is bilinear_fuse and self.device.type == "cpu"
            if direct:  # computed in place, in the buffer
                self._bilinear_cores(groups, lefts, tw + 2 * halo)
                fused = self._tile_out[: len(batch), :12]
            else:
                fused = self._fuse(rgbs, groups, lefts, tw + 2 * halo, valid)
            outputs: dict[int, np.ndarray] = {}
            for slot, (k, left, rgb, values) in enumerate(
                zip(batch, lefts, rgbs, fused, strict=True)
            ):
                out = self._tile_out[slot]
                if direct:  # B04–B02 are the diffusion RGB (the core; the patches were checked)
                    out[indices(RGB)] = rgb
                else:
                    out[:12] = values
                # One reduction finds a non-finite value; only then look where it lies.
                if (
                    not np.isfinite(out[:12].sum())
                    and not np.isfinite(out[:12][:, tile_valid[k]]).all()
                ):
                    name = self.models.fusion_info.name if self.models.fusion_info else ""
                    raise WeightsError(
                        f"the fusion step ({self.models.method} {name}".rstrip()
                        + f") gave non-finite values for tile row {index} at output pixel "
                        f"({left}, {top}); its weights are probably broken"
                    )
                # gs / bilinear: B04, B03, B02 are the diffusion RGB itself.
                if self.models.method == "gs":
                    out[indices(RGB)] = rgb[:, core, halo : halo + tw]
                elif self.models.method == "bilinear" and not direct:
                    out[indices(RGB)] = rgb  # the core alone
                out[12] = tile_valid[k]
                outputs[k] = out
            last = batch[-1] if start + len(batch) < len(todo) else len(cols) - 1
            for k in range(emitted, last + 1):
                empty = k not in outputs
                yield (
                    cols[k],
                    outputs.pop(k) if not empty else self._empty_tile(),
                    self._tile_weights,
                )
            emitted = last + 1
        for k in range(emitted, len(cols)):  # a row without valid tiles
            yield cols[k], self._empty_tile(), self._tile_weights

    def _empty_tile(self) -> np.ndarray:
        """The contribution of a tile without valid pixels: zeros, validity 0.

        One shared array, never written: contributions are copied into the stage.
        """
        if self._zero_tile is None:
            self._zero_tile = np.zeros((13, *self.layout.tile_shape), dtype=np.float32)
        return self._zero_tile

    def _bilinear_cores(
        self, groups: Mapping[GroupName, np.ndarray], lefts: Sequence[int], width: int
    ) -> None:
        """``--fusion bilinear`` on the CPU: the tiles' cores, straight into the tile buffer.

        The same values as :meth:`_fuse` gives for bilinear, bit for bit, without upsampling the
        halo, the bands B04–B02 (the caller puts the diffusion RGB there) or copying the result.
        ``groups``, ``lefts`` and ``width`` as for :meth:`_fuse`; slot ``i`` of
        ``self._tile_out`` gets the tile at ``lefts[i]`` (its first 12 channels).
        """
        assert self._tile_out is not None
        halo = self.layout.halo
        th, tw = self.layout.tile_shape
        core = (slice(halo, halo + th), slice(halo, halo + tw))
        skip = indices(RGB)
        with host_threads(self.device):
            for slot, left in enumerate(lefts):
                tile: dict[str, Tensor] = {}
                for group, data in groups.items():
                    factor = SCALE * GROUP_RATIO[group]
                    crop = data[:, :, left // factor : (left + width) // factor]
                    tile[group] = torch.from_numpy(np.asarray(crop, dtype=np.float32))
                out = torch.from_numpy(self._tile_out[slot, :12])
                bilinear_core_into(tile, core, out, skip)

    def _fuse(
        self,
        rgbs: Sequence[np.ndarray],
        groups: Mapping[GroupName, np.ndarray],
        lefts: Sequence[int],
        width: int,
        valid: np.ndarray,
    ) -> np.ndarray:
        """Run the fusion step on a batch of tiles with context; return their cores.

        Args:
            rgbs: per tile the ``(3, th + 2·halo, width)`` guidance (``guidance``);
                with bilinear fusion, which reads none, the tiles' cores (not used here).
            groups: the tile row's band strips on their native grids.
            lefts: each tile's left column (strip column ``left`` is its context's first).
            width: ``tw + 2·halo``.
            valid: ``(th + 2·halo, strip width)`` validity of the row's strip.

        Returns:
            ``(B, 12, th, tw)`` float32 reflectance of the tiles' cores (the halo is cropped on
            the device, before the copy back).
        """
        halo = self.layout.halo
        th, tw = self.layout.tile_shape
        bilinear = self.models.method == "bilinear"
        # Bilinear needs the guidance's size only (its rgbs are the cores, not sent).
        arrays: dict[str, np.ndarray] = {} if bilinear else {"rgb": np.stack(rgbs)}
        for group, data in groups.items():
            factor = SCALE * GROUP_RATIO[group]
            arrays[group] = np.stack(
                [data[:, :, left // factor : (left + width) // factor] for left in lefts]
            )
        if not bilinear:
            arrays["valid"] = np.stack([valid[:, left : left + width] for left in lefts])
        inputs, self._staging = to_device(arrays, self.device, self._staging)
        if bilinear:
            shape = (len(lefts), 3, th + 2 * halo, width)
            rgb_t = torch.zeros((), device=self.device).expand(shape)
            every = torch.ones((), dtype=torch.bool, device=self.device)
            valid_t = every.expand(shape[:1] + shape[2:])
        else:
            valid_t = inputs.pop("valid") > 0.5
            rgb_t = inputs.pop("rgb")
        # Precision policy: only learned nets run under autocast; the Gram–Schmidt and bilinear
        # baselines are statistics and interpolation, computed in fp32 whatever --precision says.
        net = self.models.method == "net"
        dtype = self.dtype if net else torch.float32
        threads = contextlib.nullcontext() if net else host_threads(self.device)
        with autocast(self.device, dtype), threads:
            out = self.models.fuse(rgb_t, inputs, valid_t)
            cores = out[:, :, halo : halo + th, halo : halo + tw].float()
        return cores.cpu().numpy()


def _and_repeated(valid: np.ndarray, coarse: np.ndarray, factor: int) -> None:
    """``valid &= coarse`` repeated ``factor`` × ``factor`` (in place, no repeated copy).

    Args:
        valid: ``(h, w)`` bool, ``h`` and ``w`` multiples of ``factor``.
        coarse: ``(h / factor, w / factor)`` bool.
        factor: output pixels per coarse pixel along each axis.
    """
    h, w = coarse.shape
    blocks = valid.reshape(h, factor, w, factor)
    blocks &= coarse[:, None, :, None]
