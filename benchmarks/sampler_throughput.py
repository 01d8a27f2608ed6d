"""Sampler throughput of the RGB diffusion model: batch 1 against batch 8 (not a test).

Runs the full official sampler (DDIM, η = 0, default 20 network calls) through
``RGBSuperResolver.super_resolve`` on random LR patches, with randomly initialised weights of the
small config by default (``--config large`` for the official architecture; the weights do not
change the cost). Prints patches per second for each batch size and the batch-8 / batch-1 ratio,
plus one JSON line for scripts.

    python benchmarks/sampler_throughput.py                 # small config, CPU, 16 px LR
    python benchmarks/sampler_throughput.py --device cuda --config large --lr-size 64
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from difffusr_cli.models import DiffusionSR, RGBSuperResolver, SRConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def patches_per_second(
    resolver: RGBSuperResolver, batch: int, lr_size: int, steps: int, repeats: int
) -> float:
    """Best-of-``repeats`` throughput in LR patches per second (after one warm-up call)."""
    lr = torch.rand(batch, 3, lr_size, lr_size)
    resolver.super_resolve(lr, steps=steps, seed=0)  # warm-up: allocator, kernels, caches
    best = float("inf")
    for repeat in range(repeats):
        _sync(resolver.device)
        start = time.perf_counter()
        resolver.super_resolve(lr, steps=steps, seed=repeat)
        _sync(resolver.device)
        best = min(best, time.perf_counter() - start)
    return batch / best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=("small", "large"), default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lr-size", type=int, default=16, help="LR patch side (HR = 4x)")
    parser.add_argument("--steps", type=int, default=20, help="sampler network calls")
    parser.add_argument("--batch", type=int, nargs=2, default=(1, 8), metavar=("SMALL", "LARGE"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = SRConfig.large() if args.config == "large" else SRConfig.small()
    resolver = RGBSuperResolver(DiffusionSR(config)).to(args.device)

    rates = {
        b: patches_per_second(resolver, b, args.lr_size, args.steps, args.repeats)
        for b in args.batch
    }
    small, large = args.batch
    result = {
        "config": args.config,
        "device": str(resolver.device),
        "device_name": torch.cuda.get_device_name(resolver.device)
        if resolver.device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lr_size": args.lr_size,
        "hr_size": 4 * args.lr_size,
        "steps": args.steps,
        "patches_per_s": {str(b): round(r, 4) for b, r in rates.items()},
        "ratio": round(rates[large] / rates[small], 3),
    }
    print(
        f"{args.config} config, {result['device']} ({result['device_name']}), {result['threads']} "
        "threads, "
        f"LR {args.lr_size}px -> HR {4 * args.lr_size}px, {args.steps} steps"
    )
    for b, r in rates.items():
        print(f"  batch {b:>3}: {r:8.3f} patches/s  ({1.0 / r:7.3f} s/patch)")
    print(f"  batch {large} / batch {small} throughput ratio: {result['ratio']:.2f}x")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
