"""Recognise an official-layout state dict and recover its architecture from key names and shapes.

Used for bare ``.safetensors`` files (no config JSON beside them) and as a cross-check of a
checkpoint's ``hparams.yaml``. Works on any tensors (including ``meta`` ones): only names, shapes
and dtypes are read. Every recovered config is verified by building the network on the ``meta``
device and comparing the complete layout, so a state dict that does not fit raises
:class:`~difffusr_cli.errors.WeightsError` instead of failing later in ``load_state_dict``.

Two facts are not recorded in weights and are assumed: GroupNorm uses 32 groups and the images
are RGB (3 channels, which fixes the U-Net fold from its first convolution).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from difffusr_cli.errors import WeightsError
from difffusr_cli.models.config import (
    DiffusionConfig,
    FusionConfig,
    MoCoConfig,
    RRDBConfig,
    SRConfig,
    UNetConfig,
)

StateDict = Mapping[str, Tensor]

_SR_PREFIXES = ("encoder.", "E.", "model.", "ema.", "diffusion.")
_FUSION_PREFIXES = ("rrdb_block_10_fusion.", "rrdb_block_20_fusion.", "rrdb_block_60_fusion.")
_ASSUMED_NORM_GROUPS = 32
_RGB = 3


def detect_kind(sd: StateDict) -> Literal["rgb", "fusion"]:
    """``"rgb"`` for the diffusion SR model, ``"fusion"`` for the fusion networks.

    Raises:
        WeightsError: the keys match neither official layout.
    """
    keys = list(sd)
    if any(k.startswith("model.first_conv_x.") for k in keys) and any(
        k.startswith("encoder.") for k in keys
    ):
        return "rgb"
    if all(any(k.startswith(p) for k in keys) for p in _FUSION_PREFIXES):
        return "fusion"
    sample = ", ".join(keys[:3]) or "no tensors"
    raise WeightsError(
        "unknown weights layout: expected the DiffFuSR RGB model (keys encoder.*, E.*, model.*, "
        "ema.*, diffusion.*) or fusion model (keys rrdb_block_{10,20,60}_fusion.*); "
        f"found {sample}"
    )


def infer_sr_config(sd: StateDict) -> SRConfig:
    """The :class:`SRConfig` of an RGB diffusion state dict (official key layout).

    Raises:
        WeightsError: a needed key is missing or the layout does not fit any config.
    """
    try:
        config = SRConfig(
            unet=_infer_unet(sd),
            rrdb=_infer_rrdb(sd),
            moco=MoCoConfig(dim=_shape(sd, "E.queue")[0], K=_shape(sd, "E.queue")[1]),
            diffusion=DiffusionConfig(n_timestep=_shape(sd, "diffusion.betas")[0]),
        )
    except ValueError as exc:
        raise WeightsError(f"RGB weights: unsupported architecture: {exc}") from None
    from difffusr_cli.models.sr import DiffusionSR

    _check_layout(DiffusionSR, config, sd, "RGB weights")
    return config


def infer_fusion_config(sd: StateDict) -> FusionConfig:
    """The :class:`FusionConfig` of a fusion state dict (official key layout).

    The MTF architecture only records ``nb // 2``; ``nb`` is reported odd (2·n + 1), which is the
    official value and builds the same network as the even alternative.

    Raises:
        WeightsError: a needed key is missing or the layout does not fit any config.
    """
    p = "rrdb_block_10_fusion."
    try:
        if f"{p}pan_mixer.logits" in sd:
            # detail_net = conv, LeakyReLU, nb // 2 RRDBs (indices 2, 3, ...), conv
            blocks = _count_indices(
                sd, rf"{re.escape(p)}detail_net\.(\d+)\.RDB1\.conv1\.weight", start=2
            )
            config = FusionConfig(
                arch="mtf",
                nf=_shape(sd, f"{p}detail_net.0.weight")[0],
                nb=2 * blocks + 1,
                gc=_shape(sd, f"{p}detail_net.2.RDB1.conv1.weight")[0],
            )
        elif f"{p}rgb_conv_first.weight" in sd:
            config = FusionConfig(
                arch="rrdb",
                nf=_shape(sd, f"{p}rgb_conv_first.weight")[0],
                nb=_count_indices(sd, rf"{re.escape(p)}rgb_rrdb\.(\d+)\.RDB1\.conv1\.weight"),
                gc=_shape(sd, f"{p}rgb_rrdb.0.RDB1.conv1.weight")[0],
            )
        else:
            raise WeightsError(
                "fusion weights: unknown branch architecture (neither FusionRRDBNet keys such as "
                f"{p}rgb_conv_first.weight nor MTFNetFusion keys such as {p}pan_mixer.logits)"
            )
    except ValueError as exc:
        raise WeightsError(f"fusion weights: unsupported architecture: {exc}") from None
    from difffusr_cli.models.fusion import FusionNetwork

    _check_layout(FusionNetwork, config, sd, "fusion weights")
    return config


def _infer_unet(sd: StateDict) -> UNetConfig:
    p = "model."
    inner, folded_in = _shape(sd, f"{p}first_conv_x.weight")[:2]
    fold = math.isqrt(folded_in // _RGB)
    if fold < 1 or fold * fold * _RGB != folded_in:
        raise WeightsError(f"RGB weights: first U-Net conv takes {folded_in} channels, not 3·fold²")
    out_folded = _shape(sd, f"{p}final_conv.block.3.weight")[0]
    if out_folded % (fold * fold):
        raise WeightsError(
            f"RGB weights: final U-Net conv has {out_folded} channels, not a multiple of {fold}²"
        )

    # walk the down path: residual blocks (res_block.*) separated by downsamplers (conv.weight)
    n_downs = 1 + _count_indices(sd, rf"{re.escape(p)}downs\.(\d+)\.", allow_zero=True, start=1)
    level_widths: list[list[int]] = [[]]
    attn_levels: set[int] = set()
    for i in range(1, n_downs):
        if f"{p}downs.{i}.conv.weight" in sd:
            level_widths.append([])
            continue
        width = _shape(sd, f"{p}downs.{i}.res_block.block1.block.3.weight")[0]
        level_widths[-1].append(width)
        if f"{p}downs.{i}.attn.qkv.weight" in sd:
            attn_levels.add(len(level_widths) - 1)
    counts = {len(w) for w in level_widths}
    if len(counts) != 1 or 0 in counts:
        raise WeightsError(
            f"RGB weights: uneven residual blocks per U-Net level {[len(w) for w in level_widths]}"
        )
    mults = []
    for widths in level_widths:
        if len(set(widths)) != 1 or widths[0] % inner:
            raise WeightsError(
                f"RGB weights: U-Net level widths {widths} are not a multiple of {inner}"
            )
        mults.append(widths[0] // inner)
    return UNetConfig(
        in_channel=_RGB,
        out_channel=out_folded // (fold * fold),
        inner_channel=inner,
        channel_mults=tuple(mults),
        res_blocks=counts.pop(),
        attn_strides=tuple(2**level for level in sorted(attn_levels)),
        fold=fold,
        norm_groups=_ASSUMED_NORM_GROUPS,
    )


def _infer_rrdb(sd: StateDict) -> RRDBConfig:
    p = "encoder."
    num_feat, raw_in = _shape(sd, f"{p}conv_first.weight")[:2]
    out = _shape(sd, f"{p}conv_last.weight")[0]
    # scales 2 and 1 pixel-unshuffle the input by 2 and 4 before conv_first
    unshuffle = {_RGB: 4, _RGB * 4: 2, _RGB * 16: 1}.get(raw_in)
    if unshuffle is None:
        raise WeightsError(
            f"RGB weights: encoder.conv_first takes {raw_in} channels (expected 3, 12 or 48)"
        )
    return RRDBConfig(
        num_in_ch=_RGB,
        num_out_ch=out,
        num_feat=num_feat,
        num_block=_count_indices(sd, rf"{re.escape(p)}body\.(\d+)\.rdb1\.conv1\.weight"),
        num_grow_ch=_shape(sd, f"{p}body.0.rdb1.conv1.weight")[0],
        scale=unshuffle,
    )


def _shape(sd: StateDict, key: str) -> tuple[int, ...]:
    if key not in sd:
        raise WeightsError(f"weights lack the tensor {key!r} of the official layout")
    return tuple(int(n) for n in sd[key].shape)


def _count_indices(sd: StateDict, pattern: str, allow_zero: bool = False, start: int = 0) -> int:
    """Number of consecutive integer indices (from ``start``) that ``pattern`` captures in keys."""
    found = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    n = 0
    while start + n in found:
        n += 1
    if n == 0 and not allow_zero:
        raise WeightsError(f"weights lack keys matching {pattern!r} of the official layout")
    return n


def _check_layout(kind: type[nn.Module], config: object, sd: StateDict, what: str) -> None:
    """Build ``kind(config)`` on the meta device; compare names, shapes and dtypes with ``sd``."""
    with torch.device("meta"):
        expected = kind(config).state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        raise WeightsError(
            f"{what}: keys do not match the inferred architecture: {'; '.join(parts)}"
        )
    for key, ref in expected.items():
        got = sd[key]
        if tuple(got.shape) != tuple(ref.shape) or got.dtype != ref.dtype:
            raise WeightsError(
                f"{what}: tensor {key} is {tuple(got.shape)} {got.dtype}, the inferred "
                f"architecture needs {tuple(ref.shape)} {ref.dtype}"
            )
