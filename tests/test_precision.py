"""The precision policy: networks may run in bf16 (autocast), everything else stays fp32.

With a stand-in RGB model (no network) and the Gram–Schmidt or bilinear fusion, a bf16 run has
no network to lower, so its product must equal the fp32 product to within rounding: 1 DN at the
99.9th percentile. Gram–Schmidt's statistics and projections run under autocast would miss
this by tens of DN.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_helpers import read_product, stand_in_models

from difffusr_cli.example import make_example_safe
from difffusr_cli.models.config import FusionConfig
from difffusr_cli.models.fusion import FusionNetwork
from difffusr_cli.models.predictors import FusionPredictor
from difffusr_cli.superres import SuperresOptions, superres_many

OPTIONS = SuperresOptions(steps=2, patch_size=32, overlap=8, batch_size=2, device="cpu")


@pytest.fixture(scope="module")
def safe(tmp_path_factory) -> Path:
    return make_example_safe(tmp_path_factory.mktemp("precision"), size=48)


@pytest.mark.parametrize("method", ["gs", "bilinear"])
def test_bf16_and_fp32_products_agree_without_networks(safe, tmp_path, method):
    products = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.tif"
        options = replace(OPTIONS, fusion=method, precision=precision)
        superres_many([safe], out, options, models=stand_in_models(method=method))
        products[precision] = read_product(out)[0].astype(np.int64)
    diff = np.abs(products["bf16"] - products["fp32"])
    assert np.percentile(diff, 99.9) <= 1, (diff.mean(), diff.max())


def test_fusion_net_output_is_denormalised_in_fp32() -> None:
    torch.manual_seed(0)
    net = FusionNetwork(FusionConfig(arch="mtf", nf=8, nb=2, gc=4)).eval()
    predictor = FusionPredictor(net)
    rgb = torch.rand(1, 3, 48, 48) * 0.3
    groups = {
        "10m": torch.rand(1, 4, 12, 12) * 0.3,
        "20m": torch.rand(1, 6, 6, 6) * 0.3,
        "60m": torch.rand(1, 2, 2, 2) * 0.3,
    }
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = predictor(rgb, groups)
    assert out.dtype == torch.float32
    # Not quantised to a handful of levels per band (bf16 keeps 8 bits of mantissa).
    assert min(len(torch.unique(band)) for band in out[0]) > 50
