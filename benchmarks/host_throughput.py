"""Host throughput of ``superres`` with free networks (not a test).

The pipeline with ``--rgb-model bicubic --fusion bilinear`` (nothing left but reading, tiling,
blending, encoding, compressing, writing and the integrity read-back) on a generated full-width
strip (10,980 × 600 pixels of 10 m input: 43,920 × 2,400 output pixels), against writing the same
product from memory with the same creation options, and with ZSTD level 1. Each run is a fresh
process, so its peak RSS is its own; the strip is run again with 4× the height at the same width
(memory must depend on the width, not the height).

Targets (issue 13): pipeline ≤ 2.5 × the ZSTD-1 write from memory; ≥ 4 output MPix/s on a
2-core machine; peak RSS ≤ 4 GB for the strip, ≤ 1.1 × that for 4× the area.

    python benchmarks/host_throughput.py                       # the strip and 4× (minutes)
    python benchmarks/host_throughput.py --width 2400 --no-4x  # a quick look
    python benchmarks/host_throughput.py --compress-level 9    # what a higher level costs

Prints a table and one JSON line (ratios are measured in one run; timings on a shared machine
are noisy, so say the load, e.g. ``uptime``, with any number).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# As the ``difffusr`` command does (difffusr_cli/cli/__init__.py), before torch is imported:
# large host tensors on transparent huge pages.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from affine import Affine
from rasterio.windows import Window

from difffusr_cli.bands import BAND_NAMES, BY_NAME
from difffusr_cli.example.synthetic import (
    EXAMPLE_EPSG,
    EXAMPLE_ORIGIN,
    _area_mean,
    synthetic_reflectance,
)
from difffusr_cli.io.codecs import best_compression, compression_level, creation_options

#: Side of the generated content tile repeated along the strip (10 m pixels).
CONTENT = 600


def make_strip(folder: Path, width: int, height: int, seed: int = 0) -> Path:
    """A folder of single-band GeoTIFFs (``B01.tif`` …, L2A DN convention) ``width × height``.

    The synthetic example's content (:func:`synthetic_reflectance`) is repeated to the size;
    files are tiled ZSTD-1 (cheap to read, like the COGs of a STAC catalogue).
    """
    folder.mkdir(parents=True, exist_ok=True)
    reflectance, _ = synthetic_reflectance(CONTENT, seed)
    reps = (-(-height // CONTENT), -(-width // CONTENT))
    base = Affine(10.0, 0.0, EXAMPLE_ORIGIN[0], 0.0, -10.0, EXAMPLE_ORIGIN[1])
    for name in BAND_NAMES:
        native = int(BY_NAME[name].gsd) // 10
        band = np.tile(reflectance[BY_NAME[name].index], reps)[:height, :width]
        dn = np.clip(np.rint(_area_mean(band, native) * 10000 + 1000), 1, 65535).astype(np.uint16)
        with rasterio.open(
            folder / f"{name}.tif",
            "w",
            driver="GTiff",
            width=dn.shape[1],
            height=dn.shape[0],
            count=1,
            dtype="uint16",
            crs=f"EPSG:{EXAMPLE_EPSG}",
            transform=base @ Affine.scale(native),
            nodata=0,
            tiled=True,
            blockxsize=512,
            blockysize=512,
            compress="zstd",
            ZSTD_LEVEL=1,
            predictor=2,
        ) as dst:
            dst.write(dn, 1)
            dst.scales, dst.offsets = (1e-4,), (-0.1,)
    return folder


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def child_pipeline(strip: Path, out: Path, compress: str, level: int | None) -> dict:
    """One pipeline run (in this process); seconds, output pixels, peak RSS."""
    from difffusr_cli.superres import SuperresOptions, superres_many

    options = SuperresOptions(
        rgb_model="bicubic",
        fusion="bilinear",
        device="cpu",
        quiet=True,
        overwrite=True,
        compress=compress,
        compress_level=level,
    )
    started = time.perf_counter()
    [summary] = superres_many([strip], out, options)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "mpix": summary.width * summary.height / 1e6,
        "bytes": out.stat().st_size,
        "peak_rss": _peak_rss(),
    }


def child_write(product: Path, out: Path, compress: str, level: int | None) -> dict:
    """Write ``product``'s pixels, held in memory, as a tiled product with the given codec."""
    with rasterio.open(product) as src:
        data, profile = src.read(), src.profile
    codec = best_compression(compress)
    options = creation_options(codec, compression_level(codec, level), "uint16")
    started = time.perf_counter()
    with rasterio.open(
        out,
        "w",
        driver="GTiff",
        width=profile["width"],
        height=profile["height"],
        count=profile["count"],
        dtype=profile["dtype"],
        crs=profile["crs"],
        transform=profile["transform"],
        nodata=0,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        BIGTIFF="IF_SAFER",
        NUM_THREADS="ALL_CPUS",
        **options,
    ) as dst:
        for row in range(0, profile["height"], 512):
            rows = min(512, profile["height"] - row)
            dst.write(data[:, row : row + rows], window=Window(0, row, profile["width"], rows))
    return {"seconds": time.perf_counter() - started, "bytes": out.stat().st_size}


