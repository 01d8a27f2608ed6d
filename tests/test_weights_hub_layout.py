"""Weights against the official Hub repository's real layout (an offline cache built here in
huggingface_hub's format), tampering, allocation bombs and a Hub that never answers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch

from difffusr_cli import weights
from difffusr_cli.cli import main
from difffusr_cli.errors import WeightsError

REPO_ID = "NorskRegnesentralSTI/DiffFuSR"
COMMIT = "4f1c0ffee0000000000000000000000000000042"
HARM = "logs/blindsrsnf_aniso_naip_degraded_harm_large/version_1"
UNHARM = "logs/blindsrsnf_aniso_naip_degraded_not_harm_large/version_0"
WORLDSTRAT = "logs/blindsrsnf_aniso_worldstrat_degraded_harmfac_10000_large/version_7"
FUSION_35 = (
    "logs/GSD/lightning_logs/version_35/checkpoints/"
    "best-GSD-epoch=13-metric_val=4.695-loss_train=0.0329.ckpt"
)
FUSION_64 = (
    "logs/GSD/lightning_logs/version_64/checkpoints/"
    "latest-GSD-epoch=45-metric_val=0.667-loss_train=0.0368.ckpt"
)
REPO = Path(__file__).resolve().parents[1]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lightning_fusion(src: Path, dst: Path) -> Path:
    """A Lightning-style checkpoint ({"state_dict": ...}) of a compat fusion file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "state_dict": dict(weights.load_weights(src).state_dict)}, dst)
    return dst


def _lay_out(cache: Path, files: dict[str, Path]) -> Path:
    """blobs/<sha256>, snapshots/<commit>/<path> → blob, refs/main, as huggingface_hub writes."""
    root = cache / ("models--" + REPO_ID.replace("/", "--"))
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    for name, source in files.items():
        blob = root / "blobs" / _sha256(source)
        shutil.copyfile(source, blob)
        link = root / "snapshots" / COMMIT / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs" / "main").write_text(COMMIT)
    return root


