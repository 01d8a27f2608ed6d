"""The ``train rgb`` configuration: hyperparameters, architecture, presets (SPEC §2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from difffusr_cli.degrade import DegradationSettings
from difffusr_cli.models.config import SRConfig
from difffusr_cli.train import config as common
from difffusr_cli.train.config import require
from difffusr_cli.train.hr_data import HARMONISE_MODES, PAIRS_MODES, HarmoniseMode, PairsMode
from difffusr_cli.train.run_dir import RunDir

#: Super-resolution factor.
SCALE = 4


@dataclass(frozen=True)
class RGBTrainConfig(common.ModelTrainConfig):
    """Hyperparameters of ``train rgb`` (the ``[train]`` table) and the architecture (``[model]``).

    Attributes:
        model: the network architecture.
        batch_size: images per step (each gives two crops).
        patch_size: HR crop side, 2.5 m pixels (multiple of 4·fold; LR crops are a quarter).
        lr: Adam learning rate.
        milestones: epochs after which the rate is multiplied by ``lr_gamma``.
        lr_gamma: the multiplier (0.5: halving).
        epochs: epochs to train (an epoch draws ``repeat`` crop pairs from every training image).
        max_steps: stop after this many steps in total (None: after ``epochs``).
        repeat: crop pairs per training image per epoch.
        ema_decay: EMA decay of the U-Net weights.
        infonce_weight: weight of MoCo's InfoNCE loss.
        harmonize: NAIP → Sentinel-2 harmonisation: ``gamma`` (x^(1/γ) per band), ``histogram``
            (match SEN2NAIP v1's ``sim_histograms``) or ``none``; None: the dataset's default
            (``gamma`` for sen2naip). ``true``/``false`` of earlier versions mean gamma/none.
        pairs: where the LR comes from: ``degrade`` (the HR through the degradation model),
            ``own`` (the published LR/HR pairs of SEN2NAIP v2 containers, no degradation and no
            harmonisation), or None/``auto``: ``own`` when the data carry pairs.
        kernel_size, blur_sigma, noise_max: degradation ranges (SPEC §2 defaults).
        val_every: validate every N epochs (and at the end).
        val_images: at most this many held-aside validation images.
        val_fraction: share of the images held aside (at least one when there are two or more).
        val_steps: DDIM steps of the validation sampling.
        checkpoint_every: keep ``epoch-NNNN`` checkpoints every N epochs (0: never).
        log_every: write a training row to the CSV every N steps.
        grad_clip: clip the gradient norm to this value (0: no clipping).
        amp: mixed precision on CUDA (bf16, or fp16 with loss scaling).
        seed: seed of every random draw.
    """

    model_config: ClassVar[type[SRConfig]] = SRConfig

    model: SRConfig = field(default_factory=SRConfig)
    batch_size: int = 8
    patch_size: int = 256
    lr: float = 1e-4
    milestones: tuple[int, ...] = (200, 400, 600, 800)
    lr_gamma: float = 0.5
    epochs: int = 1000
    max_steps: int | None = None
    repeat: int = 1
    ema_decay: float = 0.999
    infonce_weight: float = 0.05
    harmonize: bool | str | None = None
    pairs: str | None = None
    kernel_size: int = 21
    blur_sigma: tuple[float, float] = (0.2, 4.0)
    noise_max: float = 25.0 / 255.0
    val_every: int = 1
    val_images: int = 4
    val_fraction: float = 0.1
    val_steps: int = 20
    checkpoint_every: int = 50
    log_every: int = 10
    grad_clip: float = 0.0
    amp: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self._check_counts(
            ("batch_size", "patch_size", "epochs", "repeat", "val_every", "val_steps", "log_every"),
            non_negative=("val_images",),
        )
        multiple = SCALE * self.model.unet.fold * 2 ** (self.model.unet.levels - 1)
        require(
            self.patch_size % multiple == 0,
            f"patch_size must be a multiple of {multiple} (×4 SR, U-Net fold and depth), "
            f"got {self.patch_size}",
        )
        require(self.lr > 0 and 0 < self.lr_gamma <= 1, "lr must be > 0 and lr_gamma in (0, 1]")
        require(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        require(
            0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), got {self.val_fraction}"
        )
        require(
            self.infonce_weight >= 0 and self.grad_clip >= 0,
            "infonce_weight and grad_clip must be >= 0",
        )
        require(
            2 <= self.val_steps <= self.model.diffusion.n_timestep,
            "val_steps must be in [2, n_timestep]",
        )
        DegradationSettings(
            kernel_size=self.kernel_size,
            sigma_range=(*self.blur_sigma,),
            noise_max=self.noise_max,
        )
        require(
            self.pairs in (None, "auto", *PAIRS_MODES),
            f"pairs must be own, degrade or auto, got {self.pairs!r}",
        )
        require(
            self.harmonize is None
            or isinstance(self.harmonize, bool)
            or self.harmonize in HARMONISE_MODES,
            f"harmonize must be one of {', '.join(HARMONISE_MODES)}, got {self.harmonize!r}",
        )

    def pairs_mode(self, data_pairs: PairsMode) -> PairsMode:
        """The run's pairs: the config's when set, else the data's (``own`` when it has pairs)."""
        if self.pairs in (None, "auto"):
            return data_pairs
        return next(m for m in PAIRS_MODES if m == self.pairs)

    def harmonise_mode(self, default: HarmoniseMode) -> HarmoniseMode:
        """The harmonisation of the run: the config's, else ``default`` (the dataset's)."""
        if self.harmonize is None:
            return default
        if isinstance(self.harmonize, bool):
            return "gamma" if self.harmonize else "none"
        return next(m for m in HARMONISE_MODES if m == self.harmonize)

    def degradation(self, isotropic: bool = False) -> DegradationSettings:
        """The degradation ranges (isotropic for validation)."""
        return DegradationSettings(
            kernel_size=self.kernel_size,
            sigma_range=(*self.blur_sigma,),
            noise_max=self.noise_max,
            scale=SCALE,
            isotropic=isotropic,
        )


def _preset_large() -> dict[str, Any]:
    return RGBTrainConfig(model=SRConfig.large()).to_dict()


def _preset_small() -> dict[str, Any]:
    return RGBTrainConfig(
        model=SRConfig.small(),
        batch_size=4,
        patch_size=64,
        epochs=200,
        milestones=(100, 150),
        val_images=2,
        val_steps=10,
        checkpoint_every=0,
        log_every=1,
    ).to_dict()


#: ``--config`` presets: ``large`` is the official protocol (SPEC §2), ``small`` a CPU-sized one.
PRESETS = {"large": _preset_large, "small": _preset_small}


def resolve_config(
    spec: str, overrides: Mapping[str, Any], run: RunDir | None = None
) -> RGBTrainConfig:
    """The run's configuration.

    The saved one when resuming (``run``), else ``spec``; then overrides.

    Raises:
        InputError / OutputError: see :func:`~difffusr_cli.train.common.load_config`.
    """
    if run is not None:
        base = run.read_config()
        return RGBTrainConfig.from_mapping(
            common.apply_overrides(base, overrides), str(run.config_file)
        )
    return common.load_config(spec, PRESETS, overrides, RGBTrainConfig.from_mapping)
