"""Architecture configurations of the DiffFuSR networks, as frozen dataclasses.

One set of classes describes both the official "large" networks and the small test networks, so
the same code builds either. Every config converts to and from a plain JSON-able ``dict``
(``to_dict`` / ``from_dict``) for the ``NAME.json`` file written next to converted weights, and
``SRConfig.from_hparams`` reads the ``hparams.yaml`` mapping that PyTorch Lightning stores with the
official checkpoints.

Malformed mappings raise :class:`~difffusr_cli.errors.WeightsError` (one line, naming the key);
a caller that knows the file name should prefix it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from difffusr_cli.errors import WeightsError

#: Channels of the RRDB feature map that conditions the U-Net. Upstream hard-wires the U-Net's
#: context convolution to 64 input channels, so the RRDB encoder must produce exactly this many.
CONTEXT_CHANNELS = 64
#: Width of the degradation encoder's pooled feature (MoCo ``dim``); the U-Net's ``compress``
#: layer is hard-wired to it upstream.
DEGRADATION_DIM = 256
#: Width of the compressed degradation code that drives the degradation-aware convolutions
#: (hard-wired upstream).
DEGRADATION_CODE_DIM = 64

FusionArch = Literal["rrdb", "mtf"]
#: Where an MTF branch's per-band detail comes from (see :class:`FusionConfig`).
FusionInjection = Literal["mtf", "regression"]


@dataclass(frozen=True)
class UNetConfig:
    """The SR3-style denoising U-Net (upstream ``DiffUNetSR3Atom``).

    Attributes:
        in_channel: image channels (3: R, G, B).
        out_channel: predicted channels (3).
        inner_channel: width of the first level; level ``i`` has
            ``inner_channel * channel_mults[i]``.
        channel_mults: width multiplier per resolution level (one level per entry).
        res_blocks: residual blocks per level on the way down (``res_blocks + 1`` on the way up).
        attn_strides: self-attention at the levels whose stride ``2**level`` is listed.
        dropout: dropout rate (upstream applies it only to a result it discards, so it has no
            effect; kept for fidelity of the stored configuration).
        fold: pixel-unshuffle factor applied to the noisy image before the first convolution.
        norm_groups: GroupNorm groups (not recorded in weights; 32 in every known checkpoint).
    """

    in_channel: int = 3
    out_channel: int = 3
    inner_channel: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2, 4, 8)
    res_blocks: int = 5
    attn_strides: tuple[int, ...] = (16,)
    dropout: float = 0.0
    fold: int = 2
    norm_groups: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        object.__setattr__(self, "attn_strides", tuple(int(s) for s in self.attn_strides))
        _require(self.in_channel > 0 and self.out_channel > 0, "unet channels must be positive")
        _require(
            self.inner_channel > 0 and self.res_blocks >= 1, "unet width/res_blocks must be >= 1"
        )
        _require(
            len(self.channel_mults) >= 1 and min(self.channel_mults) >= 1,
            "unet.channel_mults must hold positive integers",
        )
        _require(self.fold >= 1, "unet.fold must be >= 1")
        _require(0.0 <= self.dropout < 1.0, "unet.dropout must be in [0, 1)")
        for width in {self.inner_channel * m for m in self.channel_mults} | {self.inner_channel}:
            _require(
                width % self.norm_groups == 0,
                f"unet width {width} is not divisible by norm_groups={self.norm_groups}",
            )

    @property
    def levels(self) -> int:
        """Number of resolution levels."""
        return len(self.channel_mults)


@dataclass(frozen=True)
class RRDBConfig:
    """The RRDBNet spatial encoder (ESRGAN generator used as the LR feature extractor).

    Attributes:
        num_in_ch: input channels (3).
        num_out_ch: channels of the ×``scale`` head (3).
        num_feat: feature width; must equal :data:`CONTEXT_CHANNELS` (64).
        num_block: number of RRDB blocks in the trunk.
        num_grow_ch: growth channels of each dense block.
        scale: upscaling factor of the training head (4; 2 and 1 pixel-unshuffle the input).
    """

    num_in_ch: int = 3
    num_out_ch: int = 3
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32
    scale: int = 4

    def __post_init__(self) -> None:
        _require(
            self.num_feat == CONTEXT_CHANNELS,
            f"rrdb.num_feat must be {CONTEXT_CHANNELS} (the U-Net context conv is hard-wired "
            f"to it), got {self.num_feat}",
        )
        _require(self.num_block >= 1 and self.num_grow_ch >= 1, "rrdb sizes must be >= 1")
        _require(self.scale in (1, 2, 4), f"rrdb.scale must be 1, 2 or 4, got {self.scale}")


@dataclass(frozen=True)
class MoCoConfig:
    """The MoCo wrapper around the degradation encoder.

    Attributes:
        dim: feature width (256; the degradation encoder's MLP output).
        K: queue length (number of negative keys). Not recorded in ``hparams.yaml``; a loader
            should take it from the ``E.queue`` buffer's shape.
        m: momentum of the key-encoder update.
        T: softmax temperature of the InfoNCE logits.
    """

    dim: int = DEGRADATION_DIM
    K: int = 8192
    m: float = 0.999
    T: float = 0.07

    def __post_init__(self) -> None:
        _require(
            self.dim == DEGRADATION_DIM,
            f"moco.dim must be {DEGRADATION_DIM} (the degradation encoder's width), got {self.dim}",
        )
        _require(self.K >= 1, "moco.K must be >= 1")
        _require(0.0 <= self.m <= 1.0 and self.T > 0.0, "moco.m must be in [0, 1] and moco.T > 0")


@dataclass(frozen=True)
class DiffusionConfig:
    """The diffusion process.

    Attributes:
        n_timestep: number of discrete steps of the forward process.
        schedule: beta schedule; only the cosine schedule (s = 0.008, β ≤ 0.999) is used by
            DiffFuSR. The network predicts x0 and is fed the continuous noise level √ᾱ.
    """

    n_timestep: int = 1000
    schedule: Literal["cosine"] = "cosine"

    def __post_init__(self) -> None:
        _require(self.n_timestep >= 2, "diffusion.n_timestep must be >= 2")
        _require(
            self.schedule == "cosine",
            f"diffusion.schedule {self.schedule!r} is not supported (only 'cosine')",
        )


@dataclass(frozen=True)
class SRConfig:
    """Everything needed to build :class:`~difffusr_cli.models.sr.DiffusionSR`."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    rrdb: RRDBConfig = field(default_factory=RRDBConfig)
    moco: MoCoConfig = field(default_factory=MoCoConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    @classmethod
    def large(cls) -> SRConfig:
        """The configuration of the published DiffFuSR RGB checkpoints (~129 M U-Net parameters)."""
        return cls()

    @classmethod
    def small(cls) -> SRConfig:
        """The small test configuration of ``../shared/compat/sr_small.safetensors``."""
        return cls(
            unet=UNetConfig(
                inner_channel=32, channel_mults=(1, 1), res_blocks=1, attn_strides=(2,)
            ),
            rrdb=RRDBConfig(num_block=1, num_grow_ch=16),
            moco=MoCoConfig(K=64),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested ``dict`` (tuples become lists) for JSON."""
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SRConfig:
        """Inverse of :meth:`to_dict`. Missing sections take their defaults; unknown keys fail."""
        if not isinstance(d, Mapping):
            raise WeightsError(f"architecture config must be a mapping, got {type(d).__name__}")
        unknown = set(d) - {"unet", "rrdb", "moco", "diffusion"}
        if unknown:
            raise WeightsError(
                f"architecture config has unknown sections: {', '.join(sorted(unknown))}"
            )
        return cls(
            unet=_build(UNetConfig, d.get("unet", {}), "unet"),
            rrdb=_build(RRDBConfig, d.get("rrdb", {}), "rrdb"),
            moco=_build(MoCoConfig, d.get("moco", {}), "moco"),
            diffusion=_build(DiffusionConfig, d.get("diffusion", {}), "diffusion"),
        )

    @classmethod
    def from_hparams(cls, h: Mapping[str, Any], *, moco: MoCoConfig | None = None) -> SRConfig:
        """Read the ``hparams.yaml`` mapping of an official run.

        ``h`` is the parsed file with its EasyDict tags already turned into plain dicts; the
        architecture sits under ``lit_model.args`` (``diffusion_model``, ``encoder``,
        ``diffusion``). The MoCo queue length is not recorded there (upstream hard-wires it), so
        pass ``moco`` when the checkpoint's ``E.queue`` says otherwise.
        """
        try:
            args = h["lit_model"]["args"]
            unet_node, enc_node, diff_node = (
                args["diffusion_model"],
                args["encoder"],
                args["diffusion"],
            )
        except (KeyError, TypeError) as exc:
            raise WeightsError(f"hparams: missing key {exc} under lit_model.args") from None
        if unet_node.get("name") != "DiffUNetSR3Atom" or enc_node.get("name") != "RRDBNet":
            raise WeightsError(
                "hparams: unsupported architecture "
                f"(diffusion_model={unet_node.get('name')!r}, encoder={enc_node.get('name')!r}); "
                "expected DiffUNetSR3Atom with an RRDBNet encoder"
            )
        if args.get("dg_encoder", "DegradationEncoder") != "DegradationEncoder":
            raise WeightsError(f"hparams: unsupported dg_encoder {args.get('dg_encoder')!r}")
        if not args.get("ema", True):
            raise WeightsError("hparams: the run has no EMA network (ema: false); not supported")
        unet_args = dict(unet_node.get("args", {}))
        if not unet_args.pop("with_noise_level_emb", True):
            raise WeightsError("hparams: a U-Net without noise-level embedding is not supported")
        for key, expected in (("t_encode_mode", "continuous"), ("model_mean_type", "xstart")):
            if diff_node.get(key, expected) != expected:
                raise WeightsError(
                    f"hparams: diffusion.{key}={diff_node.get(key)!r} is not supported"
                )
        beta_type = diff_node.get("beta_type", "cosine")
        return cls(
            unet=_build(UNetConfig, unet_args, "diffusion_model.args"),
            rrdb=_build(RRDBConfig, enc_node.get("args", {}), "encoder.args"),
            moco=moco or MoCoConfig(),
            diffusion=_build(
                DiffusionConfig,
                {"n_timestep": diff_node.get("n_timestep", 1000), "schedule": beta_type},
                "diffusion",
            ),
        )


@dataclass(frozen=True)
class FusionConfig:
    """The three per-group fusion networks (one architecture for all three).

    Attributes:
        arch: ``"rrdb"`` (FusionRRDBNet, ~11 M parameters per group) or ``"mtf"`` (MTFNetFusion,
            ~0.2 M per group).
        nf: feature width.
        nb: RRDB blocks per stage (RRDB arch); the MTF arch uses ``nb // 2`` blocks in its detail
            and refinement nets.
        gc: growth channels of the dense blocks.
        injection: MTF arch only: the detail each band starts from. ``"mtf"`` (upstream): the
            pan minus its MTF-matched low-pass; ``"regression"``: the R, G, B details (each
            channel minus its MTF-matched low-pass) weighted by the band's local ridge
            regression on R, G, B over 5 × 5 of its own pixels
            (:meth:`~difffusr_cli.models.fusion_mtf.MTFNetFusion.regression_details`), so the
            nets refine a strong classical fusion instead of replacing it.
    """

    arch: FusionArch = "rrdb"
    nf: int = 64
    nb: int = 5
    gc: int = 32
    injection: FusionInjection = "mtf"

    def __post_init__(self) -> None:
        _require(
            self.arch in ("rrdb", "mtf"), f"fusion arch must be 'rrdb' or 'mtf', got {self.arch!r}"
        )
        _require(self.nf >= 4 and self.gc >= 1 and self.nb >= 1, "fusion nf/nb/gc out of range")
        if self.arch == "rrdb":
            _require(self.nf % 4 == 0, "fusion nf must be divisible by 4 (channel attention)")
        else:
            _require(self.nf % 2 == 0 and self.nb >= 2, "mtf fusion needs even nf and nb >= 2")
        _require(
            self.injection in ("mtf", "regression"),
            f"fusion injection must be 'mtf' or 'regression', got {self.injection!r}",
        )
        _require(
            self.injection == "mtf" or self.arch == "mtf",
            f"fusion injection {self.injection!r} needs the mtf architecture",
        )

    @classmethod
    def large_rrdb(cls) -> FusionConfig:
        """The RRDB fusion networks of the authors' code (nf 64, nb 5, gc 32)."""
        return cls("rrdb", 64, 5, 32)

    @classmethod
    def large_mtf(cls) -> FusionConfig:
        """The MTF fusion networks of the authors' newer code (nf 32, nb 3, gc 16)."""
        return cls("mtf", 32, 3, 16)

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FusionConfig:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, Mapping):
            raise WeightsError(f"fusion config must be a mapping, got {type(d).__name__}")
        return _build(cls, d, "fusion")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _build(kind: type, values: Any, where: str) -> Any:
    """Construct ``kind(**values)``, turning every problem into a one-line WeightsError."""
    if not isinstance(values, Mapping):
        raise WeightsError(
            f"architecture config: {where} must be a mapping, got {type(values).__name__}"
        )
    known = {f.name for f in fields(kind)}
    unknown = set(values) - known
    if unknown:
        raise WeightsError(
            f"architecture config: unknown keys in {where}: {', '.join(sorted(unknown))}"
        )
    try:
        return kind(**values)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"architecture config: {where}: {exc}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
