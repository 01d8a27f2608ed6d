"""Joint against independent sampling of the diffusion patches (not a test).

On real data from ../shared/data (the T29UNU L2A SAFE when it holds the 10 m bands, else the
real L1C scene ``dsen2_T33UUB``; skipped cleanly when neither is there), with the shipped demo
model ``rgb-tiny`` and ``--fusion bilinear`` on a small window inside the scene, measures:

a. ``overlap_disagreement`` (horizontal and vertical) with ``--sampling joint`` (at
   ``--joint-margin`` 0, 16 and 32, the default) and with ``--sampling independent``, same
   window and seed, and their ratio (target ≤ 0.25);
b. the time of each run at the same patch count, and their ratio (target ≤ 1.15).

Both runs use preloaded models, so the times are the pipeline's alone; they run on one torch
thread and the time is the process's CPU time (user + system), which a busy shared machine
does not inflate the way it inflates wall time. Prints a table and one JSON line.

    python benchmarks/joint_sampling.py                    # 192 × 192 px, 64 px patches, 8 steps
    python benchmarks/joint_sampling.py --patch 128 --size 96
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from difffusr_cli.errors import InputError
from difffusr_cli.io import open_scene
from difffusr_cli.superres import SuperresOptions, superres_many
from difffusr_cli.superres.models import load_models

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
#: (name, --sampling, --joint-margin) of the runs compared.
RUNS = (
    ("independent", "independent", 0),
    ("joint-m0", "joint", 0),
    ("joint-m16", "joint", 16),
    ("joint-m32", "joint", 32),  # the default
)
CANDIDATES = (
    "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE",
    "dsen2_T33UUB",
)


def real_scene(shared: Path) -> Path | None:
    """The first shared scene that has every band superres needs, or None."""
    for name in CANDIDATES:
        path = shared / name
        if not path.exists():
            continue
        try:
            with open_scene(path) as scene:
                scene.require_bands()
        except InputError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
            continue
        return path
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--size", type=int, default=48, help="window side, 10 m pixels")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    scene = real_scene(args.shared)
    if scene is None:
        print(f"no usable real scene under {args.shared}; nothing measured")
        return 0
    with open_scene(scene) as opened:
        col = (opened.width // 2 - args.size // 2) // 6 * 6
        row = (opened.height // 2 - args.size // 2) // 6 * 6
    options = SuperresOptions(
        rgb_model="rgb-tiny",
        fusion="bilinear",
        steps=args.steps,
        seed=args.seed,
        patch_size=args.patch,
        overlap=args.overlap,
        device="cpu",
        window=(col, row, args.size, args.size),
        quiet=True,
    )
    device = torch.device("cpu")
    torch.set_num_threads(1)
    models = load_models(options, device)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, sampling, margin in RUNS:
            out = Path(tmp) / f"{name}.tif"
            started = time.process_time()
            run = replace(options, sampling=sampling, joint_margin=margin)
            [summary] = superres_many([scene], out, run, models=models)
            results[name] = {
                "seconds": time.process_time() - started,
                "wall_seconds": summary.seconds,
                "patches": summary.patches_run,
                **(summary.overlap_disagreement or {}),
            }
    independent = results["independent"]
    ratios = {}
    for name, joint in results.items():
        if name != "independent":
            ratios[name] = {
                axis: joint[axis] / independent[axis]
                for axis in ("horizontal", "vertical")
                if joint.get(axis) is not None and independent.get(axis)
            }
            ratios[name]["time"] = joint["seconds"] / independent["seconds"]
    print(
        f"scene {scene.name}, window {options.window}, patch {args.patch}/{args.overlap}, "
        f"{args.steps} steps, {independent['patches']} patches; CPU seconds on one thread"
    )
    print(f"{'':16} {'horizontal':>11} {'vertical':>11} {'seconds':>9}")
    for name, r in results.items():
        print(f"{name:16} {r['horizontal']:11.5f} {r['vertical']:11.5f} {r['seconds']:9.2f}")
    for name, r in ratios.items():
        print(
            f"{name + ' / ind':16} {r.get('horizontal', float('nan')):11.3f} "
            f"{r.get('vertical', float('nan')):11.3f} {r['time']:9.3f}"
        )
    record = {"scene": scene.name, "window": options.window, "patch": args.patch}
    record |= {"overlap": args.overlap, "steps": args.steps, "results": results, "ratios": ratios}
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
