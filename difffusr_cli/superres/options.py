"""Options of a ``superres`` run (:class:`SuperresOptions`) and the constants they use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from difffusr_cli.errors import InputError
from difffusr_cli.io.codecs import compression_level
from difffusr_cli.io.writer import OutputDType
from difffusr_cli.tiling import ALIGN

FusionMethod = Literal["net", "gs", "bilinear"]
FUSION_METHODS: tuple[str, ...] = ("net", "gs", "bilinear")
Consistency = Literal["box", "off"]
#: ``box``: every band, box-averaged over its native pixels, reproduces the input (default).
CONSISTENCY_MODES: tuple[str, ...] = ("box", "off")
SamplingMethod = Literal["joint", "independent"]
SAMPLING_METHODS: tuple[str, ...] = ("joint", "independent")
#: Product file name for an input in ``-o DIR`` mode: ``<input stem>`` + this.
PRODUCT_SUFFIX = "_difffusr.tif"
#: Largest diffusion patch side (2.5 m pixels): beyond it a run cannot allocate its buffers.
MAX_PATCH = 4096
#: How the validity of output pixels is decided (also written to the product's tags).
NODATA_RULE = (
    "an output pixel is nodata when the 10 m, 20 m or 60 m pixel containing it is nodata "
    "(DN 0 or outside the scene) in any band of its group"
)


#: ``--joint-margin``'s default (context pixels of a jointly sampled patch); a smaller
#: ``--patch-size`` lowers it to the patch size.
DEFAULT_JOINT_MARGIN = 32


@dataclass(frozen=True)
class SuperresOptions:
    """Everything that controls a ``superres`` run (the CLI options, validated once).

    Sizes are in 2.5 m output pixels unless said otherwise.

    Attributes:
        rgb_model, fusion_model: manifest name or weights file; None = the manifest's default.
        fusion: ``net`` (learned nets), ``gs`` (Gram–Schmidt) or ``bilinear``.
        steps: DDIM sampler steps (network calls) per patch.
        seed: noise seed; each patch's noise depends on (seed, patch row, patch column) only.
        patch_size, overlap: diffusion patch side and overlap (multiples of 4). ``patch_size``
            None = auto (:func:`~difffusr_cli.superres.compute.auto_patch`): 672 for the
            published U-Net (10.3 % of its compute on overlap, (672/640)², 11.5 % on a full
            tile with its snapped last patches; 256 spent 30.6 %),
            smaller for a model whose self-attention would span more than 64 × 64 positions, and
            never much larger than the region.
        batch_size: patches per network call (patches of one patch row only); None = auto
            (from free GPU memory on CUDA, a small fixed batch elsewhere:
            :func:`difffusr_cli.superres.compute.resolve_compute`).
        fusion_batch_size: fusion tiles per network call (tiles of one tile row); None = auto.
        compile: ``torch.compile`` the denoiser and the fusion nets.
        channels_last: run the networks in the channels-last memory format.
        device: ``auto | cpu | cuda | cuda:N | mps``.
        precision: ``auto | fp32 | bf16 | fp16`` (auto: bf16 autocast on CUDA, fp32 elsewhere).
        window: ``(col, row, width, height)`` on the 10 m grid, or None.
        bbox: ``(xmin, ymin, xmax, ymax)`` in the scene's CRS, or None.
        dtype: ``uint16`` (input DN convention, scale/offset in the metadata) or ``float32``.
        cog: write a Cloud-Optimized GeoTIFF with overviews.
        compress, compress_level: the product's codec and its level (None: the codec's fastest);
            they never change pixels, so they stay out of the resume fingerprint (a resumed
            product is rewritten with the codec of the run that finishes it).
        resume: continue an interrupted run; overwrite: replace existing outputs.
        quiet: no progress bar and no summary.
        scale, offset: override the input's radiometric convention
            (reflectance = DN·scale + offset).
        fusion_tile, fusion_overlap: fusion tile side and blended overlap (multiples of 24);
            None = chosen for the fusion step
            (:func:`~difffusr_cli.superres.compute.fusion_tiling`).
        fusion_tile_rows: the tiles' height when it differs from their width (a multiple of
            24); None = ``fusion_tile``, or chosen with it for the fusion step.
        block_rows: output rows written (and recorded for resume) at a time.
        consistency: ``box`` corrects every band after fusion so that its 2.5 m pixels averaged
            over each valid native pixel (10, 20 or 60 m) give back the input reflectance
            (:mod:`difffusr_cli.consistency`); ``off`` keeps the fused pixels as they are.
        sampling: ``joint`` (the patches of a row step together on one canvas continuing the row
            above, so overlapping patches agree) or ``independent`` (each patch sampled on its
            own from its own noise, then blended).
        joint_margin: with joint sampling, the context pixels each patch sees beyond each of its
            edges (multiple of 4; rounded up to half the network's size multiple). 0 is fastest;
            16 costs (patch + 32)² / patch² of the network time and makes overlapping patches
            agree much better (docs/superres.md, "Joint sampling").
    """

    rgb_model: str | None = None
    fusion_model: str | None = None
    fusion: FusionMethod = "net"
    steps: int = 20
    seed: int = 0
    patch_size: int | None = None
    overlap: int = 32
    batch_size: int | None = None
    device: str = "auto"
    precision: str = "auto"
    window: tuple[int, int, int, int] | None = None
    bbox: tuple[float, float, float, float] | None = None
    dtype: OutputDType = "uint16"
    cog: bool = False
    compress: str = "zstd"
    compress_level: int | None = None
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False
    scale: float | None = None
    offset: float | None = None
    fusion_tile: int | None = None
    fusion_overlap: int | None = None
    fusion_tile_rows: int | None = None
    block_rows: int = 512
    fusion_batch_size: int | None = None
    compile: bool = False
    channels_last: bool = False
    consistency: Consistency = "box"
    sampling: SamplingMethod = "joint"
    joint_margin: int = DEFAULT_JOINT_MARGIN

    def validate(self) -> None:
        """Check values and combinations; raises ``InputError`` with the offending option."""
        if self.fusion not in FUSION_METHODS:
            raise InputError(
                f"--fusion {self.fusion!r}: expected one of {', '.join(FUSION_METHODS)}"
            )
        if self.sampling not in SAMPLING_METHODS:
            raise InputError(
                f"--sampling {self.sampling!r}: expected one of {', '.join(SAMPLING_METHODS)}"
            )
        if self.fusion_model is not None and self.fusion != "net":
            raise InputError(
                f"--fusion-model is only used with --fusion net, not with --fusion {self.fusion}"
            )
        if not 2 <= self.steps <= 1000:
            # The DDIM sampler needs a first and a last step
            # (difffusr_cli.diffusion.ddim_timesteps).
            raise InputError(f"--steps {self.steps}: expected 2 to 1000")
        if self.seed < 0:
            raise InputError(f"--seed {self.seed}: expected a non-negative integer")
        # auto patches are at least twice the overlap and at least the margin
        # (superres.compute.auto_patch), and at most MAX_PATCH like a given one
        patch = self.patch_size if self.patch_size is not None else MAX_PATCH
        if self.patch_size is not None and (self.patch_size < 16 or self.patch_size % 4):
            raise InputError(
                f"--patch-size {self.patch_size}: expected a multiple of 4 (whole 10 m pixels), "
                "at least 16"
            )
        if self.patch_size is not None and self.patch_size > MAX_PATCH:
            raise InputError(f"--patch-size {self.patch_size}: expected at most {MAX_PATCH}")
        if self.joint_margin < 0 or self.joint_margin % 4 or self.joint_margin > MAX_PATCH:
            raise InputError(
                f"--joint-margin {self.joint_margin}: expected a multiple of 4 from 0 to "
                f"{MAX_PATCH}"
            )
        # an auto patch is at least the margin, and the default margin shrinks to a smaller
        # --patch-size (superres.compute.resolve_compute); a margin asked for must fit
        if (
            self.patch_size is not None
            and self.joint_margin > self.patch_size
            and self.joint_margin != DEFAULT_JOINT_MARGIN
        ):
            raise InputError(
                f"--joint-margin {self.joint_margin}: expected at most the patch size "
                f"({self.patch_size})"
            )
        if self.overlap < 0 or self.overlap % 4 or self.overlap > patch // 2:
            limit = (
                "half the patch size" if self.patch_size is not None else "half the largest patch"
            )
            raise InputError(
                f"--overlap {self.overlap}: expected a multiple of 4 between 0 and {limit} "
                f"({patch // 2})"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"--batch-size {self.batch_size}: expected at least 1 or auto")
        if self.fusion_batch_size is not None and self.fusion_batch_size < 1:
            raise InputError(f"fusion batch size {self.fusion_batch_size}: expected at least 1")
        if self.window is not None and self.bbox is not None:
            raise InputError("give --window or --bbox, not both")
        if self.window is not None:
            col, row, width, height = self.window
            if width <= 0 or height <= 0:
                raise InputError(
                    f"--window {col} {row} {width} {height}: width and height must be positive"
                )
        if self.bbox is not None:
            xmin, ymin, xmax, ymax = self.bbox
            if not (xmin < xmax and ymin < ymax):
                raise InputError(
                    f"--bbox {xmin} {ymin} {xmax} {ymax}: expected XMIN < XMAX and YMIN < YMAX"
                )
        if self.dtype not in ("uint16", "float32"):
            raise InputError(f"--dtype {self.dtype!r}: expected uint16 or float32")
        try:
            compression_level(self.compress, self.compress_level)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if self.resume and self.overwrite:
            raise InputError("give --resume or --overwrite, not both")
        if self.fusion_tile is not None and (self.fusion_tile < ALIGN or self.fusion_tile % ALIGN):
            raise InputError(
                f"fusion tile {self.fusion_tile}: expected a positive multiple of {ALIGN}"
            )
        if self.fusion_tile_rows is not None and (
            self.fusion_tile_rows < ALIGN or self.fusion_tile_rows % ALIGN
        ):
            raise InputError(
                f"fusion tile rows {self.fusion_tile_rows}: expected a positive multiple of {ALIGN}"
            )
        if self.fusion_overlap is not None and (
            self.fusion_overlap < 0
            or self.fusion_overlap % ALIGN
            or (self.fusion_tile is not None and self.fusion_overlap >= self.fusion_tile)
            or (self.fusion_tile_rows is not None and self.fusion_overlap >= self.fusion_tile_rows)
        ):
            raise InputError(
                f"fusion overlap {self.fusion_overlap}: expected a multiple of {ALIGN} below the "
                "tile size"
            )
        if self.consistency not in CONSISTENCY_MODES:
            raise InputError(
                f"--consistency {self.consistency!r}: expected " + " or ".join(CONSISTENCY_MODES)
            )
        if self.block_rows < 1:
            raise InputError(f"block rows {self.block_rows}: expected at least 1")
