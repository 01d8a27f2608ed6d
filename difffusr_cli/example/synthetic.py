"""The synthetic content of the example product.

Land-cover classes, their 12-band spectra, and the 10 m reflectance field every band is averaged
from.
"""

from __future__ import annotations

import numpy as np

#: Tile, CRS and time of the example product (the values are invented; the formats are ESA's).
EXAMPLE_TILE = "T32TMT"
EXAMPLE_EPSG = 32632
EXAMPLE_SENSING = "20230615T102021"
EXAMPLE_GENERATION = "20230615T131502"
EXAMPLE_BASELINE = "05.09"
#: Upper-left corner of the example's crop, on the tile's 60 m grid.
EXAMPLE_ORIGIN = (399960.0 + 60 * 520, 5100000.0 - 60 * 740)
QUANTIFICATION = 10000
BOA_ADD_OFFSET = -1000

# Land-cover classes: (name, scene classification value, reflectance in product order
# B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12). Typical shapes of each spectrum.
_CLASSES: tuple[tuple[str, int, tuple[float, ...]], ...] = (
    (
        "water",
        6,
        (0.060, 0.050, 0.042, 0.028, 0.024, 0.020, 0.018, 0.016, 0.014, 0.010, 0.008, 0.006),
    ),
    (
        "forest",
        4,
        (0.025, 0.030, 0.055, 0.030, 0.090, 0.230, 0.290, 0.320, 0.340, 0.330, 0.170, 0.080),
    ),
    (
        "crop",
        4,
        (0.035, 0.045, 0.090, 0.050, 0.140, 0.310, 0.390, 0.430, 0.450, 0.440, 0.240, 0.120),
    ),
    (
        "grass",
        4,
        (0.045, 0.060, 0.095, 0.085, 0.150, 0.240, 0.280, 0.300, 0.315, 0.310, 0.290, 0.190),
    ),
    (
        "soil",
        5,
        (0.080, 0.100, 0.140, 0.180, 0.210, 0.230, 0.250, 0.270, 0.285, 0.290, 0.340, 0.280),
    ),
    (
        "built",
        5,
        (0.110, 0.120, 0.130, 0.140, 0.155, 0.165, 0.175, 0.185, 0.190, 0.190, 0.220, 0.200),
    ),
    (
        "road",
        5,
        (0.090, 0.095, 0.100, 0.105, 0.110, 0.115, 0.118, 0.120, 0.122, 0.120, 0.140, 0.130),
    ),
)
_SPECTRA = np.array([c[2] for c in _CLASSES], dtype=np.float32)  # (classes, 12)
_SCL = np.array([c[1] for c in _CLASSES], dtype=np.uint8)


def _smooth_field(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """``(size, size)`` float32 Gaussian random field, correlation length ``sigma`` px, std 1."""
    noise = rng.standard_normal((size, size))
    freq = np.fft.fftfreq(size)
    k2 = freq[:, None] ** 2 + freq[None, :] ** 2
    field = np.real(np.fft.ifft2(np.fft.fft2(noise) * np.exp(-2.0 * (np.pi * sigma) ** 2 * k2)))
    field -= field.mean()
    return (field / (field.std() + 1e-12)).astype(np.float32)


def _parcel_edges(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sorted cut positions splitting ``[0, size)`` into parcels 10–36 px wide."""
    cuts = [0]
    while cuts[-1] < size:
        cuts.append(cuts[-1] + int(rng.integers(10, 37)))
    return np.array(cuts)


def synthetic_reflectance(size: int = 192, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The example's surface reflectance on the 10 m grid.

    Returns:
        ``(reflectance, classes)``: ``(12, size, size)`` float32 reflectance in product order
        (roughly 0.005–0.6) and ``(size, size)`` uint8 land-cover class indices.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size]

    # Parcels (field boundaries give sharp edges), each a random vegetated or bare class.
    row_cuts, col_cuts = _parcel_edges(rng, size), _parcel_edges(rng, size)
    parcel_class = rng.choice(
        [1, 2, 3, 4], p=[0.3, 0.3, 0.25, 0.15], size=(len(row_cuts), len(col_cuts))
    )
    classes = parcel_class[
        np.searchsorted(row_cuts, rows, "right") - 1, np.searchsorted(col_cuts, cols, "right") - 1
    ]
    # Built-up patches and water bodies from smooth fields (irregular shapes).
    classes = np.where(_smooth_field(rng, size, size / 14) > 1.3, 5, classes)
    classes = np.where(_smooth_field(rng, size, size / 10) < -1.2, 0, classes)
    # Two straight roads, 1–2 px wide.
    for _ in range(2):
        angle = rng.uniform(0, np.pi)
        r0, c0 = rng.uniform(0.2 * size, 0.8 * size, size=2)
        distance = np.abs((rows - r0) * np.cos(angle) - (cols - c0) * np.sin(angle))
        classes = np.where((distance < rng.uniform(0.5, 1.0)) & (classes != 0), 6, classes)
    classes = classes.astype(np.uint8)

    spectra = _SPECTRA[classes].transpose(2, 0, 1)  # (12, size, size)
    # Vigour: vegetated pixels drift toward bare soil where the field is low (same for all bands).
    vigour = np.clip(0.5 + 0.25 * _smooth_field(rng, size, 6.0), 0.0, 1.0)
    vegetated = np.isin(classes, (1, 2, 3))
    mix = np.where(vegetated, 0.35 * (1.0 - vigour), 0.0)[None]
    spectra = (1.0 - mix) * spectra + mix * _SPECTRA[4][:, None, None]
    # Brightness texture: medium and fine scales; canopy (forest) is rougher.
    texture = 1.0 + 0.08 * _smooth_field(rng, size, 8.0) + 0.06 * _smooth_field(rng, size, 1.5)
    texture = texture + np.where(classes == 1, 0.12, 0.02) * rng.standard_normal((size, size))
    reflectance = spectra * texture[None] + 0.002 * rng.standard_normal((12, size, size))
    return np.clip(reflectance, 0.001, 1.2).astype(np.float32), classes


def _area_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``(…, H, W)`` over ``factor`` × ``factor`` blocks."""
    if factor == 1:
        return image
    *lead, h, w = image.shape
    return image.reshape(*lead, h // factor, factor, w // factor, factor).mean(axis=(-3, -1))


def _nodata_mask(size: int) -> np.ndarray:
    """``(size, size)`` bool, True in the no-data corner (lower right), whole 60 m pixels."""
    n60 = size // 6
    r, c = np.mgrid[0:n60, 0:n60]
    corner = (r + c) >= int(1.55 * n60)
    return np.kron(corner, np.ones((6, 6), dtype=bool)).astype(bool)


def _to_dn(reflectance: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    dn = np.rint(reflectance * QUANTIFICATION - BOA_ADD_OFFSET)
    dn = np.clip(dn, 1, 65535).astype(np.uint16)
    dn[..., nodata] = 0
    return dn


def _mode(classes: np.ndarray, factor: int) -> np.ndarray:
    """Most frequent class in each ``factor`` × ``factor`` block."""
    h, w = classes.shape
    blocks = classes.reshape(h // factor, factor, w // factor, factor).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(h // factor, w // factor, factor * factor)
    counts = np.stack([(blocks == k).sum(axis=-1) for k in range(len(_CLASSES))], axis=-1)
    return counts.argmax(axis=-1)
