"""Streaming full-reference scores, accumulated block by block.

The metrics of :mod:`difffusr_cli.metrics`, accumulated so that an area larger than memory (a whole
tile) is scored as one image.

:func:`~difffusr_cli.metrics.band_scores` needs the whole image in one tensor. Here each
band keeps the sums its metrics are made of (pixel count, Σx, Σy, Σx², Σy², Σxy, Σ(x − y)² and the
sum of the SSIM map), in float64, over the pixels a block *scores*; a block may carry context
pixels around its scored core (the SSIM window reaches 5 pixels) that are read but not counted.
Finishing gives exactly the definitions of ``metrics.py`` (same data range, ERGAS ratio, SSIM
window, NaN/inf conventions) evaluated on the union of the scored pixels; with one block and no
context it reproduces ``band_scores`` on that block. Aggregation over several bands
(:func:`aggregate_band_scores`) and over several images (:func:`mean_over_images`) follows
``metrics.py`` too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import TypeVar

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from difffusr_cli.metrics import DATA_RANGE, Scores, ScoreTable

#: A group name: ``str`` or a narrower type of names (:data:`~difffusr_cli.bands.GroupName`).
GroupKey = TypeVar("GroupKey", bound=str)

#: Smallest image side the SSIM window accepts (torchmetrics pads it by reflection, 5 pixels).
SSIM_MIN_SIDE = 6
#: Pixels the SSIM window (11 × 11) reaches on each side: the context a block needs around the
#: pixels it scores so that block edges do not change the SSIM map.
SSIM_REACH = 5


class RunningBandScores:
    """Per-band sums of one reconstruction against its reference, over any number of blocks.

    Args:
        bands: the band names, one per channel of the blocks given to :meth:`update`.
        ratio: low over high pixel size of these bands, for ERGAS (see ``metrics.py``).
        data_range: peak value for PSNR and SSIM (1.0: reflectance).
    """

    def __init__(
        self, bands: Sequence[str], *, ratio: float, data_range: float = DATA_RANGE
    ) -> None:
        if not bands:
            raise ValueError("RunningBandScores needs at least one band")
        self.bands = tuple(bands)
        self.ratio = float(ratio)
        self.data_range = float(data_range)
        channels = len(self.bands)
        zeros = torch.zeros(channels, dtype=torch.float64)
        self.count = 0
        self._sx, self._sy, self._sxx, self._syy, self._sxy, self._see, self._ssim = (
            zeros.clone() for _ in range(7)
        )
        # Sums are taken about a per-band shift (the first block's reference mean) so that the
        # variances Σy² − (Σy)²/n do not lose precision to cancellation over a whole tile.
        self._shift: Tensor | None = None
        self._ssim_defined = True

    def update(
        self, pred: Tensor, ref: Tensor, scored: Tensor, data_valid: Tensor | None = None
    ) -> None:
        """Add one block.

        Args:
            pred: ``(C, H, W)`` reconstruction, float reflectance.
            ref: ``(C, H, W)`` reference, float reflectance.
            scored: ``(H, W)`` bool, the pixels this block counts (valid, and inside its core).
            data_valid: ``(H, W)`` bool, the pixels holding data in both images (``scored`` must
                lie inside it); elsewhere the reconstruction is replaced by the reference before
                the SSIM filter, so nodata contributes no error. ``None``: ``scored``.
        """
        if pred.ndim != 3 or pred.shape != ref.shape or pred.shape[0] != len(self.bands):
            raise ValueError(
                f"pred and ref must both be ({len(self.bands)}, H, W), got {tuple(pred.shape)} "
                f"and {tuple(ref.shape)}"
            )
        if scored.shape != pred.shape[1:]:
            raise ValueError(f"scored must be {tuple(pred.shape[1:])}, got {tuple(scored.shape)}")
        data_valid = scored if data_valid is None else data_valid
        if data_valid.shape != scored.shape:
            raise ValueError(
                f"data_valid must be {tuple(scored.shape)}, got {tuple(data_valid.shape)}"
            )
        scored = scored.to(torch.bool).cpu()
        n = int(scored.sum())
        if n == 0:
            return
        pred = pred.detach().cpu().to(torch.float64)
        ref = ref.detach().cpu().to(torch.float64)
        x = pred[:, scored]  # (C, n)
        y = ref[:, scored]
        if self._shift is None:
            self._shift = y.mean(dim=1)
        xs = x - self._shift[:, None]
        ys = y - self._shift[:, None]
        self.count += n
        self._sx += xs.sum(dim=1)
        self._sy += ys.sum(dim=1)
        self._sxx += xs.square().sum(dim=1)
        self._syy += ys.square().sum(dim=1)
        self._sxy += (xs * ys).sum(dim=1)
        self._see += (x - y).square().sum(dim=1)
        self._add_ssim(pred, ref, scored, data_valid.to(torch.bool).cpu())

    def _add_ssim(self, pred: Tensor, ref: Tensor, scored: Tensor, data_valid: Tensor) -> None:
        if min(pred.shape[-2:]) < SSIM_MIN_SIDE:
            self._ssim_defined = False  # as metrics.py: undefined on images under 6 × 6
            return
        pred = torch.where(data_valid, pred, ref)
        # float32 filtering, as metrics.py (float64 depthwise convolutions are slow on CPU)
        _, ssim_map = structural_similarity_index_measure(
            pred[None].float(),
            ref[None].float(),
            data_range=self.data_range,
            reduction="none",
            return_full_image=True,
        )
        self._ssim += ssim_map[0].double()[:, scored].sum(dim=1)

    def scores(self) -> dict[str, Scores]:
        """Band name → :class:`Scores` over every scored pixel so far (all NaN when none)."""
        return {name: self._band(c) for c, name in enumerate(self.bands)}

    def _band(self, c: int) -> Scores:
        n = self.count
        if n == 0:
            return Scores(*(math.nan,) * len(fields(Scores)))
        shift = float(self._shift[c]) if self._shift is not None else 0.0
        sx, sy = float(self._sx[c]), float(self._sy[c])
        sxx, syy, sxy, see = (float(t[c]) for t in (self._sxx, self._syy, self._sxy, self._see))
        mse = see / n
        psnr = 10.0 * math.log10(self.data_range**2 / mse) if mse > 0 else math.inf
        ref_ss = max(syy - sy * sy / n, 0.0)
        pred_ss = max(sxx - sx * sx / n, 0.0)
        cross = sxy - sx * sy / n
        # r2 of a constant reference band: 1 when reproduced exactly, else undefined
        r2 = 1.0 - see / ref_ss if ref_ss > 0 else (1.0 if see == 0 else math.nan)
        cc = cross / math.sqrt(pred_ss * ref_ss) if pred_ss > 0 and ref_ss > 0 else math.nan
        ref_mean = sy / n + shift
        if ref_mean != 0:
            ergas = 100.0 / self.ratio * math.sqrt(mse) / abs(ref_mean)
        else:
            ergas = math.inf if mse > 0 else math.nan
        ssim = float(self._ssim[c]) / n if self._ssim_defined else math.nan
        return Scores(r2=r2, cc=cc, ssim=ssim, psnr=psnr, mse=mse, ergas=ergas)


def aggregate_band_scores(scores: Sequence[Scores], data_range: float = DATA_RANGE) -> Scores:
    """Scores of a set of bands of one image, aggregated as ``metrics.py`` does.

    ``mse`` is the bands' mean and ``psnr`` comes from it; ``ssim``, ``r2`` and ``cc`` are means
    (NaN if any band's is NaN); ``ergas`` is the root mean square of the bands' ERGAS. Bands weigh
    equally whatever their pixel count.
    """
    if not scores:
        raise ValueError("aggregate_band_scores needs at least one band")
    k = len(scores)
    mse = sum(s.mse for s in scores) / k
    if k == 1:
        psnr = scores[0].psnr
    elif math.isnan(mse):
        psnr = math.nan
    else:
        psnr = 10.0 * math.log10(data_range**2 / mse) if mse > 0 else math.inf
    return Scores(
        r2=sum(s.r2 for s in scores) / k,
        cc=sum(s.cc for s in scores) / k,
        ssim=sum(s.ssim for s in scores) / k,
        psnr=psnr,
        mse=mse,
        ergas=math.sqrt(sum(s.ergas**2 for s in scores) / k),
    )


def score_table(
    per_band: Mapping[str, Scores],
    groups: Mapping[GroupKey, Sequence[str]],
    data_range: float = DATA_RANGE,
) -> ScoreTable:
    """A :class:`ScoreTable` of one image from its per-band scores.

    Args:
        per_band: band name → scores (every band of ``groups``).
        groups: group name → its band names; ``overall`` aggregates all of them.
        data_range: the reflectance range of PSNR (1.0 for reflectance).
    """
    ordered = {name: per_band[name] for members in groups.values() for name in members}
    per_group: dict[str, Scores] = {
        group: aggregate_band_scores([per_band[n] for n in members], data_range)
        for group, members in groups.items()
    }
    overall = aggregate_band_scores(list(ordered.values()), data_range)
    return ScoreTable(per_band=ordered, per_group=per_group, overall=overall)


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _mean_scores(items: Sequence[Scores]) -> Scores:
    return Scores(**{f.name: _nanmean([getattr(s, f.name) for s in items]) for f in fields(Scores)})


def mean_over_images(tables: Sequence[ScoreTable]) -> ScoreTable:
    """The mean of several images' tables, entry by entry, leaving NaN out.

    As ``metrics.py``'s "averaged over images": a group's score is aggregated per image, then
    averaged.
    """
    if not tables:
        raise ValueError("mean_over_images needs at least one table")
    first = tables[0]
    return ScoreTable(
        per_band={k: _mean_scores([t.per_band[k] for t in tables]) for k in first.per_band},
        per_group={k: _mean_scores([t.per_group[k] for t in tables]) for k in first.per_group},
        overall=_mean_scores([t.overall for t in tables]),
    )
