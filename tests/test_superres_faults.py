"""What `superres` does under faults (issue 10): a full disk, concurrent runs, forged or damaged
resume state, changed options in folder mode, broken weights and bad paths. Each gives exit 2
and one line naming the file and the problem, and never a damaged product at the output path."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from pipeline_helpers import read_product, stand_in_models, write_random_models
from rasterio.windows import Window

from difffusr_cli.cli import main
from difffusr_cli.errors import OutputError, WeightsError
from difffusr_cli.example import make_example_safe
from difffusr_cli.io import ProductWriter, partial_path_for
from difffusr_cli.superres import SuperresOptions, progress_path_for, superres_many
from difffusr_cli.superres.lock import OutputLock, lock_path_for
from difffusr_cli.superres.resume import FINGERPRINT_TAG
from difffusr_cli.superres.run import _warn_about_radiometry

SMALL = SuperresOptions(
    steps=2,
    patch_size=32,
    overlap=8,
    batch_size=4,
    device="cpu",
    fusion_tile=48,
    fusion_overlap=24,
    block_rows=48,
    quiet=True,
)


@pytest.fixture(scope="module")
def safe(tmp_path_factory) -> Path:
    return make_example_safe(tmp_path_factory.mktemp("scene"), size=48)


def interrupted_after(safe: Path, out: Path, block: int, **changes) -> None:
    def stop(index: int) -> None:
        if index == block:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        superres_many(
            [safe], out, replace(SMALL, **changes), models=stand_in_models(0.05), on_block_done=stop
        )


# -- a full disk ------------------------------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs (root only); skipped where it cannot be mounted."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def fill(folder: Path, leave: int) -> None:
    """Fill the file system of ``folder`` until about ``leave`` bytes are free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * max(free - leave, 0))


def test_disk_full_during_the_final_copy_keeps_the_partial_and_no_product(small_fs):
    out = small_fs / "p.tif"
    rng = np.random.default_rng(0)
    writer = ProductWriter(
        out,
        crs="EPSG:32632",
        transform=rasterio.Affine(2.5, 0, 0, 0, -2.5, 0),
        width=160,
        height=160,
        dtype="float32",
    )
    writer.write(
        Window(0, 0, 160, 160),
        rng.random((12, 160, 160), dtype=np.float32),
        np.ones((160, 160), bool),
    )
    writer.abort()  # the partial is complete on disk
    writer = ProductWriter(
        out,
        crs="EPSG:32632",
        transform=rasterio.Affine(2.5, 0, 0, 0, -2.5, 0),
        width=160,
        height=160,
        dtype="float32",
        resume=True,
    )
    fill(small_fs, leave=64 * 1024)  # the compact copy (~1 MiB of noise) cannot fit
    with pytest.raises(OutputError, match="no space left") as err:
        writer.commit()
    assert str(out) in str(err.value) and "--resume" in str(err.value)
    assert not out.exists(), "a truncated product was renamed into place"
    assert partial_path_for(out).exists()
    assert not (small_fs / ".p.tif.final.tif").exists()
    (small_fs / "filler").unlink()  # space freed: the same partial commits
    ProductWriter(
        out,
        crs="EPSG:32632",
        transform=rasterio.Affine(2.5, 0, 0, 0, -2.5, 0),
        width=160,
        height=160,
        dtype="float32",
        resume=True,
    ).commit()
    with rasterio.open(out) as ds:
        assert ds.read().shape == (12, 160, 160)


def test_disk_full_while_writing_the_progress_record_is_one_line(small_fs, safe):
    from difffusr_cli.superres import ProgressFile

    out = small_fs / "o.tif"
    fill(small_fs, leave=0)
    with pytest.raises(OutputError) as err:
        superres_many([safe], out, SMALL, models=stand_in_models())
    message = str(err.value)
    assert "\n" not in message and "no space left" in message
    assert not out.exists() and not any(small_fs.glob(".o.tif*"))
    record = ProgressFile(progress_path_for(out), {"x": "y" * 100_000}, {0}, {0: "0" * 64})
    with pytest.raises(OutputError, match="progress.json: no space left"):
        record.save()
    assert not any(p.name.endswith(".tmp") for p in small_fs.iterdir())


# -- concurrent runs --------------------------------------------------------------------------
def test_a_second_run_on_the_same_output_stops_at_once_naming_the_holder(safe, tmp_path):
    out = tmp_path / "o.tif"
    seen: list[str] = []

    def second_run(index: int) -> None:
        if index == 0:  # while the first run holds the output
            with pytest.raises(OutputError, match=f"pid {os.getpid()}") as err:
                superres_many([safe], out, replace(SMALL, overwrite=True), models=stand_in_models())
            seen.append(str(err.value))

    superres_many([safe], out, SMALL, models=stand_in_models(), on_block_done=second_run)
    assert seen and "another difffusr run" in seen[0]
    assert not lock_path_for(out).exists()  # released at the end
    data, _ = read_product(out)
    assert data.shape[1:] == (192, 192)


