"""The GPU check runs (smoke mode, CPU) so it works unchanged the first time a GPU is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_on_the_cpu(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    rates = [r for r in result["diffusion"] if "patches_per_s" in r]
    assert {r["batch"] for r in rates} == {1, 2} and all(r["patches_per_s"] > 0 for r in rates)
    assert any(r.get("variant") == "channels-last" for r in rates)
    assert result["patch_tflop"] > 0 and result["fusion"]["tiles_per_s"] > 0
    slice_ = result["pipeline_slice"]
    assert slice_["patches"] > 0 and slice_["host_ratio"] > 0
    assert result["full_tile"]["patches"] > 0 and result["full_tile"]["networks_hours"] > 0
