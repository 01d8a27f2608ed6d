"""Loading and converting weights files: compat checkpoints, converted files, official
safetensors, hparams.yaml discovery, load errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from weights_helpers import TINY_FUSION, _err_line, _sha256, _tiny_fusion_ckpt

from difffusr_cli import weights
from difffusr_cli.checkpoint import read_safetensors
from difffusr_cli.cli import main
from difffusr_cli.errors import OutputError, WeightsError
from difffusr_cli.models.config import FusionConfig, SRConfig

# --- loading and conversion -------------------------------------------------------------------


def test_convert_compat_lightning_checkpoint(compat: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "sr_small_converted.safetensors"
    assert (
        main(["weights", "convert", str(compat / "lightning_ckpt_small.ckpt"), "-o", str(target)])
        == 0
    )
    assert capsys.readouterr().out.strip() == str(target)
    meta = json.loads(target.with_suffix(".json").read_text())
    expected_sha = json.loads((compat / "lightning_ckpt_small.json").read_text())["sha256"]
    assert meta["source"] == {"file": "lightning_ckpt_small.ckpt", "sha256": expected_sha}
    assert meta["kind"] == "rgb" and meta["architecture"] == "diffusion-sr3-rrdb"
    assert meta["bands"] == ["B04", "B03", "B02"]
    assert SRConfig.from_dict(meta["config"]) == SRConfig.small()
    assert meta["config_source"] == "checkpoint hyper_parameters"
    loaded = weights.load_weights(target)
    reference, _ = read_safetensors(compat / "sr_small.safetensors")
    assert loaded.kind == "rgb" and loaded.config == SRConfig.small()
    assert set(loaded.state_dict) == set(reference)
    assert all(torch.equal(loaded.state_dict[k], reference[k]) for k in reference)
    # Refuses to overwrite, accepts --overwrite; a non-.safetensors target is refused.
    assert (
        main(["weights", "convert", str(compat / "lightning_ckpt_small.ckpt"), "-o", str(target)])
        == 2
    )
    assert "exists; pass --overwrite" in _err_line(capsys)
    assert (
        main(
            [
                "weights",
                "convert",
                str(compat / "lightning_ckpt_small.ckpt"),
                "-o",
                str(target),
                "--overwrite",
            ]
        )
        == 0
    )
    with pytest.raises(OutputError, match="must end in .safetensors"):
        weights.convert(compat / "lightning_ckpt_small.ckpt", tmp_path / "x.bin")


def test_converted_file_without_its_json_still_describes_itself(tmp_path: Path) -> None:
    source = _tiny_fusion_ckpt(tmp_path / "last.ckpt")
    target = weights.convert(source, tmp_path)
    assert target == tmp_path / "last.safetensors"
    target.with_suffix(".json").unlink()
    loaded = weights.load_weights(target)
    assert loaded.meta["source"]["sha256"] == _sha256(source) and loaded.config == TINY_FUSION


def test_unsupported_format_version(tmp_path: Path) -> None:
    target = weights.convert(_tiny_fusion_ckpt(tmp_path / "last.ckpt"), tmp_path / "w.safetensors")
    meta = json.loads(target.with_suffix(".json").read_text())
    target.with_suffix(".json").write_text(json.dumps({**meta, "difffusr_format": 2}))
    with pytest.raises(WeightsError, match="difffusr_format 2 is not supported"):
        weights.load_weights(target)


def test_bare_official_safetensors_and_compat_prefixes(compat: Path) -> None:
    sr = weights.load_weights(
        compat / "sr_small.safetensors"
    )  # its sr_small.json is not ours: ignored
    assert (
        sr.kind == "rgb"
        and sr.config == SRConfig.small()
        and "inferred" in sr.meta["config_source"]
    )
    rrdb = weights.load_weights(compat / "fusion_rrdb_small.safetensors")
    mtf = weights.load_weights(compat / "fusion_mtf.safetensors")
    assert rrdb.config == FusionConfig("rrdb", 8, 1, 4) and rrdb.architecture == "fusion-rrdb"
    assert mtf.config == FusionConfig.large_mtf() and mtf.architecture == "fusion-mtf"
    for loaded in (rrdb, mtf):
        assert not any(k.startswith(("weights/", "vec/")) for k in loaded.state_dict)
        assert all(k.startswith("rrdb_block_") for k in loaded.state_dict)


def test_hparams_yaml_two_folders_up_is_preferred(compat: Path, tmp_path: Path) -> None:
    run = tmp_path / "logs" / "exp" / "version_0"
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.symlink_to(compat / "lightning_ckpt_small.ckpt")
    # norm_groups cannot be seen in tensor shapes: only the hparams file can say it is 16.
    text = (compat / "hparams_small.yaml").read_text().replace("norm_groups: 32", "norm_groups: 16")
    (run / "hparams.yaml").write_text(text)
    loaded = weights.load_weights(ckpt)
    assert loaded.config.unet.norm_groups == 16
    assert loaded.meta["config_source"] == f"hparams.yaml ({run / 'hparams.yaml'})"


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    unknown = tmp_path / "w.npz"
    unknown.write_bytes(b"\x93NUMPY")
    with pytest.raises(WeightsError, match="unknown weights format"):
        weights.load_weights(unknown)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"backbone.conv.weight": torch.zeros(2, 2)}}, foreign)
    with pytest.raises(WeightsError) as caught:
        weights.load_weights(foreign)
    assert str(foreign) in str(caught.value)
    empty = tmp_path / "empty.pt"
    torch.save({"state_dict": {}}, empty)
    with pytest.raises(WeightsError, match="holds no tensors"):
        weights.load_weights(empty)
