"""Joint sampling of a patch row, the overlap-disagreement measure, and what a row leaves behind.

- :func:`noise_field`: the starting noise of joint sampling, one N(0, 1) field over the region
  seeded by position (a fixed grid of :data:`NOISE_TILE` pixel tiles), so overlapping patches
  and neighbouring patch rows share it and it depends on no batch, block or resume point.
- :func:`sample_row_jointly`: one patch row on one canvas
  (:meth:`~difffusr_cli.models.predictors.RGBSuperResolver.super_resolve_row`), its top rows
  fixed to the finished rows of the patch row above.
- :class:`RowTracker`: per patch row, the overlap disagreement (mean |a − b| in reflectance
  between overlapping patches' final predictions before blending, horizontal and vertical) and
  the :class:`RowCarry` the next row needs, kept in memory and saved beside the progress record
  when a block is committed (:func:`save_state`), so that a resumed run continues bit for bit.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from rasterio.windows import Window
from torch import Tensor

from difffusr_cli.bands import SCALE
from difffusr_cli.errors import OutputError, WeightsError
from difffusr_cli.superres.models import Models
from difffusr_cli.superres.options import SuperresOptions
from difffusr_cli.tiling import Layout, Span, round_up

#: Side (2.5 m pixels) of the tiles of the joint noise field; each tile has its own generator.
NOISE_TILE = 64
#: Blend weight of a patch's margins: they decide only pixels no patch covers (the row's ends).
MARGIN_WEIGHT = 1e-6


class RowResultLike(Protocol):
    """What a joint sampler returns (see :class:`~difffusr_cli.models.predictors.RowResult`)."""

    canvas: Tensor
    patches_x0: Tensor


@runtime_checkable
class RowSuperResolver(Protocol):
    """A super-resolver that can sample a row of patches jointly (``--sampling joint``)."""

    def super_resolve_row(
        self,
        lr: Tensor,
        lefts: Sequence[int],
        noise: Tensor,
        weights: Tensor,
        steps: int = 20,
        batch_size: int = 4,
        known: Tensor | None = None,
        known_mask: Tensor | None = None,
    ) -> RowResultLike:
        """See :meth:`difffusr_cli.models.predictors.RGBSuperResolver.super_resolve_row`."""
        ...


def samples_jointly(rgb: object) -> bool:
    """Whether ``rgb`` has a joint sampler (models without one are sampled patch by patch)."""
    return isinstance(rgb, RowSuperResolver)


def effective_sampling(options: SuperresOptions, models: Models) -> str:
    """The sampling a run does (what the tags and the resume fingerprint record).

    ``options.sampling``, but ``independent`` for a model without a joint sampler.
    """
    return "joint" if options.sampling == "joint" and samples_jointly(models.rgb) else "independent"


def joint_margin_of(options: SuperresOptions, models: Models) -> int:
    """The ``--joint-margin`` a run uses (0 when it does not sample jointly)."""
    if effective_sampling(options, models) != "joint":
        return 0
    return joint_margin(options.joint_margin, models.patch_multiple)


def state_stem_for(output: Path) -> Path:
    """Where a run saves the rows a resume needs: ``<dir>/.<name>.rows-<patch row>.npz``."""
    return output.parent / f".{output.name}.rows"


def _tile_seed(seed: int, row: int, col: int) -> int:
    """A 63-bit generator seed from (seed, noise-tile row, noise-tile column) only."""
    text = f"difffusr-noise-field:{seed}:{row}:{col}".encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def noise_field(seed: int, rows: Span, cols: Span) -> Tensor:
    """The joint sampler's starting noise on ``rows`` × ``cols`` of the region's 2.5 m grid.

    Pixel (y, x) takes its value from tile ``(y // NOISE_TILE, x // NOISE_TILE)``, whose
    ``(3, NOISE_TILE, NOISE_TILE)`` float32 N(0, 1) values are drawn on the CPU from a generator
    seeded by (seed, tile row, tile column): the same on every device, for any view of it.

    Returns:
        ``(3, rows.size, cols.size)`` float32.
    """
    out = torch.empty((3, rows.size, cols.size), dtype=torch.float32)
    t = NOISE_TILE
    for ty in range(rows.start // t, -(-rows.stop // t)):
        for tx in range(cols.start // t, -(-cols.stop // t)):
            generator = torch.Generator(device="cpu").manual_seed(_tile_seed(seed, ty, tx))
            tile = torch.randn((3, t, t), generator=generator, dtype=torch.float32)
            y0, y1 = max(rows.start, ty * t), min(rows.stop, (ty + 1) * t)
            x0, x1 = max(cols.start, tx * t), min(cols.stop, (tx + 1) * t)
            out[:, y0 - rows.start : y1 - rows.start, x0 - cols.start : x1 - cols.start] = tile[
                :, y0 - ty * t : y1 - ty * t, x0 - tx * t : x1 - tx * t
            ]
    return out


@dataclass
class RowCarry:
    """What patch row ``row`` leaves for the next one: its rows from the next row's top down.

    Attributes:
        row: the patch row it comes from.
        top: the first region row held (the next patch row's top edge).
        patches: patch column index → ``(3, n, patch)`` float32 reflectance, the bottom ``n`` rows
            of that patch's final prediction (for the vertical disagreement).
        canvas: ``(3, margin + n, W)`` float32 reflectance of the finished canvas from
            ``margin`` rows above ``top`` (joint sampling), or None.
        covered: ``(margin + n, W)`` bool, where the canvas was computed, or None.
    """

    row: int
    top: int
    patches: dict[int, np.ndarray]
    canvas: np.ndarray | None = None
    covered: np.ndarray | None = None


@dataclass(frozen=True)
class JointRow:
    """One patch row sampled jointly.

    Attributes:
        canvas: ``(3, patch, W)`` float32 reflectance, the row's finished pixels.
        context: ``(3, margin + patch, W)`` float32, the canvas from ``margin`` rows above the
            row down to its bottom (what the next row reads as known pixels).
        covered: ``(margin + patch, W)`` bool, the columns a patch was computed in.
        patches_x0: ``(V, 3, patch, patch)`` float32, each patch's last x0 prediction before
            blending.
    """

    canvas: np.ndarray
    context: np.ndarray
    covered: np.ndarray
    patches_x0: np.ndarray


def joint_margin(requested: int, patch_multiple: int) -> int:
    """The context pixels a jointly sampled patch sees beyond each edge (``--joint-margin``).

    ``requested`` rounded up so that a patch plus its margins stays a multiple of the
    network's ``patch_multiple``.
    """
    return round_up(requested, max(patch_multiple // 2, SCALE))


def sample_row_jointly(
    rgb: RowSuperResolver,
    lr: np.ndarray,
    lefts: Sequence[int],
    *,
    margin: int,
    seed: int,
    top: int,
    width: int,
    weights: np.ndarray,
    steps: int,
    batch_size: int,
    above: RowCarry | None,
    device: torch.device,
) -> JointRow:
    """Sample the patches of one row on one canvas ``width`` columns wide from region row ``top``.

    Each patch runs on its window widened by ``margin`` pixels on every side, and only its own
    ``patch × patch`` pixels enter the blend (the margins' weight is negligible wherever a patch
    covers them): a network's predictions are worst at its input's edges, so neighbouring
    patches, beside and below, then agree where they overlap. The canvas therefore spans rows
    ``[top − margin, top + patch + margin)`` and columns ``[−margin, width + margin)``.

    Args:
        rgb: the joint sampler.
        lr: ``(3, (patch + 2·margin) / 4, (width + 2·margin) / 4)`` LR reflectance of the
            canvas, margins included.
        lefts: the patches' left columns on the region grid.
        margin: context pixels on each side (multiple of 4).
        seed: the noise seed (the canvas noise is :func:`noise_field`).
        top: the row's top edge on the region grid.
        width: the row's width (the last patch's right edge).
        weights: ``(patch, patch)`` blend weights of a patch.
        steps: network calls per patch.
        batch_size: patches per network call.
        above: the carry of the patch row above: its finished rows (where covered) are known
            pixels, with their x0 fixed to them at every step, returned unchanged, so the two
            rows agree exactly in their overlap.
        device: where the model runs.

    Returns:
        The row's canvas and context (margin columns cropped) and the patches' last predictions.
    """
    p, m = weights.shape[0], margin
    size, full = p + 2 * m, width + 2 * m
    noise = noise_field(seed, Span(top - m, top + p + m), Span(-m, width + m))
    known = mask = None
    if above is not None and above.canvas is not None and above.covered is not None:
        n = above.canvas.shape[1]  # rows from top − margin down to the bottom of the row above
        known = torch.zeros((3, size, full), dtype=torch.float32)
        mask = torch.zeros((size, full), dtype=torch.bool)
        known[:, :n, m : m + width] = torch.from_numpy(above.canvas)
        mask[:n, m : m + width] = torch.from_numpy(above.covered)
    view = np.full((size, size), MARGIN_WEIGHT, dtype=np.float32)
    view[m : m + p, m : m + p] = weights
    lr_views = np.stack([lr[:, :, left // SCALE : (left + size) // SCALE] for left in lefts])
    result = rgb.super_resolve_row(
        torch.from_numpy(lr_views).to(device),
        list(lefts),
        noise.to(device),
        torch.from_numpy(view),
        steps=steps,
        batch_size=batch_size,
        known=None if known is None else known.to(device),
        known_mask=None if mask is None else mask.to(device),
    )
    covered = np.zeros((p + m, width), dtype=bool)
    for left in lefts:
        covered[:, left : left + p] = True
    context = result.canvas.float().cpu().numpy()[:, : m + p, m : m + width]
    return JointRow(
        canvas=np.ascontiguousarray(context[:, m:]),
        context=np.ascontiguousarray(context),
        covered=covered,
        patches_x0=result.patches_x0[:, :, m : m + p, m : m + p].float().cpu().numpy(),
    )


#: Per patch row: Σ|a − b| and counts, horizontal then vertical, float64.
_STAT_FIELDS = 4


class RowTracker:
    """The overlap disagreement of every patch row and the carries between rows.

    A carry is kept while the next row needs it, and while a resumed run may restart at the
    row after it (``restart_rows``: the patch rows a run restarted at a block start begins at),
    until the blocks that could restart there are committed (:meth:`committed`).

    Args:
        patch: the patch side.
        lefts, tops: the layout's patch columns and patch rows.
        height, width: the region (pixels outside it are not compared).
        restart_rows: patch rows a restart may begin at.
    """

    def __init__(
        self,
        patch: int,
        lefts: Sequence[int],
        tops: Sequence[int],
        height: int,
        width: int,
        restart_rows: Sequence[int] = (),
    ) -> None:
        self.patch, self.lefts, self.tops = patch, list(lefts), list(tops)
        self.height, self.width = height, width
        self.restart_rows = set(restart_rows)
        self.stats: dict[int, np.ndarray] = {}
        self.carries: dict[int, RowCarry] = {}
        self._committed_until = 0  # no later restart begins above this patch row
        self._latest = -1  # the last row finished

    @classmethod
    def for_layout(cls, layout: Layout, restart_rows: Sequence[int] = ()) -> RowTracker:
        """The tracker of ``layout``'s patch grid."""
        return cls(
            layout.patch,
            layout.patch_cols,
            layout.patch_rows,
            layout.height,
            layout.width,
            restart_rows,
        )

    def has_carry_for(self, index: int) -> bool:
        """Whether patch row ``index`` can be computed now (the row above's carry is here)."""
        return index == 0 or index - 1 in self.carries

    def carry_above(self, index: int) -> RowCarry | None:
        """The carry of patch row ``index − 1`` (None for the first row)."""
        return self.carries[index - 1] if index else None

    def finish_row(
        self,
        index: int,
        predictions: dict[int, np.ndarray],
        canvas: np.ndarray | None = None,
        covered: np.ndarray | None = None,
    ) -> None:
        """Record patch row ``index``: its disagreements and its carry for the next row.

        Args:
            index: the patch row.
            predictions: patch column index → ``(3, patch, patch)`` final prediction
                (reflectance, before blending), for the patches that ran.
            canvas: the row's finished canvas from ``margin`` rows above its top, ``(3,
                margin + patch, W)`` (joint sampling only; :attr:`JointRow.context`).
            covered: its ``(margin + patch, W)`` coverage (joint sampling only).
        """
        self.stats[index] = self._row_stats(index, predictions)
        if index + 1 < len(self.tops):
            start = self.tops[index + 1] - self.tops[index]
            self.carries[index] = RowCarry(
                row=index,
                top=self.tops[index + 1],
                patches={c: np.ascontiguousarray(v[:, start:]) for c, v in predictions.items()},
                canvas=None if canvas is None else np.ascontiguousarray(canvas[:, start:]),
                covered=None if covered is None else np.ascontiguousarray(covered[start:]),
            )
        self._latest = index
        self._prune()

    def _prune(self) -> None:
        """Keep the latest row's carry and those a later restart may need."""
        for row in list(self.carries):
            restart = row + 1
            wanted = restart in self.restart_rows and restart >= self._committed_until
            if row != self._latest and not wanted:
                del self.carries[row]

    def _row_stats(self, index: int, predictions: dict[int, np.ndarray]) -> np.ndarray:
        """Σ|a − b| and counts of row ``index``'s overlaps (pixels inside the region only).

        Horizontal: each patch with its right neighbour; vertical: with the patch above.
        """
        stats = np.zeros(_STAT_FIELDS, dtype=np.float64)
        p = self.patch
        rows = min(p, self.height - self.tops[index])
        for col in sorted(predictions):
            if col + 1 in predictions:
                left, right = self.lefts[col], self.lefts[col + 1]
                stop = min(left + p, self.width)
                if stop > right:
                    a = predictions[col][:, :rows, right - left : stop - left]
                    b = predictions[col + 1][:, :rows, : stop - right]
                    stats[0] += np.abs(a.astype(np.float64) - b).sum()
                    stats[1] += a.size
        above = self.carry_above(index)
        for col, strip in (above.patches if above else {}).items():
            if col in predictions:
                n, cols = strip.shape[1], min(p, self.width - self.lefts[col])
                a, b = strip[:, :, :cols], predictions[col][:, :n, :cols]
                stats[2] += np.abs(a.astype(np.float64) - b).sum()
                stats[3] += a.size
        return stats

    def committed(self, restart_row: int) -> None:
        """Say that no later restart begins above patch row ``restart_row``.

        Called when a block is committed (the blocks before it are written); carries of rows
        above ``restart_row − 1`` are then dropped.
        """
        self._committed_until = max(self._committed_until, restart_row)
        self._prune()

    def disagreement(self) -> dict[str, float | None]:
        """Mean |a − b| (reflectance) over every overlap so far, ``horizontal`` and ``vertical``.

        None where no two patches overlap that way.
        """
        total = np.zeros(_STAT_FIELDS, dtype=np.float64)
        for index in sorted(self.stats):
            total += self.stats[index]
        return {
            "horizontal": float(total[0] / total[1]) if total[1] else None,
            "vertical": float(total[2] / total[3]) if total[3] else None,
        }

    # -- persistence (resume) -----------------------------------------------------------------
    def save(self, folder_stem: Path, restart_row: int) -> Path | None:
        """Save what a run restarting at patch row ``restart_row`` needs, atomically.

        That is the carry of the row above it and the statistics so far, written to
        ``<folder_stem>-<restart_row>.npz``.

        Returns the file written (None when the restart needs nothing: the first row).

        Raises:
            OutputError: the file cannot be written.
        """
        if restart_row == 0 or restart_row - 1 not in self.carries:
            return None
        carry = self.carries[restart_row - 1]
        cols = sorted(carry.patches)
        rows = sorted(self.stats)
        arrays: dict[str, Any] = {
            "row": np.array(carry.row),
            "top": np.array(carry.top),
            "cols": np.array(cols, dtype=np.int64),
            "patches": np.stack([carry.patches[c] for c in cols])
            if cols
            else np.zeros((0, 3, 0, self.patch), np.float32),
            "canvas": carry.canvas if carry.canvas is not None else np.zeros((0,), np.float32),
            "covered": carry.covered if carry.covered is not None else np.zeros((0,), bool),
            "stat_rows": np.array(rows, dtype=np.int64),
            "stats": np.stack([self.stats[i] for i in rows])
            if rows
            else np.zeros((0, _STAT_FIELDS)),
        }
        path = state_path(folder_stem, restart_row)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            reason = "no space left on the device" if exc.errno == 28 else exc.strerror or exc
            raise OutputError(f"cannot write {path}: {reason}") from None
        return path

    def load(self, folder_stem: Path) -> None:
        """Take the carries and statistics saved by an interrupted run.

        Unreadable files are ignored: the rows they stood for are recomputed.
        """
        for path in sorted(state_files(folder_stem)):
            try:
                with np.load(path) as z:
                    row, top = int(z["row"]), int(z["top"])
                    cols = [int(c) for c in z["cols"]]
                    patches = {c: np.array(z["patches"][i]) for i, c in enumerate(cols)}
                    canvas = np.array(z["canvas"]) if z["canvas"].ndim == 3 else None
                    covered = np.array(z["covered"]) if z["covered"].ndim == 2 else None
                    stats = {
                        int(i): np.array(v) for i, v in zip(z["stat_rows"], z["stats"], strict=True)
                    }
            except (OSError, ValueError, KeyError, IndexError):
                continue
            if not 0 <= row < len(self.tops) - 1 or top != self.tops[row + 1]:
                continue
            self.carries[row] = RowCarry(row, top, patches, canvas, covered)
            self.restart_rows.add(row + 1)
            for index, value in stats.items():
                self.stats.setdefault(index, value)


def state_path(folder_stem: Path, restart_row: int) -> Path:
    """The saved state a restart at ``restart_row`` reads: ``<stem>-<row>.npz``."""
    return folder_stem.with_name(f"{folder_stem.name}-{restart_row}.npz")


def state_files(folder_stem: Path) -> list[Path]:
    """Every saved state of ``folder_stem`` (see :func:`state_path`)."""
    if not folder_stem.parent.is_dir():
        return []
    prefix = folder_stem.name + "-"
    return [
        p
        for p in folder_stem.parent.iterdir()
        if p.name.startswith(prefix) and p.name.endswith(".npz")
    ]


def remove_states(folder_stem: Path, keep: Path | None = None) -> None:
    """Delete the saved states of ``folder_stem`` except ``keep``."""
    for path in state_files(folder_stem):
        if path != keep:
            path.unlink(missing_ok=True)


def check_finite(
    model: str,
    region: Window,
    index: int,
    top: int,
    patches: Sequence[tuple[int, int]],
    values: Sequence[np.ndarray],
) -> None:
    """Stop at the first patch (``(column index, left)``) with non-finite values.

    Raises:
        WeightsError: naming the RGB ``model``, the patch and its 10 m pixel in the scene.
    """
    for (col, left), patch_values in zip(patches, values, strict=True):
        if not np.isfinite(patch_values).all():
            top_10m = int(region.row_off) + top // SCALE
            left_10m = int(region.col_off) + left // SCALE
            raise WeightsError(
                f"the RGB model {model} gave non-finite values for patch row {index}, column "
                f"{col} (10 m pixel {left_10m}, {top_10m}); its weights are probably broken"
            )
