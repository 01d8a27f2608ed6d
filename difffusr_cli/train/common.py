"""Small pieces both training stages share: RNG streams, EMA, mixed precision, progress, NaN checks.

- **Reproducibility** (:func:`step_rngs`): every random draw of a training step comes from
  generators seeded by ``(seed, step)``, so a resumed run draws exactly what the uninterrupted run
  would have drawn.
- **EMA** (:func:`ema_update`) and **mixed precision** on CUDA (:class:`Precision`).

The configuration lives in :mod:`~difffusr_cli.train.config`, the run folder and its checkpoint
in :mod:`~difffusr_cli.train.run_dir`, the loop in :mod:`~difffusr_cli.train.loop`; the names
re-exported below keep ``common.X`` working for existing callers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from difffusr_cli.errors import InputError
from difffusr_cli.train.config import (
    ModelTrainConfig,
    apply_overrides,
    load_config,
    parse_override,
    require,
)
from difffusr_cli.train.export import export_weights
from difffusr_cli.train.quicklooks import mosaic, to_uint8, write_png
from difffusr_cli.train.run_dir import CsvLog, RunDir, Stage, TrainResult

__all__ = [
    "CsvLog",
    "ModelTrainConfig",
    "Precision",
    "LineReporter",
    "log_line",
    "RunDir",
    "Stage",
    "StepProgress",
    "TrainResult",
    "apply_overrides",
    "copy_weights",
    "ema_update",
    "export_weights",
    "finite_or_raise",
    "load_config",
    "mosaic",
    "parse_override",
    "require",
    "seed_global",
    "step_rngs",
    "to_uint8",
    "write_png",
]

#: ``report(line)`` receives the human-readable lines a run prints (data summary, notes).
LineReporter = Callable[[str], None]


def log_line(line: str) -> None:
    """The default :data:`LineReporter` of library callers: the line goes to ``logging``."""
    logging.getLogger("difffusr_cli.train").info(line)


# ---------------------------------------------------------------------------------------------
# Randomness


def step_rngs(seed: int, stream: int, step: int) -> tuple[torch.Generator, np.random.Generator]:
    """Generators for one training step (or one fixed stream such as validation).

    Seeded from ``(seed, stream, step)`` through NumPy's ``SeedSequence``, so they depend on
    nothing but the run's seed and the step: a run resumed at step ``s`` draws what the
    uninterrupted run drew at ``s``. Returns a CPU ``torch.Generator`` and a NumPy ``Generator``.
    """
    sequence = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(stream), int(step)])
    torch_seed, numpy_seed = sequence.generate_state(2, dtype=np.uint64)
    generator = torch.Generator().manual_seed(int(torch_seed) & ((1 << 63) - 1))
    return generator, np.random.default_rng(int(numpy_seed))


def seed_global(seed: int, step: int) -> None:
    """Seed torch's global RNG (dropout, weight initialisation) from ``(seed, step)``.

    ``step`` ≥ −1 (−1: before the first step, for the initial weights).
    """
    sequence = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 99, int(step) + 1])
    torch.manual_seed(int(sequence.generate_state(1, dtype=np.uint64)[0]) & ((1 << 63) - 1))


# ---------------------------------------------------------------------------------------------
# EMA and precision


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``θ_ema ← decay·θ_ema + (1 − decay)·θ`` for parameters; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p.detach().to(p_ema.dtype), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


@torch.no_grad()
def copy_weights(target: nn.Module, source: nn.Module) -> None:
    """Make ``target`` an exact copy of ``source`` (same architecture), e.g. to start an EMA."""
    target.load_state_dict(source.state_dict())


class Precision:
    """Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling); fp32 elsewhere.

    Use :meth:`autocast` around forward passes and losses, and :meth:`step` instead of
    ``loss.backward(); optimizer.step()``.
    """

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.device = device
        self.dtype = torch.float32
        if enabled and device.type == "cuda":
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    @property
    def name(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``."""
        return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> Any:
        """Context manager: autocast to the mixed dtype (no-op in fp32)."""
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def step(
        self,
        loss: Tensor,
        optimizer: torch.optim.Optimizer,
        clip: float | None = None,
        parameters: Sequence[Tensor] = (),
    ) -> None:
        """Backward, optional gradient clipping of ``parameters``, optimizer step (fp16: scaled)."""
        self.scaler.scale(loss).backward()
        if clip:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, clip)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The loss scaler's state, for the checkpoint."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict`; an empty ``state`` (older checkpoints) is ignored."""
        if state:
            self.scaler.load_state_dict(dict(state))


# ---------------------------------------------------------------------------------------------
# Progress


class StepProgress(Protocol):
    """``progress(title, done, total, **postfix)``: how a training run reports its steps.

    The loop calls it once before the first step (``done`` = the step it starts from, no
    postfix) and after every step with the values to show beside a bar (``loss``, ``epoch``).
    The library draws nothing itself; the CLI passes a bar (:mod:`difffusr_cli.cli.run_bars`).
    """

    def __call__(self, title: str, done: int, total: int, **postfix: float) -> None:
        """Report ``done`` of ``total`` steps of the run ``title``."""
        ...


def finite_or_raise(value: float, what: str, step: int) -> float:
    """``value``, or an ``InputError`` when a loss became NaN/inf (lower the rate or fix data)."""
    if not math.isfinite(value):
        raise InputError(
            f"{what} became {value} at step {step}; lower the learning rate (--set train.lr=...) "
            "or check the training data for invalid values"
        )
    return value
