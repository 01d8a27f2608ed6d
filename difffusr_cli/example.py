"""A small synthetic Sentinel-2 L2A product, generated, for examples and tests.

:func:`make_example_safe` writes a structurally faithful L2A SAFE (processing baseline 05.09,
``BOA_QUANTIFICATION_VALUE`` 10000, ``BOA_ADD_OFFSET`` −1000, lossless JPEG 2000 files named as
ESA names them in ``GRANULE/<id>/IMG_DATA/R10m|R20m|R60m``, an ``MTD_MSIL2A.xml`` and ``MTD_TL.xml``
following the real schemas, a scene classification, and a no-data corner). The content is generated,
not observed: a few land-cover classes with distinct 12-band spectra laid out as parcels, water
bodies, built-up patches and roads, modulated by smooth random fields (texture, vigour) and fine
noise. Every band is the area average of one 10 m reflectance field over its native pixel, so the
bands are spectrally coherent and the 10/20/60 m grids nest exactly. Deterministic for a seed.

:func:`write_example_cogs` and :func:`write_example_stac` store the same product as single-band
COGs and as a STAC item, which must read back as identical reflectance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.warp import transform as warp_transform

from difffusr_cli.bands import BANDS, BY_NAME
from difffusr_cli.io.scene import Scene, open_scene

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

# Resolutions each band is delivered at in a real L2A product (native first).
_DELIVERED = {
    10: ("B02", "B03", "B04", "B08"),
    20: ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12"),
    60: ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B09", "B11", "B12"),
}
# ESA's band_id order in MTD_MSIL2A.xml (B10 is described although L2A has no B10 image).
_ESA_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
_ESA_WAVELENGTH = {"B10": (1337, 1412, 1373.5)}


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


def _write_jp2(path: Path, array: np.ndarray, transform: Affine) -> None:
    with rasterio.open(
        path,
        "w",
        driver="JP2OpenJPEG",
        width=array.shape[1],
        height=array.shape[0],
        count=1,
        dtype=array.dtype,
        crs=f"EPSG:{EXAMPLE_EPSG}",
        transform=transform,
        QUALITY=100,
        REVERSIBLE=True,
    ) as dst:
        dst.write(array, 1)


def make_example_safe(directory: str | Path, *, size: int = 192, seed: int = 0) -> Path:
    """Write the synthetic L2A SAFE into ``directory`` and return the ``.SAFE`` folder.

    Args:
        directory: an existing folder to create the product in.
        size: width and height of the 10 m grid in pixels; a multiple of 6 (so 20 m and 60 m
            grids nest exactly).
        seed: content seed; the same seed gives the same pixels.
    """
    if size <= 0 or size % 6:
        raise ValueError(f"size must be a positive multiple of 6, got {size}")
    directory = Path(directory)
    baseline = EXAMPLE_BASELINE.replace(".", "")
    product = f"S2B_MSIL2A_{EXAMPLE_SENSING}_N{baseline}_R065_{EXAMPLE_TILE}_{EXAMPLE_GENERATION}"
    safe = directory / f"{product}.SAFE"
    granule_id = f"L2A_{EXAMPLE_TILE}_A033018_{EXAMPLE_SENSING}"
    granule = safe / "GRANULE" / granule_id
    stem = f"{EXAMPLE_TILE}_{EXAMPLE_SENSING}"

    reflectance, classes = synthetic_reflectance(size, seed)
    nodata10 = _nodata_mask(size)
    base = Affine(10.0, 0.0, EXAMPLE_ORIGIN[0], 0.0, -10.0, EXAMPLE_ORIGIN[1])
    image_files: list[str] = []
    for gsd, names in _DELIVERED.items():
        folder = granule / "IMG_DATA" / f"R{gsd}m"
        folder.mkdir(parents=True, exist_ok=True)
        factor = gsd // 10
        nodata = _area_mean(nodata10.astype(np.float32), factor) > 0
        for name in names:
            native = int(BY_NAME[name].gsd) // 10
            # Sensed at the native grid; coarser deliveries average it, finer ones repeat it.
            sensed = _area_mean(reflectance[BY_NAME[name].index], native)
            if factor >= native:
                values = _area_mean(sensed, factor // native)
            else:
                values = np.kron(sensed, np.ones((native // factor,) * 2, dtype=np.float32))
            rel = f"GRANULE/{granule_id}/IMG_DATA/R{gsd}m/{stem}_{name}_{gsd}m"
            _write_jp2(safe / f"{rel}.jp2", _to_dn(values, nodata), base @ Affine.scale(factor))
            image_files.append(rel)
        if gsd in (20, 60):
            scl = _SCL[_mode(classes, gsd // 10)]
            scl[nodata] = 0
            rel = f"GRANULE/{granule_id}/IMG_DATA/R{gsd}m/{stem}_SCL_{gsd}m"
            _write_jp2(safe / f"{rel}.jp2", scl, base @ Affine.scale(gsd // 10))
            image_files.append(rel)

    (safe / "MTD_MSIL2A.xml").write_text(
        _product_metadata(product, granule_id, image_files, base, size, float(nodata10.mean()))
    )
    (granule / "MTD_TL.xml").write_text(_tile_metadata(base, size))
    (granule / "QI_DATA").mkdir(exist_ok=True)
    (granule / "AUX_DATA").mkdir(exist_ok=True)
    (safe / "DATASTRIP").mkdir(exist_ok=True)
    return safe


def _mode(classes: np.ndarray, factor: int) -> np.ndarray:
    """Most frequent class in each ``factor`` × ``factor`` block."""
    h, w = classes.shape
    blocks = classes.reshape(h // factor, factor, w // factor, factor).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(h // factor, w // factor, factor * factor)
    counts = np.stack([(blocks == k).sum(axis=-1) for k in range(len(_CLASSES))], axis=-1)
    return counts.argmax(axis=-1)


def _iso(stamp: str, millis: str = "024") -> str:
    date, time = stamp[:8], stamp[9:15]
    return f"{date[:4]}-{date[4:6]}-{date[6:]}T{time[:2]}:{time[2:4]}:{time[4:]}.{millis}Z"


def _footprint(base: Affine, size: int) -> str:
    """The crop's corners as 'lat lon' pairs, closed ring (EXT_POS_LIST)."""
    corners = [(0, 0), (size, 0), (size, size), (0, size), (0, 0)]
    xs, ys = zip(*(base @ c for c in corners), strict=True)
    lons, lats = warp_transform(f"EPSG:{EXAMPLE_EPSG}", "EPSG:4326", list(xs), list(ys))
    return " ".join(f"{lat:.10f} {lon:.10f}" for lat, lon in zip(lats, lons, strict=True))


