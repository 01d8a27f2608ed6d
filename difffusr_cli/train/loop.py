"""The one training loop of both stages: :func:`fit` drives a :class:`TrainingStage`.

The loop owns what ``train rgb`` and ``train fusion`` share; a stage supplies the hooks that
differ:

==================  =========================================================================
loop (here)         stage hook
==================  =========================================================================
resume              :meth:`TrainingStage.load_optimizer_state` (weights are loaded here)
one step            :meth:`TrainingStage.train_step` → :class:`StepResult` (loss + log terms)
schedule            ``torch.optim.lr_scheduler.MultiStepLR`` per optimizer, stepped per epoch
logging             the mean of the step terms every ``log_every`` steps (``phase=train``)
validation          :meth:`TrainingStage.validate` every ``val_every`` epochs and at the end
checkpoints         ``best`` (by :attr:`TrainingStage.higher_is_better`), ``last`` + the one
                    atomic resumable checkpoint, ``epoch-NNNN`` every ``checkpoint_every`` epochs
==================  =========================================================================
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from difffusr_cli.errors import OutputError
from difffusr_cli.train.common import Precision, StepProgress
from difffusr_cli.train.run_dir import CsvLog, RunDir, Stage, TrainResult


@dataclass(frozen=True)
class StepResult:
    """One optimisation step's outcome.

    Attributes:
        loss: the value shown on the progress bar and kept in ``TrainResult.losses``.
        terms: log column → value of this step; the log writes their mean over the window.
    """

    loss: float
    terms: Mapping[str, float]


@dataclass(frozen=True)
class Validation:
    """One validation's outcome.

    Attributes:
        metric: the value that decides ``best`` (PSNR dB for RGB, mean ERGAS for fusion).
        row: log column → value of the ``phase=val`` row.
        record: extra values stored in ``best.json``'s ``source`` when this validation wins.
    """

    metric: float
    row: Mapping[str, float]
    record: Mapping[str, float] = field(default_factory=dict)


class TrainingStage(Protocol):
    """What :func:`fit` needs from a stage (network on its device, optimizers built)."""

    @property
    def kind(self) -> Stage:
        """``rgb`` or ``fusion`` (the kind of the weights exports)."""
        ...

    @property
    def network(self) -> nn.Module:
        """The trained network (its state dict is what the checkpoints hold)."""
        ...

    @property
    def optimizers(self) -> Mapping[str, torch.optim.Optimizer]:
        """Name → optimizer; the loop builds one ``MultiStepLR`` per entry."""
        ...

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger :attr:`Validation.metric` is better."""
        ...

    def train_step(self, step: int) -> StepResult:
        """Run step ``step`` (0-based): a function of the seed and ``step`` only."""
        ...

    def validate(self, done: int) -> Validation:
        """Validate after ``done`` steps (write the quicklook of that step too)."""
        ...

    def optimizer_state(self) -> dict[str, Any]:
        """The optimizers' state dicts, as stored in the checkpoint."""
        ...

    def load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`optimizer_state` (``state`` is the whole checkpoint)."""
        ...


@dataclass(frozen=True)
class FitPlan:
    """The step budget and cadences of a run.

    Attributes:
        title: progress bar label (``train rgb``).
        steps_per_epoch: optimisation steps per epoch.
        total: the step to stop at (``epochs × steps_per_epoch``, capped by ``max_steps``).
        milestones, lr_gamma: the multi-step schedule (epochs, multiplier).
        val_every, checkpoint_every, log_every: cadences (epochs, epochs (0: never), steps).
        log_columns: the CSV header.
        model_config: the architecture written with every weights export.
        source: provenance written into every weights export (``step`` is added).
    """

    title: str
    steps_per_epoch: int
    total: int
    milestones: Sequence[int]
    lr_gamma: float
    val_every: int
    checkpoint_every: int
    log_every: int
    log_columns: Sequence[str]
    model_config: Any
    source: Mapping[str, Any]


def make_schedulers(
    optimizers: Mapping[str, torch.optim.Optimizer], milestones: Sequence[int], gamma: float
) -> dict[str, torch.optim.lr_scheduler.MultiStepLR]:
    """One ``MultiStepLR`` per optimizer, stepped once per completed epoch.

    During epoch ``e`` (0-based) the rate is ``lr · gamma^(number of milestones ≤ e)``.
    """
    return {
        name: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=gamma)
        for name, opt in optimizers.items()
    }


def _restore(
    stage: TrainingStage,
    schedulers: Mapping[str, torch.optim.lr_scheduler.MultiStepLR],
    precision: Precision,
    state: Mapping[str, Any],
    plan: FitPlan,
    run: RunDir,
) -> None:
    """Load a resumable checkpoint into the stage, its schedulers and the loss scaler."""
    saved_model = state.get("model")
    if saved_model is not None and saved_model != plan.model_config.to_dict():
        raise OutputError(f"{run.state_file()}: its architecture differs from {run.config_file}")
    try:
        stage.network.load_state_dict(state["weights"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise OutputError(f"{run.state_file()}: weights do not fit the network ({first})") from None
    stage.load_optimizer_state(state)
    precision.load_state_dict(state.get("scaler", {}))
    if "schedulers" in state:
        for name, scheduler in schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        return
    # a checkpoint of an earlier version: replay the completed epochs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(int(state["step"]) // plan.steps_per_epoch):
            for scheduler in schedulers.values():
                scheduler.step()


def fit(
    stage: TrainingStage,
    plan: FitPlan,
    run: RunDir,
    precision: Precision,
    *,
    state: Mapping[str, Any] | None = None,
    progress: StepProgress | None = None,
) -> TrainResult:
    """Train ``stage`` to ``plan.total`` steps, from step 0 or from a checkpoint.

    The run folder must exist and hold ``train_config.json``.

    Args:
        stage: the network, its optimizers and the step/validation hooks.
        plan: step budget, schedule and cadences.
        run: the run folder (log, checkpoints, weights exports).
        precision: mixed precision and loss scaling.
        state: the resumable checkpoint to continue from (``--resume``), or None.
        progress: called before the first step and after every step (see
            :class:`~difffusr_cli.train.common.StepProgress`); None reports nothing.

    Returns:
        The steps and epochs done, the ``last``/``best`` exports and every step's loss.

    Raises:
        InputError: a loss became NaN/inf (from the stage); OutputError: the run folder.
    """
    schedulers = make_schedulers(stage.optimizers, plan.milestones, plan.lr_gamma)
    start_step, best_metric = 0, None
    if state is not None:
        _restore(stage, schedulers, precision, state, plan, run)
        start_step, best_metric = int(state["step"]), state.get("best_metric")
    log = CsvLog(run.log_file, plan.log_columns, resume_step=None if state is None else start_step)
    first_optimizer = next(iter(stage.optimizers.values()))

    def save(tag: str, done: int, extra: Mapping[str, Any] = {}) -> None:  # noqa: B006
        record = {**plan.source, "step": done, **extra}
        run.save_weights(tag, stage.network, stage.kind, plan.model_config, record)

    losses: list[float] = []
    window: list[Mapping[str, float]] = []
    tick = started = time.perf_counter()
    if progress is not None:
        progress(plan.title, start_step, plan.total)
    for step in range(start_step, plan.total):
        epoch = step // plan.steps_per_epoch
        rate = float(first_optimizer.param_groups[0]["lr"])
        result = stage.train_step(step)
        losses.append(result.loss)
        window.append(result.terms)
        done = step + 1
        if progress is not None:
            progress(plan.title, done, plan.total, loss=result.loss, epoch=epoch)
        if done % plan.log_every == 0 or done == plan.total:
            now = time.perf_counter()
            means = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            log.write(
                step=done,
                epoch=epoch,
                phase="train",
                lr=rate,
                **means,
                steps_per_s=len(window) / max(now - tick, 1e-9),
                seconds=now - started,
            )
            window, tick = [], now
        end_of_epoch = done % plan.steps_per_epoch == 0
        if not (end_of_epoch or done == plan.total):
            continue
        epochs_done = math.ceil(done / plan.steps_per_epoch)
        if end_of_epoch:
            for scheduler in schedulers.values():
                scheduler.step()
        if epochs_done % plan.val_every == 0 or done == plan.total:
            checked = stage.validate(done)
            log.write(
                step=done,
                epoch=epoch,
                phase="val",
                seconds=time.perf_counter() - started,
                **checked.row,
            )
            better = best_metric is None or (
                checked.metric > best_metric
                if stage.higher_is_better
                else checked.metric < best_metric
            )
            if better:
                best_metric = checked.metric
                save("best", done, checked.record)
        run.save_state(
            {
                "step": done,
                "best_metric": best_metric,
                "model": plan.model_config.to_dict(),
                "weights": stage.network.state_dict(),
                **stage.optimizer_state(),
                "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
                "scaler": precision.state_dict(),
            }
        )
        save("last", done)
        if plan.checkpoint_every and end_of_epoch and epochs_done % plan.checkpoint_every == 0:
            save(f"epoch-{epochs_done:04d}", done)

    best = run.checkpoint("best")
    done = max(plan.total, start_step)
    return TrainResult(
        out=run.path,
        step=done,
        epoch=math.ceil(done / plan.steps_per_epoch),
        last=run.checkpoint("last"),
        best=best if best.is_file() else None,
        best_metric=best_metric,
        losses=tuple(losses),
    )
