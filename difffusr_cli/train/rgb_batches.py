"""``train rgb`` batches: random crop pairs of HR images, and the LR they are trained from.

Two sources of LR (:attr:`~difffusr_cli.train.hr_data.HRDataset.pairs`):

- ``degrade``: two random crops per image (``patch_size`` px, independent flips/rotations) —
  MoCo's positive pair; optional harmonisation (γ drawn per image) and one degradation per image
  (:func:`~difffusr_cli.degrade.sample_degradation`) shared by both crops.
- ``own``: the published LR of each image (SEN2NAIP v2 pairs), no harmonisation, no
  degradation: an HR crop and the LR crop under it (``patch_size / 4`` px at the same place, the
  same flip/rotation), and a second LR crop elsewhere in the same LR image as MoCo's positive
  (same sensor and acquisition: the same degradation).

Both are functions of the seed and the step only (exact ``--resume``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from difffusr_cli.degrade import (
    DEFAULT_GAMMA,
    degrade,
    harmonize,
    sample_degradation,
    sample_gamma,
)
from difffusr_cli.train import common
from difffusr_cli.train.hr_data import HarmoniseMode, HRDataset
from difffusr_cli.train.rgb_config import SCALE, RGBTrainConfig

# Independent random streams of a run (see common.step_rngs).
_STREAM_BATCH, _STREAM_ORDER, _STREAM_VAL = 1, 2, 3


@dataclass(frozen=True)
class RGBBatch:
    """One training batch, reflectance (CPU).

    Attributes:
        hr: ``(B, 3, P, P)`` first crops (the targets).
        lr: ``(B, 3, P/4, P/4)`` their degraded versions (own pairs: the LR crops under them).
        lr_key: ``(B, 3, P/4, P/4)`` second crops, same degradation (MoCo positives; own pairs:
            elsewhere in the same LR image).
    """

    hr: Tensor
    lr: Tensor
    lr_key: Tensor


def _mode(harmonized: bool | HarmoniseMode) -> HarmoniseMode:
    if isinstance(harmonized, bool):
        return "gamma" if harmonized else "none"
    return harmonized


def _random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    _, height, width = image.shape
    top = int(rng.integers(height - size + 1))
    left = int(rng.integers(width - size + 1))
    crop = image[:, top : top + size, left : left + size]
    return _dihedral([crop], rng)[0]


def _dihedral(crops: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random element of the dihedral group applied to every ``(C, h, w)`` crop."""
    # flips and 90° turns keep the HR statistics
    turns = int(rng.integers(4))
    flip = rng.random() < 0.5
    out = [np.rot90(c, turns, axes=(1, 2)) for c in crops]
    return [np.ascontiguousarray(c[:, :, ::-1] if flip else c) for c in out]