def test_a_stale_lock_is_taken_over(safe, tmp_path):
    out = tmp_path / "o.tif"
    gone = subprocess.Popen(["true"])
    gone.wait()
    import socket

    lock_path_for(out).write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname()}))
    superres_many([safe], out, replace(SMALL, window=(0, 0, 12, 12)), models=stand_in_models())
    assert out.is_file() and not lock_path_for(out).exists()
    other = OutputLock(out)
    lock_path_for(out).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(OutputError, match="host elsewhere"):
        other.acquire()


# -- resume state -----------------------------------------------------------------------------
def test_a_forged_progress_record_never_leaves_a_block_empty(safe, tmp_path):
    reference = tmp_path / "ref.tif"
    superres_many([safe], reference, SMALL, models=stand_in_models(0.05))
    out = tmp_path / "out.tif"
    interrupted_after(safe, out, 0)
    record = json.loads(progress_path_for(out).read_text())
    assert list(record["block_digests"]) == ["0"]
    record["blocks_done"] = [0, 1, 2]  # listed, never written
    progress_path_for(out).write_text(json.dumps(record))
    [summary] = superres_many(
        [safe], out, replace(SMALL, resume=True), models=stand_in_models(0.05)
    )
    assert summary.blocks_resumed == 1 and summary.blocks_written == 3
    assert out.read_bytes() == reference.read_bytes()


def test_a_tampered_block_is_recomputed(safe, tmp_path):
    reference = tmp_path / "ref.tif"
    superres_many([safe], reference, SMALL, models=stand_in_models(0.05))
    out = tmp_path / "out.tif"
    interrupted_after(safe, out, 1)
    with rasterio.open(partial_path_for(out), "r+") as ds:
        ds.write(np.zeros((12, 48, 192), np.uint16), window=Window(0, 0, 192, 48))
    [summary] = superres_many(
        [safe], out, replace(SMALL, resume=True), models=stand_in_models(0.05)
    )
    assert summary.blocks_resumed == 1
    assert out.read_bytes() == reference.read_bytes()


def test_a_damaged_partial_says_to_use_overwrite(safe, tmp_path):
    out = tmp_path / "out.tif"
    interrupted_after(safe, out, 1)
    partial_path_for(out).write_bytes(b"not a tiff at all")
    with pytest.raises(OutputError, match="--overwrite") as err:
        superres_many([safe], out, replace(SMALL, resume=True), models=stand_in_models(0.05))
    assert "damaged" in str(err.value) and "\n" not in str(err.value)


def test_the_thread_count_is_part_of_the_fingerprint(safe, tmp_path):
    out = tmp_path / "out.tif"
    threads = torch.get_num_threads()
    interrupted_after(safe, out, 0)
    assert json.loads(progress_path_for(out).read_text())["fingerprint"]["torch_threads"] == threads
    torch.set_num_threads(threads + 1)
    try:
        with pytest.raises(OutputError, match="torch_threads"):
            superres_many([safe], out, replace(SMALL, resume=True), models=stand_in_models(0.05))
    finally:
        torch.set_num_threads(threads)


# -- folder mode ------------------------------------------------------------------------------
def test_folder_rerun_with_changed_options_names_what_changed(safe, tmp_path):
    folder = tmp_path / "products"
    options = replace(SMALL, window=(0, 0, 12, 12))
    [first] = superres_many([safe], f"{folder}/", options, models=stand_in_models())
    with rasterio.open(first.output) as ds:
        tag = json.loads(ds.tags()[FINGERPRINT_TAG])
    assert tag["steps"] == 2
    [again] = superres_many([safe], f"{folder}/", options, models=stand_in_models())
    assert again.status == "skipped"
    with pytest.raises(OutputError, match="other settings.*steps 2 → 3.*--overwrite"):
        superres_many([safe], f"{folder}/", replace(options, steps=3), models=stand_in_models())
    with pytest.raises(OutputError, match="fusion"):
        superres_many(
            [safe], f"{folder}/", replace(options, fusion="gs"), models=stand_in_models(method="gs")
        )


def test_the_fingerprint_tag_is_stable_across_resume(safe, tmp_path):
    reference = tmp_path / "ref.tif"
    superres_many([safe], reference, SMALL, models=stand_in_models(0.05))
    out = tmp_path / "out.tif"
    interrupted_after(safe, out, 1)
    superres_many([safe], out, replace(SMALL, resume=True), models=stand_in_models(0.05))
    with rasterio.open(reference) as a, rasterio.open(out) as b:
        assert a.tags()[FINGERPRINT_TAG] == b.tags()[FINGERPRINT_TAG]


