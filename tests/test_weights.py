"""The manifest, the Hub cache path (real huggingface_hub code, offline), pulls and conversion,
and the `difffusr weights` commands (loading files: test_weights_load.py)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from weights_helpers import (
    COMMIT,
    FUSION_FILE,
    OTHER_COMMIT,
    REPO_ID,
    TINY_FUSION,
    _err_line,
    _fusion_entry,
    _hub_cache,
    _manifest,
    _sha256,
    _tiny_fusion_ckpt,
)

from difffusr_cli import weights
from difffusr_cli.checkpoint import read_safetensors
from difffusr_cli.cli import main
from difffusr_cli.errors import WeightsError
from difffusr_cli.models.config import FusionConfig


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A private Hub cache, converted cache and manifest location (the Hub stays offline)."""
    paths = {
        "hub": tmp_path / "hub",
        "converted": tmp_path / "converted",
        "manifest": tmp_path / "weights.toml",
        "files": tmp_path / "files",
    }
    monkeypatch.setenv("HF_HUB_CACHE", str(paths["hub"]))
    monkeypatch.setenv("DIFFFUSR_CACHE", str(paths["converted"]))
    monkeypatch.setenv("DIFFFUSR_WEIGHTS_TOML", str(paths["manifest"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return paths


@pytest.fixture
def cached_fusion(env: dict[str, Path]) -> Path:
    """The tiny fusion checkpoint in the Hub cache; returns the original file."""
    source = _tiny_fusion_ckpt(env["files"] / "last.ckpt")
    _hub_cache(env["hub"], {FUSION_FILE: source})
    return source


# --- manifest ---------------------------------------------------------------------------------


def test_packaged_manifest_has_the_official_models() -> None:
    manifest = weights.load_manifest(weights.PACKAGE_ROOT / "weights.toml")
    official = {"rgb-naip-harm", "rgb-naip-unharm", "rgb-worldstrat", "fusion"}
    assert official <= set(manifest)
    # Official weights stay the defaults; the shipped demonstration models are package entries.
    assert weights.default_model_name("rgb", manifest) == "rgb-naip-harm"
    assert weights.default_model_name("fusion", manifest) == "fusion"
    assert all(manifest[name].source == "package" for name in set(manifest) - official)
    for entry in (manifest[name] for name in official):
        assert (
            entry.source == "hub"
            and entry.repo == "NorskRegnesentralSTI/DiffFuSR"
            and entry.revision == "main"
        )
    assert manifest["rgb-worldstrat"].candidates[0].endswith("version_7/checkpoints/last.ckpt")
    # NAIP-harm: the singular checkpoint/ that downloaders use first, the README's plural second.
    harm = manifest["rgb-naip-harm"].candidates
    assert harm[0].endswith("version_1/checkpoint/last.ckpt")
    assert harm[1].endswith("version_1/checkpoints/last.ckpt")
    assert manifest["fusion"].file == "" and "logs/GSD/**/*.ckpt" in manifest["fusion"].patterns


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"kind": "nir"}, "kind must be one of"),
        ({"colour": "red"}, "unknown field(s) colour"),
        ({"default": "yes"}, "field default must be a bool"),
        ({"sha256": "abc"}, "sha256 must be 64"),
        ({"repo": "noslash"}, "needs repo"),
        ({"file": "", "discover": ""}, "needs file, or candidates / discover"),
    ],
)
def test_manifest_errors_name_the_file_and_entry(
    env: dict[str, Path], fields: dict, problem: str
) -> None:
    _manifest(env["manifest"], broken=_fusion_entry(**fields))
    with pytest.raises(WeightsError) as caught:
        weights.load_manifest()
    assert str(env["manifest"]) in str(caught.value) and "[models.broken]" in str(caught.value)
    assert problem in str(caught.value)


def test_manifest_refuses_two_defaults(env: dict[str, Path]) -> None:
    _manifest(env["manifest"], a=_fusion_entry(), b=_fusion_entry())
    with pytest.raises(WeightsError, match="more than one default fusion model"):
        weights.load_manifest()


# --- pull from an offline Hub cache -----------------------------------------------------------


