"""``difffusr train fusion``: train the three per-group fusion nets on Sentinel-2 (Wald protocol).

At inference a group's branch sees the SR RGB on the 2.5 m grid and the bands of its input groups
(RRDB: the finer groups too) ``OUTPUT_RATIO`` = 4, 8, 24 times coarser, and returns the group's
bands on the 2.5 m grid. Native Sentinel-2 data have no 2.5 m truth, so each branch trains in a
copy of that situation shrunk by ``4·r`` (``r`` = 1, 2, 6 the group's ratio to 10 m, Wald's
protocol): the target is the group's native band (10·r m), the guidance the native RGB degraded
to the target grid (×r), and every input group degraded by ``4·r`` from its native grid
(:func:`~difffusr_cli.degrade.wald_degrade`: MTF-matched Gaussian then box average), then
z-scored and bilinearly upsampled to the target grid exactly as
:class:`~difffusr_cli.models.predictors.FusionPredictor` does at inference. A 1440 m patch (144 px
at 10 m) thus gives the 10 m branch a 144 px target, the 20 m branch 72 px, the 60 m branch 24 px.

That is the authors' protocol (``train.wald_scale = "group"``). ``"uniform"`` trains in the
situation ``difffusr eval fusion`` scores instead, every group shrunk by the same factor 4: the
guidance is the native 10 m RGB, every group is degraded by 4 from its native grid (40, 80,
240 m), a branch returns its bands on the 10 m grid (ratio 4, 8, 24 to its input, as at
inference) and the loss compares them, area-averaged onto the group's native grid, with the native
bands. The 60 m branch then sees 6 × 6 input cells per 1440 m patch instead of one, and what is
optimised is what the left-out scenes are scored on.

Each branch has its own Adam optimizer and an L1 loss in the z-scored space it predicts; with
``train.loss_weights = "ergas"`` each band's term is weighted by ``std / mean`` of its
normalisation statistics, which makes it the band's error relative to its mean reflectance, as
ERGAS (the validation score) weighs it.
Validation, on held-aside patches: ERGAS per group (ratio 4, 8, 24) of the nets, of Gram–Schmidt
(:func:`~difffusr_cli.fusion_baselines.gram_schmidt_fuse`) and of bilinear upsampling given
the same degraded inputs, logged to the CSV; ``best`` has the lowest mean ERGAS of the nets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from difffusr_cli.bands import GroupName
from difffusr_cli.errors import InputError, WeightsError
from difffusr_cli.models.config import FusionArch, FusionConfig
from difffusr_cli.models.fusion import BRANCH_BANDS, OUTPUT_RATIO, FusionNetwork
from difffusr_cli.models.fusion_mtf import MTFNetFusion
from difffusr_cli.train import common
from difffusr_cli.train.common import (
    LineReporter,
    RunDir,
    Stage,
    StepProgress,
    TrainResult,
    log_line,
    require,
)
from difffusr_cli.train.data import S2PatchSampler
from difffusr_cli.train.fusion_wald import (
    GROUP_ORDER,
    METHODS,
    UNIFORM_FACTOR,
    LossWeights,
    WaldScale,
    WaldWorld,
    branch_inputs,
    branch_loss,
    from_branch_space,
    to_branch_space,
    validate,
    wald_world,
)
from difffusr_cli.train.loop import FitPlan, StepResult, Validation, fit

__all__ = [
    "BRANCH_BANDS",
    "LOG_COLUMNS",
    "PATCH_MULTIPLE",
    "UNIFORM_FACTOR",
    "FusionStage",
    "FusionTrainConfig",
    "WaldWorld",
    "branch_inputs",
    "branch_loss",
    "build_net",
    "from_branch_space",
    "presets",
    "resolve_config",
    "s2_preset",
    "to_branch_space",
    "train_fusion",
    "validate",
    "wald_world",
]

#: Patch sides (10 m pixels) must be multiples of this: the 60 m branch degrades 60 m bands by 24.
PATCH_MULTIPLE = 6 * OUTPUT_RATIO["60m"]
_STREAM_BATCH, _STREAM_VAL = 11, 12
#: How fresh branches are initialised (see :class:`FusionTrainConfig`).
FusionStart = Literal["random", "detail-injection"]

LOG_COLUMNS = (
    "step",
    "epoch",
    "phase",
    "lr",
    "loss_10m",
    "loss_20m",
    "loss_60m",
    "steps_per_s",
    *(f"ergas_{g}_{m}" for m in METHODS for g in GROUP_ORDER),
    *(f"ergas_mean_{m}" for m in METHODS),
    "seconds",
)


@dataclass(frozen=True)
class FusionTrainConfig(common.ModelTrainConfig):
    """Hyperparameters of ``train fusion`` (``[train]``) and the architecture (``[model]``).

    Attributes:
        model: the three branches' architecture (``arch`` rrdb or mtf).
        batch_size: patches per step.
        patch_size: patch side in 10 m pixels (multiple of 144; 144 = 1440 m).
        lr: Adam learning rate of each branch.
        milestones, lr_gamma: multi-step schedule (epochs; empty: constant rate).
        epochs: epochs to train.
        patches_per_epoch: random patches that make an epoch.
        max_steps: stop after this many steps in total (None: after ``epochs``).
        val_patches: held-aside validation patches.
        val_fraction: share of the products (several) or rows (one) held aside for validation.
        max_nodata: skip patches with more invalid pixels than this in any group.
        start: ``"random"`` (default initialisation) or ``"detail-injection"`` (MTF only: the
            branches start as unit-gain detail injection, i.e. MTF-GLP, or exactly the local
            regression fusion with ``model.injection = "regression"``;
            :meth:`~difffusr_cli.models.fusion_mtf.MTFNetFusion.start_as_detail_injection`).
        loss_weights: ``"equal"`` (L1 of the z-scores) or ``"ergas"`` (each band's L1 weighted
            by ``std / mean``: its error relative to its mean reflectance, as ERGAS weighs it).
        wald_scale: ``"group"`` (the authors' protocol, shrink by ``4·r``) or ``"uniform"``
            (shrink every group by 4, as ``eval fusion`` scores); see the module docstring.
        val_every, checkpoint_every, log_every, grad_clip, amp, seed: as for ``train rgb``.
    """

    model_config: ClassVar[type[FusionConfig]] = FusionConfig

    model: FusionConfig = field(default_factory=FusionConfig)
    batch_size: int = 4
    patch_size: int = 144
    lr: float = 1e-4
    milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.5
    epochs: int = 50
    patches_per_epoch: int = 2000
    max_steps: int | None = None
    val_patches: int = 32
    val_fraction: float = 0.2
    max_nodata: float = 0.05
    wald_scale: WaldScale = "group"
    start: FusionStart = "random"
    loss_weights: LossWeights = "equal"
    val_every: int = 1
    checkpoint_every: int = 10
    log_every: int = 10
    grad_clip: float = 0.0
    amp: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self._check_counts(
            (
                "batch_size",
                "patch_size",
                "epochs",
                "patches_per_epoch",
                "val_patches",
                "val_every",
                "log_every",
            )
        )
        require(
            self.patch_size % PATCH_MULTIPLE == 0,
            f"patch_size must be a multiple of {PATCH_MULTIPLE} 10 m pixels "
            "(the 60 m branch degrades "
            f"60 m bands by 24), got {self.patch_size}",
        )
        require(self.lr > 0 and 0 < self.lr_gamma <= 1, "lr must be > 0 and lr_gamma in (0, 1]")
        require(
            0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}"
        )
        require(0 <= self.max_nodata < 1, f"max_nodata must be in [0, 1), got {self.max_nodata}")
        require(
            self.wald_scale in get_args(WaldScale),
            f"wald_scale must be group or uniform, got {self.wald_scale!r}",
        )
        require(
            self.start in get_args(FusionStart),
            f"start must be random or detail-injection, got {self.start!r}",
        )
        require(
            self.loss_weights in get_args(LossWeights),
            f"loss_weights must be equal or ergas, got {self.loss_weights!r}",
        )
        require(
            self.start == "random" or self.model.arch == "mtf",
            "start = detail-injection needs the mtf architecture",
        )
        require(self.grad_clip >= 0, "grad_clip must be >= 0")


def _preset(arch: FusionArch, size: str) -> dict[str, Any]:
    if size == "large":
        model = FusionConfig.large_mtf() if arch == "mtf" else FusionConfig.large_rrdb()
        return FusionTrainConfig(model=model).to_dict()
    model = FusionConfig(arch, 16, 2, 8)
    return FusionTrainConfig(
        model=model,
        batch_size=4,
        epochs=20,
        patches_per_epoch=64,
        val_patches=8,
        checkpoint_every=0,
        log_every=1,
    ).to_dict()


def s2_preset() -> dict[str, Any]:
    """The ``fusion-s2`` recipe (docs/training.md): local regression fusion, refined.

    MTF branches (nf 8, nb 2, gc 4) on the local regression detail (``injection =
    "regression"``), started as that classical fusion,
    trained in ``eval fusion``'s situation (``wald_scale = "uniform"``) with ERGAS-weighted L1,
    160 steps of 4 patches; ``best`` by validation ERGAS on the held-aside product(s).
    """
    return FusionTrainConfig(
        model=FusionConfig("mtf", 8, 2, 4, injection="regression"),
        batch_size=4,
        lr=1e-3,
        epochs=10,
        patches_per_epoch=64,
        val_patches=32,
        wald_scale="uniform",
        start="detail-injection",
        loss_weights="ergas",
        checkpoint_every=0,
        log_every=4,
    ).to_dict()


def presets(arch: FusionArch) -> dict[str, Any]:
    """``--config`` presets: ``large`` (the authors' sizes), ``small`` (CPU-sized), ``s2``.

    ``large`` and ``small`` use ``arch``; ``s2`` (the recipe of the shipped ``fusion-s2``) is
    always MTF.
    """
    return {
        "large": lambda: _preset(arch, "large"),
        "small": lambda: _preset(arch, "small"),
        "s2": s2_preset,
    }


def resolve_config(
    spec: str, overrides: Mapping[str, Any], arch: str | None = None, run: RunDir | None = None
) -> FusionTrainConfig:
    """The run's configuration.

    The saved one when resuming (``run``), else ``spec``; then overrides.

    ``arch`` (``--arch``) picks the preset's architecture and overrides ``model.arch`` of a file.
    """
    overrides = dict(overrides)
    layout: FusionArch = "mtf" if spec == "s2" else "rrdb"
    if arch is not None:
        if arch == "mtf":
            layout = "mtf"
        elif arch != "rrdb":
            raise InputError(f"--arch {arch!r}: expected rrdb or mtf")
        overrides["model.arch"] = arch
    if run is not None:
        base = run.read_config()
        return FusionTrainConfig.from_mapping(
            common.apply_overrides(base, overrides), str(run.config_file)
        )
    return common.load_config(spec, presets(layout), overrides, FusionTrainConfig.from_mapping)


def _quicklook(run: RunDir, step: int, previews: Mapping[GroupName, Mapping[str, Tensor]]) -> Path:
    rows = []
    for group in GROUP_ORDER:
        panels = [previews[group][k][0].numpy() for k in ("bilinear", "net", "target")]
        # three bands of the group as a false-colour image (the 60 m group repeats B09)
        pick = [0, 1, 2] if panels[0].shape[0] >= 3 else [1, 1, 0]
        rows.append(common.to_uint8([p[pick] for p in panels]))
    return common.write_png(run.quicklook(step), common.mosaic(rows))


# ---------------------------------------------------------------------------------------------
# The run


def _to_tensors(
    batch: Mapping[GroupName, np.ndarray], device: torch.device
) -> dict[GroupName, Tensor]:
    return {g: torch.from_numpy(a).to(device) for g, a in batch.items()}


def build_net(
    config: FusionTrainConfig, init: str | None, report: LineReporter
) -> tuple[FusionNetwork, FusionTrainConfig]:
    """Fresh networks, or networks initialised from ``init`` (whose architecture then wins)."""
    if init is None:
        common.seed_global(config.seed, -1)
        fresh = FusionNetwork(config.model)
        if config.start == "detail-injection":
            for group in GROUP_ORDER:
                branch = fresh.branch(group)
                assert isinstance(branch, MTFNetFusion)
                branch.start_as_detail_injection()
        return fresh, config
    from difffusr_cli.api import load_network
    from difffusr_cli.weights import load_weights, resolve

    path = resolve(init, "fusion")
    loaded = load_weights(path)
    if loaded.kind != "fusion" or not isinstance(loaded.config, FusionConfig):
        raise WeightsError(f"--init {init}: {path} holds a {loaded.kind} model, not a fusion model")
    if loaded.config != config.model:
        report(
            f"--init {init}: using its architecture ({loaded.config.arch}) "
            "instead of the config's [model]"
        )
        config = replace(config, model=loaded.config)
    net = load_network(loaded, origin=str(path))
    assert isinstance(net, FusionNetwork)
    return net, config


def train_fusion(
    config: FusionTrainConfig,
    data: S2PatchSampler,
    run: RunDir,
    *,
    device: str = "auto",
    init: str | None = None,
    resume: bool = False,
    progress: StepProgress | None = None,
    report: LineReporter = log_line,
) -> TrainResult:
    """Train the three fusion branches; checkpoints, logs and quicklooks go to ``run``.

    Arguments as :func:`difffusr_cli.train.rgb.train_rgb`; ``data`` samples the patches (its
    ``patch`` must equal ``config.patch_size``). ``TrainResult.losses`` holds the mean of the three
    branch losses per step; ``best_metric`` is the best mean ERGAS of the nets.
    """
    from difffusr_cli.device import describe, select_device

    target = select_device(device)
    if resume and init is not None:
        raise InputError(
            "--init and --resume exclude each other (a resumed run keeps its own weights)"
        )
    if data.patch != config.patch_size:
        raise InputError(
            f"the patch sampler cuts {data.patch} px patches but patch_size is {config.patch_size}"
        )
    for line in data.summary():
        report(line)
    state = run.load_state() if resume else None
    net, config = build_net(config, None if resume else init, report)
    net.to(target).train()
    precision = common.Precision(target, config.amp)
    stage = FusionStage(net, config, data, precision, target)

    steps_per_epoch = max(1, config.patches_per_epoch // config.batch_size)
    total = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    start_step = 0 if state is None else int(state["step"])
    n_params = sum(p.numel() for p in net.parameters())
    report(
        f"device {describe(target)}, precision {precision.name}; fusion-{config.model.arch}, "
        f"{n_params / 1e6:.2f} M parameters; {steps_per_epoch} step(s) per epoch, "
        f"steps {start_step}–{total}"
    )
    _, val_rng = common.step_rngs(config.seed, _STREAM_VAL, 0)
    stage.set_validation(run, _to_tensors(data.batch(val_rng, config.val_patches, "val"), target))
    # the run folder appears only now that data, options and weights have been checked
    run.create()
    run.write_config(config.to_dict())
    plan = FitPlan(
        title="train fusion",
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
            "trained_by": "difffusr train fusion",
            "data": data.names,
            "trained_on": data.scene_ids("train"),
            "validated_on": data.scene_ids("val"),
            "wald_scale": config.wald_scale,
            "out": str(run.path),
        },
    )
    return fit(stage, plan, run, precision, state=state, progress=progress)


class FusionStage:
    """The fusion stage's hooks for :func:`~difffusr_cli.train.loop.fit` (one Adam per branch)."""

    kind: Stage = "fusion"
    higher_is_better = False

    def __init__(
        self,
        net: FusionNetwork,
        config: FusionTrainConfig,
        data: S2PatchSampler,
        precision: common.Precision,
        device: torch.device,
    ) -> None:
        self.network, self.config, self.data = net, config, data
        self.precision, self.device = precision, device
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            g: torch.optim.Adam(net.branch(g).parameters(), lr=config.lr) for g in GROUP_ORDER
        }

    def set_validation(self, run: RunDir, native: Mapping[GroupName, Tensor]) -> None:
        """The fixed validation patches (on the device) and where their quicklooks go."""
        self.run, self.val_native = run, native

    def train_step(self, step: int) -> StepResult:
        """One Adam step of each branch on a Wald batch; the loss is the branches' mean L1."""
        config, net = self.config, self.network
        common.seed_global(config.seed, step)
        _, rng = common.step_rngs(config.seed, _STREAM_BATCH, step)
        native = _to_tensors(self.data.batch(rng, config.batch_size, "train"), self.device)
        step_losses: dict[str, float] = {}
        for group in GROUP_ORDER:
            world = wald_world(native, group, config.wald_scale)
            optimizer = self.optimizers[group]
            optimizer.zero_grad(set_to_none=True)
            with self.precision.autocast():
                guidance, ms = branch_inputs(net, world)
                predicted = world.to_target_grid(net.branch(group)(guidance, ms).float())
                target = to_branch_space(world.target, group)
                loss = branch_loss(predicted, target, group, config.loss_weights)
            parameters = list(net.branch(group).parameters())
            self.precision.step(loss, optimizer, config.grad_clip or None, parameters)
            step_losses[f"loss_{group}"] = common.finite_or_raise(
                float(loss.detach()), f"the {group} loss", step
            )
        return StepResult(float(np.mean(list(step_losses.values()))), step_losses)

    def validate(self, done: int) -> Validation:
        """Score the nets on the validation patches (mean ERGAS decides ``best``)."""
        config = self.config
        scores, previews = validate(
            self.network, self.val_native, config.batch_size, config.wald_scale
        )
        _quicklook(self.run, done, previews)
        return Validation(scores["ergas_mean_net"], scores, scores)

    def optimizer_state(self) -> dict[str, Any]:
        """``{"optimizers": {group: state dict}}``."""
        return {"optimizers": {g: o.state_dict() for g, o in self.optimizers.items()}}

    def load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`optimizer_state` (``state`` is the whole checkpoint)."""
        for g, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][g])