# -- broken weights ---------------------------------------------------------------------------
class NaNSR:
    def super_resolve(self, lr, steps=20, *, noise=None):
        return torch.full((lr.shape[0], 3, lr.shape[2] * 4, lr.shape[3] * 4), float("nan"))


def test_non_finite_network_output_stops_the_run(safe, tmp_path):
    out = tmp_path / "o.tif"
    with pytest.raises(WeightsError, match="stand-in.*non-finite.*patch row 0, column 0"):
        superres_many([safe], out, SMALL, models=replace(stand_in_models(), rgb=NaNSR()))
    assert not out.exists() and not partial_path_for(out).exists()


def test_nan_weights_through_the_cli(tmp_path, capsys, safe):
    from safetensors.torch import load_file, save_file

    (tmp_path / "models").mkdir()
    rgb, _ = write_random_models(tmp_path / "models")
    tensors = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in load_file(rgb).items()
    }
    save_file(tensors, rgb)
    sidecar = rgb.with_suffix(".json")
    if sidecar.is_file():
        sidecar.unlink()
    out = tmp_path / "o.tif"
    args = [
        "superres",
        str(safe),
        "-o",
        str(out),
        "--rgb-model",
        str(rgb),
        "--fusion",
        "bilinear",
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
        "12",
        "12",
        "-q",
    ]
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    if code == 1 and err and "weights" in err[-1].lower():
        pytest.skip(f"this weights file is refused on load: {err[-1]}")
    assert code == 2 and "non-finite" in err[-1] and not out.exists()


# -- bad paths and options --------------------------------------------------------------------
def test_huge_patch_size_is_refused(tmp_path, capsys, safe):
    assert (
        main(
            ["superres", str(safe), "-o", str(tmp_path / "o.tif"), "--patch-size", "1048576", "-q"]
        )
        == 2
    )
    assert "--patch-size 1048576" in capsys.readouterr().err


