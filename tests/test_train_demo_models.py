"""The shipped offline models: the demonstration ``rgb-tiny`` and the real-data ``fusion-s2``.

Both are trained with ``difffusr train`` (fusion-s2's scores: test_fusion_s2_shipped.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from difffusr_cli.api import load_fusion_model, load_rgb_model
from difffusr_cli.bands import GROUPS, indices
from difffusr_cli.weights import default_model_name, load_manifest, resolve, sha256_file

DEMO = {"rgb-tiny": "rgb", "fusion-s2": "fusion"}


def test_demo_models_are_packaged_pinned_small_and_never_the_default():
    manifest = load_manifest()
    total = 0
    for name, kind in DEMO.items():
        entry = manifest[name]
        assert (entry.kind, entry.source, entry.default) == (kind, "package", False)
        path = resolve(name, kind)  # offline (conftest): a packaged file needs no Hub
        assert path.is_file() and path.with_suffix(".json").is_file()
        assert sha256_file(path) == entry.sha256
        total += path.stat().st_size
    assert total < 6e6
    assert default_model_name("rgb") != "rgb-tiny" and default_model_name("fusion") != "fusion-s2"


def test_rgb_tiny_super_resolves_the_image_it_is_given():
    resolver = load_rgb_model("rgb-tiny")
    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    pattern = 0.3 + 0.15 * torch.sin(x / 2.5) * torch.cos(y / 3.0)
    lr = torch.stack([pattern, 0.8 * pattern, 0.6 * pattern]).unsqueeze(0)
    sr = resolver.super_resolve(lr, steps=10, seed=0)
    assert sr.shape == (1, 3, 64, 64) and torch.isfinite(sr).all()
    # the structure of the input survives: the SR brought back to 10 m follows the LR
    back = F.avg_pool2d(sr, 4)
    correlation = torch.corrcoef(torch.stack([back.flatten(), lr.flatten()]))[0, 1]
    assert correlation > 0.8, float(correlation)


def test_fusion_s2_keeps_every_band_consistent_with_its_input():
    from difffusr_cli.example import synthetic_reflectance

    predictor = load_fusion_model("fusion-s2")
    reflectance, _ = synthetic_reflectance(48, seed=7)  # spectrally coherent 12-band scene, 10 m
    field = torch.from_numpy(reflectance)[None]
    groups = {
        "10m": field[:, indices(GROUPS["10m"])],
        "20m": F.avg_pool2d(field[:, indices(GROUPS["20m"])], 2),
        "60m": F.avg_pool2d(field[:, indices(GROUPS["60m"])], 6),
    }
    rgb_sr = F.interpolate(field[:, indices(("B04", "B03", "B02"))], scale_factor=4, mode="bicubic")
    product = predictor(rgb_sr, groups)
    assert product.shape == (1, 12, 192, 192) and torch.isfinite(product).all()
    # brought back to its native grid each band stays near its input
    tolerance = {"10m": 0.05, "20m": 0.05, "60m": 0.05}
    for group, data in groups.items():
        back = F.avg_pool2d(product[:, indices(GROUPS[group])], 192 // data.shape[-1])
        assert ((back - data).abs().mean() / data.mean()) < tolerance[group], group
