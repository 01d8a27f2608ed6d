"""Shared training machinery.

Configuration, overrides, run folder, log, RNG, EMA, compact exports.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from difffusr_cli.errors import InputError, OutputError
from difffusr_cli.models.config import FusionConfig, SRConfig
from difffusr_cli.train import common, fusion, rgb
from difffusr_cli.train.loop import make_schedulers


def test_parse_override_reads_toml_values_and_defaults_to_train():
    assert common.parse_override("lr=2e-4") == ("train.lr", 2e-4)
    assert common.parse_override("train.milestones=[10, 20]") == ("train.milestones", [10, 20])
    assert common.parse_override("model.unet.inner_channel=64") == ("model.unet.inner_channel", 64)
    assert common.parse_override("train.amp=false") == ("train.amp", False)
    assert common.parse_override("note=hello world") == ("train.note", "hello world")
    with pytest.raises(InputError):
        common.parse_override("no-equals-sign")


def test_apply_overrides_is_deep_and_leaves_the_input_alone():
    base = {"model": {"unet": {"inner_channel": 32}}, "train": {"lr": 1.0}}
    out = common.apply_overrides(
        base, {"model.unet.inner_channel": 64, "train.seed": 3, "train.lr": None}
    )
    assert out == {"model": {"unet": {"inner_channel": 64}}, "train": {"lr": 1.0, "seed": 3}}
    assert base["model"]["unet"]["inner_channel"] == 32
    with pytest.raises(InputError):
        common.apply_overrides({"train": {"lr": 1.0}}, {"train.lr.x": 2})


def test_presets_build_the_documented_architectures():
    large = rgb.resolve_config("large", {})
    assert large.model == SRConfig.large()
    assert (large.batch_size, large.patch_size, large.lr, large.milestones) == (
        8,
        256,
        1e-4,
        (200, 400, 600, 800),
    )
    assert (large.ema_decay, large.infonce_weight, large.epochs) == (0.999, 0.05, 1000)
    small = rgb.resolve_config("small", {"train.batch_size": 2})
    assert small.model == SRConfig.small() and small.batch_size == 2
    assert fusion.resolve_config("large", {}, "mtf").model == FusionConfig.large_mtf()
    assert fusion.resolve_config("large", {}, "rrdb").model == FusionConfig.large_rrdb()
    assert fusion.resolve_config("small", {}, "mtf").model.arch == "mtf"


def test_config_round_trips_through_its_mapping():
    config = rgb.resolve_config("small", {"train.milestones": [5], "train.harmonize": True})
    again = rgb.RGBTrainConfig.from_mapping(config.to_dict(), "test")
    assert again == config
    fconfig = fusion.resolve_config("small", {"train.max_nodata": 0.1}, "rrdb")
    assert fusion.FusionTrainConfig.from_mapping(fconfig.to_dict(), "test") == fconfig


def test_toml_file_config_and_its_errors(tmp_path):
    good = tmp_path / "c.toml"
    good.write_text(
        "[model.unet]\ninner_channel = 32\nchannel_mults = [1, 1]\nres_blocks = 1\n"
        "attn_strides = [2]\n[model.rrdb]\nnum_block = 1\n[model.moco]\nK = 32\n"
        "[train]\nbatch_size = 3\nmilestones = []\n"
    )
    config = rgb.resolve_config(str(good), {"train.patch_size": 32})
    assert config.model.unet.inner_channel == 32 and config.model.moco.K == 32
    assert (config.batch_size, config.patch_size, config.milestones) == (3, 32, ())
    bad_key = tmp_path / "bad.toml"
    bad_key.write_text("[train]\nlearning_rate = 1\n")
    with pytest.raises(InputError, match="learning_rate"):
        rgb.resolve_config(str(bad_key), {})
    bad_value = tmp_path / "bad2.toml"
    bad_value.write_text("[train]\npatch_size = 30\n")
    with pytest.raises(InputError, match="patch_size"):
        rgb.resolve_config(str(bad_value), {})
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    with pytest.raises(InputError, match="TOML"):
        rgb.resolve_config(str(broken), {})
    with pytest.raises(InputError, match="preset"):
        rgb.resolve_config("medium", {})
    with pytest.raises(InputError, match="multiple of 144"):
        fusion.resolve_config("small", {"train.patch_size": 100}, "mtf")


def test_step_rngs_depend_only_on_seed_stream_and_step():
    a_torch, a_np = common.step_rngs(7, 1, 5)
    b_torch, b_np = common.step_rngs(7, 1, 5)
    assert torch.equal(torch.rand(4, generator=a_torch), torch.rand(4, generator=b_torch))
    assert np.array_equal(a_np.random(4), b_np.random(4))
    c_torch, _ = common.step_rngs(7, 1, 6)
    d_torch, _ = common.step_rngs(7, 2, 5)
    e_torch, _ = common.step_rngs(8, 1, 5)
    draws = [
        torch.rand(4, generator=g)
        for g in (common.step_rngs(7, 1, 5)[0], c_torch, d_torch, e_torch)
    ]
    assert all(not torch.equal(draws[0], other) for other in draws[1:])


def test_schedule_halves_after_each_completed_milestone():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    (scheduler,) = make_schedulers({"main": optimizer}, (2, 4), 0.5).values()
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_ema_update_moves_toward_the_model_by_one_minus_decay():
    model, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    common.copy_weights(ema, model)
    assert torch.equal(ema.weight, model.weight)
    with torch.no_grad():
        model.weight.add_(1.0)
    before = ema.weight.clone()
    common.ema_update(ema, model, decay=0.9)
    assert torch.allclose(ema.weight, before + 0.1, atol=1e-6)


def test_run_dir_refuses_to_mix_runs(tmp_path):
    run = common.RunDir(tmp_path / "run", resume=False)
    assert not run.path.exists()  # created only once the run has been validated
    run.create()
    with pytest.raises(OutputError, match="no run to resume"):
        common.RunDir(tmp_path / "run", resume=True)
    run.checkpoint("last").write_bytes(b"x")
    with pytest.raises(OutputError, match="--resume"):
        common.RunDir(tmp_path / "run", resume=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        common.RunDir(tmp_path / "file", resume=False)
    with pytest.raises(OutputError, match="is a file"):
        common.RunDir(tmp_path / "file" / "run", resume=False)
    with pytest.raises(OutputError, match="state"):
        run.load_state()


def test_csv_log_resume_drops_rows_after_the_checkpoint(tmp_path):
    path = tmp_path / "log.csv"
    log = common.CsvLog(path, ("step", "phase", "loss"))
    for step in range(1, 6):
        log.write(step=step, phase="train", loss=1.0 / step)
    resumed = common.CsvLog(path, ("step", "phase", "loss"), resume_step=3)
    resumed.write(step=4, phase="train", loss=0.5)
    with open(path, newline="") as stream:
        steps = [int(r["step"]) for r in csv.DictReader(stream)]
    assert steps == [1, 2, 3, 4]
    with pytest.raises(ValueError):
        resumed.write(nope=1)


def test_export_is_smaller_and_samples_like_the_full_checkpoint(tmp_path):
    from difffusr_cli.api import load_rgb_model
    from difffusr_cli.models.sr import DiffusionSR
    from difffusr_cli.weights import load_weights, save_network

    torch.manual_seed(0)
    model = DiffusionSR(SRConfig.small())
    full = save_network(
        model.state_dict(), "rgb", model.config, tmp_path / "full.safetensors", source={}
    )
    small = common.export_weights(full, tmp_path / "small.safetensors")
    assert small.stat().st_size < 0.4 * full.stat().st_size
    loaded = load_weights(small)
    assert loaded.meta["export"]["inference_only"] and loaded.meta["export"]["dtype"] == "float16"
    assert set(loaded.state_dict) == set(model.state_dict())
    assert all(t.dtype != torch.float16 for t in loaded.state_dict.values())
    assert torch.equal(
        loaded.state_dict["model.first_conv_x.weight"], loaded.state_dict["ema.first_conv_x.weight"]
    )
    assert torch.equal(
        loaded.state_dict["diffusion.alphas_cumprod"],
        model.state_dict()["diffusion.alphas_cumprod"],
    )
    lr = torch.rand(1, 3, 8, 8)
    reference = load_rgb_model(full).super_resolve(lr, steps=3, seed=1)
    compact = load_rgb_model(small).super_resolve(lr, steps=3, seed=1)
    assert (reference - compact).abs().max() < 0.05  # float16 rounding of the weights only
    with pytest.raises(OutputError, match="exists"):
        common.export_weights(full, small)
    with pytest.raises(OutputError, match="safetensors"):
        common.export_weights(full, tmp_path / "x.bin")


def test_finite_or_raise_names_the_fix():
    assert common.finite_or_raise(1.5, "loss", 3) == 1.5
    with pytest.raises(InputError, match="learning rate"):
        common.finite_or_raise(float("nan"), "loss", 3)


@pytest.mark.parametrize("stage", ["rgb", "fusion"])
def test_max_steps_zero_is_refused_in_one_line(stage, tmp_path, capsys):
    from difffusr_cli.cli import main

    data = ["--data-dir", str(tmp_path)]
    if stage == "rgb":
        data = ["--data", "folder", *data]
    code = main(
        [
            "train",
            stage,
            *data,
            "--out",
            str(tmp_path / "run"),
            "--config",
            "small",
            "--max-steps",
            "0",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "max_steps must be an integer >= 1" in err
    assert not (tmp_path / "run").exists()


def test_set_with_a_wrong_type_names_the_key_and_the_type(tmp_path, capsys):
    from difffusr_cli.cli import main

    code = main(
        [
            "train",
            "rgb",
            "--data",
            "folder",
            "--data-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "run"),
            "--config",
            "small",
            "--set",
            "train.lr=abc",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "train.lr must be a number" in err and "'abc'" in err
    with pytest.raises(InputError, match="train.milestones must be a list of integers"):
        rgb.resolve_config("small", {"train.milestones": ["a"]})


def test_checkpoint_is_one_atomic_file_and_old_folders_must_agree(tmp_path):
    from difffusr_cli.models.fusion import FusionNetwork

    net = FusionNetwork(FusionConfig("rrdb", 8, 1, 4))
    run = common.RunDir(tmp_path / "run", resume=False)
    run.create()
    run.save_state({"step": 3, "weights": net.state_dict()})
    assert [p.name for p in run.path.iterdir()] == ["last.state.pt"]  # no partial file left
    state = common.RunDir(run.path, resume=True).load_state()
    assert state["step"] == 3 and state["weights"].keys() == net.state_dict().keys()
    # an earlier version's two files: weights from last.safetensors only when the steps agree
    run.save_weights("last", net, "fusion", net.config, {"step": 2})
    run.save_state({"step": 2})
    legacy = common.RunDir(run.path, resume=True).load_state()
    assert legacy["weights"].keys() == state["weights"].keys()
    run.save_state({"step": 5})
    with pytest.raises(OutputError, match="different steps"):
        common.RunDir(run.path, resume=True).load_state()
