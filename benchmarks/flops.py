"""FLOPs per output pixel of each stage with the default layout (not a test).

Counts with ``torch.utils.flop_counter.FlopCounterMode`` on the official-size networks built on
the ``meta`` device (shapes only: no weights, no compute, seconds on any machine):

- **diffusion**: the SR model per patch = conditioning (RRDB encoder + degradation encoder, once)
  + the EMA U-Net × ``steps``;
- **fusion**: the MTF and the RRDB fusion nets (the three branches) on one tile with its halo.

For each stage: the cost per computed pixel (the *patch-interior* cost: FLOPs of one window /
its area), the cost per output pixel with the overlap and halo (asymptotic: window FLOPs /
stride²; and on a full 10,980 × 10,980-pixel tile, whose last windows are snapped to the edge),
and their ratio. Defaults against the previous ones (patch 256, tiles 480/48 with the old halo).

    python benchmarks/flops.py                # defaults, 20 steps
    python benchmarks/flops.py --steps 20 --json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from difffusr_cli.bands import SCALE
from difffusr_cli.models import DiffusionSR, RGBSuperResolver, SRConfig
from difffusr_cli.models.config import FusionConfig
from difffusr_cli.models.fusion import FusionNetwork
from difffusr_cli.models.predictors import FusionPredictor
from difffusr_cli.superres.compute import FUSION_TILE_ROWS, FUSION_TILING, auto_patch
from difffusr_cli.superres.models import ModelInfo, build_models
from difffusr_cli.tiling import ALIGN, axis_starts, round_up

#: A full Sentinel-2 tile on the 2.5 m grid.
FULL_TILE = 10_980 * SCALE
META = torch.device("meta")


def count(fn) -> int:  # noqa: ANN001 - any callable
    """FLOPs of one call of ``fn()`` (multiply-add = 2 FLOPs)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def sr_patch_flops(sr: DiffusionSR, patch: int, steps: int) -> int:
    """FLOPs of super-resolving one ``patch`` × ``patch`` output patch (batch 1)."""
    lr = torch.empty(1, 3, patch // SCALE, patch // SCALE, device=META)
    x = torch.empty(1, 3, patch, patch, device=META)
    level = torch.empty(1, 1, device=META)
    with torch.no_grad():
        condition = count(lambda: sr.condition(lr))
        ctx, fea = sr.condition(lr)
        step = count(lambda: sr.denoiser()(x, level, ctx, fea))
    return condition + steps * step


def fusion_tile_flops(predictor: FusionPredictor, height: int, width: int | None = None) -> int:
    """FLOPs of fusing one ``height`` × ``width`` context (tile + 2·halo), batch 1."""
    width = width or height
    rgb = torch.empty(1, 3, height, width, device=META)
    groups = {
        g: torch.empty(1, n, height // f, width // f, device=META)
        for g, n, f in (("10m", 4, 4), ("20m", 6, 8), ("60m", 2, 24))
    }
    with torch.no_grad():  # the nets themselves (autocast, hence __call__, has no meta device)
        ms = predictor._network_inputs(rgb, groups, META)
        return count(lambda: predictor.net(rgb, ms))


@dataclass
class Stage:
    """Cost of one stage: window FLOPs and the layout it runs on.

    Sizes are ``(rows, columns)`` (an int: square).
    """

    name: str
    window_flops: int  # one window (patch, or tile with its halo)
    window: int | tuple[int, int]  # the computed window
    stride: int | tuple[int, int]  # window step (side − overlap)
    core: int | tuple[int, int]  # what a window contributes (patch, or tile without halo)
    overlap: int

    @staticmethod
    def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
        return (size, size) if isinstance(size, int) else size

    @property
    def interior(self) -> float:
        """FLOPs per computed pixel (the patch-interior cost)."""
        h, w = self._pair(self.window)
        return self.window_flops / (h * w)

    @property
    def per_output(self) -> float:
        """FLOPs per output pixel on an unbounded region (window FLOPs / stride area)."""
        h, w = self._pair(self.stride)
        return self.window_flops / (h * w)

    @property
    def per_output_full_tile(self) -> float:
        """FLOPs per output pixel on a full 10,980² tile (snapped last windows included)."""
        side = round_up(FULL_TILE, ALIGN)
        rows, cols = (len(axis_starts(side, c, self.overlap)) for c in self._pair(self.core))
        return rows * cols * self.window_flops / FULL_TILE**2

    def row(self) -> dict:
        """The stage as a JSON-able dict (MFLOP per pixel, ratios)."""
        return {
            "stage": self.name,
            "window": self.window,
            "stride": self.stride,
            "interior_mflop_px": round(self.interior / 1e6, 2),
            "output_mflop_px": round(self.per_output / 1e6, 2),
            "full_tile_mflop_px": round(self.per_output_full_tile / 1e6, 2),
            "ratio": round(self.per_output / self.interior, 3),
            "ratio_full_tile": round(self.per_output_full_tile / self.interior, 3),
        }


def stages(steps: int, overlap: int = 32) -> list[Stage]:
    """The stages at the defaults and at the previous defaults."""
    with torch.device(META):
        sr = DiffusionSR(SRConfig.large())
        mtf = FusionPredictor(FusionNetwork(FusionConfig.large_mtf()))
        rrdb = FusionPredictor(FusionNetwork(FusionConfig.large_rrdb()))
    for group in ("10m", "20m", "60m"):  # read as Python ints (.item()): keep them off meta
        branch = mtf.net.branch(group)
        branch.mtf_ratios = torch.full_like(branch.mtf_ratios, branch.mtf_ratio, device="cpu")
    models = build_models(RGBSuperResolver(sr), None, "bilinear", ModelInfo("official", ""))
    patch = auto_patch(models, (FULL_TILE, FULL_TILE), overlap)
    out = []
    for label, p, margin, calls in (
        (f"diffusion {patch} independent", patch, 0, steps),
        # joint sampling runs each patch with its context margin (patch + 2·margin) and skips
        # the plain sampler's last call, an identity (t = 0 → 0)
        (f"diffusion {patch} joint margin 32", patch, 32, steps - 1),
        (f"diffusion {patch} joint margin 16", patch, 16, steps - 1),
        ("diffusion 256 (before)", 256, 0, steps),
    ):
        flops = sr_patch_flops(sr, p + 2 * margin, calls)
        out.append(Stage(label, flops, p + 2 * margin, p - overlap, p, overlap))
    old_halo = {"mtf": 144, "rrdb": 192}  # the additive estimate before (MTF)
    for arch, predictor in (("mtf", mtf), ("rrdb", rrdb)):
        halo = round_up(SCALE * predictor.receptive_halo, ALIGN)
        width, tile_overlap = FUSION_TILING[arch]
        height = FUSION_TILE_ROWS.get(arch, width)
        shape = f"{height} × {width}" if height != width else f"{width}"
        layouts = [(f"fusion {arch} {shape}/{tile_overlap} halo {halo}", height, width, halo)]
        if (height, width) != (1536, 1536):
            layouts.append(
                (f"fusion {arch} 1536/{tile_overlap} halo {halo} (before)", 1536, 1536, halo)
            )
        layouts.append(
            (f"fusion {arch} 480/48 halo {old_halo[arch]} (before)", 480, 480, old_halo[arch])
        )
        for label, th, tw, h in layouts:
            o = tile_overlap if "480/48" not in label else 48
            flops = fusion_tile_flops(predictor, th + 2 * h, tw + 2 * h)
            window = (th + 2 * h, tw + 2 * h)
            out.append(Stage(label, flops, window, (th - o, tw - o), (th, tw), o))
    return out


def main() -> None:
    """Print the table (and one JSON line with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="sampler steps (network calls)")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    args = parser.parse_args()
    rows = [s.row() for s in stages(args.steps)]
    header = f"{'stage':46} {'interior':>9} {'output':>9} {'full tile':>9} {'ratio':>6} {'full':>6}"
    print(f"MFLOP per pixel, {args.steps} sampler steps; ratio = output / interior")
    print(header)
    for r in rows:
        print(
            f"{r['stage']:46} {r['interior_mflop_px']:9.2f} {r['output_mflop_px']:9.2f} "
            f"{r['full_tile_mflop_px']:9.2f} {r['ratio']:6.3f} {r['ratio_full_tile']:6.3f}"
        )
    if args.json:
        print(json.dumps({"steps": args.steps, "stages": rows}))


if __name__ == "__main__":
    main()