def _in_child(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip()[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the comparison and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=10980, help="10 m pixels (multiple of 6)")
    parser.add_argument("--height", type=int, default=600, help="10 m pixels (multiple of 6)")
    parser.add_argument("--compress", default="zstd")
    parser.add_argument("--compress-level", type=int, default=None)
    parser.add_argument("--no-4x", action="store_true", help="skip the 4× area run")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    level = args.compress_level
    if args.child:
        kind, a, b = args.child[:3]
        run = child_pipeline if kind == "pipeline" else child_write
        print(json.dumps(run(Path(a), Path(b), args.compress, level)))
        return
    codec_args = ["--compress", args.compress]
    if level is not None:
        codec_args += ["--compress-level", str(level)]
    results: dict = {
        "width_10m": args.width,
        "height_10m": args.height,
        "compress": args.compress,
        "compress_level": compression_level(best_compression(args.compress), level),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="difffusr-host-") as tmp:
        root = Path(tmp)
        strip = make_strip(root / "strip", args.width, args.height)
        product = root / "strip.tif"
        pipe = _in_child("pipeline", str(strip), str(product), *codec_args)
        same = _in_child("write", str(product), str(root / "same.tif"), *codec_args)
        zstd1 = _in_child(
            "write",
            str(product),
            str(root / "z1.tif"),
            "--compress",
            "zstd",
            "--compress-level",
            "1",
        )
        results.update(
            pipeline=pipe,
            write_same_options=same,
            write_zstd1=zstd1,
            mpix_per_s=pipe["mpix"] / pipe["seconds"],
            ratio_to_same_write=pipe["seconds"] / same["seconds"],
            ratio_to_zstd1_write=pipe["seconds"] / zstd1["seconds"],
        )
        if not args.no_4x:
            (root / "strip.tif").unlink()
            tall = make_strip(root / "tall", args.width, 4 * args.height)
            big = _in_child("pipeline", str(tall), str(root / "tall.tif"), *codec_args)
            results.update(
                pipeline_4x=big,
                rss_ratio_4x=big["peak_rss"] / pipe["peak_rss"],
                time_ratio_4x=big["seconds"] / pipe["seconds"],
            )
    results["load_after"] = os.getloadavg()[0]
    _print(results)


def _print(r: dict) -> None:
    pipe = r["pipeline"]
    print(
        f"strip {r['width_10m']} × {r['height_10m']} px at 10 m → {pipe['mpix']:.1f} MPix, "
        f"{r['compress']} level {r['compress_level']}; load {r['load_before']:.1f} → "
        f"{r['load_after']:.1f} on {r['cpus']} CPUs"
    )
    print(
        f"  pipeline          {pipe['seconds']:7.1f} s  {r['mpix_per_s']:5.2f} MPix/s  "
        f"peak RSS {pipe['peak_rss'] / 2**30:.2f} GiB  {pipe['bytes'] / 1e6:.0f} MB"
    )
    for key, label in (
        ("write_same_options", "write, same opts"),
        ("write_zstd1", "write, ZSTD 1"),
    ):
        w = r[key]
        print(f"  {label:<17} {w['seconds']:7.1f} s  {w['bytes'] / 1e6:.0f} MB")
    print(
        f"  pipeline / write with the same options {r['ratio_to_same_write']:.2f} "
        f"(target ≤ 2.5 vs ZSTD 1: {r['ratio_to_zstd1_write']:.2f})"
    )
    if "pipeline_4x" in r:
        print(
            f"  4× area: {r['pipeline_4x']['seconds']:.1f} s, peak RSS "
            f"{r['pipeline_4x']['peak_rss'] / 2**30:.2f} GiB, ratio {r['rss_ratio_4x']:.2f} "
            "(target ≤ 1.1)"
        )
    print(json.dumps(r))


if __name__ == "__main__":
    main()