def _product_metadata(
    product: str,
    granule_id: str,
    image_files: list[str],
    base: Affine,
    size: int,
    nodata_share: float,
) -> str:
    wavelengths = {b.name: b.wavelength_nm for b in BANDS}
    spectral = []
    for band_id, esa in enumerate(_ESA_BANDS):
        name = "B8A" if esa == "B8A" else f"B{int(esa[1:]):02d}"
        if name in wavelengths:
            centre = wavelengths[name]
            low, high = centre - 15, centre + 15
            gsd = int(BY_NAME[name].gsd)
        else:
            low, high, centre = _ESA_WAVELENGTH[esa]
            gsd = 60
        spectral.append(
            f'        <Spectral_Information bandId="{band_id}" physicalBand="{esa}">\n'
            f"          <RESOLUTION>{gsd}</RESOLUTION>\n"
            f"          <Wavelength>\n"
            f'            <MIN unit="nm">{low:g}</MIN>\n'
            f'            <MAX unit="nm">{high:g}</MAX>\n'
            f'            <CENTRAL unit="nm">{centre:g}</CENTRAL>\n'
            f"          </Wavelength>\n"
            f"        </Spectral_Information>"
        )
    offsets = "\n".join(
        f'        <BOA_ADD_OFFSET band_id="{i}">{BOA_ADD_OFFSET}</BOA_ADD_OFFSET>'
        for i in range(len(_ESA_BANDS))
    )
    files = "\n".join(f"                        <IMAGE_FILE>{f}</IMAGE_FILE>" for f in image_files)
    scl_names = (
        "NODATA",
        "SATURATED_DEFECTIVE",
        "DARK_FEATURE_SHADOW",
        "CLOUD_SHADOW",
        "VEGETATION",
        "NOT_VEGETATED",
        "WATER",
        "UNCLASSIFIED",
        "CLOUD_MEDIUM_PROBA",
        "CLOUD_HIGH_PROBA",
        "THIN_CIRRUS",
        "SNOW_ICE",
    )
    scl = "\n".join(
        "                <Scene_Classification_ID>\n"
        f"                    <SCENE_CLASSIFICATION_TEXT>SC_{text}</SCENE_CLASSIFICATION_TEXT>\n"
        f"                    <SCENE_CLASSIFICATION_INDEX>{i}</SCENE_CLASSIFICATION_INDEX>\n"
        "                </Scene_Classification_ID>"
        for i, text in enumerate(scl_names)
    )
    baseline_tag = EXAMPLE_BASELINE.replace(".", "")
    sensing = _iso(EXAMPLE_SENSING)
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<!-- Generated by difffusr_cli.example: synthetic content, real schema. -->
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
    <n1:General_Info>
        <Product_Info>
            <PRODUCT_START_TIME>{sensing}</PRODUCT_START_TIME>
            <PRODUCT_STOP_TIME>{sensing}</PRODUCT_STOP_TIME>
            <PRODUCT_URI>{product}.SAFE</PRODUCT_URI>
            <PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>
            <PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>
            <PROCESSING_BASELINE>{EXAMPLE_BASELINE}</PROCESSING_BASELINE>
            <PRODUCT_DOI>Not applicable (synthetic example)</PRODUCT_DOI>
            <GENERATION_TIME>{_iso(EXAMPLE_GENERATION, "000000")}</GENERATION_TIME>
            <PREVIEW_IMAGE_URL>Not applicable</PREVIEW_IMAGE_URL>
            <PREVIEW_GEO_INFO>Not applicable</PREVIEW_GEO_INFO>
            <Datatake datatakeIdentifier="GS2B_{EXAMPLE_SENSING}_033018_N{EXAMPLE_BASELINE}">
                <SPACECRAFT_NAME>Sentinel-2B</SPACECRAFT_NAME>
                <DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
                <DATATAKE_SENSING_START>{sensing}</DATATAKE_SENSING_START>
                <SENSING_ORBIT_NUMBER>65</SENSING_ORBIT_NUMBER>
                <SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>
            </Datatake>
            <Query_Options completeSingleTile="true">
                <PRODUCT_FORMAT>SAFE_COMPACT</PRODUCT_FORMAT>
            </Query_Options>
            <Product_Organisation>
                <Granule_List>
                    <Granule datastripIdentifier="S2B_OPER_MSI_L2A_DS_DFFS_{EXAMPLE_GENERATION}_S{EXAMPLE_SENSING}_N{EXAMPLE_BASELINE}" granuleIdentifier="S2B_OPER_MSI_L2A_TL_DFFS_{EXAMPLE_GENERATION}_A033018_{EXAMPLE_TILE}_N{EXAMPLE_BASELINE}" imageFormat="JPEG2000">
{files}
                    </Granule>
                </Granule_List>
            </Product_Organisation>
        </Product_Info>
        <Product_Image_Characteristics>
            <Special_Values>
                <SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>
                <SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX>
            </Special_Values>
            <Special_Values>
                <SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT>
                <SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX>
            </Special_Values>
            <Image_Display_Order>
                <RED_CHANNEL>3</RED_CHANNEL>
                <GREEN_CHANNEL>2</GREEN_CHANNEL>
                <BLUE_CHANNEL>1</BLUE_CHANNEL>
            </Image_Display_Order>
            <QUANTIFICATION_VALUES_LIST>
                <BOA_QUANTIFICATION_VALUE unit="none">{QUANTIFICATION}</BOA_QUANTIFICATION_VALUE>
                <AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>
                <WVP_QUANTIFICATION_VALUE unit="cm">1000.0</WVP_QUANTIFICATION_VALUE>
            </QUANTIFICATION_VALUES_LIST>
            <BOA_ADD_OFFSET_VALUES_LIST>
{offsets}
            </BOA_ADD_OFFSET_VALUES_LIST>
            <Spectral_Information_List>
{chr(10).join(spectral)}
            </Spectral_Information_List>
            <Scene_Classification_List>
{scl}
            </Scene_Classification_List>
        </Product_Image_Characteristics>
    </n1:General_Info>
    <n1:Geometric_Info>
        <Product_Footprint>
            <Product_Footprint>
                <Global_Footprint>
                    <EXT_POS_LIST>{_footprint(base, size)} </EXT_POS_LIST>
                </Global_Footprint>
            </Product_Footprint>
            <RASTER_CS_TYPE>POINT</RASTER_CS_TYPE>
            <PIXEL_ORIGIN>1</PIXEL_ORIGIN>
        </Product_Footprint>
        <Coordinate_Reference_System>
            <GEO_TABLES version="1">EPSG</GEO_TABLES>
            <HORIZONTAL_CS_TYPE>GEOGRAPHIC</HORIZONTAL_CS_TYPE>
        </Coordinate_Reference_System>
    </n1:Geometric_Info>
    <n1:Auxiliary_Data_Info>
        <PRODUCTION_DEM_TYPE>None (synthetic example, baseline {baseline_tag})</PRODUCTION_DEM_TYPE>
    </n1:Auxiliary_Data_Info>
    <n1:Quality_Indicators_Info>
        <Cloud_Coverage_Assessment>0.0</Cloud_Coverage_Assessment>
        <Image_Content_QI>
            <NODATA_PIXEL_PERCENTAGE>{100 * nodata_share:.6f}</NODATA_PIXEL_PERCENTAGE>
            <CLOUDY_PIXEL_OVER_LAND_PERCENTAGE>0.0</CLOUDY_PIXEL_OVER_LAND_PERCENTAGE>
        </Image_Content_QI>
    </n1:Quality_Indicators_Info>
