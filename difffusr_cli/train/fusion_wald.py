"""The Wald situations ``train fusion`` trains and validates a branch in, and its loss.

See :mod:`difffusr_cli.train.fusion` for the protocol (``wald_scale`` ``"group"`` and
``"uniform"``); everything here works on tensors and knows nothing of files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from difffusr_cli import bands
from difffusr_cli.bands import GROUP_RATIO, GROUPS, GroupName
from difffusr_cli.degrade import upsample_bilinear, wald_degrade
from difffusr_cli.models.fusion import BRANCH_BANDS, OUTPUT_RATIO, FusionNetwork

GROUP_ORDER: tuple[GroupName, ...] = ("10m", "20m", "60m")
#: The methods validation scores.
METHODS = ("net", "gs", "bilinear")
#: The scale of the Wald situation a branch trains in (see :mod:`difffusr_cli.train.fusion`).
WaldScale = Literal["group", "uniform"]
#: How the bands' loss terms are weighted (see :func:`branch_loss`).
LossWeights = Literal["equal", "ergas"]
#: The common shrink factor of ``wald_scale = "uniform"`` (as ``eval fusion``).
UNIFORM_FACTOR = bands.SCALE


def to_branch_space(x: Tensor, group: GroupName) -> Tensor:
    """``(B, C, h, w)`` reflectance in ``bands.GROUPS`` order → z-scores in the branch's order."""
    names = GROUPS[group]
    mean, std = bands.norm_stats(names, x.device, x.dtype)
    z = (x - mean) / std
    return z[:, [names.index(n) for n in BRANCH_BANDS[group]]]


def from_branch_space(z: Tensor, group: GroupName) -> Tensor:
    """Inverse of :func:`to_branch_space`: branch-order z-scores → reflectance in group order."""
    order = BRANCH_BANDS[group]
    mean, std = bands.norm_stats(order, z.device, z.dtype)
    x = z * std + mean
    return x[:, [order.index(n) for n in GROUPS[group]]]


@dataclass(frozen=True)
class WaldWorld:
    """One branch's training situation (see the module docstring), for a batch of patches.

    Attributes:
        group: the branch.
        guidance: ``(B, 3, T, T)`` R, G, B reflectance on the target grid.
        degraded: every group degraded by ``4·r`` (``"group"``) or 4 (``"uniform"``),
            reflectance in group order (for baselines).
        target: ``(B, C, t, t)`` the group's native bands, reflectance in group order.
        target_ratio: ``T / t``: the branch's output is area-averaged by this before it is
            compared with ``target`` (1 for ``"group"``; ``r`` for ``"uniform"``).
    """

    group: GroupName
    guidance: Tensor
    degraded: dict[GroupName, Tensor]
    target: Tensor
    target_ratio: int = 1

    def to_target_grid(self, output: Tensor) -> Tensor:
        """``(B, C, T, T)`` branch output → ``(B, C, t, t)`` on the target's grid (area mean)."""
        return output if self.target_ratio == 1 else F.avg_pool2d(output, self.target_ratio)


def wald_world(
    native: Mapping[GroupName, Tensor], group: GroupName, scale: WaldScale = "group"
) -> WaldWorld:
    """Build ``group``'s Wald situation from native patches ``{g: (B, C_g, P/r_g, P/r_g)}``.

    ``scale``: ``"group"`` shrinks by ``4·r`` (target on the native grid), ``"uniform"`` by 4
    (target the native bands, output on the 10 m grid); see the module docstring.
    """
    ratio = GROUP_RATIO[group]
    rgb = native["10m"][:, [GROUPS["10m"].index(n) for n in bands.RGB]]
    if scale == "uniform":
        degraded = {g: wald_degrade(native[g], UNIFORM_FACTOR) for g in GROUP_ORDER}
        return WaldWorld(group, rgb, degraded, native[group], target_ratio=ratio)
    degraded = {g: wald_degrade(native[g], OUTPUT_RATIO[group]) for g in GROUP_ORDER}
    return WaldWorld(
        group=group, guidance=wald_degrade(rgb, ratio), degraded=degraded, target=native[group]
    )


