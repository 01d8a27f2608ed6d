"""``difffusr train rgb``: train or fine-tune the RGB diffusion super-resolution model (SPEC §2).

One step, for a batch of high-resolution images (2.5 m, reflectance):

1. Two random crops per image (``patch_size`` px, independent flips/rotations) — MoCo's positive
   pair; optional harmonisation (γ drawn per image) and one degradation per image
   (:func:`~difffusr_cli.degrade.sample_degradation`: 21×21 anisotropic Gaussian blur with
   θ over [0, π), antialiased bicubic ×4, Gaussian noise) shared by both crops. With published
   pairs (``pairs = own``, SEN2NAIP v2) the LR crops are cut from the pair's own LR instead
   (:mod:`.rgb_batches`), without harmonisation or degradation.
2. Everything in the networks' [−1, 1] space. ``L1(encoder ×4 head(lr₁), hr₁)`` +
   ``MSE(U-Net x0 prediction, hr₁)`` + ``infonce_weight · InfoNCE(MoCo(lr₁, lr₂))``, the U-Net
   seeing ``hr₁`` noised at a continuous level √ᾱ drawn uniformly between √ᾱ_t and √ᾱ_{t−1}
   (t uniform per sample) and conditioned on the RRDB context and the degradation feature.
3. Adam (``lr``; halved — ``lr_gamma`` — at each ``milestones`` epoch), then the EMA U-Net
   (``ema.``) follows the trained one (``model.``) with ``ema_decay``; it starts as a copy.

Validation (every ``val_every`` epochs and at the end): the held-aside images' centre crops with
a fixed *isotropic* degradation (with published pairs: their own LR centre crops), sampled with
the EMA weights by the inference code (:class:`~difffusr_cli.models.predictors.RGBSuperResolver`,
``val_steps`` DDIM steps, fixed seed);
PSNR against the HR crop decides ``best``. Checkpoints hold the full official layout, so
``superres --rgb-model OUT/best.safetensors`` uses them directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from difffusr_cli.errors import InputError, WeightsError
from difffusr_cli.models.config import SRConfig
from difffusr_cli.models.sr import DiffusionSR
from difffusr_cli.train import common
from difffusr_cli.train.common import (
    LineReporter,
    RunDir,
    Stage,
    StepProgress,
    TrainResult,
    log_line,
)
from difffusr_cli.train.hr_data import HarmoniseMode, HRDataset
from difffusr_cli.train.loop import FitPlan, StepResult, Validation, fit
from difffusr_cli.train.rgb_batches import (
    _STREAM_BATCH,
    RGBBatch,
    make_batch,
    make_validation_set,
)
from difffusr_cli.train.rgb_config import PRESETS, SCALE, RGBTrainConfig, resolve_config

__all__ = [
    "PRESETS",
    "SCALE",
    "RGBBatch",
    "RGBTrainConfig",
    "make_batch",
    "make_validation_set",
    "resolve_config",
    "train_rgb",
]

LOG_COLUMNS = (
    "step",
    "epoch",
    "phase",
    "lr",
    "loss",
    "l1",
    "mse",
    "infonce",
    "steps_per_s",
    "val_psnr",
    "val_psnr_bicubic",
    "seconds",
)


#: How the summary names each harmonisation.
_HARMONISE_WORDS: dict[str, str] = {
    "gamma": "gamma (x^(1/γ) per band, γ drawn per image)",
    "histogram": "histogram matching to the sim_histograms of each ROI era",
    "none": "off",
}


# ---------------------------------------------------------------------------------------------
# The objective


@dataclass(frozen=True)
class RGBLosses:
    """The loss terms of one step (scalar tensors): ``total = l1 + mse + w·infonce``."""

    total: Tensor
    l1: Tensor
    mse: Tensor
    infonce: Tensor


def draw_noise_levels(model: DiffusionSR, batch: int, generator: torch.Generator) -> Tensor:
    """``(B,)`` continuous √ᾱ, uniform between √ᾱ_t and √ᾱ_{t−1} for t uniform per sample."""
    schedule = model.schedule()
    t = torch.randint(schedule.n, (batch,), generator=generator)
    low = schedule.sqrt_alphas_cumprod.detach().cpu()[t]
    high = schedule.sqrt_alphas_cumprod_prev.detach().cpu()[t]
    return low + torch.rand(batch, generator=generator) * (high - low)


def rgb_losses(
    model: DiffusionSR, batch: RGBBatch, noise_level: Tensor, noise: Tensor, infonce_weight: float
) -> RGBLosses:
    """The training objective of one batch (model in train mode, tensors on the model's device).

    Args:
        model: the diffusion model; ``E.contrast`` updates the MoCo key encoder and queue.
        batch: reflectance crops.
        noise_level: ``(B,)`` √ᾱ of each sample.
        noise: ``(B, 3, P, P)`` standard normal noise.
        infonce_weight: weight of the InfoNCE term.
    """
    hr = (batch.hr - 0.5) / 0.5
    lr = (batch.lr - 0.5) / 0.5
    lr_key = (batch.lr_key - 0.5) / 0.5
    contrast = model.E.contrast(lr, lr_key)
    head, context = model.encoder(lr)
    level = noise_level.view(-1, 1, 1, 1)
    noisy = level * hr + torch.sqrt(1.0 - level**2) * noise
    x0 = model.model(noisy, noise_level.view(-1, 1), context, contrast.fea)
    l1 = F.l1_loss(head.float(), hr)
    mse = F.mse_loss(x0.float(), hr)
    infonce = F.cross_entropy(contrast.logits.float(), contrast.labels)
    return RGBLosses(total=l1 + mse + infonce_weight * infonce, l1=l1, mse=mse, infonce=infonce)


def trainable_parameters(model: DiffusionSR) -> list[torch.nn.Parameter]:
    """Parameters the optimizer updates: RRDB encoder, MoCo query encoder, trained U-Net."""
    return [
        p
        for name, p in model.named_parameters()
        if p.requires_grad and not name.startswith(("ema.", "E.encoder_k."))
    ]


# ---------------------------------------------------------------------------------------------
# Validation


@torch.no_grad()
def validate(
    model: DiffusionSR, hr: Tensor, lr: Tensor, config: RGBTrainConfig
) -> tuple[float, float, Tensor]:
    """PSNR (dB) of the EMA model's samples and of bicubic upsampling on the validation pairs.

    Samples through :class:`~difffusr_cli.models.predictors.RGBSuperResolver` (the inference
    code), ``val_steps`` DDIM steps, seed ``config.seed``. Leaves ``model`` in train mode.

    Returns:
        ``(psnr_sr, psnr_bicubic, sr)`` with ``sr`` ``(V, 3, P, P)`` reflectance (CPU).
    """
    from difffusr_cli.metrics import aggregate_scores
    from difffusr_cli.models.predictors import RGBSuperResolver

    resolver = RGBSuperResolver(model)
    try:
        parts = [
            resolver.super_resolve(
                lr[i : i + config.batch_size], steps=config.val_steps, seed=config.seed + i
            )
            for i in range(0, lr.shape[0], config.batch_size)
        ]
    finally:
        model.train()
    sr = torch.cat(parts).to(hr.device)
    bicubic = F.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False)
    psnr = aggregate_scores(sr.clamp(0, 1), hr, ratio=SCALE).psnr
    psnr_bicubic = aggregate_scores(bicubic.clamp(0, 1), hr, ratio=SCALE).psnr
    return float(psnr), float(psnr_bicubic), sr.cpu()


def _quicklook(run: RunDir, step: int, hr: Tensor, lr: Tensor, sr: Tensor) -> Path:
    lr_up = F.interpolate(lr[:1], scale_factor=SCALE, mode="nearest")[0].numpy()
    panels = common.to_uint8([lr_up, sr[0].numpy(), hr[0].numpy()])
    return common.write_png(run.quicklook(step), common.mosaic([panels]))


# ---------------------------------------------------------------------------------------------
# The run


def split_indices(count: int, config: RGBTrainConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(train, val)`` image indices: the last images are held aside (none when there is one)."""
    if count < 2 or config.val_images == 0:
        return tuple(range(count)), ()
    n_val = min(config.val_images, count - 1, max(1, round(config.val_fraction * count)))
    return tuple(range(count - n_val)), tuple(range(count - n_val, count))


def build_model(
    config: RGBTrainConfig, init: str | None, report: LineReporter
) -> tuple[DiffusionSR, RGBTrainConfig]:
    """A fresh model, or one initialised from ``init``.

    Fresh: EMA = copy of the trained U-Net, cosine schedule. ``init`` is a weights name or path;
    its architecture replaces ``config.model``.
    """
    if init is None:
        common.seed_global(config.seed, -1)
        model = DiffusionSR(config.model)
        common.copy_weights(model.ema, model.model)
        model.schedule_from_scratch()
        return model, config
    from difffusr_cli.api import load_network
    from difffusr_cli.weights import load_weights, resolve

    path = resolve(init, "rgb")
    loaded = load_weights(path)
    if loaded.kind != "rgb" or not isinstance(loaded.config, SRConfig):
        raise WeightsError(f"--init {init}: {path} holds a {loaded.kind} model, not an RGB model")
    if loaded.config != config.model:
        report(f"--init {init}: using its architecture instead of the config's [model]")
        config = replace(config, model=loaded.config)
    network = load_network(loaded, origin=str(path))
    assert isinstance(network, DiffusionSR)
    return network, config


def train_rgb(
    config: RGBTrainConfig,
    data: HRDataset,
    run: RunDir,
    *,
    device: str = "auto",
    init: str | None = None,
    resume: bool = False,
    progress: StepProgress | None = None,
    report: LineReporter = log_line,
) -> TrainResult:
    """Train the RGB diffusion model; checkpoints, logs and quicklooks go to ``run``.

    Args:
        config: hyperparameters and architecture (the saved ones when resuming).
        data: the high-resolution images.
        run: the output folder.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        init: fine-tune from these weights (name or path) instead of a random start.
        resume: continue the run in ``run`` from its ``last`` checkpoint and optimizer state.
        progress: receives every step (see :class:`~difffusr_cli.train.common.StepProgress`;
            the CLI draws a bar on stderr); None reports nothing.
        report: receives the summary lines.

    Raises:
        InputError: bad data or device; OutputError: the run folder; WeightsError: ``init``.
    """
    from difffusr_cli.device import describe, select_device

    target = select_device(device)
    if resume and init is not None:
        raise InputError(
            "--init and --resume exclude each other (a resumed run keeps its own weights)"
        )
    train_idx, val_idx = split_indices(len(data), config)
    pairs = config.pairs_mode(data.pairs)
    if pairs != data.pairs:
        raise InputError(
            f"pairs = {pairs}, but {data.root} was opened with pairs = {data.pairs} "
            f"(open_hr_dataset(..., pairs={pairs!r}))"
        )
    config = replace(config, pairs=pairs)
    harmonized = config.harmonise_mode("none" if pairs == "own" else data.harmonise_default)
    if pairs == "own" and harmonized != "none":
        raise InputError(
            f"--harmonize {harmonized}: published pairs (--pairs own) are used as they are; "
            "harmonisation needs --pairs degrade"
        )
    if harmonized == "histogram":
        missing = data.missing_histograms()
        if missing:
            raise InputError(
                f"--harmonize histogram: {len(missing)} of {len(data)} tile(s) have no "
                f"sim_histograms (first: {missing[0]}); it needs SEN2NAIP v1 tiles with their "
                "era's metadata.json"
            )
    for line in data.summary():
        report(line)
    report(
        f"training on {len(train_idx)} image(s), validating on "
        + (
            f"{len(val_idx)} held-aside image(s)"
            if val_idx
            else "a crop of the training image (only one image)"
        )
        + f"; harmonisation {_HARMONISE_WORDS[harmonized]}; LR "
        + (
            "from the published pairs (no degradation)"
            if pairs == "own"
            else "by the degradation model"
        )
    )

    state = run.load_state() if resume else None
    model, config = build_model(config, None if resume else init, report)
    for p in model.ema.parameters():
        p.requires_grad_(False)
    model.to(target).train()
    precision = common.Precision(target, config.amp)
    stage = RGBStage(model, config, data, train_idx, harmonized, precision, target)
    val_hr, val_lr = make_validation_set(data, val_idx or train_idx[:1], config, harmonized)
    stage.set_validation(run, val_hr, val_lr)

    steps_per_epoch = math.ceil(len(train_idx) * config.repeat / config.batch_size)
    total = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    start_step = 0 if state is None else int(state["step"])
    n_params = sum(p.numel() for p in stage.parameters) / 1e6
    report(
        f"device {describe(target)}, precision {precision.name}; {n_params:.2f} M trained "
        f"parameters; {steps_per_epoch} step(s) per epoch, steps {start_step}–{total}"
    )
    # the run folder appears only now that data, options and weights have been checked
    run.create()
    run.write_config(config.to_dict())
    plan = FitPlan(
        title="train rgb",
        steps_per_epoch=steps_per_epoch,
        total=total,
        milestones=config.milestones,
        lr_gamma=config.lr_gamma,
        val_every=config.val_every,
        checkpoint_every=config.checkpoint_every,
        log_every=config.log_every,
        log_columns=LOG_COLUMNS,
        model_config=config.model,
        source={
            "trained_by": "difffusr train rgb",
            "data": f"{data.kind}:{data.root}",
            "harmonize": harmonized,
            "pairs": pairs,
            "out": str(run.path),
        },
    )
    return fit(stage, plan, run, precision, state=state, progress=progress)


class RGBStage:
    """The RGB stage's hooks for :func:`~difffusr_cli.train.loop.fit`."""

    kind: Stage = "rgb"
    higher_is_better = True

    def __init__(
        self,
        model: DiffusionSR,
        config: RGBTrainConfig,
        data: HRDataset,
        train_idx: tuple[int, ...],
        harmonized: HarmoniseMode,
        precision: common.Precision,
        device: torch.device,
    ) -> None:
        self.network = model
        self.config, self.data, self.train_idx = config, data, train_idx
        self.harmonized, self.precision, self.device = harmonized, precision, device
        self.parameters = trainable_parameters(model)
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "main": torch.optim.Adam(self.parameters, lr=config.lr)
        }

    def set_validation(self, run: RunDir, hr: Tensor, lr: Tensor) -> None:
        """The fixed validation pairs (CPU) and where their quicklooks go."""
        self.run, self.val_hr, self.val_lr = run, hr, lr

    def train_step(self, step: int) -> StepResult:
        config, model, target = self.config, self.network, self.device
        common.seed_global(config.seed, step)
        batch = make_batch(self.data, self.train_idx, config, self.harmonized, step)
        generator, _ = common.step_rngs(config.seed, _STREAM_BATCH + 100, step)
        level = draw_noise_levels(model, config.batch_size, generator)
        noise = torch.randn(batch.hr.shape, generator=generator)
        on_device = RGBBatch(
            *(t.to(target, non_blocking=True) for t in (batch.hr, batch.lr, batch.lr_key))
        )
        optimizer = self.optimizers["main"]
        optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            terms = rgb_losses(
                model, on_device, level.to(target), noise.to(target), config.infonce_weight
            )
        self.precision.step(terms.total, optimizer, config.grad_clip or None, self.parameters)
        common.ema_update(model.ema, model.model, config.ema_decay)
        value = common.finite_or_raise(float(terms.total.detach()), "the training loss", step)
        parts = (terms.total, terms.l1, terms.mse, terms.infonce)
        values = [float(t.detach().float().cpu()) for t in parts]
        return StepResult(value, dict(zip(("loss", "l1", "mse", "infonce"), values, strict=True)))

    def validate(self, done: int) -> Validation:
        target = self.device
        psnr, psnr_bicubic, sr = validate(
            self.network, self.val_hr.to(target), self.val_lr.to(target), self.config
        )
        _quicklook(self.run, done, self.val_hr, self.val_lr, sr)
        row = {"val_psnr": psnr, "val_psnr_bicubic": psnr_bicubic}
        return Validation(psnr, row, {"val_psnr": psnr})

    def optimizer_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizers["main"].state_dict()}

    def load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        self.optimizers["main"].load_state_dict(state["optimizer"])