</n1:Level-2A_User_Product>
"""


def _tile_metadata(base: Affine, size: int) -> str:
    sizes = "\n".join(
        f'      <Size resolution="{g}">\n        <NROWS>{size * 10 // g}</NROWS>\n'
        f"        <NCOLS>{size * 10 // g}</NCOLS>\n      </Size>"
        for g in (10, 20, 60)
    )
    positions = "\n".join(
        f'      <Geoposition resolution="{g}">\n'
        f"        <ULX>{base.c:.0f}</ULX>\n        <ULY>{base.f:.0f}</ULY>\n"
        f"        <XDIM>{g}</XDIM>\n        <YDIM>-{g}</YDIM>\n      </Geoposition>"
        for g in (10, 20, 60)
    )
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<!-- Generated by difffusr_cli.example: synthetic content, real schema. -->
<n1:Level-2A_Tile_ID xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-2A_Tile_Metadata.xsd" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <n1:General_Info>
    <TILE_ID metadataLevel="Brief">S2B_OPER_MSI_L2A_TL_DFFS_{EXAMPLE_GENERATION}_A033018_{EXAMPLE_TILE}_N{EXAMPLE_BASELINE}</TILE_ID>
    <SENSING_TIME metadataLevel="Standard">{_iso(EXAMPLE_SENSING)}</SENSING_TIME>
  </n1:General_Info>
  <n1:Geometric_Info>
    <Tile_Geocoding metadataLevel="Brief">
      <HORIZONTAL_CS_NAME>WGS84 / UTM zone 32N</HORIZONTAL_CS_NAME>
      <HORIZONTAL_CS_CODE>EPSG:{EXAMPLE_EPSG}</HORIZONTAL_CS_CODE>
{sizes}
{positions}
    </Tile_Geocoding>
  </n1:Geometric_Info>
</n1:Level-2A_Tile_ID>
"""


