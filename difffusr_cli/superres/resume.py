"""Resume bookkeeping: the progress record of an output and the fingerprint of its settings."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from rasterio.windows import Window

from difffusr_cli import __version__
from difffusr_cli.bands import BAND_NAMES
from difffusr_cli.device import precision_name
from difffusr_cli.errors import OutputError
from difffusr_cli.superres.models import Models
from difffusr_cli.superres.options import SuperresOptions
from difffusr_cli.tiling import Layout

if TYPE_CHECKING:
    from difffusr_cli.io import Scene


def progress_path_for(output: Path) -> Path:
    """Where a run records its finished blocks: ``<dir>/.<name>.progress.json``."""
    return output.parent / f".{output.name}.progress.json"


def fingerprint(
    scene: Scene,
    region: Window,
    layout: Layout,
    options: SuperresOptions,
    models: Models,
    device: torch.device,
    dtype: torch.dtype,
) -> dict:
    """Everything that affects the pixels of a product; ``--resume`` requires it unchanged."""
    radiometry = scene.radiometry
    return {
        "difffusr_version": __version__,
        "input": str(Path(scene.path).resolve()),
        "rgb_model_sha256": models.rgb_info.sha256,
        "fusion": options.fusion,
        "fusion_model_sha256": models.fusion_info.sha256 if models.fusion_info else None,
        "steps": options.steps,
        "seed": options.seed,
        "patch_size": layout.patch,
        "overlap": layout.overlap,
        "fusion_tile": layout.tile,
        "fusion_overlap": layout.tile_overlap,
        "fusion_halo": layout.halo,
        "block_rows": layout.block_rows,
        "batch_size": options.batch_size,
        "window": [int(region.col_off), int(region.row_off), int(region.width), int(region.height)],
        "dtype": options.dtype,
        "precision": precision_name(dtype),
        "device": device.type,
        "scale": {n: radiometry.scale[n] for n in BAND_NAMES},
        "offset": {n: radiometry.offset[n] for n in BAND_NAMES},
    }


@dataclass
class ProgressFile:
    """The progress record of one output: its fingerprint and the blocks already written."""

    path: Path
    fingerprint: dict
    done: set[int] = field(default_factory=set)

    def save(self) -> None:
        """Write atomically (a crash leaves the old or the new record, never half of one)."""
        record = {
            "difffusr_progress": 1,
            "fingerprint": self.fingerprint,
            "blocks_done": sorted(self.done),
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc}") from None

    @classmethod
    def load(cls, path: Path, expected: dict) -> ProgressFile:
        """Read a record and check it belongs to the same settings.

        Raises:
            OutputError: unreadable record, or different settings (naming what changed).
        """
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            stored, done = record["fingerprint"], {int(i) for i in record["blocks_done"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OutputError(
                f"cannot resume: {path} is unreadable ({exc}); run with --overwrite to start again"
            ) from None
        changed = sorted(
            k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k)
        )
        if changed:
            detail = ", ".join(
                f"{k} {_short(stored.get(k))} → {_short(expected.get(k))}" for k in changed[:4]
            )
            raise OutputError(
                f"cannot resume: {path} was started with other settings ({detail}); "
                "rerun with the original options, or with --overwrite to start again"
            )
        return cls(path, expected, done)


def check_no_interrupted_run(output: Path, options: SuperresOptions) -> None:
    """An interrupted run of ``output`` is continued or discarded only when asked to."""
    from difffusr_cli.io import partial_path_for

    partial = partial_path_for(output)
    if (partial.exists() or progress_path_for(output).exists()) and not (
        options.resume or options.overwrite
    ):
        raise OutputError(
            f"{partial} holds an interrupted run of {output}; pass --resume to continue it or "
            "--overwrite to start again"
        )


def _short(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 24 else text[:21] + "..."
