"""``difffusr eval fusion``: fusion quality by Wald's protocol, and the no-reference product check.

**Wald mode** (:func:`evaluate_wald`, SPEC §3, issue 6). Sentinel-2 has no 2.5 m reference, so the
×4 task is reproduced one scale down, where the native bands are the reference:

- *degraded*: every band group, by the factor 4 relative to its native grid, with
  :func:`~difffusr_cli.degrade.wald_degrade` (Gaussian matched to a Nyquist gain of 0.3,
  then a 4 × 4 box average): 10 m → 40 m, 20 m → 80 m, 60 m → 240 m;
- *guidance* (the "SR RGB"): the native 10 m B04, B03, B02, not degraded — it plays the role of
  the 2.5 m RGB;
- *reconstructed*: the fusion nets, Gram–Schmidt and bilinear upsampling receive exactly the
  shapes they get in ``superres`` — guidance ``(3, 4h, 4w)`` and groups ``(4, h, w)``,
  ``(6, h/2, w/2)``, ``(2, h/6, w/6)`` — so they solve the same ×4 / ×8 / ×24 problem, and return
  all 12 bands on the 10 m grid;
- *reference*: each band on its native grid. The 20 m and 60 m bands of the reconstruction are
  area-averaged (2 × 2, 6 × 6) onto their native grid before scoring, so every band is scored
  as a ×4 enhancement of its input (ERGAS ratio 4 for every group).

B02, B03 and B04 are both the guidance and part of the reference: their scores show how well a
method keeps the guidance, and B08 is the informative band of the 10 m group.

**Product mode** (the paper's no-reference check, in :mod:`.fusion_product`): the 2.5 m product
is area-averaged back onto each band's native grid and compared with the source scene (ERGAS
ratios 4, 8, 24: the product's pixel over the native one). For comparison, Gram–Schmidt and
bilinear fusions of the source, guided by the product's own B04, B03, B02, are scored the same way.

**Blocks.** The evaluated area is processed in square blocks (``block`` 10 m pixels, plus a
``halo`` of context that is computed but not scored), so memory depends on the block size, never
on the scene's. The halo covers the reach of the degradation blur, of the bilinear upsampling and
of the net's receptive field, and the SSIM window, so local methods give the same scores whatever
the block size. The statistics of Gram–Schmidt (and the nets' global pooling, if any) are per
block, as in ``superres``; in Wald mode each group's Gram–Schmidt statistics use the pixels
where that group is scorable, or, where a block has none (a small area, blocks beside a nodata
wedge), where its native data and the guidance are valid, so Gram–Schmidt stays Gram–Schmidt
there instead of falling back to bilinear. Scores are accumulated over blocks
(:mod:`.running_scores`): one product is one image; several products are averaged.

**Validity.** A pixel is scored where its reference is valid and every input it depends on is
clean: the 10 m guidance is valid and, for its own group and every finer one (the RRDB nets of
the 20 m and 60 m groups read the finer bands too), the degraded cell covering it and its 8
neighbours (the bilinear upsampling reads them) were computed from valid native pixels only
(blur support included). Nodata inside the inputs is filled with the block's band means before
degradation, so it cannot spread; the nets' wider receptive field may still see filled values
near nodata. The same pixels are scored for every method. In product mode a native pixel is
scored where the source is valid and all the product pixels over it hold data. A group with
no scorable pixel at all has undefined (NaN) scores; :attr:`ProductResult.not_scored` says why
in words, and the report prints that instead of the NaN.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from rasterio.windows import Window
from torch import Tensor

from difffusr_cli.bands import (
    GROUP_RATIO,
    GROUPS,
    RGB,
    SCALE,
    WINDOW_ALIGN,
    GroupName,
)
from difffusr_cli.degrade import WALD_NYQUIST_GAIN, wald_sigma
from difffusr_cli.errors import InputError, WeightsError
from difffusr_cli.evaluate.quicklook import Quicklook
from difffusr_cli.evaluate.running_scores import (
    SSIM_REACH,
    RunningBandScores,
    mean_over_images,
    score_table,
)
from difffusr_cli.fusion_baselines import FusionFn, SyntheticPan, learned_fusion
from difffusr_cli.metrics import DATA_RANGE, ScoreTable
from difffusr_cli.tiling import round_up

if TYPE_CHECKING:
    from difffusr_cli.io.scene import Scene

EvalMode = Literal["wald", "product"]
#: ``(rgb (1, 3, H, W), groups, valid (1, H, W) bool) -> (1, 12, H, W)`` reflectance, product order.

#: Wald degradation factor of every group: the product's ×4 step over the 10 m grid.
WALD_FACTOR = SCALE
#: Method labels, in table order.
NET = "net"
PRODUCT = "product"
GRAM_SCHMIDT = "gram-schmidt"
BILINEAR = "bilinear"
#: 10 m pixels per degraded 60 m cell (240 m): Wald blocks are multiples of it so that every
#: degraded grid has whole cells.
WALD_ALIGN = WINDOW_ALIGN * WALD_FACTOR
#: Default block side, 10 m pixels: Wald blocks are reconstructed on the 10 m grid, product-mode
#: blocks on the 2.5 m grid (×4), so both are 960 pixels on the reconstruction's grid.
DEFAULT_BLOCK: dict[str, int] = {"wald": 960, "product": 240}
_RGB_IN_10M = [GROUPS["10m"].index(name) for name in RGB]


# -- options and results ------------------------------------------------------------------------


@dataclass(frozen=True)
class FusionEvalOptions:
    """What ``eval fusion`` evaluates and how (the CLI options, validated by :meth:`validate`).

    Attributes:
        fusion_model: fusion weights, a ``weights.toml`` name or a file; None = the manifest's
            default, whose absence (offline, nothing cached) only marks the net row missing.
        use_net: evaluate the learned nets at all (``--no-net`` turns them off).
        device: ``auto | cpu | cuda | cuda:N | mps``.
        window: ``(col, row, width, height)`` on the 10 m grid, or None.
        bbox: ``(xmin, ymin, xmax, ymax)`` in the scene's CRS, or None.
        block: block side in 10 m pixels (None: :data:`DEFAULT_BLOCK` of the mode).
        halo: context around each block in 10 m pixels (None: the reach of the methods).
        scale, offset: override the source's radiometric convention.
        gs_pan: Gram–Schmidt's synthetic pan, ``regression`` (GSA, the default of
            ``superres --fusion gs``) or ``mean`` (classic GS, presumably the paper's baseline).
    """

    fusion_model: str | None = None
    use_net: bool = True
    device: str = "auto"
    window: tuple[int, int, int, int] | None = None
    bbox: tuple[float, float, float, float] | None = None
    block: int | None = None
    halo: int | None = None
    scale: float | None = None
    offset: float | None = None
    gs_pan: SyntheticPan = "regression"

    def validate(self, mode: EvalMode) -> None:
        """Check values and combinations; ``InputError`` names the offending option."""
        align = WALD_ALIGN if mode == "wald" else WINDOW_ALIGN
        if self.window is not None and self.bbox is not None:
            raise InputError("give --window or --bbox, not both")
        if self.window is not None and (self.window[2] <= 0 or self.window[3] <= 0):
            raise InputError(
                f"--window {' '.join(map(str, self.window))}: width and height must be positive"
            )
        if self.bbox is not None and not (
            self.bbox[0] < self.bbox[2] and self.bbox[1] < self.bbox[3]
        ):
            raise InputError(
                f"--bbox {' '.join(f'{v:g}' for v in self.bbox)}: expected XMIN < XMAX and YMIN < "
                "YMAX"
            )
        if self.block is not None and (self.block < align or self.block % align):
            raise InputError(
                f"--block {self.block}: expected a positive multiple of {align} (10 m pixels, "
                f"{mode} mode)"
            )
        if self.halo is not None and (self.halo < 0 or self.halo % align):
            raise InputError(
                f"--halo {self.halo}: expected a non-negative multiple of {align} (10 m pixels, "
                f"{mode} mode)"
            )
        if self.gs_pan not in ("regression", "mean"):
            raise InputError(f"--gs-pan {self.gs_pan!r}: expected regression or mean")
        if self.fusion_model is not None and not self.use_net:
            raise InputError("--fusion-model and --no-net contradict each other")


@dataclass(frozen=True)
class MethodResult:
    """One method's scores on one product (or averaged over products).

    Attributes:
        method: ``net``, ``product``, ``gram-schmidt`` or ``bilinear``.
        table: scores per band, per group and overall; None when the method could not run.
        reason: why ``table`` is None (e.g. no fusion weights offline).
        detail: what exactly ran (the weights, the product file).
    """

    method: str
    table: ScoreTable | None
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class ProductResult:
    """The evaluation of one scene (Wald) or one product (product mode).

    Attributes:
        label: the product id (or file stem).
        path: the scene (Wald) or the product file (product mode).
        region: the evaluated window of the 10 m grid of the source scene.
        pixels: group → number of native pixels scored per band.
        methods: one result per method, in table order.
        not_scored: scope (a group, or ``all`` for the overall scores) → why it has no scores
            (its pixel count is 0); empty when everything was scored.
    """

    label: str
    path: str
    region: Window
    pixels: dict[str, int]
    methods: tuple[MethodResult, ...]
    not_scored: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FusionReport:
    """Everything ``eval fusion`` reports.

    Attributes:
        mode: ``wald`` or ``product``.
        products: per scene / product results.
        mean: per method, the mean over products (only when there are several).
        settings: protocol facts for the JSON and the table caption (degradation, ratios, ...).
        quicklooks: the panels kept for ``--plot`` (one block per product), when asked for.
    """

    mode: EvalMode
    products: tuple[ProductResult, ...]
    mean: tuple[MethodResult, ...] | None
    settings: dict[str, object]
    quicklooks: tuple[Quicklook, ...] = field(default_factory=tuple)


# -- the learned nets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NetChoice:
    """The fusion nets to evaluate, or why there are none.

    Attributes:
        fuse: the nets with the :data:`FusionFn` signature, or None.
        reach: receptive radius of the nets in output pixels (0 without nets).
        detail: the weights' name or path.
        reason: why ``fuse`` is None.
        seen: scene id → ``"trained on"`` or ``"validated on"``: the scenes the weights record
            having learned from (their training run's manifest); the nets are not scored there.
    """

    fuse: FusionFn | None
    reach: int
    detail: str | None
    reason: str | None
    seen: Mapping[str, str] = field(default_factory=dict)

    def unseen_reason(self, scene_id: str) -> str | None:
        """Why the nets are not scored on ``scene_id`` (they learned from it), or None."""
        role = self.seen.get(scene_id)
        if role is None:
            return None
        return (
            f"not scored: {self.detail} was {role} this scene (Wald scores must come from scenes "
            "a model never saw)"
        )


def seen_scenes(provenance: Mapping[str, Any]) -> dict[str, str]:
    """Scene id → role, from a weights file's ``source`` (``trained_on``, ``validated_on``)."""
    seen: dict[str, str] = {}
    for key, role in (("validated_on", "validated on"), ("trained_on", "trained on")):
        value = provenance.get(key, [])
        if isinstance(value, list):
            seen.update({str(scene): role for scene in value})
    return seen


def load_nets(options: FusionEvalOptions, device: torch.device) -> NetChoice:
    """Load the fusion nets ``options`` names.

    The manifest's default model may be unavailable (offline, nothing cached): the choice then
    carries the reason and the baselines are still evaluated. Weights named explicitly with
    ``--fusion-model`` must load.

    Raises:
        WeightsError: ``options.fusion_model`` is given and cannot be loaded.
    """
    if not options.use_net:
        return NetChoice(None, 0, None, "not evaluated (--no-net)")
    from difffusr_cli import api, weights

    name = options.fusion_model or weights.default_model_name("fusion")
    try:
        predictor = api.load_fusion_model(name, device)
    except WeightsError as exc:
        if options.fusion_model is not None:
            raise
        return NetChoice(None, 0, name, f"no fusion weights could be loaded: {exc}")
    return NetChoice(
        fuse=learned_fusion(predictor),
        reach=int(predictor.net.receptive_radius),
        detail=name,
        reason=None,
        seen=seen_scenes(predictor.provenance),
    )


def as_group(name: str) -> GroupName:
    """``name`` as a :data:`~difffusr_cli.bands.GroupName`.

    Raises:
        ValueError: ``name`` is not ``10m``, ``20m`` or ``60m``.
    """
    for group in GROUPS:
        if group == name:
            return group
    raise ValueError(f"{name!r} is not a band group; expected one of {', '.join(GROUPS)}")


def baselines(gs_pan: SyntheticPan) -> dict[str, FusionFn]:
    """Gram–Schmidt (with the ``gs_pan`` synthetic pan) and bilinear upsampling, by label."""
    from difffusr_cli.fusion_baselines import bilinear_fuse, gram_schmidt_fuse

    return {
        GRAM_SCHMIDT: functools.partial(gram_schmidt_fuse, synthetic=gs_pan),
        BILINEAR: bilinear_fuse,
    }


# -- halo ---------------------------------------------------------------------------------------


def wald_blur_reach(factor: int = WALD_FACTOR) -> int:
    """Radius, in native pixels, of the Gaussian kernel :func:`wald_degrade` uses (``ceil(3σ)``)."""
    return math.ceil(3 * wald_sigma(factor, WALD_NYQUIST_GAIN))


def default_halo(mode: EvalMode, net_reach: int) -> int:
    """The context (10 m pixels) that makes every scored pixel independent of the block edges.

    A pixel's score reads the SSIM window around it (5 native pixels), and each pixel of that
    window depends on its reconstruction and its validity. Wald: both reach one degraded 60 m cell
    (bilinear upsampling, the clean-cell test) plus the 60 m blur radius plus the nets' receptive
    radius (their output grid is the 10 m grid here); rounded up to 240 m. Product: the SSIM
    window plus one 60 m pixel (the baselines' bilinear upsampling).
    """
    ratio = GROUP_RATIO["60m"]
    if mode == "wald":
        reach = SSIM_REACH * ratio + WALD_ALIGN + wald_blur_reach() * ratio + net_reach
        return round_up(reach, WALD_ALIGN)
    return round_up((SSIM_REACH + 1) * ratio, WINDOW_ALIGN)


def wald_min_clean_side(group: str) -> int:
    """Side, in 10 m pixels, of the nodata-free area a scored pixel of ``group`` needs in Wald mode.

    That is its degraded cell and the 8 neighbouring cells (bilinear upsampling), widened
    by the blur's reach on each side (the clean-cell test of the module docstring).
    """
    ratio = GROUP_RATIO[as_group(group)]
    return ratio * (3 * WALD_FACTOR + 2 * wald_blur_reach())


def wald_not_scored(pixels: Mapping[str, int]) -> dict[str, str]:
    """Why groups with no scored pixel (and then the overall scores) are undefined, in words."""
    reasons: dict[str, str] = {}
    for group, count in pixels.items():
        if count == 0:
            side = wald_min_clean_side(group)
            reasons[group] = (
                f"too small: a scored {group} pixel needs ≥ {side} × {side} nodata-free 10 m px "
                "around it (its degraded cell, the neighbouring cells and the blur's reach)"
            )
    if reasons:
        reasons["all"] = f"not scored: needs every group; no scores for {', '.join(reasons)}"
    return reasons


# -- accumulation -------------------------------------------------------------------------------


class ScoreAccumulators:
    """Per method and group, the running scores of one product."""

    def __init__(self, methods: Sequence[str], ratios: Mapping[str, float]) -> None:
        self.methods = tuple(methods)
        self.by_method = {
            m: {g: RunningBandScores(GROUPS[g], ratio=ratios[g]) for g in GROUPS} for m in methods
        }

    def update(
        self,
        method: str,
        group: GroupName,
        pred: Tensor,
        ref: Tensor,
        scored: Tensor,
        data_valid: Tensor,
    ) -> None:
        """Add one block of ``method``'s prediction for ``group``.

        Args:
            method: one of :attr:`methods`.
            group: ``10m``, ``20m`` or ``60m``.
            pred: ``(C, H, W)`` predicted reflectance of the group's ``C`` bands, native grid.
            ref: ``(C, H, W)`` reference reflectance on the same grid.
            scored: ``(H, W)`` bool, the pixels this block counts (valid, inside its core).
            data_valid: ``(H, W)`` bool, the pixels holding data in both images.
        """
        self.by_method[method][group].update(pred, ref, scored, data_valid)

    def pixels(self) -> dict[str, int]:
        """Group → the number of scored pixels so far (the same for every method)."""
        first = self.by_method[self.methods[0]]
        return {g: first[g].count for g in GROUPS}

    def table(self, method: str) -> ScoreTable:
        """The scores of ``method`` over every block added: per band, per group and overall."""
        per_band = {}
        for acc in self.by_method[method].values():
            per_band.update(acc.scores())
        return score_table(per_band, GROUPS, DATA_RANGE)


def method_results(
    acc: ScoreAccumulators,
    order: Sequence[str],
    missing: Mapping[str, str],
    details: Mapping[str, str | None],
) -> tuple[MethodResult, ...]:
    """One :class:`MethodResult` per method of ``order``: its table, or the reason it is missing."""
    results = []
    for method in order:
        if method in missing:
            results.append(MethodResult(method, None, missing[method], details.get(method)))
        else:
            results.append(MethodResult(method, acc.table(method), None, details.get(method)))
    return tuple(results)


def _mean_results(products: Sequence[ProductResult]) -> tuple[MethodResult, ...] | None:
    """Per method, the mean over products of their tables (None for a single product).

    Only products where every method that scored anywhere has a table enter the means, so
    that methods are compared on the same scenes (the nets are not scored on scenes they
    learned from).
    """
    if len(products) < 2:
        return None
    scored_somewhere = {
        i for p in products for i, result in enumerate(p.methods) if result.table is not None
    }
    common = [p for p in products if all(p.methods[i].table is not None for i in scored_somewhere)]
    means = []
    for i, first in enumerate(products[0].methods):
        tables = [t for p in common if (t := p.methods[i].table) is not None]
        if tables:
            means.append(MethodResult(first.method, mean_over_images(tables), None, first.detail))
        else:
            means.append(MethodResult(first.method, None, first.reason, first.detail))
    return tuple(means)


ProgressFn = Callable[[str, int, int], None]


# -- Wald mode ----------------------------------------------------------------------------------


def region_label(options: FusionEvalOptions, scene: Scene) -> str:
    """How the user named the evaluated area, for error messages."""
    if options.window is not None:
        return f"--window {' '.join(map(str, options.window))}"
    if options.bbox is not None:
        return f"--bbox {' '.join(f'{v:g}' for v in options.bbox)}"
    return str(scene.path)