# -- the same product in other formats -------------------------------------------------------
CogNaming = Literal["band", "earth-search", "long"]


def write_example_cogs(
    source: Scene | str | Path, directory: str | Path, *, naming: CogNaming = "band"
) -> Path:
    """Store a product's bands as single-band COGs carrying its DN convention as scale/offset.

    Args:
        source: a ``Scene`` or anything :func:`~difffusr_cli.io.scene.open_scene` opens.
        directory: output folder (created if needed).
        naming: ``"band"`` (``B02.tif``), ``"earth-search"`` (``blue.tif``) or ``"long"``
            (``T32TMT_20230615T102021_B02_10m.tif``).

    Returns:
        The folder. Pixels are the source's DN, unchanged, with nodata 0.
    """
    scene = source if isinstance(source, Scene) else open_scene(source)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in scene.found_bands:
        src = scene.bands[name]
        assert src.path is not None
        with rasterio.open(src.path) as ds:
            dn = ds.read(src.bidx)
            crs = ds.crs
        if naming == "earth-search":
            filename = f"{BY_NAME[name].earth_search_asset}.tif"
        elif naming == "long":
            stamp = "".join(ch for ch in (scene.datetime or "")[:19] if ch.isdigit() or ch == "T")
            prefix = f"{scene.tile or 'T00XXX'}_{stamp or EXAMPLE_SENSING}"
            filename = f"{prefix}_{name}_{int(BY_NAME[name].gsd)}m.tif"
        else:
            filename = f"{name}.tif"
        staging = f"/vsimem/difffusr-example-{name}.tif"
        with rasterio.open(
            staging,
            "w",
            driver="GTiff",
            width=src.width,
            height=src.height,
            count=1,
            dtype=dn.dtype,
            crs=crs,
            transform=src.transform,
            nodata=0,
        ) as dst:
            dst.write(dn, 1)
            dst.descriptions = (name,)
            dst.scales = (scene.radiometry.scale[name],)
            dst.offsets = (scene.radiometry.offset[name],)
            dst.update_tags(PRODUCT_ID=scene.product_id)
        rasterio.shutil.copy(
            staging, directory / filename, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES"
        )
        rasterio.shutil.delete(staging)
    return directory