def test_non_utf8_paths_are_refused_up_front(tmp_path, capsys, safe):
    bad = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.tif")
    assert main(["superres", str(safe), "-o", bad, "-q", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "UTF-8" in err[0]
    assert main(["superres", bad, "-o", str(tmp_path / "o.tif"), "-q", "--device", "cpu"]) == 2
    assert "UTF-8" in capsys.readouterr().err


def test_unwritable_log_folder_gives_one_line(tmp_path, capsys, monkeypatch):
    import difffusr_cli.cli.root as cli

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setattr(cli.tempfile, "gettempdir", lambda: str(blocker))
    monkeypatch.delenv("DIFFFUSR_DEBUG", raising=False)

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "app", boom)
    assert cli.main(["info", "x"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "boom" in err[0] and "DIFFFUSR_DEBUG" in err[0]


def test_interrupt_before_the_first_block_does_not_offer_resume(safe, tmp_path, monkeypatch):
    from difffusr_cli.superres.run import _interrupted_message

    out = tmp_path / "o.tif"
    assert "nothing" in _interrupted_message(out) and "--resume" not in _interrupted_message(out)
    interrupted_after(safe, out, 0)
    assert "--resume" in _interrupted_message(out)


def test_assumed_radiometry_is_a_warning():
    lines: list[str] = []
    sink = SimpleNamespace(on_message=lines.append)
    scene = SimpleNamespace(processing_level="L2A", radiometry=SimpleNamespace(assumed=True))
    _warn_about_radiometry(scene, Path("cogs"), sink)  # type: ignore[arg-type]
    assert len(lines) == 1 and lines[0].startswith("warning: cogs:") and "assumed" in lines[0]


def test_a_resume_refusal_is_one_line_without_a_progress_bar(safe, tmp_path, capsys):
    (tmp_path / "models").mkdir()
    rgb, _ = write_random_models(tmp_path / "models")
    out = tmp_path / "o.tif"
    # the command's own fusion tiling (no option for it), so that only the seed differs
    options = replace(
        SMALL,
        rgb_model=str(rgb),
        fusion="bilinear",
        window=(0, 0, 24, 24),
        block_rows=24,
        fusion_tile=None,
        fusion_overlap=None,
    )

    def stop(index: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        superres_many([safe], out, options, on_block_done=stop)
    capsys.readouterr()
    args = [
        "superres",
        str(safe),
        "-o",
        str(out),
        "--rgb-model",
        str(rgb),
        "--fusion",
        "bilinear",
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
        "--resume",
        "--seed",
        "5",
    ]
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: cannot resume") and "seed" in err[0]


def test_disk_full_while_writing_the_partial_through_the_cli(small_fs, safe, tmp_path, capsys):
    (tmp_path / "models").mkdir()
    rgb, _ = write_random_models(tmp_path / "models")
    fill(small_fs, leave=60_000)  # the lock and the partial's header fit, its first block does not
    args = [
        "superres",
        str(safe),
        "-o",
        str(small_fs / "o.tif"),
        "--rgb-model",
        str(rgb),
        "--fusion",
        "bilinear",
        "--steps",
        "2",
        "--patch-size",
        "32",
        "--overlap",
        "8",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "-q",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "no space left" in err[-1] and ".o.tif.partial.tif" in err[-1]
    assert not any("progress.json" in line for line in err)
    assert sorted(p.name for p in small_fs.iterdir()) == [
        "filler"
    ]  # nothing kept: nothing to resume


# -- found by a hostile-user pass (2026-12-03) -------------------------------------------------
def _superres_cli(safe: Path, out: str, *extra: str) -> int:
    return main(
        ["superres", str(safe), "-o", out, "--rgb-model", "bicubic", "--fusion", "bilinear"]
        + ["--device", "cpu", "-q", *extra]
    )


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--overlap", "-4"], "half the largest patch (2048)"),
        (["--overlap", "3000"], "half the largest patch (2048)"),
        (["--patch-size", "256", "--overlap", "200"], "half the patch size (128)"),
        (["--joint-margin", "100000"], "from 0 to 4096"),
    ],
)
def test_auto_patch_options_are_bounded(safe, tmp_path, capsys, extra, says):
    # an automatic patch grows to twice the overlap and to the margin: both are bounded up front
    assert _superres_cli(safe, str(tmp_path / "o.tif"), *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]


def test_empty_or_file_as_folder_output_is_refused(safe, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _superres_cli(safe, "") == 2  # -o "$OUT" with OUT unset
    assert "-o is empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written into the current folder
    (tmp_path / "a.tif").write_text("")
    assert _superres_cli(safe, "a.tif/") == 2
    assert "exists and is a file, not a folder" in capsys.readouterr().err


def test_resume_of_a_complete_file_checks_its_settings(safe, tmp_path, capsys):
    out = str(tmp_path / "a.tif")
    assert _superres_cli(safe, out, "--steps", "3") == 0
    assert _superres_cli(safe, out, "--steps", "4", "--resume") == 2
    err = capsys.readouterr().err
    assert "other settings (steps 3 → 4)" in err and "--overwrite" in err
    assert _superres_cli(safe, out, "--steps", "3", "--resume") == 0  # same settings: kept


def test_an_unwritable_batch_report_is_one_line(tmp_path, monkeypatch):
    from difffusr_cli.superres.batch import BatchReport

    report = BatchReport(tmp_path / "difffusr-batch.json")

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "write_text", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)  # a read-only folder refuses the clean-up too
    with pytest.raises(OutputError, match="Read-only file system"):
        report.save(force=True)


def test_quiet_interrupt_still_says_how_to_resume(safe, tmp_path, capsys, monkeypatch):
    import difffusr_cli.superres.many as many

    real = many.superres_scene

    def interrupted(*args, **kwargs):
        kwargs["on_block_done"] = lambda index: (_ for _ in ()).throw(KeyboardInterrupt)
        return real(*args, **kwargs)

    monkeypatch.setattr(many, "superres_scene", interrupted)
    out = tmp_path / "o.tif"
    assert _superres_cli(safe, str(out)) == 130
    assert f"rerun with --resume to continue {out}" in capsys.readouterr().err


def test_abort_waits_for_the_write_in_progress(safe, tmp_path, monkeypatch):
    # A Ctrl-C during Thread.join() can leave the thread object saying it has finished while
    # it is still writing; closing the file under it crashed GDAL. abort() waits for the
    # writing thread's own signal, not for join().
    import threading
    import time

    from difffusr_cli.superres import sink as sink_module

    events: list[str] = []
    writing = threading.Event()  # a piece is being written
    real_init = sink_module.BlockSink.__init__

    def spy_init(self, writer, *args, **kwargs):
        real_write, real_abort = writer.write_stored, writer.abort

        def slow_write(window, stored):
            writing.set()
            time.sleep(0.3)
            real_write(window, stored)
            events.append("written")
            writing.clear()

        def abort():
            events.append("closed")
            real_abort()

        writer.write_stored, writer.abort = slow_write, abort
        real_init(self, writer, *args, **kwargs)
        self._thread.join = lambda *a, **k: None  # what the interrupted join amounts to
        self._thread.is_alive = lambda: False

    monkeypatch.setattr(sink_module.BlockSink, "__init__", spy_init)

    def stop(index: int) -> None:  # block 0 is recorded; block 1's first piece is queued
        assert writing.wait(5)
        events.clear()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        superres_many(
            [safe], tmp_path / "o.tif", SMALL, models=stand_in_models(0.05), on_block_done=stop
        )
    assert "closed" in events and "written" in events[: events.index("closed")]
