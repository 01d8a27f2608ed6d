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

The content lives in :mod:`~difffusr_cli.example.synthetic`, the SAFE writer in
:mod:`~difffusr_cli.example.safe` (metadata XML in :mod:`~difffusr_cli.example.metadata`), the
COG folder and STAC item in :mod:`~difffusr_cli.example.formats`.
"""

from difffusr_cli.example.formats import CogNaming, write_example_cogs, write_example_stac
from difffusr_cli.example.safe import make_example_safe
from difffusr_cli.example.synthetic import (
    BOA_ADD_OFFSET,
    EXAMPLE_BASELINE,
    EXAMPLE_EPSG,
    EXAMPLE_GENERATION,
    EXAMPLE_ORIGIN,
    EXAMPLE_SENSING,
    EXAMPLE_TILE,
    QUANTIFICATION,
    synthetic_reflectance,
)

__all__ = [
    "BOA_ADD_OFFSET",
    "EXAMPLE_BASELINE",
    "EXAMPLE_EPSG",
    "EXAMPLE_GENERATION",
    "EXAMPLE_ORIGIN",
    "EXAMPLE_SENSING",
    "EXAMPLE_TILE",
    "QUANTIFICATION",
    "CogNaming",
    "make_example_safe",
    "synthetic_reflectance",
    "write_example_cogs",
    "write_example_stac",
]
