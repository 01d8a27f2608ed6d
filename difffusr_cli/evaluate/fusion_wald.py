"""``eval fusion --mode wald``: score fusion on Sentinel-2 products degraded by 4 (Wald).

Wald's protocol, block by block; the options, results and shared helpers are in
:mod:`difffusr_cli.evaluate.fusion`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from difffusr_cli.bands import (
    GROUP_RATIO,
    GROUPS,
    GroupName,
    indices,
)
from difffusr_cli.degrade import WALD_NYQUIST_GAIN, wald_degrade, wald_sigma
from difffusr_cli.errors import InputError
from difffusr_cli.evaluate.fusion import (
    _RGB_IN_10M,
    BILINEAR,
    DEFAULT_BLOCK,
    GRAM_SCHMIDT,
    NET,
    WALD_ALIGN,
    WALD_FACTOR,
    FusionEvalOptions,
    FusionFn,
    FusionReport,
    NetChoice,
    ProductResult,
    ProgressFn,
    ScoreAccumulators,
    _mean_results,
    baselines,
    default_halo,
    load_nets,
    method_results,
    region_label,
    wald_blur_reach,
    wald_not_scored,
)
from difffusr_cli.evaluate.fusion_blocks import (
    Block,
    all_in_cell,
    area_mean,
    centre_block,
    clean_cells,
    crop_core,
    plan_blocks,
    repeat_cells,
    shrink_to,
    to_device,
)
from difffusr_cli.evaluate.quicklook import QUICKLOOK_BANDS, Quicklook
from difffusr_cli.metrics import DATA_RANGE
from difffusr_cli.tiling import fill_invalid

if TYPE_CHECKING:
    from difffusr_cli.io.scene import Scene


def _wald_block(
    scene: Scene,
    block: Block,
    fusers: Mapping[str, FusionFn],
    acc: ScoreAccumulators,
    device: torch.device,
    keep: dict[str, np.ndarray] | None,
) -> None:
    """Degrade, reconstruct and score one block (see the module docstring)."""
    window = block.expanded
    height, width = int(window.height), int(window.width)
    native: dict[str, tuple[Tensor, Tensor]] = {}
    degraded: dict[str, Tensor] = {}
    reach = wald_blur_reach()
    # Scorable pixels of each group's bands on the 10 m grid: the guidance is valid and the
    # inputs of this group and of the finer ones (the RRDB nets of the 20 m and 60 m groups also
    # read the finer groups) are clean. Groups come finest first.
    clean = torch.ones((height, width), dtype=torch.bool)
    scorable: dict[str, Tensor] = {}
    for group, ratio in GROUP_RATIO.items():
        data, valid = scene.read_native(group, window)
        native[group] = (torch.from_numpy(data), torch.from_numpy(valid))
        filled = torch.from_numpy(fill_invalid(data, valid))
        degraded[group] = wald_degrade(filled[None], WALD_FACTOR)
        clean = clean & repeat_cells(
            clean_cells(native[group][1], WALD_FACTOR, reach), ratio * WALD_FACTOR
        )
        if group == "10m":
            clean &= native[group][1]
        scorable[group] = clean
    # The guidance is the native 10 m RGB itself, nodata filled like the groups.
    guidance = torch.from_numpy(fill_invalid(native["10m"][0].numpy(), native["10m"][1].numpy()))
    guidance = guidance[_RGB_IN_10M][None]
    inputs = {g: to_device(t, device) for g, t in degraded.items()}
    statistics = _statistics_masks(native, scorable)
    for method, fuse in fusers.items():
        with torch.no_grad():
            if method in _GROUP_STATISTICS:
                out = _fuse_with_group_statistics(fuse, guidance, inputs, statistics, device)
            else:
                mask = to_device(statistics["10m"][None], device)
                out = fuse(to_device(guidance, device), inputs, mask)
            out = out[0].float().cpu()
        for group, ratio in GROUP_RATIO.items():
            ref, ref_valid = native[group]
            pred = area_mean(out[indices(GROUPS[group])], ratio)
            data_valid = ref_valid & all_in_cell(scorable[group], ratio)
            acc.update(method, group, pred, ref, data_valid & block.core_mask(ratio), data_valid)
        if keep is not None:
            keep[method] = crop_core(out[indices(QUICKLOOK_BANDS)], block, 1).numpy()
    if keep is not None:
        reference = torch.empty((len(QUICKLOOK_BANDS), height, width))
        for i, name in enumerate(QUICKLOOK_BANDS):
            group = next(g for g, members in GROUPS.items() if name in members)
            ratio = GROUP_RATIO[group]
            reference[i] = repeat_cells(native[group][0][GROUPS[group].index(name)], ratio)
        keep["reference"] = crop_core(reference, block, 1).numpy()
        keep["valid"] = crop_core(scorable["10m"][None], block, 1)[0].numpy()


#: Methods whose output depends on the statistics mask (fused once per distinct group mask).
_GROUP_STATISTICS = frozenset({GRAM_SCHMIDT})


def _statistics_masks(
    native: Mapping[str, tuple[Tensor, Tensor]], scorable: Mapping[str, Tensor]
) -> dict[GroupName, Tensor]:
    """Per group, the ``(H, W)`` bool pixels of the 10 m grid its statistics may use.

    The group's scorable pixels (its inputs are clean); where the block has none (a small area, a
    nodata wedge within reach), the pixels where the guidance and the group's native data are
    valid: nodata was filled with block means, so these statistics are still the data's.
    """
    guidance_valid = native["10m"][1]
    masks: dict[GroupName, Tensor] = {}
    for group, ratio in GROUP_RATIO.items():
        mask = scorable[group]
        if not bool(mask.any()):
            mask = guidance_valid & repeat_cells(native[group][1], ratio)
        masks[group] = mask
    return masks


def _fuse_with_group_statistics(
    fuse: FusionFn,
    guidance: Tensor,
    inputs: Mapping[str, Tensor],
    masks: Mapping[GroupName, Tensor],
    device: torch.device,
) -> Tensor:
    """``fuse`` with each group's bands taken from a run on that group's statistics mask.

    ``fuse`` takes one mask for all groups, so it runs once per distinct mask. Returns
    ``(1, 12, H, W)`` in product order.
    """
    guidance = to_device(guidance, device)
    out: Tensor | None = None
    done: list[tuple[Tensor, Tensor]] = []
    for group, mask in masks.items():
        fused = next((o for m, o in done if torch.equal(m, mask)), None)
        if fused is None:
            fused = fuse(guidance, inputs, to_device(mask[None], device))
            done.append((mask, fused))
        if out is None:
            out = fused.clone()
        band_idx = indices(GROUPS[group])
        out[:, band_idx] = fused[:, band_idx]
    assert out is not None
    return out


def _wald_settings(
    options: FusionEvalOptions, nets: NetChoice, block: int, halo: int, device: torch.device
) -> dict:
    return {
        "protocol": "wald",
        "degradation": {
            "factor": WALD_FACTOR,
            "blur": f"Gaussian, gain {WALD_NYQUIST_GAIN} at the degraded grid's Nyquist frequency "
            f"(sigma {wald_sigma(WALD_FACTOR):.3f} native pixels), then "
            f"{WALD_FACTOR}x{WALD_FACTOR} box average",
            "inputs": {
                g: f"{int(GROUP_RATIO[g] * 10)} m -> {int(GROUP_RATIO[g] * 10 * WALD_FACTOR)} m"
                for g in GROUPS
            },
        },
        "guidance": "native 10 m B04, B03, B02 (not degraded)",
        "reference": (
            "each band on its native grid; 20 m and 60 m reconstructions area-averaged onto it"
        ),
        "ergas_ratio": {g: WALD_FACTOR for g in GROUPS},
        "data_range": DATA_RANGE,
        "block": block,
        "halo": halo,
        "fusion_model": nets.detail,
        "fusion_model_seen": dict(nets.seen),
        "gs_pan": options.gs_pan,
        "device": str(device),
    }


def evaluate_wald(
    scenes: Sequence[str | Path],
    options: FusionEvalOptions | None = None,
    *,
    nets: NetChoice | None = None,
    progress: ProgressFn | None = None,
    quicklooks: bool = False,
) -> FusionReport:
    """Score the fusion nets, Gram–Schmidt and bilinear upsampling by Wald's protocol.

    Args:
        scenes: Sentinel-2 products (any format :func:`~difffusr_cli.io.open_scene` reads); each
            needs all 12 bands.
        options: what to evaluate (default :class:`FusionEvalOptions`; validated here).
        nets: the nets to evaluate (default: :func:`load_nets` of ``options``); tests pass their
            own.
        progress: called with ``(scene label, blocks done, blocks total)``.
        quicklooks: keep the central block's reconstructions for :mod:`.quicklook`.

    Returns:
        A :class:`FusionReport` (mode ``wald``).

    Raises:
        InputError: unreadable scene, missing band, a window outside the scene or too small,
            bad options.
        WeightsError: weights named with ``--fusion-model`` cannot be loaded.
    """
    from difffusr_cli.device import select_device
    from difffusr_cli.io.scene import open_scene
    from difffusr_cli.superres import resolve_region

    options = options if options is not None else FusionEvalOptions()
    options.validate("wald")
    if not scenes:
        raise InputError("give at least one scene with --data")
    device = select_device(options.device)
    nets = nets if nets is not None else load_nets(options, device)
    fusers: dict[str, FusionFn] = {}
    if nets.fuse is not None:
        fusers[NET] = nets.fuse
    fusers.update(baselines(options.gs_pan))
    missing = {NET: nets.reason or "unavailable"} if nets.fuse is None else {}
    order = (NET, GRAM_SCHMIDT, BILINEAR)
    block_size = options.block or DEFAULT_BLOCK["wald"]
    halo = options.halo if options.halo is not None else default_halo("wald", nets.reach)
    details = {NET: nets.detail}

    products: list[ProductResult] = []
    kept: list[Quicklook] = []
    for path in scenes:
        with open_scene(path, scale=options.scale, offset=options.offset) as scene:
            scene.require_bands()
            what = region_label(options, scene)
            region = shrink_to(
                resolve_region(scene, options.window, options.bbox), WALD_ALIGN, what
            )
            blocks = plan_blocks(region, block_size, halo)
            centre = centre_block(blocks, region)
            # never score the nets on a scene they learned from (their run's manifest says which)
            seen = nets.unseen_reason(scene.product_id)
            scene_fusers = {m: f for m, f in fusers.items() if m != NET or seen is None}
            scene_missing = missing if seen is None else {**missing, NET: seen}
            acc = ScoreAccumulators(list(scene_fusers), {g: WALD_FACTOR for g in GROUPS})
            keep: dict[str, np.ndarray] | None = None
            for i, block in enumerate(blocks):
                keep_this: dict[str, np.ndarray] | None = {} if quicklooks and i == centre else None
                _wald_block(scene, block, scene_fusers, acc, device, keep_this)
                if keep_this is not None:
                    keep = keep_this
                if progress is not None:
                    progress(scene.product_id, i + 1, len(blocks))
            products.append(
                ProductResult(
                    label=scene.product_id,
                    path=str(scene.path),
                    region=region,
                    pixels=acc.pixels(),
                    methods=method_results(acc, order, scene_missing, details),
                    not_scored=wald_not_scored(acc.pixels()),
                )
            )
            if keep is not None:
                kept.append(_wald_quicklook(scene.product_id, keep))
    return FusionReport(
        mode="wald",
        products=tuple(products),
        mean=_mean_results(products),
        settings=_wald_settings(options, nets, block_size, halo, device),
        quicklooks=tuple(kept),
    )


def _wald_quicklook(label: str, keep: Mapping[str, np.ndarray]) -> Quicklook:
    panels: dict[str, np.ndarray | None] = {
        "input": keep[BILINEAR],
        "gram-schmidt": keep[GRAM_SCHMIDT],
    }
    panels["net"] = keep.get(NET)
    panels["reference"] = keep["reference"]
    return Quicklook(label=label, grid="10 m", panels=panels, valid=keep["valid"])
