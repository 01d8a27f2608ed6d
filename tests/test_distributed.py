"""A batch on a local Dask cluster: products identical to a serial run, also when a worker dies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from batch_helpers import cli_args, fast_options, sha256, small_scenes

from difffusr_cli.cli import main
from difffusr_cli.superres import superres_many

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[Path]:
    return small_scenes(tmp_path_factory.mktemp("scenes"), 3)


@pytest.fixture(scope="module")
def options(tmp_path_factory):
    # Three blocks a product: a worker killed after the first one leaves something to resume.
    return fast_options(tmp_path_factory.mktemp("models"), block_rows=16)


@pytest.fixture(scope="module")
def client():
    from difffusr_cli.superres.distributed import connect

    client, close = connect("local:2")
    yield client
    close()


@pytest.fixture(scope="module")
def serial(scenes, options, tmp_path_factory) -> dict[str, str]:
    """sha256 of each product of a serial run with the workers' thread count (one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the thread count is part of the fingerprint (and of the pixels)
    try:
        out = tmp_path_factory.mktemp("serial")
        superres_many(scenes, out, options)
    finally:
        torch.set_num_threads(threads)
    return {p.name: sha256(p) for p in out.glob("*.tif")}


def test_a_local_cluster_gives_the_serial_products(scenes, options, serial, client, tmp_path):
    import difffusr_cli
    from difffusr_cli.superres.distributed import load_count

    summaries = difffusr_cli.superres_many(scenes, tmp_path, options, client=client)
    assert [s.status for s in summaries] == ["written"] * 3
    assert {p.name: sha256(p) for p in tmp_path.glob("*.tif")} == serial
    assert all(n <= 1 for n in client.run(load_count).values())  # models loaded once a worker
    report = json.loads((tmp_path / "difffusr-batch.json").read_text())
    assert [e["status"] for e in report["inputs"]] == ["done"] * 3
    assert [e["fingerprint"] for e in report["inputs"]] == [s.fingerprint for s in summaries]


def test_a_killed_worker_is_replaced_and_its_scene_resumed(
    scenes, options, serial, client, tmp_path
):
    marker = tmp_path / "killed-once"

    def kill_once(index: int) -> None:  # runs on the worker, after a block is recorded
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)

    out = tmp_path / "out"
    summaries = superres_many(scenes, out, options, client=client, on_block_done=kill_once)
    assert marker.exists()
    assert [s.status for s in summaries] == ["written"] * 3
    assert {p.name: sha256(p) for p in out.glob("*.tif")} == serial
    assert sum(s.blocks_resumed for s in summaries) == 1  # the killed scene kept its first block


def test_the_cli_honours_dask_scheduler_address(
    scenes, options, client, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", client.scheduler.address)
    broken = tmp_path / "broken.SAFE"
    broken.mkdir()
    out = tmp_path / "out"
    inputs = [str(scenes[0]), str(broken), str(scenes[1])]
    argv = ["superres", *inputs, "-o", f"{out}/", *cli_args(options)]
    assert main([*argv, "--keep-going", "--log-interval", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "batch: " in err and "error: 1 of 3 inputs failed" in err
    report = json.loads((out / "difffusr-batch.json").read_text())
    assert [e["status"] for e in report["inputs"]] == ["done", "failed", "done"]


@pytest.mark.slow
def test_the_documented_local_example(scenes, options, tmp_path, monkeypatch):
    """docs/batch.md: --inputs-from FILE -o DIR/ --scheduler local:2 --keep-going."""
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    listing = tmp_path / "scenes.txt"
    listing.write_text("".join(f"{s}\n" for s in scenes))
    args = ["superres", "--inputs-from", str(listing), *cli_args(options), "--quiet"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers
    try:
        assert main([*args, "-o", f"{tmp_path / 'serial'}/"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "products"
    assert main([*args, "-o", f"{out}/", "--scheduler", "local:2", "--keep-going"]) == 0
    report = json.loads((out / "difffusr-batch.json").read_text())
    assert [e["status"] for e in report["inputs"]] == ["done"] * 3
    serial = {p.name: sha256(p) for p in (tmp_path / "serial").glob("*.tif")}
    assert {p.name: sha256(p) for p in out.glob("*.tif")} == serial and len(serial) == 3


@pytest.mark.parametrize("spec", ["local:0", "local:x"])
def test_a_bad_local_spec_is_one_line(spec):
    from difffusr_cli.errors import InputError
    from difffusr_cli.superres.distributed import connect

    with pytest.raises(InputError, match="local:N"):
        connect(spec)


def test_without_distributed_the_error_names_the_extra(monkeypatch, tmp_path, capsys):
    import builtins

    real = builtins.__import__

    def no_distributed(name, *args, **kwargs):
        if name == "distributed":
            raise ImportError("No module named 'distributed'", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_distributed)
    assert (
        main(["superres", "x.SAFE", "-o", str(tmp_path / "o.tif"), "--scheduler", "local:2"]) == 2
    )
    assert "difffusr[dask]" in capsys.readouterr().err
