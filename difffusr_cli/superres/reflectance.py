"""Reflectance consistency of the fused product, block by block (``--consistency box``).

Wraps :func:`difffusr_cli.consistency.project` for the renderer: for output rows × columns of
the region it reads the fused pixels with :attr:`ConsistencyStage.context` pixels of context
(aligned to whole 60 m pixels, clipped to the region), reads each band group's input on its
native grid (:meth:`Scene.read_native`) and corrects every band so that its box average over
each native pixel is the input. The context covers the projection's reach
(:data:`~difffusr_cli.consistency.REACH` native pixels of the coarsest group), so a pixel's
result does not depend on which block or column chunk it is computed in.

Native pixels that are nodata, or only partly inside the region (a scene whose size is not a
whole number of 20 or 60 m pixels), get zero residual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from rasterio.windows import Window

from difffusr_cli.bands import GROUP_RATIO, GROUPS, SCALE, GroupName, indices
from difffusr_cli.consistency import REACH, project, project_into
from difffusr_cli.device import host_threads
from difffusr_cli.scratch import Scratch, ScratchRing
from difffusr_cli.tiling import Span

if TYPE_CHECKING:
    from difffusr_cli.io import Scene
    from difffusr_cli.tiling import RowStage

#: Output pixels of the coarsest native pixel (60 m): spans are aligned to it.
COARSEST = SCALE * max(GROUP_RATIO.values())


class ConsistencyStage:
    """Makes fused pixels reflectance-consistent with the input.

    Args:
        scene: the opened scene (its native bands are the target).
        region: the processed window of the 10 m grid (its offsets on whole 60 m pixels).
        height, width: the region's size in output pixels.
        device: where the correction runs (the CPU unless the networks run on a GPU).
    """

    #: Output pixels of context read on every side of what is corrected.
    context = REACH * COARSEST

    def __init__(
        self, scene: Scene, region: Window, height: int, width: int, device: torch.device
    ) -> None:
        self.scene, self.region = scene, region
        self.height, self.width = height, width
        self.device = device if device.type == "cuda" else torch.device("cpu")
        # Reused between blocks: arrays over 32 MiB are fresh pages from the kernel each time
        # (glibc maps them), and a fresh page costs a fault and its clearing.
        # What read() returns: two buffers in turn, so that the writing thread can encode one
        # piece while the next is corrected.
        self._out = ScratchRing(2)
        self._bands = Scratch(self.device)  # a group's bands over its span
        self._storage = Scratch(self.device)  # their corrected pixels

    def span(self, rows: Span, length: int | None = None) -> Span:
        """The pixels (rows, or columns with ``length`` = the width) that ``rows`` depend on."""
        length = self.height if length is None else length
        start = rows.start // COARSEST * COARSEST - self.context
        stop = -(-rows.stop // COARSEST) * COARSEST + self.context
        return Span(max(start, 0), min(stop, length))

    def read(self, fused: RowStage, rows: Span, cols: Span) -> tuple[np.ndarray, np.ndarray]:
        """Consistent pixels of ``rows`` × ``cols`` (region output pixels).

        Args:
            fused: the fused stage (12 bands + validity); it must hold :meth:`span` of ``rows``.
            rows: the region's output rows to return.
            cols: the region's output columns to return.

        Returns:
            ``(12, h, w)`` float32 reflectance and the ``(h, w)`` bool validity. The reflectance
            array is reused by the call after next: encode or copy it before then.
        """
        span_rows, span_cols = self.span(rows), self.span(cols, self.width)
        data, covered = fused.read(span_rows, span_cols, reuse=True)
        inner = np.s_[
            rows.start - span_rows.start : rows.stop - span_rows.start,
            cols.start - span_cols.start : cols.stop - span_cols.start,
        ]
        valid = (covered & (data[12] > 0.5))[inner]
        out = self._out.array((12, rows.size, cols.size))
        bands_out = torch.from_numpy(out)
        with torch.autocast(self.device.type, enabled=False), host_threads(self.device):
            x = torch.from_numpy(data[:12]).to(self.device)
            for group, names in GROUPS.items():
                idx = indices(names)
                # Each group needs only REACH of its own native pixels around the rows: a 10 m
                # band reads 20 pixels of context, not the 120 the 60 m bands need.
                factor = SCALE * GROUP_RATIO[group]
                g_rows = _native_span(rows, factor, self.height, span_rows)
                g_cols = _native_span(cols, factor, self.width, span_cols)
                part = x[
                    :,
                    g_rows.start - span_rows.start : g_rows.stop - span_rows.start,
                    g_cols.start - span_cols.start : g_cols.stop - span_cols.start,
                ]
                # A contiguous copy of the group's bands: the box average of a strided view
                # runs at a third of the speed.
                bands = self._bands.take((len(idx), part.shape[1], part.shape[2]))
                torch.index_select(part, 0, torch.tensor(idx, device=x.device), out=bands)
                self._group(bands, group, g_rows, g_cols, rows, cols, [bands_out[i] for i in idx])
        return out, valid

    def _group(
        self,
        x: torch.Tensor,
        group: GroupName,
        span_rows: Span,
        span_cols: Span,
        rows: Span,
        cols: Span,
        out: list[torch.Tensor],
    ) -> None:
        """One group's bands over the span, corrected into ``out`` (per band ``(rows, cols)``)."""
        ratio = GROUP_RATIO[group]
        factor = SCALE * ratio
        nh, nw = -(-span_rows.size // factor), -(-span_cols.size // factor)
        # Pad a partial native pixel at the region's edge to a whole one (it is left alone).
        if nh * factor > span_rows.size:
            x = x.index_select(1, _clamped(nh * factor, span_rows.size, x.device))
        if nw * factor > span_cols.size:
            x = x.index_select(2, _clamped(nw * factor, span_cols.size, x.device))
        window = Window(
            int(self.region.col_off) + span_cols.start // SCALE,
            int(self.region.row_off) + span_rows.start // SCALE,
            nw * ratio,
            nh * ratio,
        )
        b, valid = self.scene.read_native(group, window)
        valid = valid.copy()
        if nh * factor > span_rows.size:
            valid[-1] = False
        if nw * factor > span_cols.size:
            valid[:, -1] = False
        top, left = rows.start - span_rows.start, cols.start - span_cols.start
        keep = (
            slice(top // factor, -(-(rows.stop - span_rows.start) // factor)),
            slice(left // factor, -(-(cols.stop - span_cols.start) // factor)),
        )
        b_t, valid_t = torch.from_numpy(b).to(x.device), torch.from_numpy(valid).to(x.device)
        r0, c0 = top - keep[0].start * factor, left - keep[1].start * factor
        kept = ((keep[0].stop - keep[0].start) * factor, (keep[1].stop - keep[1].start) * factor)
        if x.device.type == "cpu" and (r0, c0) == (0, 0) and kept == (rows.size, cols.size):
            # Rows and columns on whole native pixels: straight into the product's bands.
            project_into(out, x, b_t, valid_t, factor, keep)
            return
        size = x.shape[0] * kept[0] * kept[1]
        y = project(x, b_t, valid_t, factor, keep, storage=self._storage.take((size,)))
        for k, band in enumerate(out):  # band by band: plain copies, no fancy indexing
            band.copy_(y[k, r0 : r0 + rows.size, c0 : c0 + cols.size])


def _native_span(pixels: Span, factor: int, length: int, within: Span) -> Span:
    """The output pixels that ``pixels`` depend on, for ``factor`` output pixels per native one.

    Whole native pixels plus :data:`REACH` of them on each side, clipped to ``[0, length)`` and
    to ``within`` (the span read, aligned to the coarsest group, which holds it).
    """
    start = pixels.start // factor * factor - REACH * factor
    stop = -(-pixels.stop // factor) * factor + REACH * factor
    return Span(max(start, 0, within.start), min(stop, length, within.stop))


def _clamped(size: int, length: int, device: torch.device) -> torch.Tensor:
    """Indices ``0 … size − 1`` clamped to ``length − 1`` (replicates the last pixel)."""
    return torch.arange(size, device=device).clamp(max=length - 1)
