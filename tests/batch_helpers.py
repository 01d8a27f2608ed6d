"""Small scenes and fast options shared by the batch tests (serial and Dask)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline_helpers import write_random_models

from difffusr_cli.example import make_example_safe
from difffusr_cli.superres import SuperresOptions


def small_scenes(folder: Path, count: int = 3) -> list[Path]:
    """``count`` generated 48 × 48 L2A SAFEs (seeds 0, 1, …) with distinct product names."""
    scenes = []
    for seed in range(count):
        safe = make_example_safe(folder / f"s{seed}", size=48, seed=seed)
        scenes.append(safe.rename(safe.with_name(safe.name.replace(".SAFE", f"_{seed}.SAFE"))))
    return scenes


def fast_options(folder: Path, **changes) -> SuperresOptions:
    """A random-weight RGB model with bilinear fusion on a 12 × 12 window: a second a scene."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb, _ = write_random_models(folder)
    settings = dict(
        rgb_model=str(rgb),
        fusion="bilinear",
        steps=2,
        patch_size=32,
        overlap=8,
        device="cpu",
        window=(0, 0, 12, 12),
        quiet=True,
    )
    settings.update(changes)
    return SuperresOptions(**settings)  # type: ignore[arg-type]


def cli_args(options: SuperresOptions) -> list[str]:
    """The CLI options giving ``options`` (those :func:`fast_options` sets)."""
    assert options.window is not None and options.rgb_model is not None
    return [
        "--rgb-model",
        options.rgb_model,
        "--fusion",
        options.fusion,
        "--steps",
        str(options.steps),
        "--patch-size",
        str(options.patch_size),
        "--overlap",
        str(options.overlap),
        "--device",
        options.device,
        "--window",
        *map(str, options.window),
    ]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