@pytest.fixture
def real_layout(compat: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The official repository's layout with the small compat checkpoints standing in."""
    hub, converted = tmp_path / "hub", tmp_path / "converted"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("DIFFFUSR_CACHE", str(converted))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DIFFFUSR_WEIGHTS_TOML", raising=False)  # the packaged manifest
    rgb = compat / "lightning_ckpt_small.ckpt"
    hparams = compat / "hparams_small.yaml"
    mtf = _lightning_fusion(compat / "fusion_mtf.safetensors", tmp_path / "f" / "mtf.ckpt")
    rrdb = _lightning_fusion(compat / "fusion_rrdb_small.safetensors", tmp_path / "f" / "rrdb.ckpt")
    root = _lay_out(
        hub,
        {
            f"{HARM}/checkpoint/last.ckpt": rgb,  # singular, as the downloaders see it
            f"{HARM}/hparams.yaml": hparams,
            f"{UNHARM}/checkpoints/last.ckpt": rgb,
            f"{UNHARM}/hparams.yaml": hparams,
            f"{WORLDSTRAT}/checkpoints/last.ckpt": rgb,
            f"{WORLDSTRAT}/hparams.yaml": hparams,
            FUSION_35: rrdb,
            FUSION_64: mtf,
            "README.md": hparams,
        },
    )
    return {"hub": hub, "converted": converted, "root": root, "rgb": rgb, "mtf": mtf}


def test_choice_rule() -> None:
    from difffusr_cli.weights.choose import choose_file

    files = [FUSION_35, FUSION_64, "logs/GSD/best.ckpt", FUSION_64.replace("latest-", "best-")]
    assert choose_file(["logs/GSD/**/*.ckpt"], files, "x") == FUSION_64.replace("latest-", "best-")
    assert choose_file(["logs/GSD/**/*.ckpt"], files[:3], "x") == FUSION_64
    assert choose_file(["logs/GSD/**/*.ckpt"], ["logs/GSD/best.ckpt"], "x") == "logs/GSD/best.ckpt"
    assert (
        choose_file(
            ["a/checkpoint/last.ckpt", "a/checkpoints/last.ckpt"], ["a/checkpoints/last.ckpt"], "x"
        )
        == "a/checkpoints/last.ckpt"
    )
    with pytest.raises(WeightsError, match="x: no file matches"):
        choose_file(["logs/GSD/*.ckpt"], [FUSION_64], "x")


def test_pull_all_against_the_real_layout(real_layout, capsys) -> None:
    assert main(["weights", "pull", "--all"]) == 0
    out, err = capsys.readouterr()
    assert "\n\n" not in err and not err.startswith("\n")
    fusion = json.loads(next((real_layout["converted"] / "fusion").rglob("*.json")).read_text())
    assert fusion["source"]["file"] == FUSION_64 and fusion["architecture"] == "fusion-mtf"
    assert fusion["source"]["commit"] == COMMIT
    assert fusion["source"]["sha256"] == _sha256(real_layout["mtf"])
    harm = json.loads(
        next((real_layout["converted"] / "rgb-naip-harm").rglob("*.json")).read_text()
    )
    assert harm["source"]["file"] == f"{HARM}/checkpoint/last.ckpt"
    assert harm["config_source"].startswith("hparams.yaml")
    assert FUSION_64 in err  # the chosen file is said
    assert main(["weights", "list", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert listed["fusion"]["file"] == FUSION_64
    assert listed["rgb-naip-harm"]["file"] == f"{HARM}/checkpoint/last.ckpt"
    # Converted files in a shared cache follow the umask (not mkstemp's 0600).
    mode = next((real_layout["converted"] / "fusion").rglob("*.safetensors")).stat().st_mode
    assert mode & 0o044 == 0o044 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.slow
def test_default_superres_against_the_real_layout(real_layout, tmp_path, capsys) -> None:
    import rasterio

    from difffusr_cli.example import make_example_safe

    safe = make_example_safe(tmp_path / "scene", size=48)
    out = tmp_path / "out.tif"
    args = [
        "--steps",
        "2",
        "--patch-size",
        "32",
        "--overlap",
        "8",
        "--device",
        "cpu",
        "--window",
        "0",
        "0",
        "24",
        "24",
        "--quiet",
    ]
    assert main(["superres", str(safe), "-o", str(out), *args]) == 0, capsys.readouterr().err
    with rasterio.open(out) as product:
        tags = product.tags()
    assert tags["rgb_model_sha256"] == _sha256(real_layout["rgb"])
    assert tags["fusion_model_sha256"] == _sha256(real_layout["mtf"])
    # The tags name the file chosen in the repository, at the commit it was taken from.
    assert tags["rgb_model_file"].startswith("NorskRegnesentralSTI/DiffFuSR@")
    assert tags["rgb_model_file"].endswith("/version_1/checkpoint/last.ckpt")
    assert "/lightning_logs/version_64/checkpoints/" in tags["fusion_model_file"]


def test_tampered_blob_is_refused(real_layout, capsys) -> None:
    blob = real_layout["root"] / "blobs" / _sha256(real_layout["mtf"])
    blob.write_bytes(blob.read_bytes() + b"\x00")
    assert main(["weights", "pull", "fusion"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "checksum mismatch" in line and str(blob.name) in line


def test_tampered_converted_file_is_healed_or_refused(real_layout, capsys) -> None:
    converted = weights.resolve("fusion", "fusion")
    good = converted.read_bytes()
    converted.write_bytes(good[:-4] + b"\x00\x00\x80\x7f")  # last float becomes inf
    with pytest.raises(WeightsError, match="differs from the file_sha256"):
        weights.load_weights(converted)
    assert weights.resolve("fusion", "fusion") == converted  # healed by converting again
    healed = weights.load_weights(converted).state_dict
    original = weights.load_weights(real_layout["mtf"]).state_dict
    assert all(torch.equal(healed[k], original[k]) for k in original)
    assert "converting again" in capsys.readouterr().err


def test_pinned_sha256_is_checked_on_every_pull(real_layout, tmp_path, monkeypatch) -> None:
    text = (weights.PACKAGE_ROOT / "weights.toml").read_text()
    pinned = text.replace(
        'candidates = ["logs/GSD/**/*.ckpt"]',
        f'candidates = ["logs/GSD/**/*.ckpt"]\nsha256 = "{_sha256(real_layout["mtf"])}"',
    ).replace('sha256 = ""\narchitecture = "fusion-auto"', 'architecture = "fusion-auto"')
    manifest = tmp_path / "mine.toml"
    manifest.write_text(pinned)
    monkeypatch.setenv("DIFFFUSR_WEIGHTS_TOML", str(manifest))
    assert weights.pull("fusion").sha256_pinned
    blob = real_layout["root"] / "blobs" / _sha256(real_layout["mtf"])
    blob.write_bytes(blob.read_bytes() + b"\x01")
    with pytest.raises(WeightsError, match="checksum mismatch"):
        weights.pull("fusion")


# --- hostile files ------------------------------------------------------------------------------


def _bytearray_bomb(path: Path) -> Path:
    """A 44-byte pickle asking for bytearray(2 GiB - 1)."""
    path.write_bytes(b"\x80\x02cbuiltins\nbytearray\nq\x00J\xff\xff\xff\x7f\x85q\x01Rq\x02.")
    return path


def _zip_ckpt(path: Path, pickled: bytes, data: dict[str, bytes | int], *, deflate: bool) -> Path:
    """A torch-style zip archive: archive/data.pkl and archive/data/<key> (int: that many zeros,
    written in chunks)."""
    mode = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=mode) as archive:
        with archive.open("archive/data.pkl", "w", force_zip64=True) as stream:
            stream.write(pickled)
        archive.writestr("archive/byteorder", "little")
        for key, content in data.items():
            with archive.open(f"archive/data/{key}", "w", force_zip64=True) as stream:
                if isinstance(content, int):
                    chunk = bytes(1 << 20)
                    for _ in range(content >> 20):
                        stream.write(chunk)
                else:
                    stream.write(content)
    return path


def _tensor_pickle(numel: int) -> bytes:
    """data.pkl of {"state_dict": {"w": float tensor}} whose storage and size claim ``numel``
    elements (torch.save of a 4-element tensor, its counts patched)."""
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(4)}}, buffer)
    with zipfile.ZipFile(buffer) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        data = archive.read(pkl)
    assert data.count(b"K\x04") == 2
    return data.replace(b"K\x04", b"J" + struct.pack("<i", numel))


def _bombs(tmp: Path) -> list[Path]:
    big = 300 << 20  # 300 MiB of zeros deflate to ~300 KiB
    return [
        _bytearray_bomb(tmp / "bytearray.ckpt"),
        # data.pkl deflate bomb: a huge string of zeros wrapped in a pickle
        _zip_ckpt(
            tmp / "pkl-bomb.ckpt", b"\x80\x02" + b"(" * 0 + b"N." + bytes(big), {}, deflate=True
        ),
        # a storage that claims far more than the archive could hold (declared size honest,
        # deflated)
        _zip_ckpt(tmp / "storage-bomb.ckpt", _tensor_pickle(big // 4), {"0": big}, deflate=True),
        # a storage entry shorter than the tensor claims (2 GiB from a few bytes)
        _zip_ckpt(tmp / "short.ckpt", _tensor_pickle(1 << 29), {"0": b"\x00" * 16}, deflate=False),
    ]


@pytest.mark.slow
def test_allocation_bombs_are_refused_within_1_gb(tmp_path: Path) -> None:
    bombs = _bombs(tmp_path)
    script = (
        "import resource, sys\n"
        "from difffusr_cli.cli import main\n"
        "rc = main(['weights', 'convert', sys.argv[1], '-o', sys.argv[2]])\n"
        # VmHWM: this process's peak RSS (KiB); ru_maxrss would carry the parent's over exec.
        "rss = next(int(line.split()[1]) for line in open('/proc/self/status')\n"
        "          if line.startswith('VmHWM'))\n"
        "print('RSS', rss, file=sys.stderr)\n"
        "raise SystemExit(rc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for bomb in bombs:
        done = subprocess.run(
            [sys.executable, "-c", script, str(bomb), str(tmp_path / f"{bomb.stem}.safetensors")],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (bomb, done.stderr[-2000:])
        assert str(bomb) in lines[-2], lines
        rss_kib = int(lines[-1].split()[1])
        assert rss_kib < 1 << 20, (bomb, rss_kib)
        if bomb.name == "bytearray.ckpt":
            assert "bytearray" in lines[-2] and "more than the file" in lines[-2]


def test_legacy_tar_checkpoint_names_the_file(tmp_path: Path) -> None:
    import tarfile

    path = tmp_path / "old.pt"
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("pickle")
        info.size = 4
        archive.addfile(info, io.BytesIO(b"\x80\x02N."))
    with pytest.raises(WeightsError) as caught:
        weights.load_weights(path)
    assert str(path) in str(caught.value) and "IndexError" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_tensor_record_errors_name_the_file(tmp_path: Path) -> None:
    # A tensor whose size does not fit its storage.
    path = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(4)}}, path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        contents = {n: archive.read(n) for n in names}
    pkl = next(n for n in names if n.endswith("data.pkl"))
    contents[pkl] = contents[pkl].replace(b"K\x04\x85", b"K\x09\x85", 1)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    with pytest.raises(WeightsError, match=str(path)):
        weights.load_weights(path)


def test_convert_refuses_a_wrong_shape(compat: Path, tmp_path: Path, capsys) -> None:
    state = dict(weights.load_weights(compat / "fusion_mtf.safetensors").state_dict)
    key = next(k for k, v in state.items() if v.dim() == 4)
    state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 2)
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": state}, bad)
    assert main(["weights", "convert", str(bad), "-o", str(tmp_path / "x.safetensors")]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and str(bad) in line
    assert not (tmp_path / "x.safetensors").exists()


# --- a Hub that never answers -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("command", ["pull", "superres"])
def test_silent_endpoint_fails_within_30_s(tmp_path: Path, command: str) -> None:
    if command == "superres":
        from difffusr_cli.example import make_example_safe

        safe = make_example_safe(tmp_path / "scene", size=48)
        args = ["superres", str(safe), "-o", str(tmp_path / "o.tif"), "--quiet"]
    else:
        args = ["weights", "pull", "fusion"]
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)  # never answered

    threading.Thread(target=accept, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "DIFFFUSR_"))}
    env.update(
        PYTHONPATH=str(REPO),
        HF_ENDPOINT=f"http://127.0.0.1:{server.getsockname()[1]}",
        HF_HUB_CACHE=str(tmp_path / "hub"),
        HF_HOME=str(tmp_path / "home"),
        DIFFFUSR_CACHE=str(tmp_path / "converted"),
        NO_PROXY="127.0.0.1",
    )
    try:
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from difffusr_cli.cli import main; raise SystemExit(main({args!r}))",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        elapsed = time.monotonic() - started
    finally:
        server.close()
        for conn in held:
            conn.close()
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "did not answer" in lines[0] or "timed out" in lines[0]
    assert "-model PATH" in lines[0]
    assert elapsed < 30


