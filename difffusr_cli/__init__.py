"""difffusr: Sentinel-2 L2A to a 12-band GeoTIFF at 2.5 m.

The RGB bands are super-resolved by a conditional diffusion model; every other band is upscaled by
learned fusion networks guided by that RGB. See ``docs/`` for the Python API and the CLI.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_rgb_model", "load_fusion_model", "superres_many", "super_resolve"]


def __getattr__(name: str):
    # Lazy: `import difffusr_cli` stays cheap (no torch import) for `difffusr --help` and `info`.
    if name in ("load_rgb_model", "load_fusion_model"):
        from difffusr_cli import api

        return getattr(api, name)
    if name == "superres_many":
        from difffusr_cli.superres import superres_many

        return superres_many
    if name == "super_resolve":
        from difffusr_cli.xarray_api import super_resolve

        return super_resolve
    raise AttributeError(f"module 'difffusr_cli' has no attribute {name!r}")
