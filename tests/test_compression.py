"""The product's codec (--compress, --compress-level) and the commit without a second pass."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from pipeline_helpers import read_product, stand_in_models

from difffusr_cli.errors import InputError
from difffusr_cli.example import make_example_safe
from difffusr_cli.io.codecs import compression_level, creation_options
from difffusr_cli.superres import SuperresOptions, superres_many

SMALL = SuperresOptions(
    steps=2,
    patch_size=32,
    overlap=8,
    device="cpu",
    fusion="bilinear",
    fusion_tile=48,
    fusion_overlap=24,
    block_rows=48,
    window=(0, 0, 24, 24),
    quiet=True,
)


@pytest.fixture(scope="module")
def safe(tmp_path_factory) -> Path:
    return make_example_safe(tmp_path_factory.mktemp("scene"), size=48)


def run(safe: Path, out: Path, **changes) -> Path:
    models = stand_in_models(0.05, method="bilinear")
    superres_many([safe], out, replace(SMALL, **changes), models=models)
    return out


def test_levels_are_validated_per_codec():
    assert compression_level("zstd", None) == 1 and compression_level("deflate", None) == 1
    assert compression_level("zstd", 22) == 22 and compression_level("lzw", None) is None
    for codec, level in (("zstd", 0), ("zstd", 23), ("deflate", 10), ("lzw", 3), ("none", 1)):
        with pytest.raises(ValueError, match="--compress"):
            compression_level(codec, level)
    with pytest.raises(ValueError, match="--compress 'jpeg'"):
        compression_level("jpeg", None)
    with pytest.raises(InputError, match="--compress-level 30"):
        replace(SMALL, compress_level=30).validate()
    assert creation_options("zstd", None, "uint16") == {
        "compress": "zstd",
        "predictor": 2,
        "ZSTD_LEVEL": 1,
    }
    assert creation_options("none", None, "float32") == {"compress": "none"}


def test_codecs_change_the_file_never_the_pixels(safe, tmp_path):
    reference, _ = read_product(run(safe, tmp_path / "z1.tif"))
    sizes = {}
    for codec, level in (("zstd", 9), ("deflate", 6), ("lzw", None), ("none", None)):
        out = run(safe, tmp_path / f"{codec}.tif", compress=codec, compress_level=level)
        data, meta = read_product(out)
        assert np.array_equal(data, reference), codec
        tags = meta["tags"]
        assert tags["compression"] == codec
        assert tags.get("compression_level", "") == ("" if level is None else str(level))
        # The codec stays out of the fingerprint: it never changes a pixel.
        assert "compress" not in json.dumps(sorted(json.loads(tags["difffusr_fingerprint"])))
        with rasterio.open(out) as ds:
            assert (ds.compression.name.lower() if ds.compression else "none") == codec
        sizes[codec] = out.stat().st_size
    assert sizes["none"] > max(sizes["zstd"], sizes["deflate"])


def test_the_product_is_not_copied_at_the_end(safe, tmp_path, monkeypatch):
    def no_copy(*args, **kwargs):
        raise AssertionError("the product was copied (a second compression pass)")

    monkeypatch.setattr(rasterio.shutil, "copy", no_copy)
    data, meta = read_product(run(safe, tmp_path / "p.tif"))
    assert meta["tags"]["compression"] in ("zstd", "deflate") and np.isfinite(data).all()
    with pytest.raises(AssertionError, match="second compression"):
        run(safe, tmp_path / "c.tif", cog=True)  # a COG is a copy (overviews, its own layout)


def test_a_resume_may_change_the_codec(safe, tmp_path):
    reference = run(safe, tmp_path / "ref.tif", compress_level=5)
    out = tmp_path / "out.tif"

    def stop(index: int) -> None:
        if index == 0:
            raise KeyboardInterrupt

    models = stand_in_models(0.05, method="bilinear")
    with pytest.raises(KeyboardInterrupt):
        superres_many([safe], out, SMALL, models=models, on_block_done=stop)
    run(safe, out, resume=True, compress_level=5)
    assert out.read_bytes() == reference.read_bytes()  # rewritten with the finishing run's codec