def _aligned_crop(
    hr: np.ndarray, lr: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """An HR crop of ``size`` px and the LR crop under it (``size / 4`` px), same transform.

    The LR position is drawn on the LR grid, so the HR crop starts on a whole LR pixel.
    """
    small = size // SCALE
    _, height, width = lr.shape
    top, left = int(rng.integers(height - small + 1)), int(rng.integers(width - small + 1))
    hr_crop = hr[:, SCALE * top : SCALE * top + size, SCALE * left : SCALE * left + size]
    lr_crop = lr[:, top : top + small, left : left + small]
    hr_out, lr_out = _dihedral([hr_crop, lr_crop], rng)
    return hr_out, lr_out


def _chosen(
    indices: tuple[int, ...], config: RGBTrainConfig, step: int
) -> tuple[list[int], torch.Generator, np.random.Generator]:
    """The images of ``step``'s batch and the step's random generators."""
    steps_per_epoch = math.ceil(len(indices) * config.repeat / config.batch_size)
    epoch, position = divmod(step, steps_per_epoch)
    _, order_rng = common.step_rngs(config.seed, _STREAM_ORDER, epoch)
    order = order_rng.permutation(len(indices) * config.repeat) % len(indices)
    generator, rng = common.step_rngs(config.seed, _STREAM_BATCH, step)
    chosen = [
        indices[order[(position * config.batch_size + j) % len(order)]]
        for j in range(config.batch_size)
    ]
    return chosen, generator, rng


def make_batch(
    data: HRDataset,
    indices: tuple[int, ...],
    config: RGBTrainConfig,
    harmonized: bool | HarmoniseMode,
    step: int,
) -> RGBBatch:
    """The batch of ``step``: a function of the seed and the step only (exact ``--resume``).

    ``harmonized``: ``gamma`` (or True) draws γ per image, ``histogram`` reads the images
    histogram-matched to their ``sim_histograms``, ``none`` (or False) leaves them as they are.
    Data with published pairs (``data.pairs == "own"``) take the LR from the pairs and must not
    be harmonised.

    Raises:
        ValueError: harmonisation asked for with published pairs.
    """
    mode = _mode(harmonized)
    chosen, generator, rng = _chosen(indices, config, step)
    if data.pairs == "own":
        _refuse_harmonisation(mode)
        return _paired_batch(data, chosen, config.patch_size, rng)
    images = [data.read(i, matched=mode == "histogram") for i in chosen]
    hr = torch.from_numpy(np.stack([_random_crop(im, config.patch_size, rng) for im in images]))
    hr_key = torch.from_numpy(np.stack([_random_crop(im, config.patch_size, rng) for im in images]))
    if mode == "gamma":
        gamma = sample_gamma(generator, len(chosen))
        hr, hr_key = harmonize(hr, gamma), harmonize(hr_key, gamma)
    params = sample_degradation(len(chosen), generator, config.degradation())
    return RGBBatch(
        hr=hr, lr=degrade(hr, params, generator), lr_key=degrade(hr_key, params, generator)
    )


def make_validation_set(
    data: HRDataset,
    indices: tuple[int, ...],
    config: RGBTrainConfig,
    harmonized: bool | HarmoniseMode,
) -> tuple[Tensor, Tensor]:
    """Fixed validation pairs: centre crops (HR) and their isotropic degradations (LR).

    Harmonised as in :func:`make_batch`, gamma with the distribution's median γ. With published
    pairs: the LR centre crops and the HR crops over them, as published.
    """
    mode = _mode(harmonized)
    if data.pairs == "own":
        _refuse_harmonisation(mode)
        return _paired_validation(data, indices, config.patch_size)
    crops = []
    for i in indices:
        image = data.read(i, matched=mode == "histogram")
        _, height, width = image.shape
        top, left = (height - config.patch_size) // 2, (width - config.patch_size) // 2
        crops.append(image[:, top : top + config.patch_size, left : left + config.patch_size])
    hr = torch.from_numpy(np.ascontiguousarray(np.stack(crops)))
    if mode == "gamma":
        hr = harmonize(hr, DEFAULT_GAMMA)
    generator, _ = common.step_rngs(config.seed, _STREAM_VAL, 0)
    params = sample_degradation(len(indices), generator, config.degradation(isotropic=True))
    return hr, degrade(hr, params, generator)


def _refuse_harmonisation(mode: HarmoniseMode) -> None:
    if mode != "none":
        raise ValueError(f"published pairs are used as they are; harmonisation {mode} needs none")


def _paired_batch(
    data: HRDataset, chosen: list[int], size: int, rng: np.random.Generator
) -> RGBBatch:
    """Aligned HR/LR crops of published pairs, and second LR crops (MoCo positives)."""
    hrs, lrs, keys = [], [], []
    for i in chosen:
        lr_image = data.read_lr(i)
        hr, lr = _aligned_crop(data.read(i), lr_image, size, rng)
        hrs.append(hr)
        lrs.append(lr)
        keys.append(_random_crop(lr_image, size // SCALE, rng))
    return RGBBatch(*(torch.from_numpy(np.stack(a)) for a in (hrs, lrs, keys)))


def _paired_validation(
    data: HRDataset, indices: tuple[int, ...], size: int
) -> tuple[Tensor, Tensor]:
    """``(hr (V, 3, P, P), lr (V, 3, P/4, P/4))``: centre crops of published pairs."""
    small = size // SCALE
    hrs, lrs = [], []
    for i in indices:
        lr = data.read_lr(i)
        _, height, width = lr.shape
        top, left = (height - small) // 2, (width - small) // 2
        lrs.append(lr[:, top : top + small, left : left + small])
        hrs.append(
            data.read(i)[:, SCALE * top : SCALE * top + size, SCALE * left : SCALE * left + size]
        )
    hr = torch.from_numpy(np.ascontiguousarray(np.stack(hrs)))
    return hr, torch.from_numpy(np.ascontiguousarray(np.stack(lrs)))
