"""``difffusr eval opensr``: run an RGB model on the OpenSR-test benchmark.

Every image is scored with the ``opensr-test`` package's own metrics (never re-implemented here).

The protocol follows SPEC §3 and the DiffFuSR authors' benchmark script (see
``docs/evaluation.md``):

- LR = L2A [B04, B03, B02] / 10000, HR = HRharm [R, G, B] / 10000, float32 reflectance
  (:mod:`difffusr_cli.evaluate.opensr_data`);
- ``opensr_test.Metrics(agg_method="patch", border_mask=64, correctness_distance=d,
  patch_size=1 for "nd" or 16 for "lpips"/"clip")``; the perceptual distances see true colour
  (reflectance × 3 clipped to [0, 1]) as in the benchmark's reference scripts;
- the super-resolved image is clipped at 0 (negative reflectance is not physical and breaks the
  normalised difference) and, when the dataset's scale differs from the model's ×4 (venus is
  ×2), resized to the HR size with antialiased bilinear interpolation.

Results, tables, ranks and JSON live in :mod:`difffusr_cli.evaluate.opensr_report`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from difffusr_cli.errors import InputError, OutputError
from difffusr_cli.evaluate.opensr_data import (
    DATASET_SCALE,
    DEFAULT_DATASETS,
    DN_PER_REFLECTANCE,
    VERSION_FOLDER,
    BenchmarkDataset,
    DataVersion,
    import_opensr_test,
    load_dataset,
    locate_datasets,
)
from difffusr_cli.evaluate.opensr_report import OpenSRReport, ResultRow, row_from_package
from difffusr_cli.models.bicubic import BICUBIC, BicubicUpsampler

Distance = Literal["nd", "lpips", "clip"]

#: Correctness distances in the order they are reported.
DISTANCES: tuple[Distance, ...] = ("nd", "lpips", "clip")


@dataclass(frozen=True)
class MetricSettings:
    """The arguments of ``opensr_test.Metrics`` for one correctness distance (SPEC §3).

    ``patch_size=1`` makes opensr-test aggregate per pixel, as the benchmark's ``nd`` table does.
    """

    distance: Distance
    patch_size: int
    border_mask: int = 64
    agg_method: str = "patch"
    true_colour: bool = False

    def kwargs(self, device: torch.device) -> dict[str, Any]:
        """The keyword arguments of ``opensr_test.Metrics`` on ``device``."""
        return {
            "device": str(device),
            "agg_method": self.agg_method,
            "patch_size": self.patch_size,
            "border_mask": self.border_mask,
            "correctness_distance": self.distance,
        }


#: The paper's settings per distance.
PROTOCOL: dict[str, MetricSettings] = {
    "nd": MetricSettings("nd", patch_size=1),
    "lpips": MetricSettings("lpips", patch_size=16, true_colour=True),
    "clip": MetricSettings("clip", patch_size=16, true_colour=True),
}


class SuperResolver(Protocol):
    """What ``eval opensr`` needs of a model.

    ``RGBSuperResolver`` and :class:`BicubicUpsampler` provide it.
    """

    def super_resolve(
        self, lr: torch.Tensor, steps: int = 20, seed: int | None = None
    ) -> torch.Tensor:
        """``(B, 3, h, w)`` R, G, B reflectance → ``(B, 3, 4h, 4w)`` reflectance."""
        ...


@dataclass(frozen=True)
class OpenSRConfig:
    """One ``eval opensr`` run.

    Attributes:
        rgb_model: weights name or path for :func:`difffusr_cli.api.load_rgb_model`, ``"bicubic"``
            for the stand-in, or None for the default RGB model.
        datasets: benchmark datasets, in order.
        data_dir: folder holding ``<dataset>.pkl`` (the package's layout) or the Hugging Face
            repository's ``<version folder>/<dataset>/<dataset>.pkl``; None = the package's cache
            (``~/.config/opensr_test``) or the Hugging Face cache, downloaded there when missing
            and online.
        data_version: opensr_test.load's dataset version (``v3`` = the current benchmark).
        distances: correctness distances; ``nd`` is always computed, the others when their
            packages and weights are available.
        steps, seed: sampler settings; image ``i`` of a dataset uses ``seed + i``.
        device: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps`` (model and metrics).
        limit: score only the first ``limit`` images of each dataset.
        save_sr: folder for the super-resolved images (``<dataset>/<image>.tif``).
        label: the model's name in the results (default: ``rgb_model``).
    """

    rgb_model: str | None = None
    datasets: tuple[str, ...] = DEFAULT_DATASETS
    data_dir: Path | None = None
    data_version: DataVersion = "v3"
    distances: tuple[Distance, ...] = DISTANCES
    steps: int = 20
    seed: int | None = 0
    device: str = "auto"
    limit: int | None = None
    save_sr: Path | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        unknown = [d for d in self.datasets if d not in DATASET_SCALE]
        if unknown or not self.datasets:
            raise InputError(
                f"--dataset {', '.join(unknown) or '(none)'}: expected some of "
                f"{', '.join(DATASET_SCALE)}"
            )
        if len(set(self.datasets)) != len(self.datasets):
            raise InputError(f"--dataset: {', '.join(self.datasets)} names a dataset twice")
        bad = [d for d in self.distances if d not in PROTOCOL]
        if bad:
            raise InputError(
                f"--distance {', '.join(bad)}: expected some of {', '.join(DISTANCES)}"
            )
        if self.data_version not in VERSION_FOLDER:
            raise InputError(
                f"--data-version {self.data_version}: expected one of {', '.join(VERSION_FOLDER)}"
            )
        if self.steps < 1:
            raise InputError(f"--steps {self.steps}: must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"--limit {self.limit}: must be at least 1")

    @property
    def model_label(self) -> str:
        """The model's name in the results: ``label``, else ``rgb_model``, else the default's."""
        if self.label:
            return self.label
        if self.rgb_model is None:
            from difffusr_cli.weights import default_model_name

            return default_model_name("rgb")
        return self.rgb_model


# --------------------------------------------------------------------------------------------
# Distances, model and scoring


def perceptual_unavailable(distance: str) -> str | None:
    """Why ``distance`` cannot be scored here (None when it can).

    ``nd`` needs nothing more. ``lpips`` and ``clip`` need their packages and their pretrained
    weights (AlexNet through torchvision, SigLIP ``ViT-B-16-SigLIP-256``/``webli`` through
    open_clip); the check builds the same model opensr-test builds, downloading when online.
    """
    if distance == "nd":
        return None
    module = "lpips" if distance == "lpips" else "open_clip"
    try:
        package = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return (
            f"{module} cannot be imported ({type(exc).__name__}: {exc}); "
            "install lpips/open-clip-torch with a torchvision matching your torch"
        )
    try:
        if distance == "lpips":
            package.LPIPS(net="alex", verbose=False)
        else:
            package.create_model_and_transforms("ViT-B-16-SigLIP-256", pretrained="webli")
    except Exception as exc:  # noqa: BLE001 - missing weights surface as many exception types
        return f"its pretrained weights are not available ({type(exc).__name__}: {str(exc)[:200]})"
    return None


def build_model(config: OpenSRConfig, device: torch.device) -> SuperResolver:
    """The bicubic stand-in, or the RGB diffusion model.

    The model is loaded through :func:`difffusr_cli.api.load_rgb_model` on ``device``.
    """
    if config.rgb_model is not None and config.rgb_model.lower() == BICUBIC:
        return BicubicUpsampler()
    from difffusr_cli.api import load_rgb_model

    return load_rgb_model(config.rgb_model, device=device)


def super_resolve_image(
    model: SuperResolver,
    lr: np.ndarray,
    hr_shape: tuple[int, int],
    *,
    steps: int,
    seed: int | None,
    device: torch.device,
) -> torch.Tensor:
    """Super-resolve one ``(3, h, w)`` image to the HR grid.

    Returns:
        ``(3, H, W)`` float32 CPU reflectance, clipped at 0; resized (antialiased bilinear) to
        ``hr_shape`` when the model's scale differs from the dataset's.
    """
    with torch.inference_mode():
        batch = torch.from_numpy(np.ascontiguousarray(lr))[None].to(device)
        sr = model.super_resolve(batch, steps=steps, seed=seed).float()
        if tuple(sr.shape[-2:]) != tuple(hr_shape):
            sr = F.interpolate(
                sr, size=hr_shape, mode="bilinear", antialias=True, align_corners=False
            )
    return sr[0].clamp_min(0.0).cpu().contiguous()


def score_image(
    metrics: Any, settings: MetricSettings, lr: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor
) -> dict[str, float]:
    """Score one image with one ``opensr_test.Metrics.compute`` call.

    Args:
        metrics: an ``opensr_test.Metrics`` built with ``settings``.
        settings: the protocol of its distance (true colour first for the perceptual ones).
        lr: ``(3, h, w)`` float32 reflectance, the low-resolution input.
        sr: ``(3, H, W)`` float32 reflectance, the super-resolved image.
        hr: ``(3, H, W)`` float32 reflectance, the reference.

    Returns:
        The package's result: metric key (``reflectance``, ``ha_metric``…) → value.
    """
    if settings.true_colour:
        lr, sr, hr = ((x * 3).clamp(0, 1) for x in (lr, sr, hr))
    return metrics.compute(lr=lr.float(), sr=sr.float(), hr=hr.float())


def save_sr_image(folder: Path, dataset: BenchmarkDataset, index: int, sr: torch.Tensor) -> Path:
    """Write one SR image as a 3-band uint16 GeoTIFF, georeferenced when the metadata allows.

    DN = reflectance × 10000, clipped to [0, 65535] (the benchmark's own encoding).

    Args:
        folder: the ``--save-sr`` folder; the file goes to ``<folder>/<dataset>/<image>.tif``.
        dataset: the benchmark dataset (image ids, CRS, transforms).
        index: the image's index in ``dataset``.
        sr: ``(3, H, W)`` float32 CPU reflectance.

    Returns:
        The path written.

    Raises:
        OutputError: the file cannot be written.
    """
    import rasterio

    target_dir = folder / dataset.name
    name = (
        re.sub(r"[^A-Za-z0-9._-]+", "_", Path(dataset.image_ids[index]).name).strip("._")
        or f"{index:03d}"
    )
    path = target_dir / (name if name.lower().endswith((".tif", ".tiff")) else f"{name}.tif")
    dn = np.clip(np.rint(sr.numpy() * DN_PER_REFLECTANCE), 0, 65535).astype(np.uint16)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": dn.shape[2],
        "height": dn.shape[1],
        "count": 3,
        "dtype": "uint16",
        "compress": "deflate",
        "predictor": 2,
    }
    crs, transform = dataset.crs[index], dataset.transforms[index]
    if crs is not None and transform is not None:
        profile.update(crs=crs, transform=transform)
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(dn)
            dst.descriptions = ("R (B04)", "G (B03)", "B (B02)")
            dst.update_tags(
                SCALE=str(1 / DN_PER_REFLECTANCE),
                OFFSET="0",
                SOURCE=f"difffusr eval opensr, {dataset.name}",
            )
    except (OSError, rasterio.errors.RasterioError) as exc:
        raise OutputError(f"{path}: cannot write the super-resolved image ({exc})") from exc
    return path


#: ``progress(dataset, images done, images total)``: called with 0 before a dataset's first image
#: and after each image (the CLI draws a bar per dataset).
ImageProgress = Callable[[str, int, int], None]


def evaluate_opensr(
    config: OpenSRConfig,
    *,
    model: SuperResolver | None = None,
    progress: ImageProgress | None = None,
    warn: Callable[[str], None] | None = None,
) -> OpenSRReport:
    """Run ``config.rgb_model`` (or ``model``) on the benchmark and score every image.

    Args:
        config: the run.
        model: an object with ``super_resolve`` to use instead of loading ``config.rgb_model``.
        progress: receives the images done per dataset (see :data:`ImageProgress`); None (or
            False) reports nothing.
        warn: called with one line per skipped distance (default: nothing; see ``report.skipped``).

    Raises:
        InputError: data missing or malformed, opensr-test not installed, bad settings.
        WeightsError: the model cannot be loaded.
        OutputError: ``save_sr`` cannot be written.
    """
    from difffusr_cli.device import select_device

    files = locate_datasets(config.datasets, config.data_dir, config.data_version)
    opensr_test = import_opensr_test()
    device = select_device(config.device)

    distances: list[Distance] = []
    skipped: dict[str, str] = {}
    candidates: tuple[Distance, ...] = ("nd", *config.distances)
    for distance in dict.fromkeys(candidates):
        reason = perceptual_unavailable(distance)
        if reason is None:
            distances.append(distance)
        else:
            skipped[distance] = reason
            if warn is not None:
                warn(f"{distance} skipped: {reason}")

    runner = model if model is not None else build_model(config, device)
    label = config.model_label
    scorers = {d: opensr_test.Metrics(**PROTOCOL[d].kwargs(device)) for d in distances}
    rows: list[ResultRow] = []
    sources: dict[str, str] = {}
    for name in config.datasets:
        dataset = load_dataset(name, files[name], config.data_version)
        sources[name] = str(dataset.source)
        count = (
            len(dataset.image_ids)
            if config.limit is None
            else min(config.limit, len(dataset.image_ids))
        )
        if progress:
            progress(name, 0, count)
        for index in range(count):
            seed = None if config.seed is None else config.seed + index
            sr = super_resolve_image(
                runner,
                dataset.lr[index],
                dataset.hr.shape[-2:],
                steps=config.steps,
                seed=seed,
                device=device,
            )
            if config.save_sr is not None:
                save_sr_image(Path(config.save_sr), dataset, index, sr)
            lr = torch.from_numpy(dataset.lr[index])
            hr = torch.from_numpy(dataset.hr[index])
            for distance in distances:
                scores = score_image(scorers[distance], PROTOCOL[distance], lr, sr, hr)
                rows.append(
                    row_from_package(label, distance, name, dataset.image_ids[index], scores)
                )
            if progress:
                progress(name, index + 1, count)

    settings = {
        "opensr_test": getattr(opensr_test, "__version__", "unknown"),
        "data_version": config.data_version,
        "protocol": {
            d: {k: v for k, v in PROTOCOL[d].kwargs(device).items() if k != "device"}
            | {"true_colour": PROTOCOL[d].true_colour}
            for d in distances
        },
        "lr": "L2A [B04, B03, B02] / 10000",
        "hr": "HRharm [R, G, B] / 10000",
        "rgb_model": config.rgb_model,
        "steps": config.steps,
        "seed": config.seed,
        "device": str(device),
        "limit": config.limit,
    }
    return OpenSRReport(label, tuple(rows), tuple(distances), skipped, sources, settings)
