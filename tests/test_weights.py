"""The manifest, the Hub cache path (real huggingface_hub code, offline), conversion and loading,
and the `difffusr weights` commands."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from difffusr_cli import weights
from difffusr_cli.checkpoint import read_safetensors
from difffusr_cli.cli import main
from difffusr_cli.errors import OutputError, WeightsError
from difffusr_cli.models.config import FusionConfig, SRConfig
from difffusr_cli.models.fusion import FusionNetwork

REPO_ID = "difffusr-test/tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
FUSION_FILE = "logs/GSD/run_1/checkpoints/last.ckpt"
TINY_FUSION = FusionConfig("mtf", 8, 3, 4)


# --- helpers ----------------------------------------------------------------------------------


def _tiny_fusion_ckpt(path: Path, seed: int = 0) -> Path:
    """A Lightning-shaped checkpoint of a tiny MTF fusion network (torch.save, zip format)."""
    torch.manual_seed(seed)
    network = FusionNetwork(TINY_FUSION)
    for tensor in network.state_dict().values():
        if tensor.is_floating_point():
            tensor.add_(torch.randn_like(tensor) * 0.01)  # every stored number matters
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "epoch": 3,
            "state_dict": OrderedDict(network.state_dict()),
            "hyper_parameters": {"lr": 1e-4},
        },
        path,
    )
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hub_cache(
    cache: Path,
    files: dict[str, Path],
    *,
    repo: str = REPO_ID,
    commit: str = COMMIT,
    ref: str = "main",
) -> Path:
    """Lay files out as huggingface_hub does.

    blobs/<sha256>, snapshots/<commit>/<path> → blob, refs/<ref>.
    """
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    for name, source in files.items():
        blob = root / "blobs" / _sha256(source)
        shutil.copyfile(source, blob)
        link = root / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs" / ref).write_text(commit)
    return root


def _manifest(path: Path, **entries: dict) -> Path:
    lines = []
    for name, fields in entries.items():
        lines.append(f"[models.{name}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in fields.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def _fusion_entry(**overrides) -> dict:
    entry = {
        "kind": "fusion",
        "source": "hub",
        "repo": REPO_ID,
        "revision": "main",
        "file": FUSION_FILE,
        "sha256": "",
        "architecture": "fusion-auto",
        "default": True,
    }
    entry.update(overrides)
    return entry


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


def _err_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected a message on stderr"
    return err[-1]


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
