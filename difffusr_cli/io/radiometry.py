"""The DN → reflectance convention of a product.

:class:`Radiometry`, how it is resolved per band (product metadata, file tags, floating-point
pixels, or the assumed L2A convention) and the checks on the user's ``--scale``/``--offset``
overrides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from difffusr_cli.bands import BAND_NAMES
from difffusr_cli.errors import InputError
from difffusr_cli.io.geotiff import is_floating

if TYPE_CHECKING:
    from difffusr_cli.io.sources import Discovered

#: How a band's pixel values become reflectance: ``"dn"`` (DN·scale + offset) or
#: ``"reflectance"`` (floating-point pixels used as they are).
Convention = Literal["dn", "reflectance"]
#: L2A quantification value assumed when a source declares none.
L2A_QUANTIFICATION = 10000.0
#: BOA_ADD_OFFSET (DN) of baselines 04.00 and later, assumed when only the baseline is known.
L2A_OFFSET_DN_SINCE_0400 = -1000.0
#: How a floating-point band without scale/offset metadata is described in reports.
FLOAT_REFLECTANCE_SOURCE = "floating-point pixels taken as reflectance (no scale/offset metadata)"


def _tidy(value: float) -> float | int:
    """A derived number for reports: round off float noise, ints where whole."""
    rounded = round(value, 6)
    return int(rounded) if rounded == int(rounded) else rounded


@dataclass(frozen=True)
class Radiometry:
    """The DN → reflectance convention: reflectance = DN · scale + offset (per band).

    Attributes:
        scale: band name → scale (reflectance per DN), all 12 bands.
        offset: band name → offset in reflectance units, all 12 bands.
        source: where the convention came from (metadata, file tags, assumption, user override).
        assumed: True when at least one band's convention was assumed, not read.
        overridden: True when the user overrode the scale and/or the offset.
        conventions: band name → ``"dn"`` (integer counts scaled by scale/offset) or
            ``"reflectance"`` (floating-point pixels without scale/offset metadata, taken as
            reflectance: scale 1, offset 0). Bands not listed are ``"dn"``.
    """

    scale: Mapping[str, float]
    offset: Mapping[str, float]
    source: str
    assumed: bool = False
    overridden: bool = False
    conventions: Mapping[str, Convention] = field(default_factory=dict)

    def convention(self, name: str) -> Convention:
        """``"dn"`` or ``"reflectance"`` for band ``name`` (see ``conventions``)."""
        return self.conventions.get(name, "dn")

    @property
    def quantification(self) -> float | int | dict[str, float | int]:
        """1/scale (L2A's QUANTIFICATION_VALUE): one number if all bands share it, else per band."""
        values = {n: _tidy(1.0 / self.scale[n]) for n in BAND_NAMES}
        distinct = set(values.values())
        return distinct.pop() if len(distinct) == 1 else values

    @property
    def offsets(self) -> dict[str, float | int]:
        """Offset per band in DN (offset/scale, L2A's BOA_ADD_OFFSET)."""
        return {n: _tidy(self.offset[n] / self.scale[n]) for n in BAND_NAMES}

    def reflectance(self, name: str, dn: np.ndarray) -> np.ndarray:
        """DN of band ``name`` (any shape) → float32 reflectance."""
        return dn.astype(np.float32) * np.float32(self.scale[name]) + np.float32(self.offset[name])

    def to_dict(self) -> dict:
        """The ``radiometry`` object of ``difffusr info --json``."""
        return {
            "quantification": self.quantification,
            "offsets": self.offsets,
            "scale": {n: self.scale[n] for n in BAND_NAMES},
            "offset": {n: self.offset[n] for n in BAND_NAMES},
            "source": self.source,
            "assumed": self.assumed,
            "overridden": self.overridden,
        }


def check_radiometry_override(scale: float | None, offset: float | None) -> None:
    """Check ``--scale``/``--offset`` are in the reflectance convention.

    The convention is reflectance = DN·scale + offset.

    A reflectance offset is a fraction of 1 and a scale at most 1 reflectance per DN; DN-valued
    numbers (L2A's BOA_ADD_OFFSET -1000, QUANTIFICATION_VALUE 10000) would saturate every band.

    Raises:
        InputError: a non-finite value, ``scale`` outside (0, 1], or ``|offset| >= 1``.
    """
    if scale is not None and not (math.isfinite(scale) and 0 < scale <= 1):
        hint = (
            f"; for quantification {scale:g} use --scale {1 / scale:g}"
            if math.isfinite(scale) and scale > 1
            else ""
        )
        raise InputError(
            f"--scale {scale:g}: expected reflectance per DN in (0, 1] "
            f"(reflectance = DN·scale + offset){hint}"
        )
    if offset is not None and not math.isfinite(offset):
        raise InputError(f"--offset must be a finite number, got {offset}")
    if offset is not None and abs(offset) >= 1:
        quant = 1 / scale if scale is not None and scale < 1 else L2A_QUANTIFICATION
        raise InputError(
            f"--offset {offset:g}: the offset is in reflectance units "
            "(reflectance = DN·scale + offset); "
            f"for BOA_ADD_OFFSET {offset:g} with quantification {quant:g} "
            f"use --scale {1 / quant:g} --offset {offset / quant:g}"
        )


def default_offset_dn(baseline: str | None) -> float:
    """BOA_ADD_OFFSET to assume for a processing baseline (0 before 04.00 or when unknown)."""
    try:
        return L2A_OFFSET_DN_SINCE_0400 if baseline is not None and float(baseline) >= 4.0 else 0.0
    except ValueError:
        return 0.0


def resolve_radiometry(
    found: Discovered,
    file_declared: dict[str, tuple[float, float]],
    scale_override: float | None,
    offset_override: float | None,
    dtypes: Mapping[str, str | None] | None = None,
) -> Radiometry:
    """Resolve each band's DN → reflectance convention.

    Per band: product metadata, else the file's own tags, else, for floating-point pixels,
    reflectance as is (scale 1, offset 0), else the assumed L2A convention.

    Args:
        found: what the format reader found (declared conventions, baseline, band files).
        file_declared: band name → ``(scale, offset)`` read from the band files' own tags.
        scale_override: ``--scale`` (reflectance per DN) for every band, or None.
        offset_override: ``--offset`` (reflectance units) for every band, or None.
        dtypes: the found bands' file data types (``"uint16"``, ``"float32"``).

    Returns:
        The scene's :class:`Radiometry`, all 12 bands.
    """
    dtypes = dtypes or {}
    floating = {n for n, dtype in dtypes.items() if is_floating(dtype)}
    default_dn = default_offset_dn(found.processing_baseline)
    why = (
        f"baseline {found.processing_baseline}"
        if found.processing_baseline
        else "no processing baseline known"
    )
    assumed_source = (
        f"assumed L2A convention (quantification {L2A_QUANTIFICATION:g}, "
        f"offset {default_dn:g} DN: {why}); "
        "override with --scale/--offset"
    )
    scales: dict[str, float] = {}
    offsets: dict[str, float] = {}
    origin: dict[str, str] = {}
    conventions: dict[str, Convention] = {}
    for name in BAND_NAMES:
        conventions[name] = "dn"
        if name in found.declared:
            (scales[name], offsets[name]), origin[name] = (
                found.declared[name],
                found.declared_source,
            )
        elif name in file_declared:
            (scales[name], offsets[name]), origin[name] = (
                file_declared[name],
                "the files' scale/offset metadata",
            )
        elif name in floating:
            scales[name], offsets[name] = 1.0, 0.0
            origin[name] = FLOAT_REFLECTANCE_SOURCE
            conventions[name] = "reflectance"
        else:
            scales[name], offsets[name] = 1.0 / L2A_QUANTIFICATION, default_dn / L2A_QUANTIFICATION
            origin[name] = assumed_source
    # Bands not in the product do not decide how the convention is described.
    relevant = [n for n in BAND_NAMES if n in found.files] or list(BAND_NAMES)
    assumed = any(origin[n] == assumed_source or "assumed" in origin[n] for n in relevant)
    distinct = list(dict.fromkeys(origin[n] for n in relevant))
    if len(distinct) == 1:
        source = distinct[0]
    else:
        source = "; ".join(
            f"{s} for {', '.join(n for n in relevant if origin[n] == s)}" for s in distinct
        )

    overrides = []
    if scale_override is not None:
        scales = {n: float(scale_override) for n in BAND_NAMES}
        overrides.append(f"--scale {scale_override:g}")
    if offset_override is not None:
        offsets = {n: float(offset_override) for n in BAND_NAMES}
        overrides.append(f"--offset {offset_override:g}")
    if overrides:
        if scale_override is not None and offset_override is not None:
            source = f"user override ({', '.join(overrides)})"
            assumed = False
        else:
            source = f"user override ({', '.join(overrides)}); otherwise {source}"
    return Radiometry(
        scales,
        offsets,
        source,
        assumed=assumed,
        overridden=bool(overrides),
        conventions=conventions,
    )
