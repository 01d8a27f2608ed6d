"""The picture of docs/superres.md: independent, joint and joint + consistent sampling.

Runs ``difffusr superres`` through the Python API (:func:`difffusr_cli.superres_many`) with the
shipped demo RGB model ``rgb-tiny`` and ``--fusion bilinear`` (with ``gs``/``bilinear`` the
product's B02–B04 are the blended diffusion RGB itself, which is what the sampling changes;
``net`` replaces them by its 10 m net's outputs) on a small window in the middle
of a real scene (``../shared/data/dsen2_T33UUB``; the generated example scene of
``difffusr_cli.example`` when the shared data is absent or with ``--example``), in three
configurations:

1. ``--sampling independent --consistency off`` (the pipeline of earlier versions),
2. ``--sampling joint --consistency off``,
3. ``--sampling joint --consistency box`` (the defaults),

and writes one PNG of four panels, left to right: the input RGB (B04, B03, B02) upsampled ×4 by
nearest neighbour, then the three products' RGB, all with one linear stretch (the input's 2–98 %
per channel). Under each product panel two lines of digits give its ``overlap_disagreement``
tag (horizontal, vertical) and the mean |box average − input| of B04, B03 and B02 over the
window's native pixels (reflectance). The numbers are printed too, with one JSON line.

    python docs/make_quality_figure.py                      # docs/img/quality.png
    python docs/make_quality_figure.py --example --size 24  # the generated scene, quicker
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from difffusr_cli.bands import RGB, SCALE, indices
from difffusr_cli.example import make_example_safe
from difffusr_cli.io import open_scene
from difffusr_cli.png import write_png
from difffusr_cli.superres import SuperresOptions, load_models, superres_many
from difffusr_cli.weights import DEMO_MODELS

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "data"
SCENE = "dsen2_T33UUB"
#: (name, --sampling, --consistency) of the three products, in panel order.
RUNS = (
    ("independent", "independent", "off"),
    ("joint", "joint", "off"),
    ("joint+consistent", "joint", "box"),
)
AXES = ("horizontal", "vertical")
GAP = 4  # pixels between panels and around the figure
TEXT_SCALE = 2  # each font pixel drawn as TEXT_SCALE × TEXT_SCALE figure pixels
LINE = 6 * TEXT_SCALE  # a text line: 5 glyph rows and one blank, scaled

# A 3 × 5 bitmap font for the numbers (no font renderer is a dependency of difffusr).
FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111",
    "3": "111001111001111", "4": "101101111001001", "5": "111100111001111",
    "6": "111100111101111", "7": "111001001001001", "8": "111101111101111",
    "9": "111101111001111", ".": "000000000000010", "-": "000000111000000",
    " ": "000000000000000", "H": "101101111101101", "V": "101101101101010",
    "R": "110101110101101", "G": "111100101101111", "B": "110101110101110",
}  # fmt: skip


@dataclass
class Product:
    """One configuration's result: its RGB ``(3, 4h, 4w)`` and its measures."""

    name: str
    rgb: np.ndarray
    disagreement: dict[str, float | None]
    consistency_error: dict[str, float]


def text(lines: list[str], width: int) -> np.ndarray:
    """``lines`` drawn white on black, ``(len(lines)·LINE, width)`` uint8 (cut at ``width``)."""
    canvas = np.zeros((len(lines) * LINE, width), dtype=np.uint8)
    for row, line in enumerate(lines):
        for col, char in enumerate(line):
            glyph = np.array([int(b) for b in FONT[char]], dtype=np.uint8).reshape(5, 3) * 255
            glyph = np.kron(glyph, np.ones((TEXT_SCALE, TEXT_SCALE), dtype=np.uint8))
            y, x = row * LINE, col * 4 * TEXT_SCALE
            piece = canvas[y : y + glyph.shape[0], x : x + glyph.shape[1]]
            piece[...] = glyph[: piece.shape[0], : piece.shape[1]]
    return canvas


