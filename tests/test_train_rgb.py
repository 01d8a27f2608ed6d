"""``difffusr train rgb``: objective, batches, checkpoints that load, exact resume, CLI errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from difffusr_cli.cli import main
from difffusr_cli.degrade import degrade, sample_degradation
from difffusr_cli.models.config import SRConfig
from difffusr_cli.models.sr import DiffusionSR
from difffusr_cli.train import rgb
from difffusr_cli.train.hr_data import open_hr_dataset

# The smallest run the CLI accepts: 16 px HR crops (4 px LR), 2-step validation sampling.
FAST = [
    "--config",
    "small",
    "--batch-size",
    "2",
    "--patch-size",
    "16",
    "--device",
    "cpu",
    "--no-progress",
    "--set",
    "val_steps=2",
    "--set",
    "model.moco.K=16",
]


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny tensors: threads only add synchronisation (and oversubscribe a busy CI machine)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        # smooth structure plus texture, so the crops differ and the LR keeps information
        y, x = np.mgrid[0:40, 0:40]
        base = 127 + 60 * np.sin(x / (3 + i)) * np.cos(y / (4 + i))
        image = np.clip(base[None] + rng.normal(0, 20, (3, 40, 40)), 0, 255).astype(np.uint8)
        with rasterio.open(
            folder / f"im{i}.png", "w", driver="PNG", width=40, height=40, count=3, dtype="uint8"
        ) as dst:
            dst.write(image)
    return folder


@pytest.mark.slow
def test_overfitting_one_batch_drives_the_losses_down():
    torch.manual_seed(0)
    model = DiffusionSR(SRConfig.small()).train()
    generator = torch.Generator().manual_seed(0)
    hr, hr_key = (
        torch.rand(2, 3, 16, 16, generator=generator),
        torch.rand(2, 3, 16, 16, generator=generator),
    )
    params = sample_degradation(2, generator)
    batch = rgb.RGBBatch(
        hr=hr, lr=degrade(hr, params, generator), lr_key=degrade(hr_key, params, generator)
    )
    level = rgb.draw_noise_levels(model, 2, generator)
    noise = torch.randn(hr.shape, generator=generator)
    optimizer = torch.optim.Adam(rgb.trainable_parameters(model), lr=1e-3)
    history = []
    for _ in range(25):
        optimizer.zero_grad()
        terms = rgb.rgb_losses(model, batch, level, noise, infonce_weight=0.05)
        terms.total.backward()
        optimizer.step()
        history.append([float(t.detach()) for t in (terms.total, terms.l1, terms.mse)])
    first, last = np.array(history[:3]).mean(axis=0), np.array(history[-3:]).mean(axis=0)
    assert (last < first).all(), (first, last)
    assert last[2] < 0.3 * first[2]  # the x0 MSE is what a fixed batch lets the U-Net memorise
    # (InfoNCE is not asserted: on a fixed batch the queue fills with the positives' own keys)


def test_noise_levels_lie_between_neighbouring_steps_of_the_schedule():
    model = DiffusionSR(SRConfig.small())
    schedule = model.schedule()
    levels = rgb.draw_noise_levels(model, 4000, torch.Generator().manual_seed(0))
    assert levels.min() >= float(schedule.sqrt_alphas_cumprod[-1]) and levels.max() <= 1.0
    # uniform t: about half the draws come from the first half of the steps (levels above the
    # median)
    median = float(schedule.sqrt_alphas_cumprod[schedule.n // 2])
    assert 0.45 < float((levels > median).float().mean()) < 0.55


def test_batches_share_one_degradation_per_image_and_are_reproducible(image_folder):
    data = open_hr_dataset("folder", image_folder, min_size=16, gsd=2.5)
    config = rgb.resolve_config("small", {"train.batch_size": 2, "train.patch_size": 16})
    a = rgb.make_batch(data, (0, 1), config, harmonized=True, step=3)
    b = rgb.make_batch(data, (0, 1), config, harmonized=True, step=3)
    c = rgb.make_batch(data, (0, 1), config, harmonized=True, step=4)
    assert torch.equal(a.hr, b.hr) and torch.equal(a.lr, b.lr) and torch.equal(a.lr_key, b.lr_key)
    assert not torch.equal(a.hr, c.hr)
    assert a.hr.shape == (2, 3, 16, 16) and a.lr.shape == a.lr_key.shape == (2, 3, 4, 4)
    # an epoch visits every training image once (repeat = 1, 2 images, batch 2)
    config4 = rgb.resolve_config("small", {"train.batch_size": 1, "train.patch_size": 16})
    firsts = {float(rgb.make_batch(data, (0, 1), config4, False, s).hr.mean()) for s in (0, 1)}
    means = {float(torch.from_numpy(data.read(i)).mean()) for i in (0, 1)}
    assert len(firsts) == 2 and len(means) == 2


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_cli_run_writes_a_checkpoint_that_the_api_loads(image_folder, tmp_path, capsys):
    from difffusr_cli.api import load_rgb_model

    out = tmp_path / "run"
    code = main(
        [
            "train",
            "rgb",
            "--data",
            "folder",
            "--data-dir",
            str(image_folder),
            "--gsd",
            "2.5",
            "--out",
            str(out),
            "--max-steps",
            "2",
            *FAST,
        ]
    )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "3 image(s)" in printed and "best:" in printed
    for name in (
        "last.safetensors",
        "last.json",
        "best.safetensors",
        "last.state.pt",
        "log.csv",
        "train_config.json",
    ):
        assert (out / name).is_file(), name
    assert len(list((out / "quicklook").glob("*.png"))) == 2
    rows = _rows(out / "log.csv")
    assert [r["phase"] for r in rows] == ["train", "val", "train", "val"]
    assert all(float(r["val_psnr"]) > 0 for r in rows if r["phase"] == "val")
    resolver = load_rgb_model(out / "best.safetensors")
    sr = resolver.super_resolve(torch.rand(1, 3, 6, 6), steps=2, seed=0)
    assert sr.shape == (1, 3, 24, 24) and torch.isfinite(sr).all()


@pytest.mark.slow
def test_resume_continues_exactly_where_the_run_stopped(image_folder, tmp_path, capsys):
    from difffusr_cli.weights import load_weights

    common_args = [
        "train",
        "rgb",
        "--data",
        "folder",
        "--data-dir",
        str(image_folder),
        "--gsd",
        "2.5",
        *FAST,
    ]
    assert main([*common_args, "--out", str(tmp_path / "straight"), "--max-steps", "3"]) == 0
    assert main([*common_args, "--out", str(tmp_path / "split"), "--max-steps", "2"]) == 0
    # a resumed run reads its saved configuration; only the step budget changes
    assert (
        main(
            [
                "train",
                "rgb",
                "--data",
                "folder",
                "--data-dir",
                str(image_folder),
                "--gsd",
                "2.5",
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
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.allclose(straight[key].float(), resumed[key].float(), atol=1e-5), key
    state_a = torch.load(tmp_path / "straight" / "last.state.pt", weights_only=True)
    state_b = torch.load(tmp_path / "split" / "last.state.pt", weights_only=True)
    assert state_a["step"] == state_b["step"] == 3
    exp_a = state_a["optimizer"]["state"][0]["exp_avg"]
    assert torch.allclose(exp_a, state_b["optimizer"]["state"][0]["exp_avg"], atol=1e-6)
    losses = [r["loss"] for r in _rows(tmp_path / "straight" / "log.csv") if r["phase"] == "train"]
    resumed_losses = [
        r["loss"] for r in _rows(tmp_path / "split" / "log.csv") if r["phase"] == "train"
    ]
    assert [
        int(r["step"]) for r in _rows(tmp_path / "split" / "log.csv") if r["phase"] == "train"
    ] == [1, 2, 3]
    assert np.allclose(np.array(losses, float), np.array(resumed_losses, float), rtol=1e-4)


def test_shared_hr_rgb_trains(shared_data, tmp_path, capsys):
    code = main(
        [
            "train",
            "rgb",
            "--data",
            "folder",
            "--data-dir",
            str(shared_data / "hr_rgb" / "deepforest"),
            "--gsd",
            "0.5",
            "--out",
            str(tmp_path / "run"),
            "--max-steps",
            "1",
            *FAST,
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "last.safetensors").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data", "folder", "--data-dir", "{empty}"], "no images"),
        (["--data", "folder", "--data-dir", "{gray}", "--gsd", "1"], "band"),
        (["--data", "folder"], "--data-dir"),
        (["--data", "landsat", "--data-dir", "{empty}"], "--data"),
        (["--data", "folder", "--data-dir", "{gray}", "--config", "nope"], "--config"),
        (["--data", "sen2naip", "--hub-repo", "org/some-dataset"], "HF_HUB_OFFLINE"),
        (["--data", "folder", "--data-dir", "{empty}", "--set", "oops"], "KEY=VALUE"),
        (["--data", "folder", "--data-dir", "{empty}", "--resume"], "no run to resume"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, extra, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "gray").mkdir()
    with rasterio.open(
        tmp_path / "gray" / "g.png", "w", driver="PNG", width=32, height=32, count=1, dtype="uint8"
    ) as dst:
        dst.write(np.zeros((1, 32, 32), np.uint8))
    args = [a.format(empty=tmp_path / "empty", gray=tmp_path / "gray") for a in extra]
    code = main(["train", "rgb", "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()  # a failed run leaves no empty folder behind


def test_missing_device_exits_2(image_folder, tmp_path, capsys):
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    code = main(
        [
            "train",
            "rgb",
            "--data",
            "folder",
            "--data-dir",
            str(image_folder),
            "--gsd",
            "2.5",
            "--out",
            str(tmp_path / "run"),
            *FAST,
            "--device",
            "cuda:7",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --device cuda:7") and err.count("\n") == 1, err
