"""Batch semantics: --keep-going, the batch report, --inputs-from, --shard, log lines."""

from __future__ import annotations

import io
import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
from batch_helpers import cli_args, fast_options, small_scenes
from pipeline_helpers import StandInSR, stand_in_models

from difffusr_cli.cli import main
from difffusr_cli.cli.progress import LogProgress
from difffusr_cli.errors import InputError
from difffusr_cli.superres import progress as progress_module
from difffusr_cli.superres import superres_many
from difffusr_cli.superres.batch import REPORT_NAME, parse_shard, read_inputs_file, shard


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[Path]:
    return small_scenes(tmp_path_factory.mktemp("scenes"), 2)


@pytest.fixture(scope="module")
def options(tmp_path_factory):
    return fast_options(tmp_path_factory.mktemp("models"))


def test_keep_going_reports_the_broken_input_and_exits_2(scenes, options, tmp_path, capsys):
    broken = tmp_path / "broken.SAFE"
    broken.mkdir()
    out = tmp_path / "out"
    argv = ["superres", str(scenes[0]), str(broken), str(scenes[1]), "-o", f"{out}/"]
    # Without --keep-going the broken input refuses the batch before anything is computed.
    assert main([*argv, *cli_args(options), "--quiet"]) == 2
    assert "broken.SAFE" in capsys.readouterr().err
    assert not list(out.glob("*.tif"))

    assert main([*argv, *cli_args(options), "--keep-going"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 3 inputs failed") and "broken.SAFE" in last
    assert REPORT_NAME in last
    report = json.loads((out / REPORT_NAME).read_text())
    statuses = {Path(e["input"]).name: e for e in report["inputs"]}
    assert statuses["broken.SAFE"]["status"] == "failed"
    assert "MTD_MSIL2A.xml" in statuses["broken.SAFE"]["error"]
    for scene in scenes:
        entry = statuses[scene.name]
        assert (
            entry["status"] == "done" and entry["patches"] > 0 and len(entry["fingerprint"]) == 64
        )
        assert Path(entry["output"]).is_file()
    assert report["counts"] == {"pending": 0, "running": 0, "done": 2, "skipped": 0, "failed": 1}
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporary file

    # Rerun: complete products whose fingerprint matches are skipped, and say so in the report.
    assert main([*argv, *cli_args(options), "--keep-going", "--quiet"]) == 2
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["counts"]["skipped"] == 2 and report["counts"]["failed"] == 1
    # Other settings: the products are kept and those inputs fail, naming the change.
    changed = [*cli_args(options)[:-5], "--window", "0", "0", "6", "6"]
    assert main([*argv, *changed, "--keep-going", "--quiet"]) == 2
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["counts"]["failed"] == 3 and "window" in report["inputs"][0]["error"]


def test_the_report_says_running_while_a_scene_runs(scenes, options, tmp_path):
    out = tmp_path / "out"
    seen = []

    def look(index: int) -> None:
        seen.append([e["status"] for e in json.loads((out / REPORT_NAME).read_text())["inputs"]])

    summaries = superres_many(scenes, out, options, on_block_done=look)
    assert seen == [["running", "pending"], ["done", "running"]]
    assert [s.status for s in summaries] == ["written", "written"]


def test_inputs_from_a_file_and_shards(tmp_path):
    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists" / "scenes.txt"
    listing.write_text("# scenes\n\na.SAFE\n  sub/b.zip  \n/abs/c.json\n#d.SAFE\n")
    inputs = read_inputs_file(listing)
    assert inputs == [
        tmp_path / "lists" / "a.SAFE",
        tmp_path / "lists" / "sub/b.zip",
        Path("/abs/c.json"),
    ]
    parts = [shard(inputs, i, 2) for i in range(2)]
    assert sorted(sum(parts, [])) == sorted(inputs) and parts[0] == inputs[::2]
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0", "-1/3"):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(InputError, match="names no input"):
        read_inputs_file(empty)


def test_inputs_from_through_the_cli_with_a_shard(scenes, options, tmp_path, capsys):
    listing = scenes[0].parent.parent / "list.txt"
    listing.write_text("".join(f"{s.parent.name}/{s.name}\n" for s in scenes))
    out = tmp_path / "out"
    args = ["superres", "--inputs-from", str(listing), "-o", f"{out}/", *cli_args(options)]
    assert main([*args, "--shard", "1/2", "--quiet"]) == 0
    assert [p.name for p in out.glob("*.tif")] == [f"{scenes[1].name[:-5]}_difffusr.tif"]
    assert (out / "difffusr-batch.shard-1-of-2.json").is_file()


class _SlowSR(StandInSR):
    """The stand-in super-resolver, 0.03 s a call: a run that lasts several log intervals."""

    def super_resolve(self, lr, steps=20, *, noise=None):
        time.sleep(0.03)
        return super().super_resolve(lr, steps, noise=noise)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_come_during_a_run(scenes, options, tmp_path, fmt):
    models = replace(stand_in_models(method="bilinear"), rgb=_SlowSR())
    stream = io.StringIO()
    sink = LogProgress(0.1, fmt, stream=stream)  # type: ignore[arg-type]
    run = replace(options, rgb_model=None, batch_size=1, window=(0, 0, 24, 24), quiet=False)
    try:
        superres_many([scenes[0]], tmp_path / "o.tif", run, models=models, progress=sink)
    finally:
        sink.close()
    # The 24 × 24 window and its context (the whole 48 × 48 scene): 64 patches at 0.03 s, 1.9 s.
    lines = stream.getvalue().strip().splitlines()
    if fmt == "json":
        records = [json.loads(line) for line in lines]
        events = [r["event"] for r in records]
        assert events.count("progress") >= 2 and events[-1] == "product"
        assert (
            records[-1]["status"] == "written"
            and records[-1]["patches_run"] + records[-1]["patches_skipped"] == 64
        )
        done = [r for r in records if r["event"] == "progress" and r["patches_done"]]
        assert done and all(r["rate"] > 0 and r["eta_s"] is not None for r in done)
    else:
        progress = [line for line in lines if " progress o.tif: " in line]
        assert len(progress) >= 2 and "Wrote " in lines[-1]
        assert all("/64 patches" in line and "ETA" in line for line in progress)
        assert any("patches/s" in line for line in progress)


def test_the_cli_writes_lines_when_stderr_is_not_a_terminal(scenes, options, tmp_path, capsys):
    out = tmp_path / "o.tif"
    argv = ["superres", str(scenes[0]), "-o", str(out), *cli_args(options), "--log-format", "json"]
    assert main(argv) == 0
    records = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
    assert records[-1]["event"] == "product" and records[-1]["output"] == str(out)
    assert main(argv[:-2] + ["--overwrite"]) == 0  # text: no bar (no ANSI codes), summary line
    err = capsys.readouterr().err
    assert "\x1b[" not in err and "Wrote " in err.strip().splitlines()[-1]


def test_a_slow_run_has_a_rate_after_its_first_patch(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: now[0])
    stream = io.StringIO()
    sink = LogProgress(30, stream=stream, progress=False)
    sink.on_start("scene.tif", 40)
    now[0] += 25.0
    sink.on_advance(1)  # one patch in 25 s
    now[0] += 5.0
    sink.write_progress()
    line = stream.getvalue()
    assert "1/40 patches" in line and "0.04 patches/s" in line and "ETA 0:16:15" in line
