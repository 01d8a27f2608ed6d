"""Compatibility re-export: the fusion baselines live in :mod:`difffusr_cli.fusion_baselines`.

Kept only while ``pipeline.py`` still imports from here; new code imports the neutral module.
"""

from difffusr_cli.fusion_baselines import (
    SyntheticPan,
    bilinear_fuse,
    gram_schmidt_fuse,
    gram_schmidt_sharpen,
)

__all__ = ["SyntheticPan", "bilinear_fuse", "gram_schmidt_fuse", "gram_schmidt_sharpen"]
