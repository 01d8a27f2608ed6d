"""libtiff's own stderr copies of a failed write are silenced (difffusr reports it in one line)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from difffusr_cli.io.libtiff import silence_libtiff

# Writes a GeoTIFF to /dev/full (every write fails with ENOSPC), as a full disk does.
_WRITE_TO_A_FULL_DEVICE = """
import os, sys, warnings
os.environ["CPL_LOG"] = os.devnull
warnings.simplefilter("ignore")
import numpy as np, rasterio
if sys.argv[1] == "silence":
    from difffusr_cli.io.libtiff import silence_libtiff
    assert silence_libtiff()
try:
    with rasterio.open("/dev/full", "w", driver="GTiff", width=256, height=256, count=1,
                       dtype="uint16") as ds:
        ds.write(np.arange(65536, dtype=np.uint16).reshape(1, 256, 256))
except Exception as exc:
    print("raised", type(exc).__name__)
"""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_failed_write_prints_nothing_of_libtiffs_own() -> None:
    if not silence_libtiff():
        pytest.skip("this rasterio has no bundled libtiff to reach")

    def run(mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _WRITE_TO_A_FULL_DEVICE, mode],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )

    loud, quiet = run("default"), run("silence")
    assert "raised" in loud.stdout and "raised" in quiet.stdout  # the failure is still raised
    assert "No space left on device" in loud.stderr  # what a user saw before
    assert "No space left on device" not in quiet.stderr, quiet.stderr
