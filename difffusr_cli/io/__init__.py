"""Everything that touches product files: readers and the streaming 2.5 m writer.

Readers (SAFE, COG folder, STAC item, multi-band GeoTIFF) sit behind one :class:`Scene`; the
writer streams the 2.5 m product.

Contracts: docs/architecture.md (section I/O); formats and conventions: docs/inputs.md.
"""

from difffusr_cli.io.scene import BandSource, Block, Radiometry, Scene, open_scene
from difffusr_cli.io.writer import ProductWriter, check_output_path, output_grid, partial_path_for

__all__ = [
    "BandSource",
    "Block",
    "ProductWriter",
    "Radiometry",
    "Scene",
    "check_output_path",
    "open_scene",
    "output_grid",
    "partial_path_for",
]
