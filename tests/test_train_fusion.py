"""``difffusr train fusion``.

Wald-protocol inputs, overfitting, checkpoints that load, exact resume, errors.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from difffusr_cli import bands
from difffusr_cli.cli import main
from difffusr_cli.models.config import FusionConfig
from difffusr_cli.models.fusion import FusionNetwork
from difffusr_cli.models.predictors import FusionPredictor
from difffusr_cli.train import fusion

sys.path.insert(0, str(Path(__file__).parent))
from test_train_data import write_s2_product

FAST = [
    "--config",
    "small",
    "--arch",
    "mtf",
    "--batch-size",
    "1",
    "--device",
    "cpu",
    "--no-progress",
    "--set",
    "val_patches=1",
    "--set",
    "model.nf=8",
    "--set",
    "model.gc=4",
]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def native_patches(size: int, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Nested native patches: each group is the area average of one smooth 10 m field."""
    generator = torch.Generator().manual_seed(seed)
    field = torch.nn.functional.avg_pool2d(
        torch.rand(batch, 12, size + 8, size + 8, generator=generator), 9, 1
    )
    out = {}
    for group, names in bands.GROUPS.items():
        ratio = bands.GROUP_RATIO[group]
        data = field[:, bands.indices(names)] * 0.3 + 0.05
        out[group] = torch.nn.functional.avg_pool2d(data, ratio) if ratio > 1 else data
    return out


def test_wald_worlds_have_the_inference_geometry():
    native = native_patches(144, batch=2)
    for group, target_size in (("10m", 144), ("20m", 72), ("60m", 24)):
        world = fusion.wald_world(native, group)
        assert world.guidance.shape == (2, 3, target_size, target_size)
        assert world.target.shape[-1] == target_size
        for g, ratio in (("10m", 4), ("20m", 8), ("60m", 24)):
            assert (
                world.degraded[g].shape[-1] * ratio == target_size
            )  # as at inference: ×4, ×8, ×24
    assert torch.equal(fusion.wald_world(native, "10m").guidance, native["10m"][:, [2, 1, 0]])


@pytest.mark.parametrize("arch", ["mtf", "rrdb"])
def test_training_inputs_are_what_the_inference_predictor_builds(arch):
    net = FusionNetwork(FusionConfig(arch, 8, 2, 4)).eval()
    predictor = FusionPredictor(net)
    native = native_patches(144)
    with torch.no_grad():
        for group in ("10m", "20m", "60m"):
            world = fusion.wald_world(native, group)
            guidance, ms = fusion.branch_inputs(net, world)
            ours = fusion.from_branch_space(net.branch(group)(guidance, ms), group)
            product = predictor(world.guidance, world.degraded)
            theirs = product[:, bands.indices(bands.GROUPS[group])]
            assert torch.allclose(ours, theirs, atol=1e-5), group


def test_branch_space_round_trips():
    x = torch.rand(2, 6, 5, 5)
    z = fusion.to_branch_space(x, "20m")
    assert torch.allclose(fusion.from_branch_space(z, "20m"), x, atol=1e-6)
    ten = torch.rand(1, 4, 3, 3)
    # branch order of the 10 m group is B04, B03, B02, B08
    assert torch.allclose(
        fusion.to_branch_space(ten, "10m")[:, 0],
        (ten[:, 2] - bands.NORM_MEAN[3]) / bands.NORM_STD[3],
    )


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mtf", "rrdb"])
def test_overfitting_one_batch_drives_each_branch_loss_down(arch):
    torch.manual_seed(0)
    net = FusionNetwork(FusionConfig(arch, 8, 2, 4)).train()
    # 48 px patches suffice for the 10 m and 20 m situations; the 60 m one needs 1440 m
    worlds = {
        "10m": fusion.wald_world(native_patches(48), "10m"),
        "20m": fusion.wald_world(native_patches(48), "20m"),
        "60m": fusion.wald_world(native_patches(144), "60m"),
    }
    optimizers = {g: torch.optim.Adam(net.branch(g).parameters(), lr=2e-3) for g in worlds}
    history: dict[str, list[float]] = {g: [] for g in worlds}
    for _ in range(12):
        for group, world in worlds.items():
            optimizers[group].zero_grad()
            guidance, ms = fusion.branch_inputs(net, world)
            loss = torch.nn.functional.l1_loss(
                net.branch(group)(guidance, ms), fusion.to_branch_space(world.target, group)
            )
            loss.backward()
            optimizers[group].step()
            history[group].append(float(loss.detach()))
    for group, losses in history.items():
        assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), (group, losses)


def test_validation_scores_nets_and_baselines():
    net = FusionNetwork(FusionConfig("mtf", 8, 2, 4)).train()
    scores, previews = fusion.validate(net, native_patches(144, batch=2, seed=1), batch_size=1)
    assert net.training  # restored
    expected = {f"ergas_{g}_{m}" for g in ("10m", "20m", "60m") for m in ("net", "gs", "bilinear")}
    assert expected <= set(scores) and all(np.isfinite(v) and v >= 0 for v in scores.values())
    assert scores["ergas_mean_net"] == pytest.approx(
        np.mean([scores[f"ergas_{g}_net"] for g in ("10m", "20m", "60m")])
    )
    assert previews["20m"]["net"].shape == previews["20m"]["target"].shape == (1, 6, 72, 72)


@pytest.fixture()
def products(tmp_path: Path) -> list[Path]:
    return [
        write_s2_product(tmp_path / "p1", 144, seed=1),
        write_s2_product(tmp_path / "p2", 144, seed=2),
    ]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.mark.slow
