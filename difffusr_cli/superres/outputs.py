"""Output naming, the provenance tags of a product and the summary of a run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from rasterio.windows import Window

from difffusr_cli import __version__
from difffusr_cli.device import precision_name
from difffusr_cli.errors import InputError
from difffusr_cli.superres.joint import effective_sampling, joint_margin_of
from difffusr_cli.superres.models import Models
from difffusr_cli.superres.options import NODATA_RULE, PRODUCT_SUFFIX, SuperresOptions

if TYPE_CHECKING:
    from difffusr_cli.io import Scene


@dataclass(frozen=True)
class RunSummary:
    """What one product's run did."""

    input: Path
    output: Path
    status: Literal["written", "skipped", "failed"]
    seconds: float = 0.0
    patches_run: int = 0
    patches_skipped: int = 0
    blocks_written: int = 0
    blocks_resumed: int = 0
    device: str = ""
    peak_memory: int = 0
    peak_memory_kind: str = ""
    width: int = 0
    height: int = 0
    #: ``joint`` or ``independent`` (what was done; see :func:`effective_sampling`).
    sampling: str = ""
    #: Mean |a − b| (reflectance) of overlapping patches' final predictions before blending,
    #: ``{"horizontal": …, "vertical": …}`` (None where no patches overlap that way).
    overlap_disagreement: dict[str, float | None] | None = None
    #: sha256 of the settings fingerprint the product was (or, failed, would have been) made with.
    fingerprint: str = ""
    #: ``failed`` only: the one-line reason.
    error: str = ""

    def paragraph(self) -> str:
        """The one-paragraph summary printed at the end of a run."""
        if self.status == "skipped":
            return f"{self.output}: already complete, skipped."
        if self.status == "failed":
            named = str(self.input) in self.error
            return f"failed: {self.error}" if named else f"failed: {self.input}: {self.error}"
        rate = self.patches_run / self.seconds if self.seconds > 0 else 0.0
        resumed = (
            f", {_count(self.blocks_resumed, 'block')} kept from the interrupted run"
            if self.blocks_resumed
            else ""
        )
        return (
            f"Wrote {self.output} ({self.width} × {self.height} px at 2.5 m, 12 bands) "
            f"in {_duration(self.seconds)}: "
            f"{_count(self.patches_run, 'patch', 'patches')} diffused ({rate:.2f} patches/s), "
            f"{self.patches_skipped} skipped as nodata, "
            f"{_count(self.blocks_written, 'block')} written{resumed}; device {self.device}; "
            f"peak memory {self.peak_memory / 2**20:,.0f} MiB ({self.peak_memory_kind})."
            f"{self._disagreement_text()}"
        )

    def _disagreement_text(self) -> str:
        """`` Overlap disagreement …`` for the paragraph, or ``""`` when nothing overlapped."""
        values = self.overlap_disagreement or {}
        parts = [f"{v:.4f} {k}" for k, v in values.items() if v is not None]
        if not parts:
            return ""
        return f" {self.sampling.capitalize()} sampling: overlap disagreement {', '.join(parts)}."


def _count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def product_stem(path: Path) -> str:
    """The name of an input without its format suffixes (``X.SAFE.zip`` → ``X``)."""
    if path.name.upper() == "MTD_MSIL2A.XML":
        path = path.parent
    name = path.name
    for suffix in (".zip", ".json", ".tiff", ".tif", ".vrt", ".SAFE", ".safe"):
        if name.lower().endswith(suffix.lower()):
            name = name[: -len(suffix)]
    return name or "product"


def output_paths(inputs: Sequence[Path], output: str | Path) -> tuple[list[Path], bool]:
    """Each input's product path, and whether ``output`` is a folder.

    ``output`` is a folder when there are several inputs, when it is an existing folder, or when
    it is a string ending in ``/`` (``-o outs/``: a folder to create); products in a folder are
    named ``<input stem>_difffusr.tif``. Otherwise it is the product itself and must end in
    ``.tif`` or ``.tiff``.

    Raises:
        InputError: an empty ``output``, a single product without a ``.tif``/``.tiff`` suffix,
            several inputs with a ``.tif`` output, a folder (``-o name/``) that is an existing
            file, or two inputs with the same stem.
    """
    # pathlib drops a trailing slash, so read it from the text the user gave.
    text = os.fspath(output)
    if not text.strip():  # -o "$OUT" with OUT unset would otherwise mean the current folder
        raise InputError("-o is empty: give the product's .tif path or a folder")
    trailing_slash = text.endswith(("/", os.sep))
    output = Path(output)
    if trailing_slash and output.exists() and not output.is_dir():
        raise InputError(f"-o {text}: {output} exists and is a file, not a folder")
    is_dir = trailing_slash or output.is_dir() or len(inputs) > 1
    if not is_dir:
        if output.suffix.lower() not in (".tif", ".tiff"):
            raise InputError(
                f"-o {output}: the product is a GeoTIFF, name it .tif or .tiff "
                "(or end -o with / for a folder of products)"
            )
        return [output], False
    if output.suffix.lower() in (".tif", ".tiff") and not output.is_dir():
        raise InputError(
            f"-o {output}: with {len(inputs)} inputs, -o must be a folder (one product per input)"
        )
    paths = [output / f"{product_stem(p)}{PRODUCT_SUFFIX}" for p in inputs]
    seen: dict[Path, Path] = {}
    for source, target in zip(inputs, paths, strict=True):
        if target in seen:
            raise InputError(
                f"{seen[target]} and {source} would both be written to {target}; "
                "process them separately"
            )
        seen[target] = source
    return paths, True


def product_tags(
    scene: Scene,
    region: Window,
    options: SuperresOptions,
    models: Models,
    dtype: torch.dtype,
    device: torch.device,
) -> dict:
    """The provenance tags written into the product (source, window, options, models, runtime).

    Args:
        scene: the source scene.
        region: the processed window of the 10 m grid.
        options: the run's options.
        models: the loaded models (their provenance is recorded).
        dtype: the compute precision.
        device: the compute device.

    Returns:
        Tag name → value (non-strings are stored as JSON by the writer).
    """
    radiometry = scene.radiometry
    return {
        "difffusr_version": __version__,
        "source_product": scene.product_id,
        "source_path": str(scene.path),
        "source_format": scene.kind,
        "source_window_10m": [
            int(region.col_off),
            int(region.row_off),
            int(region.width),
            int(region.height),
        ],
        "rgb_model": models.rgb_info.name,
        "rgb_model_sha256": models.rgb_info.sha256,
        "rgb_model_file": models.rgb_info.file,
        "fusion_method": options.fusion,
        "fusion_model": models.fusion_info.name if models.fusion_info else "",
        "fusion_model_sha256": models.fusion_info.sha256 if models.fusion_info else "",
        "fusion_model_file": models.fusion_info.file if models.fusion_info else "",
        "steps": options.steps,
        "seed": options.seed,
        "sampling": effective_sampling(options, models),
        "joint_margin": joint_margin_of(options, models),
        "patch_size": options.patch_size,
        "overlap": options.overlap,
        "consistency": options.consistency,
        "batch_size": options.batch_size,
        "fusion_batch_size": options.fusion_batch_size,
        "fusion_tile": options.fusion_tile,
        "fusion_tile_rows": options.fusion_tile_rows,
        "fusion_overlap": options.fusion_overlap,
        "compile": options.compile,
        "channels_last": options.channels_last,
        "precision": precision_name(dtype),
        "device": device.type,
        "radiometry": radiometry.to_dict(),
        "radiometric_offsets_applied_dn": radiometry.offsets,
        "nodata_rule": NODATA_RULE,
    }
