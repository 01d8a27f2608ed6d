"""Full-reference quality metrics of a reconstruction against a reference, per band and aggregated.

Used by ``eval fusion`` (Wald protocol and the no-reference product check of SPEC §3) and by the
fusion training's validation. Inputs are ``(B, C, H, W)`` float reflectance; an optional
``(B, H, W)`` bool mask restricts every statistic to valid pixels. Each metric is computed per
image and per band, then averaged over the images of the batch; NaN values (an image without
valid pixels, or a metric undefined on it such as the correlation of a constant band) are left
out of that average.

Definitions (``x`` reconstruction, ``y`` reference, statistics over the valid pixels of one band
of one image):

- ``mse``: mean of ``(x − y)²`` (reflectance²).
- ``psnr``: ``10·log10(data_range² / mse)`` dB with ``data_range = 1.0`` by default: reflectance
  lives on [0, 1], so the peak is fixed by the physics rather than by each image's min/max (which
  would make scores incomparable between bands and scenes). Computed with torchmetrics.
  ``inf`` for a perfect reconstruction.
- ``ssim``: torchmetrics' SSIM map (Gaussian window σ = 1.5, 11 × 11, k1 = 0.01, k2 = 0.03,
  reflect padding, same ``data_range``) averaged over valid pixels. Invalid pixels of the
  reconstruction are replaced by the reference's before filtering, so nodata contributes no
  error. NaN for images smaller than 6 × 6 pixels (the window cannot be padded).
- ``r2``: coefficient of determination ``1 − Σ(x − y)² / Σ(y − ȳ)²`` (the reference's variance
  explained; 1 when perfect, can be negative). NaN for a constant reference band.
- ``cc``: Pearson cross-correlation of ``x`` and ``y``. NaN when either is constant.
- ``ergas``: Wald's ERGAS, ``100 · (h/l) · sqrt(mean_k RMSE_k² / μ_k²)`` with ``μ_k`` the mean
  of the reference band and ``h/l = 1/ratio`` the ratio of the high (reconstructed) to the low
  (input) pixel size: ``ratio`` = 4 for a 10 m band rebuilt at 2.5 m, 8 for 20 m, 24 for 60 m.
  Per band, torchmetrics' ``error_relative_global_dimensionless_synthesis`` (whose definition is
  exactly this one, ``100 / ratio · …``) is evaluated on the valid pixels. For a set of bands
  with different ratios the aggregate is ``100 · sqrt(mean_k (RMSE_k / (ratio_k · μ_k))²)``,
  i.e. the root mean square of the per-band ERGAS, which equals the standard multiband ERGAS
  when all bands share one ratio. ``0`` for a perfect reconstruction; ``inf`` when ``μ_k = 0``.

Aggregates over several bands (a group, or all 12) per image: ``mse`` is the mean of the bands'
MSE and ``psnr`` is computed from that mean MSE; ``ssim``, ``r2`` and ``cc`` are means over bands;
``ergas`` as above. Bands enter with equal weight whatever their pixel count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor
from torchmetrics.functional.image import (
    error_relative_global_dimensionless_synthesis,
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

#: Reflectance data range used for PSNR and SSIM.
DATA_RANGE = 1.0
#: Smallest image side SSIM accepts (its reflect padding is 5 pixels).
_SSIM_MIN_SIDE = 6

METRIC_NAMES: tuple[str, ...] = ("r2", "cc", "ssim", "psnr", "mse", "ergas")


@dataclass(frozen=True)
class Scores:
    """Quality of one band, or of a set of bands, averaged over images.

    Attributes:
        r2: coefficient of determination (1 is perfect).
        cc: Pearson cross-correlation (1 is perfect).
        ssim: structural similarity (1 is perfect).
        psnr: peak signal-to-noise ratio in dB (``inf`` is perfect).
        mse: mean squared error, reflectance² (0 is perfect).
        ergas: relative dimensionless global error in synthesis (0 is perfect).
    """

    r2: float
    cc: float
    ssim: float
    psnr: float
    mse: float
    ergas: float

    def as_dict(self) -> dict[str, float]:
        """The scores as ``{metric name: value}`` in :data:`METRIC_NAMES` order."""
        return asdict(self)


@dataclass(frozen=True)
class ScoreTable:
    """Scores per band, per group and overall (the rows of ``eval fusion``'s table).

    Attributes:
        per_band: band name → scores.
        per_group: group name → scores aggregated over its bands.
        overall: scores aggregated over every band.
    """

    per_band: dict[str, Scores]
    per_group: dict[str, Scores]
    overall: Scores


@dataclass(frozen=True)
class _ImageBandStats:
    """Per-image, per-band statistics, each ``(B, C)`` float64, NaN where an image has no data."""

    mse: Tensor
    psnr: Tensor
    ssim: Tensor
    r2: Tensor
    cc: Tensor
    ergas: Tensor

    def band(self, c: int) -> _ImageBandStats:
        """The statistics of band ``c`` alone, each ``(B, 1)``."""
        return _ImageBandStats(**{f: getattr(self, f)[:, c : c + 1] for f in _STAT_FIELDS})

    @staticmethod
    def concat(parts: Sequence[_ImageBandStats]) -> _ImageBandStats:
        """The statistics of several band sets side by side (concatenated along dim 1)."""
        return _ImageBandStats(
            **{f: torch.cat([getattr(p, f) for p in parts], dim=1) for f in _STAT_FIELDS}
        )


_STAT_FIELDS = ("mse", "psnr", "ssim", "r2", "cc", "ergas")


def _check_pair(pred: Tensor, ref: Tensor, valid: Tensor | None) -> Tensor:
    """Validate shapes; return the ``(B, H, W)`` bool mask (all True when ``valid`` is None)."""
    if pred.ndim != 4 or pred.shape != ref.shape:
        raise ValueError(
            f"pred and ref must both be (B, C, H, W) of one shape, got {tuple(pred.shape)} "
            f"and {tuple(ref.shape)}"
        )
    if valid is None:
        return torch.ones((pred.shape[0], *pred.shape[-2:]), dtype=torch.bool, device=pred.device)
    if valid.shape != (pred.shape[0], *pred.shape[-2:]):
        raise ValueError(
            f"valid must be {(pred.shape[0], *pred.shape[-2:])}, got {tuple(valid.shape)}"
        )
    return valid.to(torch.bool)


def _ssim_per_image_band(pred: Tensor, ref: Tensor, valid: Tensor, data_range: float) -> Tensor:
    """Masked mean of the SSIM map, ``(B, C)`` float64."""
    batch, channels, height, width = pred.shape
    if min(height, width) < _SSIM_MIN_SIDE:
        return torch.full((batch, channels), math.nan, dtype=torch.float64)
    mask = valid.unsqueeze(1).expand_as(pred)
    # Nodata must not count as error: give the reconstruction the reference's values there.
    pred = torch.where(mask, pred, ref)
    # Filtering in float32: float64 depthwise convolutions are an order of magnitude slower on
    # CPU, and SSIM needs no more precision than its inputs carry.
    _, ssim_map = structural_similarity_index_measure(
        pred.float(), ref.float(), data_range=data_range, reduction="none", return_full_image=True
    )
    ssim_map = ssim_map.double()
    weights = mask.to(ssim_map.dtype)
    count = weights.sum(dim=(-2, -1))
    return (ssim_map * weights).sum(dim=(-2, -1)) / count  # NaN where count == 0


def _image_band_stats(
    pred: Tensor, ref: Tensor, valid: Tensor | None, ratio: float, data_range: float
) -> _ImageBandStats:
    """Every metric for every image and band (see the module docstring for definitions)."""
    mask = _check_pair(pred, ref, valid)
    pred = pred.detach().to(torch.float64)
    ref = ref.detach().to(torch.float64)
    batch, channels = pred.shape[:2]
    nan = torch.full((batch, channels), math.nan, dtype=torch.float64)
    mse, psnr, r2, cc, ergas = (nan.clone() for _ in range(5))
    for b in range(batch):
        if not bool(mask[b].any()):
            continue
        for c in range(channels):
            x = pred[b, c][mask[b]]
            y = ref[b, c][mask[b]]
            error = x - y
            mse[b, c] = error.square().mean()
            psnr[b, c] = peak_signal_noise_ratio(x, y, data_range=data_range)
            ergas[b, c] = error_relative_global_dimensionless_synthesis(
                x.view(1, 1, 1, -1), y.view(1, 1, 1, -1), ratio=ratio
            )
            x_dev = x - x.mean()
            y_dev = y - y.mean()
            ref_ss = y_dev.square().sum()
            residual_ss = error.square().sum()
            if ref_ss > 0:
                r2[b, c] = 1.0 - residual_ss / ref_ss
            elif residual_ss == 0:
                r2[b, c] = 1.0  # a constant band reproduced exactly
            norm = (x_dev.square().sum() * ref_ss).sqrt()
            if norm > 0:
                cc[b, c] = (x_dev * y_dev).sum() / norm
    ssim = _ssim_per_image_band(pred, ref, mask, data_range)
    return _ImageBandStats(mse=mse, psnr=psnr, ssim=ssim, r2=r2, cc=cc, ergas=ergas)


def _image_mean(values: Tensor) -> float:
    """Mean over images (dim 0) of a ``(B,)`` tensor, ignoring images without data (NaN)."""
    kept = values[~values.isnan()]
    return float(kept.mean()) if kept.numel() else math.nan


def _aggregate(stats: _ImageBandStats, data_range: float) -> Scores:
    """Scores of the set of bands in ``stats`` (dim 1), averaged over images (dim 0)."""
    mse = stats.mse.mean(dim=1)
    if stats.psnr.shape[1] == 1:
        psnr = stats.psnr[:, 0]  # torchmetrics' value for a single band
    else:
        psnr = 10.0 * torch.log10(data_range**2 / mse)  # inf where mse == 0, as torchmetrics
    ergas = stats.ergas.square().mean(dim=1).sqrt()
    return Scores(
        r2=_image_mean(stats.r2.mean(dim=1)),
        cc=_image_mean(stats.cc.mean(dim=1)),
        ssim=_image_mean(stats.ssim.mean(dim=1)),
        psnr=_image_mean(psnr),
        mse=_image_mean(mse),
        ergas=_image_mean(ergas),
    )


def band_scores(
    pred: Tensor,
    ref: Tensor,
    valid: Tensor | None = None,
    *,
    ratio: float,
    data_range: float = DATA_RANGE,
) -> list[Scores]:
    """Scores of each band of a reconstruction.

    Args:
        pred: ``(B, C, H, W)`` reconstruction, float reflectance.
        ref: ``(B, C, H, W)`` reference, float reflectance.
        valid: ``(B, H, W)`` bool, pixels to score; ``None`` means all.
        ratio: low over high pixel size of these bands, for ERGAS (e.g. 4 for 10 m → 2.5 m).
        data_range: peak value for PSNR and SSIM (1.0: reflectance).

    Returns:
        One :class:`Scores` per channel, averaged over the images.
    """
    stats = _image_band_stats(pred, ref, valid, ratio, data_range)
    return [_aggregate(stats.band(c), data_range) for c in range(pred.shape[1])]


def aggregate_scores(
    pred: Tensor,
    ref: Tensor,
    valid: Tensor | None = None,
    *,
    ratio: float,
    data_range: float = DATA_RANGE,
) -> Scores:
    """Scores of all the bands of a reconstruction together (arguments as :func:`band_scores`)."""
    return _aggregate(_image_band_stats(pred, ref, valid, ratio, data_range), data_range)


def score_groups(
    preds: Mapping[str, Tensor],
    refs: Mapping[str, Tensor],
    valids: Mapping[str, Tensor | None] | None = None,
    *,
    ratios: Mapping[str, float],
    band_names: Mapping[str, Sequence[str]],
    data_range: float = DATA_RANGE,
) -> ScoreTable:
    """Scores per band, per group and overall for reconstructions held per band group.

    Groups may have different sizes (each is compared on its own grid) but must share the
    batch size, image ``b`` of every group showing the same place.

    Args:
        preds: group name → ``(B, C_g, H_g, W_g)`` reconstruction, float reflectance.
        refs: group name → reference of the same shape.
        valids: group name → ``(B, H_g, W_g)`` bool valid mask (or None); ``None``: all valid.
        ratios: group name → ERGAS resolution ratio (low over high pixel size) of its bands.
        band_names: group name → the names of its ``C_g`` bands (e.g. ``bands.GROUPS``).
        data_range: peak value for PSNR and SSIM (1.0: reflectance).

    Returns:
        A :class:`ScoreTable`; ``overall`` aggregates every band of every group.
    """
    per_band: dict[str, Scores] = {}
    per_group: dict[str, Scores] = {}
    parts: list[_ImageBandStats] = []
    for group, pred in preds.items():
        names = list(band_names[group])
        if len(names) != pred.shape[1]:
            raise ValueError(f"group {group} has {pred.shape[1]} bands but {len(names)} names")
        valid = None if valids is None else valids.get(group)
        stats = _image_band_stats(pred, refs[group], valid, ratios[group], data_range)
        parts.append(stats)
        per_group[group] = _aggregate(stats, data_range)
        for c, name in enumerate(names):
            per_band[name] = _aggregate(stats.band(c), data_range)
    overall = _aggregate(_ImageBandStats.concat(parts), data_range)
    return ScoreTable(per_band=per_band, per_group=per_group, overall=overall)
