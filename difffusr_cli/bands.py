"""The Sentinel-2 L2A band table: the one source of truth for band facts.

Every module that needs a band's name, ground sampling distance, group, wavelength, position in
the 12-band product or normalisation statistics imports it from here.

The product order is B01…B12 without B10 (cirrus, absent from Level-2A)::

    B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch stays optional here: band facts must import without it
    import torch

GroupName = Literal["10m", "20m", "60m"]


@dataclass(frozen=True)
class Band:
    """One Sentinel-2 L2A spectral band.

    Attributes:
        name: band id as ESA writes it (``"B02"``, ``"B8A"``).
        gsd: native ground sampling distance in metres (10, 20 or 60).
        group: the fusion group the band belongs to (its native resolution).
        wavelength_nm: central wavelength in nanometres.
        index: position in the 12-band product (0-based).
        mean: mean reflectance used for the fusion networks' z-score.
        std: reflectance standard deviation used for the fusion networks' z-score.
        common_name: STAC ``eo:common_name``.
        earth_search_asset: asset key in Element 84's Earth Search L2A collection.
    """

    name: str
    gsd: float
    group: GroupName
    wavelength_nm: float
    index: int
    mean: float
    std: float
    common_name: str
    earth_search_asset: str

    @property
    def ratio(self) -> int:
        """Native pixel size over the 10 m reference grid's (1, 2 or 6)."""
        return int(round(self.gsd / REFERENCE_GSD))


#: Pixel size of the reference (input) grid, metres.
REFERENCE_GSD = 10.0
#: Super-resolution factor of the product over the reference grid.
SCALE = 4
#: Pixel size of the product, metres.
OUTPUT_GSD = REFERENCE_GSD / SCALE

# Normalisation statistics of the official fusion networks (reflectance z-score), SPEC §2.
# fmt: off
_MEAN = (
    0.0769, 0.0906, 0.1162, 0.1318, 0.1619, 0.2275,
    0.2500, 0.2588, 0.2667, 0.2684, 0.2461, 0.1874,
)
_STD = (
    0.1708, 0.1672, 0.1614, 0.1677, 0.1698, 0.1513,
    0.1490, 0.1515, 0.1461, 0.2365, 0.1472, 0.1418,
)
# fmt: on

_TABLE: tuple[tuple[str, float, GroupName, float, str, str], ...] = (
    # name, gsd, group, wavelength, STAC common name, Earth Search asset
    ("B01", 60.0, "60m", 443.0, "coastal", "coastal"),
    ("B02", 10.0, "10m", 490.0, "blue", "blue"),
    ("B03", 10.0, "10m", 560.0, "green", "green"),
    ("B04", 10.0, "10m", 665.0, "red", "red"),
    ("B05", 20.0, "20m", 705.0, "rededge", "rededge1"),
    ("B06", 20.0, "20m", 740.0, "rededge", "rededge2"),
    ("B07", 20.0, "20m", 783.0, "rededge", "rededge3"),
    ("B08", 10.0, "10m", 842.0, "nir", "nir"),
    ("B8A", 20.0, "20m", 865.0, "nir08", "nir08"),
    ("B09", 60.0, "60m", 945.0, "nir09", "nir09"),
    ("B11", 20.0, "20m", 1610.0, "swir16", "swir16"),
    ("B12", 20.0, "20m", 2190.0, "swir22", "swir22"),
)

#: The 12 bands in product order.
BANDS: tuple[Band, ...] = tuple(
    Band(name, gsd, group, wl, i, _MEAN[i], _STD[i], common, asset)
    for i, (name, gsd, group, wl, common, asset) in enumerate(_TABLE)
)
#: Band names in product order.
BAND_NAMES: tuple[str, ...] = tuple(b.name for b in BANDS)
#: Name → band.
BY_NAME: dict[str, Band] = {b.name: b for b in BANDS}

#: Bands of each fusion group, in product order.
GROUPS: dict[GroupName, tuple[str, ...]] = {
    g: tuple(b.name for b in BANDS if b.group == g) for g in ("10m", "20m", "60m")
}
#: Pixel-size ratio of each group to the 10 m reference grid.
GROUP_RATIO: dict[GroupName, int] = {"10m": 1, "20m": 2, "60m": 6}
#: 10 m pixels per 60 m pixel, the coarsest native pixel: a window of the 10 m grid that starts
#: and ends on multiples of it covers whole pixels of every band.
WINDOW_ALIGN: int = GROUP_RATIO["60m"]

#: The diffusion model's input and output channels, in network order (R, G, B).
RGB: tuple[str, str, str] = ("B04", "B03", "B02")

#: Per-band normalisation statistics (reflectance) in product order.
NORM_MEAN: tuple[float, ...] = _MEAN
NORM_STD: tuple[float, ...] = _STD


def band(name: str) -> Band:
    """Look a band up by name (``"B8A"``, ``"b8a"`` and ``"B8a"`` all work).

    Args:
        name: band id, case-insensitive.

    Returns:
        The :class:`Band` of that name.

    Raises:
        KeyError: the name is not one of the 12 L2A bands.
    """
    key = name.upper()
    if key in BY_NAME:
        return BY_NAME[key]
    raise KeyError(f"unknown Sentinel-2 L2A band {name!r}; known: {', '.join(BAND_NAMES)}")


def indices(names: tuple[str, ...] | list[str]) -> list[int]:
    """Product indices of ``names``, in the order given.

    Args:
        names: band ids (case-insensitive).

    Returns:
        The 0-based position of each band in the 12-band product.

    Raises:
        KeyError: a name is not one of the 12 L2A bands.
    """
    return [band(n).index for n in names]


def norm_stats(
    names: tuple[str, ...] | list[str], device: torch.device | str | None, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-score statistics of ``names`` as ``(1, C, 1, 1)`` tensors (mean, std), reflectance.

    Shaped to broadcast against ``(B, C, H, W)`` images whose channels are ``names`` in order.

    Args:
        names: band ids, in the channel order of the images to normalise.
        device: device of the returned tensors.
        dtype: dtype of the returned tensors.

    Returns:
        ``(mean, std)``, each ``(1, len(names), 1, 1)`` of ``dtype`` on ``device``.

    Raises:
        KeyError: a name is not one of the 12 L2A bands.
    """
    import torch  # deferred: bands.py is imported by torch-free code (io/, the CLI's help)

    idx = indices(names)
    mean = torch.tensor([NORM_MEAN[i] for i in idx], dtype=dtype, device=device)
    std = torch.tensor([NORM_STD[i] for i in idx], dtype=dtype, device=device)
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