def test_pull_from_offline_cache_converts_and_records_unknown_sha(
    env, cached_fusion, capsys
) -> None:
    _manifest(env["manifest"], tiny=_fusion_entry())
    assert main(["weights", "pull", "tiny"]) == 0
    out, err = capsys.readouterr()
    converted = env["converted"] / "tiny" / COMMIT / "tiny.safetensors"
    assert out.strip() == f"tiny: {converted}"
    digest = _sha256(cached_fusion)
    assert digest in err and "not pinned" in err  # the computed checksum is shown
    record = json.loads(converted.with_suffix(".json").read_text())
    assert (
        record["difffusr_format"] == 1
        and record["kind"] == "fusion"
        and record["architecture"] == "fusion-mtf"
    )
    assert record["source"]["sha256"] == digest and record["source"]["commit"] == COMMIT
    assert record["source"]["repo"] == REPO_ID and record["source"]["file"] == FUSION_FILE
    assert record["bands"] == [
        "B01",
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B08",
        "B8A",
        "B09",
        "B11",
        "B12",
    ]
    assert FusionConfig.from_dict(record["config"]) == TINY_FUSION
    # The converted tensors are the checkpoint's, key for key.
    original = torch.load(cached_fusion, weights_only=True)["state_dict"]
    tensors, _ = read_safetensors(converted)
    assert set(tensors) == set(original)
    assert all(torch.equal(tensors[k], original[k]) for k in original)
    # A second pull reuses the conversion (no new checksum note) and `path` / `list` see it.
    assert main(["weights", "pull", "tiny"]) == 0
    assert "sha256" not in capsys.readouterr().err
    assert main(["weights", "path", "tiny"]) == 0
    assert capsys.readouterr().out.strip() == str(converted)
    assert main(["weights", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["models"][0]
    assert (
        listed["converted"] == str(converted)
        and listed["sha256"] == digest
        and not listed["sha256_pinned"]
    )


def test_pinned_checksum_accepts_the_right_file(env, cached_fusion, capsys) -> None:
    _manifest(env["manifest"], tiny=_fusion_entry(sha256=_sha256(cached_fusion)))
    assert main(["weights", "pull", "tiny"]) == 0
    assert "not pinned" not in capsys.readouterr().err


def test_checksum_mismatch_is_detected(env, cached_fusion, capsys) -> None:
    _manifest(env["manifest"], tiny=_fusion_entry(sha256="0" * 64))
    assert main(["weights", "pull", "tiny"]) == 2
    line = _err_line(capsys)
    assert line.startswith("error: ") and "checksum mismatch" in line and "0" * 64 in line
    assert _sha256(cached_fusion) in line
    assert not (env["converted"] / "tiny").exists()


def test_missing_file_in_cached_snapshot_is_reported(env, cached_fusion, capsys) -> None:
    _manifest(env["manifest"], tiny=_fusion_entry(file="logs/GSD/other/last.ckpt"))
    assert main(["weights", "pull", "tiny"]) == 2
    line = _err_line(capsys)
    assert "logs/GSD/other/last.ckpt is not in the cached snapshot" in line and COMMIT[:12] in line


def test_offline_and_nothing_cached_fails_fast_with_guidance(env, capsys) -> None:
    _manifest(env["manifest"], tiny=_fusion_entry(), tinyrgb=_fusion_entry(kind="rgb"))
    started = time.monotonic()
    assert main(["weights", "pull", "tiny"]) == 2
    assert time.monotonic() - started < 5
    line = _err_line(capsys)
    for hint in (
        "HF_HUB_OFFLINE is set",
        "--fusion-model PATH",
        "HF_HUB_OFFLINE=1",
        str(env["hub"]),
    ):
        assert hint in line
    with pytest.raises(WeightsError, match="--rgb-model PATH"):
        weights.resolve("tinyrgb", "rgb")


def test_unreachable_hub_fails_fast_with_guidance(env, monkeypatch, capsys) -> None:
    # Online mode, but the endpoint refuses connections: no 25 s of huggingface_hub retries.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    _manifest(env["manifest"], tiny=_fusion_entry())
    started = time.monotonic()
    assert main(["weights", "pull", "tiny"]) == 2
    assert time.monotonic() - started < 8
    line = _err_line(capsys)
    assert "cannot reach 127.0.0.1:9" in line and "--fusion-model PATH" in line


def test_discovery_picks_the_single_last_ckpt(env, capsys) -> None:
    source = _tiny_fusion_ckpt(env["files"] / "last.ckpt")
    other = _tiny_fusion_ckpt(env["files"] / "epoch.ckpt", seed=1)
    _hub_cache(
        env["hub"],
        {
            FUSION_FILE: source,
            "logs/GSD/run_1/checkpoints/epoch=9.ckpt": other,
            "logs/SR/version_0/checkpoints/last.ckpt": other,
        },
    )
    _manifest(env["manifest"], tiny=_fusion_entry(file="", discover="logs/GSD/**/*.ckpt"))
    assert main(["weights", "pull", "tiny"]) == 0
    record = json.loads((env["converted"] / "tiny" / COMMIT / "tiny.json").read_text())
    assert record["source"]["file"] == FUSION_FILE and record["source"]["sha256"] == _sha256(source)
    listed = weights.list_models()[0]
    assert listed.file == FUSION_FILE and listed.converted is not None


def test_discovery_ambiguity_and_offline_without_snapshot(env, capsys) -> None:
    source = _tiny_fusion_ckpt(env["files"] / "last.ckpt")
    _manifest(env["manifest"], tiny=_fusion_entry(file="", discover="logs/GSD/**/*.ckpt"))
    assert main(["weights", "pull", "tiny"]) == 2
    assert "must be discovered by listing the repository" in _err_line(capsys)
    _hub_cache(env["hub"], {"logs/GSD/a/last.ckpt": source, "logs/GSD/b/last.ckpt": source})
    assert main(["weights", "pull", "tiny"]) == 2
    line = _err_line(capsys)
    assert "several files match 'logs/GSD/**/*.ckpt' equally well" in line
    assert "logs/GSD/a/last.ckpt" in line


def test_revision_selects_another_commit(env, capsys) -> None:
    first = _tiny_fusion_ckpt(env["files"] / "a.ckpt", seed=0)
    second = _tiny_fusion_ckpt(env["files"] / "b.ckpt", seed=1)
    _hub_cache(env["hub"], {FUSION_FILE: first})
    _hub_cache(env["hub"], {FUSION_FILE: second}, commit=OTHER_COMMIT, ref="v2")
    _manifest(env["manifest"], tiny=_fusion_entry())
    assert main(["weights", "pull", "tiny", "--revision", "v2"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"{OTHER_COMMIT}/tiny.safetensors")
    record = json.loads((env["converted"] / "tiny" / OTHER_COMMIT / "tiny.json").read_text())
    assert record["source"]["sha256"] == _sha256(second) and record["source"]["revision"] == "v2"
    assert weights.locate("tiny", revision="v2").parent.name == OTHER_COMMIT
    # main was never pulled (converted), but its download is in the Hub cache: locate finds that.
    downloaded = weights.locate("tiny")
    assert (
        downloaded.parent.parts[-4:-1] == ("snapshots", COMMIT, "logs")
        or COMMIT in downloaded.parts
    )
    assert _sha256(downloaded) == _sha256(first)
    with pytest.raises(WeightsError, match="run `difffusr weights pull tiny`"):
        weights.locate("tiny", revision="v3")


def test_pull_usage_errors(env, cached_fusion, capsys) -> None:
    _manifest(env["manifest"], tiny=_fusion_entry())
    assert main(["weights", "pull"]) == 2
    assert main(["weights", "pull", "tiny", "--all"]) == 2
    assert main(["weights", "pull", "nope"]) == 2
    assert "unknown model name 'nope'; known: tiny" in _err_line(capsys)


def test_pull_all_reports_each_failure(env, cached_fusion, capsys) -> None:
    _manifest(
        env["manifest"],
        tiny=_fusion_entry(),
        absent=_fusion_entry(file="x/last.ckpt", default=False),
    )
    assert main(["weights", "pull", "--all"]) == 2
    out, err = capsys.readouterr()
    assert out.startswith("tiny: ")
    assert (
        "x/last.ckpt is not in the cached snapshot" in err
        and "1 of 2 models could not be pulled: absent" in err
    )


# --- resolve ----------------------------------------------------------------------------------


def test_resolve_paths_names_and_kinds(env, cached_fusion) -> None:
    _manifest(env["manifest"], tiny=_fusion_entry())
    assert weights.resolve(cached_fusion) == cached_fusion
    assert weights.resolve(str(cached_fusion), "fusion") == cached_fusion
    assert weights.resolve("tiny", "fusion").name == "tiny.safetensors"
    with pytest.raises(WeightsError, match="is a fusion model, not an RGB model"):
        weights.resolve("tiny", "rgb")
    with pytest.raises(WeightsError, match="no such weights file"):
        weights.resolve(env["files"] / "absent.ckpt")
    with pytest.raises(WeightsError, match="neither a model name \\(tiny\\) nor an existing file"):
        weights.resolve("rgb-typo")


def test_copied_hub_cache_keeps_its_conversions(env, cached_fusion, monkeypatch, capsys) -> None:
    """The documented offline recipe.

    Pull on one machine, copy the Hub cache, set HF_HUB_OFFLINE.
    """
    monkeypatch.delenv("DIFFFUSR_CACHE")  # conversions default to <HF_HUB_CACHE>/difffusr-converted
    _manifest(env["manifest"], tiny=_fusion_entry())
    assert main(["weights", "pull", "tiny"]) == 0
    assert "not pinned" in capsys.readouterr().err
    copy = env["hub"].parent / "elsewhere" / "hub"
    shutil.copytree(env["hub"], copy, symlinks=True)
    shutil.rmtree(env["hub"])
    monkeypatch.setenv("HF_HUB_CACHE", str(copy))
    assert main(["weights", "pull", "tiny"]) == 0
    out, err = capsys.readouterr()
    assert (
        out.strip() == f"tiny: {copy / 'difffusr-converted' / 'tiny' / COMMIT / 'tiny.safetensors'}"
    )
    assert "sha256" not in err  # recognised without hashing or converting again
