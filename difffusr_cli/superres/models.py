"""The models of a ``superres`` run: loading, provenance (:class:`ModelInfo`), :class:`Models`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from difffusr_cli.bands import WINDOW_ALIGN
from difffusr_cli.fusion_baselines import FusionFn
from difffusr_cli.models.bicubic import BicubicUpsampler, is_builtin_rgb
from difffusr_cli.superres.options import FusionMethod, SuperresOptions

if TYPE_CHECKING:
    from difffusr_cli.models.predictors import FusionPredictor, RGBSuperResolver
    from difffusr_cli.weights import Reporter


class SuperResolver(Protocol):
    """What the pipeline needs of :class:`~difffusr_cli.models.predictors.RGBSuperResolver`."""

    def super_resolve(self, lr: Tensor, steps: int = 20, *, noise: Tensor | None = None) -> Tensor:
        """Super-resolve a batch of LR patches ×4.

        Args:
            lr: ``(B, 3, h, w)`` float reflectance at 10 m, channels B04, B03, B02.
            steps: DDIM network calls.
            noise: the initial noise, ``(B, 3, 4h, 4w)`` standard normal, or None to draw it.

        Returns:
            ``(B, 3, 4h, 4w)`` float reflectance at 2.5 m.
        """
        ...


#: ``(rgb_sr (B,3,H,W), groups, valid (B,H,W) bool) -> (B,12,H,W)`` reflectance in product order.


@dataclass(frozen=True)
class ModelInfo:
    """Provenance of one model: the name or path it was asked by, its source and sha256."""

    name: str
    sha256: str
    file: str = ""  # the file the weights came from: "repo@commit:path" for the Hub, else a path


@dataclass(frozen=True)
class Models:
    """The models of a run, loaded once and shared by every input.

    Attributes:
        rgb: the diffusion super-resolver.
        method: what ``fuse`` is; with ``gs``/``bilinear`` B02–B04 are the diffusion RGB itself.
        fuse: the fusion step (learned nets or a baseline) with the :data:`FusionFn` signature.
        fusion_halo: how far (10 m pixels) a fused pixel's inputs reach.
        patch_multiple: the patch size must be a multiple of this (the U-Net's down-sampling).
        rgb_info, fusion_info: provenance (``fusion_info`` is None for gs/bilinear).
        attention_stride: output pixels per self-attention position of the U-Net (its fold
            times its finest attention stride; 0: no attention); bounds the automatic patch.
        fusion_arch: ``"mtf"`` or ``"rrdb"`` for the learned nets, ``""`` otherwise (it decides
            the default fusion tiles, :func:`difffusr_cli.superres.compute.fusion_tiling`).
    """

    rgb: SuperResolver
    method: FusionMethod
    fuse: FusionFn
    fusion_halo: int
    patch_multiple: int
    rgb_info: ModelInfo
    fusion_info: ModelInfo | None = None
    fusion_arch: str = ""
    attention_stride: int = 0


def model_info(name: str, path: Path) -> ModelInfo:
    """Provenance of the weights loaded from ``path``, asked for as ``name``.

    A converted file names its source checkpoint (repository, commit and file in it) and that
    checkpoint's sha256 in the JSON beside it; the converted file itself was checked against
    its own recorded digest when it was loaded. Any other file is named and hashed as it is.
    """
    from difffusr_cli.weights import StderrReporter, sha256_file

    record = path.with_suffix(".json")
    source: dict = {}
    if path.suffix == ".safetensors" and record.is_file():
        try:
            loaded = json.loads(record.read_text(encoding="utf-8")).get("source", {})
            source = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError, AttributeError):
            source = {}
    recorded = source.get("sha256")
    if isinstance(recorded, str) and recorded:
        repo, commit, file = source.get("repo"), source.get("commit"), source.get("file")
        where = f"{repo}@{commit}:{file}" if repo and file else str(source.get("file") or path)
        return ModelInfo(name, recorded, where)
    return ModelInfo(name, sha256_file(path, StderrReporter()), str(path))


def _patch_multiple(rgb: RGBSuperResolver | BicubicUpsampler) -> int:
    """What the patch side must be a multiple of for ``rgb``."""
    if isinstance(rgb, BicubicUpsampler):
        return rgb.patch_multiple
    unet = rgb.config.unet
    # The U-Net folds the image by `fold`, then halves it once per level below the first.
    return int(unet.fold * 2 ** (unet.levels - 1))


def _attention_stride(rgb: RGBSuperResolver | BicubicUpsampler) -> int:
    """The output stride of ``rgb``'s finest self-attention (0: none, e.g. bicubic)."""
    if isinstance(rgb, BicubicUpsampler):
        return 0
    unet = rgb.config.unet
    return int(unet.fold * min(unet.attn_strides, default=0))


def builtin_info(name: str) -> ModelInfo:
    """Provenance of a built-in RGB model: no weights, so no sha256; the file says built-in."""
    return ModelInfo(name.lower(), "", f"built-in:{name.lower()} (no weights)")


def build_models(
    rgb: RGBSuperResolver | BicubicUpsampler,
    fusion: FusionPredictor | None,
    method: FusionMethod,
    rgb_info: ModelInfo,
    fusion_info: ModelInfo | None = None,
) -> Models:
    """Bundle loaded networks for the pipeline (``fusion`` is used only with ``method="net"``)."""
    from difffusr_cli.fusion_baselines import bilinear_fuse, gram_schmidt_fuse, learned_fusion

    patch_multiple = _patch_multiple(rgb)
    attention_stride = _attention_stride(rgb)
    if method == "net":
        if fusion is None:
            raise ValueError("fusion method 'net' needs a fusion model")
        return Models(
            rgb=rgb,
            method="net",
            fuse=learned_fusion(fusion),
            fusion_halo=fusion.receptive_halo,
            patch_multiple=patch_multiple,
            rgb_info=rgb_info,
            fusion_info=fusion_info,
            fusion_arch=fusion.config.arch,
            attention_stride=attention_stride,
        )
    baseline = gram_schmidt_fuse if method == "gs" else bilinear_fuse
    # Bilinear upsampling of the 60 m group reaches one 60 m pixel further.
    return Models(
        rgb,
        method,
        baseline,
        WINDOW_ALIGN,
        patch_multiple,
        rgb_info,
        attention_stride=attention_stride,
    )


def load_models(
    options: SuperresOptions, device: torch.device, reporter: Reporter | None = None
) -> Models:
    """Resolve, verify and load the models ``options`` names, once, onto ``device``.

    Raises:
        WeightsError: unknown name, missing/unsafe/mismatched weights, or no Hub access.
    """
    from difffusr_cli import api, weights

    rgb_name = options.rgb_model or weights.default_model_name("rgb")
    rgb: RGBSuperResolver | BicubicUpsampler
    if is_builtin_rgb(rgb_name):  # `bicubic`: nothing to resolve, download or load
        rgb, rgb_info = BicubicUpsampler(), builtin_info(str(rgb_name))
    else:
        rgb_path = weights.resolve(rgb_name, "rgb", reporter=reporter)
        rgb = api.load_rgb_model(rgb_path, device, reporter=reporter)
        rgb_info = model_info(str(rgb_name), rgb_path)
    if options.fusion != "net":
        accelerate(rgb, None, compile=options.compile, channels_last=options.channels_last)
        return build_models(rgb, None, options.fusion, rgb_info)
    fusion_name = options.fusion_model or weights.default_model_name("fusion")
    fusion_path = weights.resolve(fusion_name, "fusion", reporter=reporter)
    fusion = api.load_fusion_model(fusion_path, device, reporter=reporter)
    accelerate(rgb, fusion, compile=options.compile, channels_last=options.channels_last)
    return build_models(rgb, fusion, "net", rgb_info, model_info(str(fusion_name), fusion_path))


def accelerate(
    rgb: RGBSuperResolver | BicubicUpsampler,
    fusion: FusionPredictor | None,
    *,
    compile: bool = False,
    channels_last: bool = False,
) -> None:
    """Apply ``--channels-last`` and ``--compile`` to the networks, in place.

    Channels-last stores the convolution weights (and so the activations they produce) as
    NHWC, the layout tensor cores read fastest. Compilation (``nn.Module.compile``: the state
    dict keeps its keys) covers the EMA denoiser, which runs ``steps`` times per patch, and the
    fusion branches. Both leave every value the same up to the order of float reductions.

    Args:
        rgb: the diffusion super-resolver (the built-in bicubic has no network: left alone).
        fusion: the fusion nets, or None (gs/bilinear).
        compile: compile the denoiser and the fusion branches with ``torch.compile``.
        channels_last: convert the networks to ``torch.channels_last``.
    """
    rgb_net = None if isinstance(rgb, BicubicUpsampler) else rgb.model
    if channels_last:
        if rgb_net is not None:
            rgb_net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if fusion is not None:
            fusion.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if compile:
        if rgb_net is not None:
            rgb_net.denoiser(ema=True).compile()
        if fusion is not None:
            for group in ("10m", "20m", "60m"):
                fusion.net.branch(group).compile()