# --- opensr-test benchmark files ----------------------------------------------------------------


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_opensr_data_file_runs_nothing(tmp_path: Path) -> None:
    import numpy as np

    pd = pytest.importorskip("pandas")  # the `eval` extra

    from difffusr_cli.errors import InputError
    from difffusr_cli.evaluate.opensr_data import load_dataset

    marker = tmp_path / "pwned"
    evil = tmp_path / "naip.pkl"
    evil.write_bytes(pickle.dumps({"L2A": np.zeros((1, 4, 8, 8)), "HRharm": _Evil(marker)}))
    with pytest.raises(InputError, match="posix.system|os.system|nt.system") as caught:
        load_dataset("naip", evil, "v2")
    assert str(evil) in str(caught.value) and not marker.exists()
    # A well-formed file (arrays and a pandas metadata table) still loads, without opensr_test.
    good = tmp_path / "spot.pkl"
    meta = pd.DataFrame(
        {"hr_file": ["a"], "crs": ["EPSG:32633"], "affine": ["2.5,0,1,0,-2.5,2"]}, dtype=object
    )
    meta.columns = pd.Index(list(meta.columns), dtype=object)  # as in the published pickles
    good.write_bytes(
        pickle.dumps(
            {
                "L2A": np.full((1, 4, 8, 8), 1000, np.uint16),
                "HRharm": np.full((1, 4, 32, 32), 1000, np.uint16),
                "metadata": meta,
            }
        )
    )
    bench = load_dataset("spot", good, "v2")
    assert bench.crs == ("EPSG:32633",) and bench.lr.shape == (1, 3, 8, 8)