def test_cli_run_writes_a_checkpoint_that_the_api_loads(products, tmp_path, capsys):
    from difffusr_cli.api import load_fusion_model

    out = tmp_path / "run"
    code = main(
        [
            "train",
            "fusion",
            "--data-dir",
            str(products[0]),
            "--data-dir",
            str(products[1]),
            "--out",
            str(out),
            "--max-steps",
            "2",
            *FAST,
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "2 Sentinel-2 product(s)" in capsys.readouterr().out
    rows = _rows(out / "log.csv")
    assert [r["phase"] for r in rows] == ["train", "train", "val"]
    val = rows[-1]
    assert all(
        float(val[f"ergas_{g}_{m}"]) > 0
        for g in ("10m", "20m", "60m")
        for m in ("net", "gs", "bilinear")
    )
    assert (out / "best.safetensors").is_file() and len(
        list((out / "quicklook").glob("*.png"))
    ) == 1
    predictor = load_fusion_model(out / "best.safetensors")
    assert predictor.config == FusionConfig("mtf", 8, 2, 4)
    product = predictor(
        torch.rand(1, 3, 48, 48) * 0.3,
        {
            "10m": torch.rand(1, 4, 12, 12) * 0.3,
            "20m": torch.rand(1, 6, 6, 6) * 0.3,
            "60m": torch.rand(1, 2, 2, 2) * 0.3,
        },
    )
    assert product.shape == (1, 12, 48, 48) and torch.isfinite(product).all()


@pytest.mark.slow
def test_resume_continues_exactly_where_the_run_stopped(products, tmp_path, capsys):
    from difffusr_cli.weights import load_weights

    data = ["--data-dir", str(products[0]), "--data-dir", str(products[1])]
    assert (
        main(
            [
                "train",
                "fusion",
                *data,
                "--out",
                str(tmp_path / "straight"),
                "--max-steps",
                "3",
                *FAST,
            ]
        )
        == 0
    )
    assert (
        main(
            ["train", "fusion", *data, "--out", str(tmp_path / "split"), "--max-steps", "2", *FAST]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "fusion",
                *data,
                "--out",
                str(tmp_path / "split"),
                "--resume",
                "--max-steps",
                "3",
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    ), capsys.readouterr().err
    straight = load_weights(tmp_path / "straight" / "last.safetensors").state_dict
    resumed = load_weights(tmp_path / "split" / "last.safetensors").state_dict
    for key in straight:
        assert torch.allclose(straight[key], resumed[key], atol=1e-6), key
    state = torch.load(tmp_path / "split" / "last.state.pt", weights_only=True)
    assert state["step"] == 3 and set(state["optimizers"]) == {"10m", "20m", "60m"}
    steps = [int(r["step"]) for r in _rows(tmp_path / "split" / "log.csv") if r["phase"] == "train"]
    assert steps == [1, 2, 3]
    a = [
        float(r["loss_20m"])
        for r in _rows(tmp_path / "straight" / "log.csv")
        if r["phase"] == "train"
    ]
    b = [
        float(r["loss_20m"]) for r in _rows(tmp_path / "split" / "log.csv") if r["phase"] == "train"
    ]
    assert np.allclose(a, b, rtol=1e-4)


@pytest.mark.slow
def test_init_fine_tunes_from_a_checkpoint(products, tmp_path, capsys):
    data = ["--data-dir", str(products[0]), "--data-dir", str(products[1])]
    assert (
        main(["train", "fusion", *data, "--out", str(tmp_path / "a"), "--max-steps", "1", *FAST])
        == 0
    )
    # --init decides the architecture even though the preset would build an RRDB net
    code = main(
        [
            "train",
            "fusion",
            *data,
            "--out",
            str(tmp_path / "b"),
            "--max-steps",
            "1",
            "--config",
            "small",
            "--batch-size",
            "1",
            "--set",
            "val_patches=1",
            "--device",
            "cpu",
            "--no-progress",
            "--init",
            str(tmp_path / "a" / "last.safetensors"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "using its architecture" in capsys.readouterr().out


def test_shared_dsen2_products_train(shared_data, tmp_path, capsys):
    code = main(
        [
            "train",
            "fusion",
            "--data-dir",
            str(shared_data / "dsen2_T33UUB"),
            "--data-dir",
            str(shared_data / "dsen2_T49JGM"),
            "--out",
            str(tmp_path / "run"),
            "--max-steps",
            "1",
            *FAST,
        ]
    )
    assert code == 0, capsys.readouterr().err
    val = next(r for r in _rows(tmp_path / "run" / "log.csv") if r["phase"] == "val")
    # real scenes: Gram–Schmidt guided by the true RGB beats bilinear on the 20 m bands
    assert float(val["ergas_20m_gs"]) < float(val["ergas_20m_bilinear"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data-dir", "{empty}"], "no Sentinel-2 product"),
        (["--data-dir", "{lacking}"], "B09"),
        (["--data-dir", "{p1}", "--arch", "unet"], "--arch"),
        (["--data-dir", "{p1}", "--patch-size", "100"], "multiple of 144"),
        (["--data-dir", "{p1}", "--config", "small"], "validation strip"),
        (["--data-dir", "{p1}", "--set", "model.nf=3"], "nf"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, extra, message):
    (tmp_path / "empty").mkdir()
    write_s2_product(tmp_path / "lacking", 144, skip=("B09",))
    write_s2_product(tmp_path / "p1", 144)
    args = [
        a.format(empty=tmp_path / "empty", lacking=tmp_path / "lacking", p1=tmp_path / "p1")
        for a in extra
    ]
    code = main(["train", "fusion", "--out", str(tmp_path / "run"), "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()  # a failed run leaves no empty folder behind