def branch_inputs(net: FusionNetwork, world: WaldWorld) -> tuple[Tensor, Tensor]:
    """``(guidance, ms)`` z-scored network inputs of ``world``.

    Built as the inference predictor builds them.
    """
    mean, std = bands.norm_stats(bands.RGB, world.guidance.device, world.guidance.dtype)
    guidance = (world.guidance - mean) / std
    size = world.guidance.shape[-2:]
    parts = []
    for g in net.input_groups(world.group):
        up = upsample_bilinear(to_branch_space(world.degraded[g], g), OUTPUT_RATIO[g])
        parts.append(up[:, :, : size[0], : size[1]])
    return guidance, torch.cat(parts, dim=1)


def branch_loss(
    predicted: Tensor, target: Tensor, group: GroupName, weights: LossWeights = "equal"
) -> Tensor:
    """The L1 loss of one branch on ``(B, C, h, w)`` z-scores in the branch's band order.

    ``weights = "ergas"`` weighs band ``k`` by ``std_k / mean_k`` (normalised to mean 1):
    a z-score error times ``std_k`` is the reflectance error, divided by ``mean_k`` the relative
    error ERGAS averages.
    """
    if weights == "equal":
        return F.l1_loss(predicted, target)
    error = (predicted - target).abs().mean(dim=(0, 2, 3))
    mean, std = bands.norm_stats(BRANCH_BANDS[group], error.device, error.dtype)
    relative = (std / mean).flatten()
    return (error * relative / relative.mean()).mean()


# ---------------------------------------------------------------------------------------------
# Validation


@torch.no_grad()
def validate(
    net: FusionNetwork,
    native: Mapping[GroupName, Tensor],
    batch_size: int,
    scale: WaldScale = "group",
) -> tuple[dict[str, float], dict[GroupName, dict[str, Tensor]]]:
    """ERGAS per group of the nets, Gram–Schmidt and bilinear on fixed validation patches.

    In the Wald situation of ``scale``; ERGAS uses the ratio of input to target grid.

    Returns:
        ``(scores, previews)``: ``scores`` maps ``ergas_<group>_<method>`` and
        ``ergas_mean_<method>`` to values; ``previews[group]`` holds the first patch's
        ``bilinear``, ``net`` and ``target`` reflectance (CPU) for the quicklook.
    """
    from difffusr_cli.fusion_baselines import bilinear_fuse, gram_schmidt_fuse
    from difffusr_cli.metrics import aggregate_scores

    was_training = net.training
    net.eval()
    scores: dict[str, float] = {}
    previews: dict[GroupName, dict[str, Tensor]] = {}
    count = next(iter(native.values())).shape[0]
    try:
        for group in GROUP_ORDER:
            outputs: dict[str, list[Tensor]] = {m: [] for m in METHODS}
            targets = []
            for start in range(0, count, batch_size):
                chunk = {g: t[start : start + batch_size] for g, t in native.items()}
                world = wald_world(chunk, group, scale)
                guidance, ms = branch_inputs(net, world)
                predicted = from_branch_space(net.branch(group)(guidance, ms).float(), group)
                outputs["net"].append(world.to_target_grid(predicted))
                index = bands.indices(GROUPS[group])
                degraded: dict[str, Tensor] = dict(world.degraded.items())
                for name, fuse in (("gs", gram_schmidt_fuse), ("bilinear", bilinear_fuse)):
                    fused = fuse(world.guidance, degraded)[:, index]
                    outputs[name].append(world.to_target_grid(fused))
                targets.append(world.target)
            target = torch.cat(targets)
            ergas_ratio = UNIFORM_FACTOR if scale == "uniform" else OUTPUT_RATIO[group]
            for method in METHODS:
                predicted = torch.cat(outputs[method])
                scores[f"ergas_{group}_{method}"] = float(
                    aggregate_scores(predicted, target, ratio=ergas_ratio).ergas
                )
                if method in ("net", "bilinear"):
                    previews.setdefault(group, {})[method] = predicted[:1].cpu()
            previews[group]["target"] = target[:1].cpu()
    finally:
        net.train(was_training)
    for method in METHODS:
        scores[f"ergas_mean_{method}"] = float(
            np.mean([scores[f"ergas_{g}_{method}"] for g in GROUP_ORDER])
        )
    return scores, previews
