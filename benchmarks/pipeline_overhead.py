"""Cost of the superres pipeline around its networks (not a test).

On the synthetic example SAFE, with randomly initialised networks (the weights do not change the
cost), measures:

a. pipeline time against the time spent inside the networks (overhead ratio, target ≤ 10 %);
b. peak RSS and time for a scene and for the same scene with 4× the area, each in a fresh process
   (targets: RSS ratio ≤ 1.1, time ratio 4 ± 0.4), and for 4× the height at the same width
   (memory grows with a region's width, not its height: docs/superres.md);
c. patches per second with batch 1 and batch 8;

and, when a CUDA GPU is present, (a) and (c) again on it plus seconds per km² with the
official-size architecture (``SRConfig.large()`` and the large RRDB fusion nets, 20 steps,
256-pixel patches). Prints a table and one JSON line.

    python benchmarks/pipeline_overhead.py                  # CPU, small config (minutes)
    python benchmarks/pipeline_overhead.py --size 48 --steps 4   # a quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from difffusr_cli.device import peak_memory
from difffusr_cli.example import make_example_safe
from difffusr_cli.io import open_scene
from difffusr_cli.models import (
    DiffusionSR,
    FusionConfig,
    FusionNetwork,
    FusionPredictor,
    RGBSuperResolver,
    SRConfig,
)
from difffusr_cli.superres import ModelInfo, Models, SuperresOptions, build_models, superres_scene


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NetworkClock:
    """Wraps a :class:`Models` so every network call is timed (synchronised on CUDA)."""

    def __init__(self, models: Models, device: torch.device) -> None:
        self.seconds = 0.0
        self.device = device
        clock = self

        class TimedSR:
            def super_resolve(self, lr, steps=20, *, noise=None):
                return clock._timed(models.rgb.super_resolve, lr, steps=steps, noise=noise)

        self.models = replace(models, rgb=TimedSR(), fuse=lambda *a: self._timed(models.fuse, *a))

    def _timed(self, fn, *args, **kwargs):
        _sync(self.device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        _sync(self.device)
        self.seconds += time.perf_counter() - start
        return out


def random_models(config: str, device: torch.device) -> Models:
    """Randomly initialised networks of the ``small`` or ``large`` (official) size."""
    torch.manual_seed(0)
    sr = SRConfig.large() if config == "large" else SRConfig.small()
    fusion = (
        FusionConfig.large_rrdb() if config == "large" else FusionConfig("rrdb", nf=8, nb=1, gc=4)
    )
    rgb = RGBSuperResolver(DiffusionSR(sr)).to(device)
    net = FusionPredictor(FusionNetwork(fusion)).to(device)
    return build_models(
        rgb,
        net,
        "net",
        ModelInfo(f"random-{config}", "-"),
        ModelInfo(f"random-{config}-fusion", "-"),
    )


def run_once(
    safe: Path, out: Path, options: SuperresOptions, models: Models, device: torch.device
) -> dict:
    """One pipeline run with preloaded models: wall time, network time, patches."""
    clock = NetworkClock(models, device)
    with open_scene(safe) as scene:
        _sync(device)
        start = time.perf_counter()
        summary = superres_scene(
            scene, out, replace(options, overwrite=True), clock.models, device, torch.float32
        )
        _sync(device)
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "network_seconds": clock.seconds,
        "overhead": seconds / clock.seconds - 1.0,
        "patches": summary.patches_run,
        "patches_per_s": summary.patches_run / seconds,
        "peak_memory_mib": peak_memory(device)[0] / 2**20,
    }


def child(size: int, args: argparse.Namespace) -> None:
    """(b) in a fresh process: a scene of ``size`` 10 m pixels (``--child-window``: only the
    window ``0 0 W H`` of it); prints JSON."""
    device = torch.device(args.device)
    window = (0, 0, *args.child_window) if args.child_window else None
    with tempfile.TemporaryDirectory() as tmp:
        safe = make_example_safe(tmp, size=size)
        models = random_models("small", device)
        # Warm-up (kernel selection, first-call allocations) outside the measured run.
        run_once(
            safe,
            Path(tmp) / "warmup.tif",
            _options(args, args.device, window=(0, 0, 12, 12)),
            models,
            device,
        )
        result = run_once(
            safe, Path(tmp) / "out.tif", _options(args, args.device, window=window), models, device
        )
    result["rss_mib"] = peak_memory(torch.device("cpu"))[0] / 2**20
    print(json.dumps(result))


def _options(args: argparse.Namespace, device: str, **changes: object) -> SuperresOptions:
    # Blocks and fusion tiles scaled down with the scenes (128 rows, 144 px) so that even the
    # small benchmark scenes span several of each, as a real scene does.
    base = SuperresOptions(
        steps=args.steps,
        patch_size=64,
        overlap=16,
        batch_size=4,
        device=device,
        quiet=True,
        fusion_tile=144,
        fusion_overlap=48,
        block_rows=128,
    )
    return replace(base, **changes)


def _in_fresh_process(
    size: int, args: argparse.Namespace, window: tuple[int, int] | None = None
) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        str(size),
        "--steps",
        str(args.steps),
        "--device",
        args.device,
    ]
    if window:
        command += ["--child-window", *map(str, window)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratios(small: dict, large: dict) -> dict:
    return {
        "time_ratio": large["seconds"] / small["seconds"],
        "rss_ratio": large["rss_mib"] / small["rss_mib"],
        "rss_mib": [small["rss_mib"], large["rss_mib"]],
        "seconds": [small["seconds"], large["seconds"]],
    }


def measure(device_name: str, args: argparse.Namespace, safe: Path, tmp: Path) -> dict:
    device = torch.device(device_name)
    models = random_models("small", device)
    run_once(
        safe, tmp / "warmup.tif", _options(args, device_name, window=(0, 0, 12, 12)), models, device
    )
    a = run_once(safe, tmp / "a.tif", _options(args, device_name), models, device)
    # (c) measures the diffusion: bilinear fusion keeps the fusion nets out of patches/s.
    bilinear = build_models(models.rgb, None, "bilinear", models.rgb_info)  # type: ignore[arg-type]
    options = {b: _options(args, device_name, batch_size=b, fusion="bilinear") for b in (1, 8)}
    rates = {
        b: run_once(safe, tmp / f"b{b}.tif", options[b], bilinear, device)["patches_per_s"]
        for b in (1, 8)
    }
    return {"overhead": a, "patches_per_s": rates, "batch8_over_batch1": rates[8] / rates[1]}


def seconds_per_km2(args: argparse.Namespace, tmp: Path) -> dict:
    """Official-size architecture on CUDA (random weights), 20 steps, default tiling."""
    device = torch.device("cuda")
    models = random_models("large", device)
    safe = make_example_safe(tmp / "large", size=192)
    options = SuperresOptions(steps=20, batch_size=args.large_batch, device="cuda", quiet=True)
    with open_scene(safe) as scene:
        _sync(device)
        start = time.perf_counter()
        summary = superres_scene(scene, tmp / "large.tif", options, models, device, torch.bfloat16)
        _sync(device)
        seconds = time.perf_counter() - start
    km2 = (192 * 10 / 1000) ** 2
    return {
        "seconds": seconds,
        "km2": km2,
        "seconds_per_km2": seconds / km2,
        "patches_per_s": summary.patches_run / seconds,
        "full_tile_hours_estimate": seconds / km2 * 109.8**2 / 3600,
        "peak_gpu_mib": summary.peak_memory / 2**20,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=int, default=96, help="scene side in 10 m pixels (multiple of 6)"
    )
    parser.add_argument("--steps", type=int, default=20, help="sampler steps (small config)")
    parser.add_argument("--device", default="cpu", help="device of parts (a)-(c)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--large-batch", type=int, default=8, help="batch size of the official-size CUDA run"
    )
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-window", type=int, nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args)
        return {}

    result: dict = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "size": args.size,
        "steps": args.steps,
    }
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        safe = make_example_safe(tmp, size=args.size)
        result[args.device] = measure(args.device, args, safe, tmp)
        result["area_x4"] = _ratios(
            _in_fresh_process(args.size, args), _in_fresh_process(2 * args.size, args)
        )
        # Memory grows with the region's width (docs/superres.md), not its height: the same
        # width, 4× the height, both taller than a block and its tiles.
        tall = 4 * args.size
        result["height_x4"] = _ratios(
            _in_fresh_process(tall, args, (args.size, args.size)),
            _in_fresh_process(tall, args, (args.size, tall)),
        )
        if torch.cuda.is_available() and args.device != "cuda":
            result["cuda"] = measure("cuda", args, safe, tmp)
        if torch.cuda.is_available():
            result["cuda_large"] = seconds_per_km2(args, tmp)

    part = result[args.device]
    a = part["overhead"]
    print(
        f"{args.device}, {result['threads']} threads, scene {args.size}² at 10 m, small config, "
        f"{args.steps} steps"
    )
    print(
        f"(a) pipeline {a['seconds']:.2f} s, networks {a['network_seconds']:.2f} s: overhead "
        f"{a['overhead']:.1%} (target ≤ 10 %)"
    )
    area = result["area_x4"]
    print(
        f"(b) 4× area: time ratio {area['time_ratio']:.2f} (target 4 ± 0.4), peak RSS "
        f"{area['rss_mib'][0]:.0f} → {area['rss_mib'][1]:.0f} MiB, ratio {area['rss_ratio']:.2f} "
        "(target ≤ 1.1)"
    )
    tall = result["height_x4"]
    print(
        f"    4× height, same width: time ratio {tall['time_ratio']:.2f}, peak RSS "
        f"{tall['rss_mib'][0]:.0f} → {tall['rss_mib'][1]:.0f} MiB, ratio {tall['rss_ratio']:.2f}"
    )
    rates = part["patches_per_s"]
    print(
        f"(c) diffusion patches/s: batch 1 {rates[1]:.2f}, batch 8 {rates[8]:.2f} "
        f"(×{part['batch8_over_batch1']:.2f})"
    )
    if "cuda" in result:
        c = result["cuda"]
        print(
            f"CUDA: overhead {c['overhead']['overhead']:.1%}, patches/s batch 1 "
            f"{c['patches_per_s'][1]:.1f}, batch 8 {c['patches_per_s'][8]:.1f}"
        )
    if "cuda_large" in result:
        g = result["cuda_large"]
        print(
            f"CUDA, official-size networks, 20 steps, bf16: {g['seconds_per_km2']:.1f} s/km² "
            f"(a 110 km tile ≈ {g['full_tile_hours_estimate']:.1f} h), peak GPU memory "
            f"{g['peak_gpu_mib']:.0f} MiB"
        )
    print(json.dumps(result, default=float))
    return result


if __name__ == "__main__":
    main()