def stretch(rgb: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` reflectance to uint8 with per-channel ``low → 0``, ``high → 255``."""
    scaled = (np.nan_to_num(rgb) - low[:, None, None]) / (high - low)[:, None, None]
    return (np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)


def box_error(rgb: np.ndarray, native: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Per band of RGB, mean |4 × 4 box average of ``rgb`` − ``native``| over valid pixels.

    Args:
        rgb: ``(3, 4h, 4w)`` product reflectance (NaN = nodata).
        native: ``(3, h, w)`` input reflectance at 10 m.
        valid: ``(h, w)`` bool, the input's valid pixels.
    """
    h, w = native.shape[1:]
    average = rgb.reshape(3, h, SCALE, w, SCALE).mean(axis=(2, 4))
    ok = valid & np.isfinite(average).all(axis=0)
    return {band: float(np.abs(average[i] - native[i])[ok].mean()) for i, band in enumerate(RGB)}


def figure(inputs: np.ndarray, products: list[Product]) -> np.ndarray:
    """The four panels side by side with two lines of numbers under each product, ``(3, H, W)``.

    The stretch is the input's 2nd and 98th percentile per channel, applied to every panel.
    """
    low = np.nanpercentile(inputs, 2, axis=(1, 2))
    high = np.maximum(np.nanpercentile(inputs, 98, axis=(1, 2)), low + 1e-6)
    size = inputs.shape[1]
    panels = [inputs] + [p.rgb for p in products]
    width = GAP + len(panels) * (size + GAP)
    height = GAP + size + GAP + 2 * LINE + GAP
    canvas = np.full((3, height, width), 255, dtype=np.uint8)
    for i, panel in enumerate(panels):
        x = GAP + i * (size + GAP)
        canvas[:, GAP : GAP + size, x : x + size] = stretch(panel, low, high)
        label = np.zeros((2 * LINE, size), dtype=np.uint8)
        if i:
            product = products[i - 1]
            label = text(numbers(product), size)
        canvas[:, 2 * GAP + size : 2 * GAP + size + 2 * LINE, x : x + size] = 255 - label
    return canvas


def numbers(product: Product) -> list[str]:
    """The two lines under a panel: ``H… V…`` (disagreement) and ``R… G… B…`` (box error)."""

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}".removeprefix("0")

    d = product.disagreement
    e = product.consistency_error
    return [
        f"H{fmt(d.get('horizontal'))} V{fmt(d.get('vertical'))}",
        f"R{fmt(e['B04'])} G{fmt(e['B03'])} B{fmt(e['B02'])}",
    ]


def make_figure(
    scene: Path,
    output: Path,
    *,
    size: int = 48,
    patch: int = 64,
    overlap: int = 16,
    steps: int = 8,
    seed: int = 0,
) -> dict:
    """Run the three configurations on the central ``size × size`` window and write the PNG.

    Args:
        scene: any input ``difffusr superres`` reads.
        output: the PNG to write; its folder is created.
        size: window side in 10 m pixels (rounded down to a multiple of 6); the panels are
            ``4·size`` pixels square.
        patch: diffusion patch side in 2.5 m pixels.
        overlap: overlap of neighbouring patches in 2.5 m pixels.
        steps: DDIM steps per patch (the same for every run).
        seed: noise seed (the same for every run).

    Returns:
        What was measured: scene, window and, per configuration, the disagreement and errors.
    """
    size = size // 6 * 6
    with open_scene(scene) as opened:
        col = (opened.width // 2 - size // 2) // 6 * 6
        row = (opened.height // 2 - size // 2) // 6 * 6
        window = Window(col, row, size, size)
        native, valid = opened.read_native(list(RGB), window)
    options = SuperresOptions(
        rgb_model=DEMO_MODELS["rgb"],
        fusion="bilinear",  # B02–B04 are then the diffusion RGB itself
        steps=steps,
        seed=seed,
        patch_size=patch,
        overlap=overlap,
        device="cpu",
        dtype="float32",
        window=(col, row, size, size),
        quiet=True,
        overwrite=True,
    )
    models = load_models(options, torch.device("cpu"))
    products = []
    with tempfile.TemporaryDirectory(prefix="difffusr-figure-") as tmp:
        for name, sampling, consistency in RUNS:
            out = Path(tmp) / f"{name}.tif"
            run = replace(options, sampling=sampling, consistency=consistency)
            superres_many([scene], out, run, models=models)
            with rasterio.open(out) as ds:
                rgb = ds.read([i + 1 for i in indices(RGB)])
                tags = json.loads(ds.tags()["overlap_disagreement"])
            products.append(Product(name, rgb, tags, box_error(rgb, native, valid)))
    inputs = np.where(valid, native, np.nan).repeat(SCALE, axis=1).repeat(SCALE, axis=2)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_png(output, figure(inputs, products))
    return {
        "scene": scene.name,
        "window": [col, row, size, size],
        "patch": patch,
        "overlap": overlap,
        "steps": steps,
        "seed": seed,
        "products": {
            p.name: {"overlap_disagreement": p.disagreement, "box_error": p.consistency_error}
            for p in products
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, make the figure, print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--example", action="store_true", help="use the generated example scene")
    parser.add_argument("--example-size", type=int, default=192, help="its side, 10 m pixels")
    parser.add_argument("--size", type=int, default=48, help="window side, 10 m pixels")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=HERE / "img" / "quality.png")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="difffusr-example-") as tmp:
        scene = args.shared / SCENE
        if args.example or not scene.is_dir():
            scene = make_example_safe(tmp, size=args.example_size, seed=0)
        record = make_figure(
            scene,
            args.output,
            size=args.size,
            patch=args.patch,
            overlap=args.overlap,
            steps=args.steps,
            seed=args.seed,
        )
    print(f"{record['scene']}, window {record['window']}, {args.steps} steps -> {args.output}")
    print(f"{'':18} {'disagr. H':>9} {'disagr. V':>9} {'|D(x)-b| B04':>12} {'B03':>9} {'B02':>9}")
    for name, r in record["products"].items():
        d, e = r["overlap_disagreement"], r["box_error"]
        h, v = (f"{d[k]:9.5f}" if d.get(k) is not None else f"{'-':>9}" for k in AXES)
        print(f"{name:18} {h} {v} {e['B04']:12.2e} {e['B03']:9.2e} {e['B02']:9.2e}")
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
