"""Faithfulness of the product on real data (not a test): reflectance consistency and frames.

On a real Sentinel-2 scene with every band at its native resolution (the shared
``dsen2_T33UUB`` crop: the T29UNU mini SAFE in ../shared holds 60 m bands only, so the pipeline
cannot run on it), with the shipped models ``rgb-tiny``/``fusion-s2`` (docs/superres.md
records a run made with the earlier ``fusion-tiny``), measures:

a. per band, mean |box average of the product over each native pixel − input| on valid native
   pixels, with ``--consistency box`` and ``off``, for ``--fusion net``, ``gs`` and ``bilinear``
   (target with box: ≤ 0.0002 reflectance; float32 products, so no uint16 rounding);
b. the frame of an interior ``--window``: mean gradient magnitude in the outer 8-pixel ring over
   that of the interior (target ≤ 1.3), with context (now) and without (the window processed on
   its own, as before), for every run (``gs`` keeps the diffusion RGB, whose patch edges make the
   frame, and is cheap: it carries the before/after comparison);
c. the time the consistency step adds, in seconds per output megapixel (a nearest-neighbour
   stand-in for the RGB model and bilinear fusion on a bigger window, so the step is not lost in
   the networks' time).

Prints a table and one JSON line; skips cleanly when the shared data is absent.

    python benchmarks/quality.py                # a few minutes on a CPU
    python benchmarks/quality.py --steps 2      # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window

import difffusr_cli.superres.run as run_module
from difffusr_cli.bands import BAND_NAMES, BANDS, GROUP_RATIO, RGB, SCALE, indices
from difffusr_cli.fusion_baselines import bilinear_fuse
from difffusr_cli.io import open_scene
from difffusr_cli.superres import ModelInfo, Models, SuperresOptions, load_models, superres_many
from difffusr_cli.superres.reflectance import ConsistencyStage
from difffusr_cli.weights import DEMO_MODELS, StderrReporter

SHARED = (
    Path(os.environ.get("DIFFFUSR_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
    / "data"
)
SCENE = "dsen2_T33UUB"


def consistency_error(product: np.ndarray, scene, window: Window) -> dict[str, float]:
    """Per band mean |box average − input| over native pixels whose product pixels are valid."""
    errors = {}
    for band in BANDS:
        factor = SCALE * GROUP_RATIO[band.group]
        native, valid = scene.read_native([band.name], window)
        h, w = product.shape[1] // factor, product.shape[2] // factor
        cells = product[band.index, : h * factor, : w * factor].reshape(h, factor, w, factor)
        finite = np.isfinite(cells)
        ok = valid[:h, :w] & finite.all(axis=(1, 3))
        average = np.where(finite, cells, 0).sum(axis=(1, 3)) / np.maximum(finite.sum((1, 3)), 1)
        errors[band.name] = float(np.abs(average - native[0, :h, :w])[ok].mean())
    return errors


def frame_ratio(product: np.ndarray, ring: int = 8) -> float:
    """Mean gradient magnitude in the outer ``ring`` pixels over that of the interior."""
    g = np.hypot(np.diff(product, axis=1)[:, :, :-1], np.diff(product, axis=2)[:, :-1, :])
    edge = np.zeros(g.shape[1:], dtype=bool)
    edge[:ring], edge[-ring:], edge[:, :ring], edge[:, -ring:] = True, True, True, True
    return float(np.nanmean(g[:, edge]) / np.nanmean(g[:, ~edge]))


class NearestSR:
    """A stand-in RGB model: nearest-neighbour ×4 (costs nothing)."""

    def super_resolve(self, lr, steps=20, *, noise=None):
        return F.interpolate(lr, scale_factor=SCALE, mode="nearest")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--window", type=int, nargs=4, default=(276, 240, 48, 48))
    parser.add_argument("--cost-window", type=int, nargs=4, default=(120, 120, 240, 240))
    args = parser.parse_args()
    source = SHARED / SCENE
    if not source.is_dir():
        print(f"skipped: {source} not present")
        return 0
    scene = open_scene(source)
    window = Window(*args.window)
    device = torch.device("cpu")
    base = SuperresOptions(
        rgb_model=DEMO_MODELS["rgb"],
        steps=args.steps,
        device="cpu",
        quiet=True,
        dtype="float32",
        overwrite=True,
        window=tuple(args.window),
    )
    loaded = {
        method: load_models(
            replace(
                base,
                fusion=method,
                fusion_model=DEMO_MODELS["fusion"] if method == "net" else None,
            ),
            device,
            StderrReporter(),
        )
        for method in ("net", "gs", "bilinear")
    }
    results: dict = {"scene": SCENE, "window": list(args.window), "steps": args.steps}
    own_context = run_module.context_region
    with tempfile.TemporaryDirectory(prefix="difffusr-quality-") as tmp:

        def product(method: str, consistency: str, context: bool) -> tuple[np.ndarray, float]:
            run_module.context_region = (
                own_context if context else (lambda scene, window, *rest: window)
            )
            out = Path(tmp) / f"{method}-{consistency}-{context}.tif"
            options = replace(base, fusion=method, consistency=consistency)
            if method == "net":
                options = replace(options, fusion_model=DEMO_MODELS["fusion"])
            started = time.perf_counter()
            superres_many([source], out, options, models=loaded[method])
            seconds = time.perf_counter() - started
            run_module.context_region = own_context
            with rasterio.open(out) as ds:
                return ds.read(), seconds

        print(f"{SCENE}, window {args.window}, demo models, {args.steps} steps")
        print(f"{'run':28s} {'max err':>9s} {'RGB err':>9s} {'frame':>6s} {'RGB fr':>6s} {'s':>6s}")
        for method, consistency, context in [
            ("gs", "box", True),
            ("gs", "off", True),
            ("gs", "off", False),  # the pipeline before context and consistency
            ("gs", "box", False),
            ("bilinear", "box", True),
            ("bilinear", "off", True),
            ("net", "box", True),
            ("net", "off", True),
        ]:
            data, seconds = product(method, consistency, context)
            errors = consistency_error(data, scene, window)
            rgb_error = float(np.mean([errors[n] for n in RGB]))
            frame_all, frame_rgb = frame_ratio(data), frame_ratio(data[indices(RGB)])
            name = f"{method} {consistency} {'context' if context else 'no context'}"
            results[name] = {
                "error_per_band": errors,
                "frame_all_bands": frame_all,
                "frame_rgb": frame_rgb,
                "seconds": seconds,
            }
            print(
                f"{name:28s} {max(errors.values()):9.2e} {rgb_error:9.2e} {frame_all:6.2f} "
                f"{frame_rgb:6.2f} {seconds:6.1f}"
            )
        print("per band, box vs off (net):")
        for band in BAND_NAMES:
            box = results["net box context"]["error_per_band"][band]
            off = results["net off context"]["error_per_band"][band]
            print(f"  {band}: {box:.2e}  {off:.2e}")

        # c. the consistency step's own time, per output megapixel
        spent = [0.0]
        original = ConsistencyStage.read

        def timed(self, *a, **k):
            started = time.perf_counter()
            out = original(self, *a, **k)
            spent[0] += time.perf_counter() - started
            return out

        cheap = Models(NearestSR(), "bilinear", bilinear_fuse, GROUP_RATIO["60m"], 4,
                       ModelInfo("nearest", "0" * 64))  # type: ignore[arg-type]  # fmt: skip
        cost = replace(base, fusion="bilinear", window=tuple(args.cost_window))
        times = {}
        for consistency in ("off", "box"):
            ConsistencyStage.read = timed  # type: ignore[method-assign]
            started = time.perf_counter()
            superres_many(
                [source], Path(tmp) / f"cost-{consistency}.tif",
                replace(cost, consistency=consistency), models=cheap,
            )  # fmt: skip
            times[consistency] = time.perf_counter() - started
            ConsistencyStage.read = original  # type: ignore[method-assign]
        mpix = args.cost_window[2] * args.cost_window[3] * SCALE**2 / 1e6
        results["consistency_seconds_per_mpix"] = spent[0] / mpix
        results["run_seconds_per_mpix"] = {k: v / mpix for k, v in times.items()}
        print(
            f"consistency step: {spent[0] / mpix:.2f} s per output MPix "
            f"(whole run with a free SR and bilinear fusion: off {times['off'] / mpix:.2f}, "
            f"box {times['box'] / mpix:.2f} s/MPix; {torch.get_num_threads()} threads)"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