def write_example_stac(cog_dir: str | Path, path: str | Path | None = None) -> Path:
    """Write a STAC item (``item.json`` in ``cog_dir`` by default) whose assets are the COGs.

    Asset keys are band ids, hrefs relative to the JSON, and each asset's ``raster:bands``
    carries the files' scale/offset.
    """
    cog_dir = Path(cog_dir)
    path = Path(path) if path is not None else cog_dir / "item.json"
    scene = open_scene(cog_dir)
    try:
        assets = {}
        for name in scene.found_bands:
            src = scene.bands[name]
            assert src.path is not None and src.transform is not None
            href = Path(src.path).resolve()
            try:
                href_text = "./" + href.relative_to(path.parent.resolve()).as_posix()
            except ValueError:
                href_text = str(href)
            b = BY_NAME[name]
            assets[name] = {
                "href": href_text,
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
                "gsd": b.gsd,
                "eo:bands": [
                    {
                        "name": name,
                        "common_name": b.common_name,
                        "center_wavelength": b.wavelength_nm / 1000,
                    }
                ],
                "proj:shape": [src.height, src.width],
                "proj:transform": list(src.transform)[:6],
                "raster:bands": [
                    {
                        "data_type": src.dtype,
                        "nodata": 0,
                        "scale": scene.radiometry.scale[name],
                        "offset": scene.radiometry.offset[name],
                        "spatial_resolution": b.gsd,
                    }
                ],
            }
        left, bottom, right, top = scene.bounds
        lons, lats = warp_transform(
            scene.crs, "EPSG:4326", [left, right, right, left], [bottom, bottom, top, top]
        )
        ring = [[lon, lat] for lon, lat in zip(lons, lats, strict=True)]
        item = {
            "type": "Feature",
            "stac_version": "1.0.0",
            "stac_extensions": [
                "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            ],
            "id": scene.product_id,
            "bbox": [min(lons), min(lats), max(lons), max(lats)],
            "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]},
            "properties": {
                "datetime": scene.datetime,
                "platform": "sentinel-2b",
                "constellation": "sentinel-2",
                "processing:level": scene.processing_level,
                "s2:mgrs_tile": (scene.tile or "")[1:] or None,
                "s2:processing_baseline": scene.processing_baseline,
                "proj:epsg": scene.crs.to_epsg() if scene.crs else None,
            },
            "links": [],
            "assets": assets,
        }
    finally:
        scene.close()
    path.write_text(json.dumps(item, indent=2))
    return path
