"""GPU check: does ``superres`` keep a GPU busy? One script, no downloads, under 5 minutes.

Builds the official-size networks with random weights (``SRConfig.large()``, the MTF or RRDB
fusion nets of ``FusionConfig``; the weights do not change the cost) and measures, on one GPU:

1. **Diffusion throughput**: patches/s of ``RGBSuperResolver.super_resolve`` (the full DDIM
   sampler, ``--steps`` network calls) at the default patch, for batches 8, 16 and 32 under bf16
   autocast (``--precision``), plus batch 16 in channels-last (and compiled with ``--compile``);
   achieved TFLOP/s from ``torch.utils.flop_counter`` (counted on the meta device) and the
   fraction of the GPU's peak (table :data:`PEAK_TFLOPS` by device name, ``--peak-tflops``
   overrides); peak GPU memory per batch and per patch pixel (to check the estimate behind
   ``--batch-size auto``, ``superres.compute.PATCH_BYTES_PER_PIXEL``).
2. **Fusion throughput**: tiles/s and TFLOP/s of the fusion nets on default tiles with halo.
3. **Host time not hidden behind the GPU**: a full pipeline slice (``superres_many`` on a
   generated scene: reading, blending, fusion tiles, writing the GeoTIFF) against the same
   network calls alone, both timed with ``torch.cuda.synchronize``; the ratio is what the host
   adds.
4. **Projection**: the time for a full 10,980 × 10,980-pixel tile (patch and tile counts of the
   default layout × the measured rates × the host ratio).

Run on a machine with a GPU (prints a table and one JSON line; ``--out FILE`` also writes it)::

    python benchmarks/gpu_check.py                       # defaults: bf16, 20 steps, MTF fusion
    python benchmarks/gpu_check.py --out "$OUT/gpu_check.json" --peak-tflops 989

and on any machine, in seconds, to check that it runs (tiny networks and sizes, CPU)::

    python benchmarks/gpu_check.py --smoke

(``tests/test_benchmarks.py`` runs the smoke mode so the script cannot rot.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flops import fusion_tile_flops, sr_patch_flops  # noqa: E402  (benchmarks/flops.py)

from difffusr_cli.bands import SCALE  # noqa: E402
from difffusr_cli.device import autocast, select_device, select_precision  # noqa: E402
from difffusr_cli.example import make_example_safe  # noqa: E402
from difffusr_cli.models import DiffusionSR, RGBSuperResolver, SRConfig  # noqa: E402
from difffusr_cli.models.config import FusionConfig  # noqa: E402
from difffusr_cli.models.fusion import FusionNetwork  # noqa: E402
from difffusr_cli.models.predictors import FusionPredictor  # noqa: E402
from difffusr_cli.superres import (  # noqa: E402
    ModelInfo,
    SuperresOptions,
    build_models,
    superres_many,
)
from difffusr_cli.superres.compute import FUSION_TILING, auto_patch  # noqa: E402
from difffusr_cli.tiling import ALIGN, Layout, axis_starts, round_up  # noqa: E402

#: Dense bf16 tensor-core peaks (TFLOP/s) by a substring of the device name, first match wins.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("V100", 125.0),  # fp16 (no bf16)
    ("T4", 65.0),  # fp16
)
FULL_TILE = 10_980 * SCALE
#: The smoke test's fusion tile: its whole 96-pixel scene in one tile.
SMOKE_TILE = 96


@dataclass
class Setup:
    """Sizes of one check (the real one or the smoke test)."""

    sr: SRConfig
    fusion: FusionConfig
    patch: int
    batches: tuple[int, ...]
    steps: int
    scene: int  # side of the generated scene on the 10 m grid (multiple of 6)
    repeats: int
    overlap: int = 32


def setup(args: argparse.Namespace) -> Setup:
    """The official sizes, or tiny ones with ``--smoke``."""
    if args.smoke:
        return Setup(SRConfig.small(), FusionConfig("mtf", 4, 2, 2), 32, (1, 2), 2, 24, 1, 8)
    fusion = FusionConfig.large_mtf() if args.fusion == "mtf" else FusionConfig.large_rrdb()
    return Setup(SRConfig.large(), fusion, 0, tuple(args.batches), args.steps, 480, args.repeats)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    """The device's dense bf16 peak (``override`` first); None when unknown."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def sync(device: torch.device) -> None:
    """Wait for the device (GPU work is asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best-of-``repeats`` seconds of ``fn()`` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def peak_bytes(device: torch.device, fn: Callable[[], object]) -> int:
    """Peak GPU memory allocated while ``fn()`` runs (0 off CUDA)."""
    if device.type != "cuda":
        fn()
        return 0
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return int(torch.cuda.max_memory_allocated(device) - base)


def build(s: Setup, device: torch.device) -> tuple[RGBSuperResolver, FusionPredictor]:
    """Random-weight networks on ``device``."""
    torch.manual_seed(0)
    with torch.device(device):
        rgb = RGBSuperResolver(DiffusionSR(s.sr))
        fusion = FusionPredictor(FusionNetwork(s.fusion))
    return rgb, fusion


def meta_flops(s: Setup, patch: int, tile_side: int) -> tuple[int, int]:
    """FLOPs of one patch (all steps) and of one fusion tile with halo, counted on meta."""
    with torch.device("meta"):
        sr = DiffusionSR(s.sr)
        fusion = FusionPredictor(FusionNetwork(s.fusion))
    if s.fusion.arch == "mtf":
        for group in ("10m", "20m", "60m"):
            branch = fusion.net.branch(group)
            branch.mtf_ratios = torch.full_like(branch.mtf_ratios, branch.mtf_ratio, device="cpu")
    return sr_patch_flops(sr, patch, s.steps), fusion_tile_flops(fusion, tile_side)


def diffusion_rates(
    rgb: RGBSuperResolver, s: Setup, patch: int, dtype: torch.dtype, device: torch.device
) -> list[dict]:
    """Patches/s and peak memory per batch size (OOM reported, not fatal)."""
    rows = []
    for batch in s.batches:
        lr = torch.rand(batch, 3, patch // SCALE, patch // SCALE, device=device)

        def run(lr: torch.Tensor = lr) -> object:
            with autocast(device, dtype):
                return rgb.super_resolve(lr, steps=s.steps, seed=0)

        try:
            seconds = timed(run, device, s.repeats)
            memory = peak_bytes(device, run)
        except torch.cuda.OutOfMemoryError:
            rows.append({"batch": batch, "oom": True})
            torch.cuda.empty_cache()
            continue
        rows.append(
            {
                "batch": batch,
                "seconds": seconds,
                "patches_per_s": batch / seconds,
                "peak_gib": memory / 2**30,
                "bytes_per_patch_px": memory / (batch * patch * patch),
            }
        )
    return rows


def fusion_rate(
    fusion: FusionPredictor,
    s: Setup,
    side: int,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
) -> dict:
    """Tiles/s of the fusion nets on ``batch`` contexts of ``side`` pixels."""
    rgb = torch.rand(batch, 3, side, side, device=device)
    groups = {
        "10m": torch.rand(batch, 4, side // 4, side // 4, device=device),
        "20m": torch.rand(batch, 6, side // 8, side // 8, device=device),
        "60m": torch.rand(batch, 2, side // 24, side // 24, device=device),
    }

    def run() -> object:
        with autocast(device, dtype):
            return fusion(rgb, groups)

    seconds = timed(run, device, s.repeats)
    return {"batch": batch, "seconds": seconds, "tiles_per_s": batch / seconds}


def pipeline_slice(
    rgb: RGBSuperResolver, fusion: FusionPredictor, s: Setup, args: argparse.Namespace
) -> dict:
    """``superres_many`` on a generated scene against its network calls alone."""
    device = select_device(args.device)
    dtype = select_precision(args.precision, device)
    models = build_models(rgb, fusion, "net", ModelInfo("random", "0" * 64), ModelInfo("r", ""))
    options = SuperresOptions(
        steps=s.steps,
        patch_size=s.patch or None,
        overlap=s.overlap,
        device=args.device,
        precision=args.precision,
        quiet=True,
        overwrite=True,
        fusion_tile=SMOKE_TILE if args.smoke else None,
    )
    with tempfile.TemporaryDirectory() as tmp:
        safe = make_example_safe(Path(tmp), size=s.scene)
        out = Path(tmp) / "slice.tif"
        superres_many([safe], out, options, models=models)  # warm-up (kernels, allocator)
        sync(device)
        start = time.perf_counter()
        [summary] = superres_many([safe], out, options, models=models)
        sync(device)
        pipeline = time.perf_counter() - start
    # the same network calls alone: the patches run, in the pipeline's batches, and the tiles
    region = s.scene * SCALE
    patch = s.patch or auto_patch(models, (region, region), options.overlap)
    tile, tile_overlap = (SMOKE_TILE, 0) if args.smoke else FUSION_TILING[s.fusion.arch]
    halo = round_up(SCALE * fusion.receptive_halo, ALIGN)
    layout = Layout(region, region, patch, options.overlap, tile, tile_overlap, halo, 512)
    per_row = len(layout.patch_cols)
    batch = min(summary_batch(device, patch, dtype), per_row)
    lr = torch.rand(batch, 3, patch // SCALE, patch // SCALE, device=device)
    th, tw = layout.tile_shape
    n_tiles = len(layout.tile_rows) * len(layout.tile_cols)
    g = {"10m": 4, "20m": 8, "60m": 24}
    context = (th + 2 * halo, tw + 2 * halo)
    guidance = torch.rand(1, 3, *context, device=device)
    groups = {
        k: torch.rand(1, c, context[0] // g[k], context[1] // g[k], device=device)
        for k, c in (("10m", 4), ("20m", 6), ("60m", 2))
    }

    def networks() -> None:
        left = summary.patches_run
        while left > 0:
            n = min(batch, left)
            with autocast(device, dtype):
                rgb.super_resolve(lr[:n], steps=s.steps, seed=0)
            left -= n
        for _ in range(n_tiles):
            with autocast(device, dtype):
                fusion(guidance, groups)

    alone = timed(networks, device, 1)
    return {
        "pixels": region**2,
        "patches": summary.patches_run,
        "fusion_tiles": n_tiles,
        "pipeline_s": pipeline,
        "networks_alone_s": alone,
        "host_ratio": pipeline / alone,
    }


def summary_batch(device: torch.device, patch: int, dtype: torch.dtype) -> int:
    """The batch ``--batch-size auto`` picks (what the pipeline slice ran with)."""
    from difffusr_cli.superres.compute import (
        FIXED_BATCH,
        MAX_BATCH,
        PATCH_BYTES_PER_PIXEL,
        auto_batch,
    )

    scale = 1 if dtype in (torch.bfloat16, torch.float16) else 2
    item = scale * PATCH_BYTES_PER_PIXEL * patch * patch
    return auto_batch(device, item, fixed=FIXED_BATCH, cap=MAX_BATCH)


def main(argv: list[str] | None = None) -> dict:
    """Run the check; print the table and one JSON line; return the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (any device, seconds)")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--precision", default="auto", help="auto (bf16 on CUDA), bf16, fp32")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps per patch")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats (best of)")
    parser.add_argument("--fusion", choices=("mtf", "rrdb"), default="mtf")
    parser.add_argument("--compile", action="store_true", help="also time batch 16 compiled")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's bf16 peak")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.smoke and args.device == "auto":
        args.device = "cpu"
    s = setup(args)
    device = select_device(args.device)
    dtype = select_precision(args.precision, device)
    started = time.perf_counter()
    rgb, fusion = build(s, device)
    with torch.device("meta"):
        layout_models = build_models(
            RGBSuperResolver(DiffusionSR(s.sr)), None, "bilinear", ModelInfo("m", "")
        )
    patch = s.patch or auto_patch(layout_models, (FULL_TILE, FULL_TILE), s.overlap)
    halo = round_up(SCALE * fusion.receptive_halo, ALIGN)
    tile, tile_overlap = (SMOKE_TILE, 0) if args.smoke else FUSION_TILING[s.fusion.arch]
    side = tile + 2 * halo
    patch_flops, tile_flops = meta_flops(s, patch, side)
    peak = peak_tflops(device, args.peak_tflops)

    result: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "precision": str(dtype).removeprefix("torch."),
        "patch": patch,
        "steps": s.steps,
        "patch_tflop": patch_flops / 1e12,
        "fusion": {
            "arch": s.fusion.arch,
            "tile": tile,
            "halo": halo,
            "tile_tflop": tile_flops / 1e12,
        },
        "peak_tflops": peak,
    }
    rates = diffusion_rates(rgb, s, patch, dtype, device)
    # channels-last (and compiled) at the middle batch
    middle = s.batches[len(s.batches) // 2]
    rgb.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    extra = diffusion_rates(
        rgb, Setup(**{**s.__dict__, "batches": (middle,)}), patch, dtype, device
    )
    for row in extra:
        row["variant"] = "channels-last"
    rates += extra
    rgb.model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    if args.compile:
        rgb.model.denoiser(ema=True).compile()
        compiled = diffusion_rates(
            rgb, Setup(**{**s.__dict__, "batches": (middle,)}), patch, dtype, device
        )
        for row in compiled:
            row["variant"] = "compiled"
        rates += compiled
    for row in rates:
        if "patches_per_s" in row:
            row["tflops"] = row["patches_per_s"] * patch_flops / 1e12
            row["peak_fraction"] = row["tflops"] / peak if peak else None
    result["diffusion"] = rates
    fusion_row = fusion_rate(fusion, s, side, 1 if args.smoke else 2, dtype, device)
    fusion_row["tflops"] = fusion_row["tiles_per_s"] * tile_flops / 1e12
    fusion_row["peak_fraction"] = fusion_row["tflops"] / peak if peak else None
    result["fusion"].update(fusion_row)
    result["pipeline_slice"] = pipeline_slice(rgb, fusion, s, args)

    best = max((r["patches_per_s"] for r in rates if "patches_per_s" in r), default=0.0)
    n_patches = len(axis_starts(FULL_TILE, patch, s.overlap)) ** 2
    n_tiles = len(axis_starts(round_up(FULL_TILE, ALIGN), tile, tile_overlap)) ** 2
    networks_s = n_patches / best + n_tiles / fusion_row["tiles_per_s"] if best else None
    result["full_tile"] = {
        "patches": n_patches,
        "fusion_tiles": n_tiles,
        "networks_hours": networks_s / 3600 if networks_s else None,
        "with_host_hours": networks_s * result["pipeline_slice"]["host_ratio"] / 3600
        if networks_s
        else None,
    }
    result["seconds"] = time.perf_counter() - started
    report(result)
    text = json.dumps(result)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return result


def report(r: dict) -> None:
    """The human-readable table."""
    print(
        f"{r['device']}, {r['precision']}, patch {r['patch']}, {r['steps']} steps, "
        f"{r['patch_tflop']:.2f} TFLOP per patch; peak {r['peak_tflops']} TFLOP/s"
    )
    for row in r["diffusion"]:
        label = f"batch {row['batch']:>3} {row.get('variant', '')}"
        if row.get("oom"):
            print(f"  {label:28} out of memory")
            continue
        frac = f"{100 * row['peak_fraction']:.1f} %" if row["peak_fraction"] else "n/a"
        print(
            f"  {label:28} {row['patches_per_s']:8.3f} patches/s {row['tflops']:8.1f} TFLOP/s "
            f"({frac} of peak), peak {row['peak_gib']:.2f} GiB "
            f"({row['bytes_per_patch_px']:.0f} B per patch pixel)"
        )
    f = r["fusion"]
    frac = f"{100 * f['peak_fraction']:.1f} %" if f["peak_fraction"] else "n/a"
    print(
        f"  fusion {f['arch']} tile {f['tile']} + 2·{f['halo']}: {f['tiles_per_s']:.3f} tiles/s, "
        f"{f['tflops']:.1f} TFLOP/s ({frac})"
    )
    p = r["pipeline_slice"]
    print(
        f"  pipeline slice {p['pixels'] / 1e6:.1f} MPix: {p['pipeline_s']:.2f} s, "
        f"networks alone {p['networks_alone_s']:.2f} s: host ratio {p['host_ratio']:.2f}"
    )
    t = r["full_tile"]
    if t["networks_hours"]:
        print(
            f"  full tile: {t['patches']} patches, {t['fusion_tiles']} fusion tiles: "
            f"{t['networks_hours']:.2f} h of networks, {t['with_host_hours']:.2f} h with host"
        )
    print(f"  check took {r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