def _opensr_hub_cache(tmp_path: Path, monkeypatch, name: str, payload: bytes) -> Path:
    """A Hugging Face cache holding ``021/<name>/<name>.pkl`` of the opensr-test dataset repo, in
    the real layout (refs/main → snapshot → symlink to a blob named by its sha256), offline."""
    import hashlib

    import huggingface_hub.constants as hub_constants

    root = tmp_path / "hub"
    repo = root / "datasets--isp-uv-es--opensr-test"
    commit = "c0ffee" + "0" * 34
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    blob = repo / "blobs" / hashlib.sha256(payload).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(payload)
    link = repo / "snapshots" / commit / "021" / name / f"{name}.pkl"
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HOME", str(tmp_path))  # no opensr-test package cache
    return link


def test_downloaded_opensr_data_is_read_by_the_restricted_reader(tmp_path, monkeypatch) -> None:
    import numpy as np

    from difffusr_cli.errors import InputError
    from difffusr_cli.evaluate.opensr_data import load_dataset, locate_datasets

    good = {
        "L2A": np.full((1, 4, 8, 8), 1000, np.uint16),
        "HRharm": np.full((1, 4, 32, 32), 1000, np.uint16),
    }
    link = _opensr_hub_cache(tmp_path, monkeypatch, "spot", pickle.dumps(good))
    assert locate_datasets(["spot"], None, "v3") == {"spot": link}
    assert load_dataset("spot", None, "v3").lr.shape == (1, 3, 8, 8)  # through hf_hub_download

    marker = tmp_path / "pwned"
    evil = pickle.dumps({"L2A": np.zeros((1, 4, 8, 8)), "HRharm": _Evil(marker)})
    _opensr_hub_cache(tmp_path / "evil", monkeypatch, "spot", evil)
    with pytest.raises(InputError, match="system"):
        load_dataset("spot", None, "v3")
    assert not marker.exists()


def test_manifest_architecture_is_checked(real_layout, tmp_path, monkeypatch) -> None:
    from difffusr_cli.weights.resolve import check_architecture

    entries = weights.load_manifest()
    fusion, tiny = entries["fusion"], entries["fusion-s2"]
    check_architecture(fusion, "fusion-mtf", tmp_path)  # fusion-auto: either family member
    check_architecture(fusion, "fusion-rrdb", tmp_path)
    with pytest.raises(WeightsError, match="should be a fusion-mtf network"):
        check_architecture(tiny, "fusion-rrdb", tmp_path / "x.safetensors")
    # A manifest that names the wrong architecture for the Hub file is refused on pull.
    text = (weights.PACKAGE_ROOT / "weights.toml").read_text()
    manifest = tmp_path / "mine.toml"
    manifest.write_text(
        text.replace('architecture = "fusion-auto"', 'architecture = "fusion-rrdb"')
    )
    monkeypatch.setenv("DIFFFUSR_WEIGHTS_TOML", str(manifest))
    with pytest.raises(WeightsError, match="tensors are a fusion-mtf network"):
        weights.pull("fusion")
