"""Cost of reading SEN2NAIP v1 tiles in place from a zip shard vs an extracted tree (not a test).

Writes a shard in the published layout (``synthetic_1/ROI_XXXX/{early,late}/NN__name.tif``,
1100 × 1100 4-band uint8 tiles by default, DEFLATE-compressed GeoTIFFs, the zip STOREd), extracts
a copy, then measures in one run:

a. opening the dataset (listing + probing every tile), zip / tree;
b. reading every tile once as (3, H, W) reflectance (``HRDataset.read``, cache off), zip / tree;
c. histogram matching of a tile to its era's ``sim_histograms``, seconds per tile (the read
   subtracted).

Prints a table and one JSON line.

    python benchmarks/sen2naip_read.py                  # 8 tiles of 1100 px
    python benchmarks/sen2naip_read.py --tiles 4 --size 512
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from difffusr_cli.train import hr_data
from difffusr_cli.train.hr_data import open_hr_dataset


def _write_shard(folder: Path, tiles: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    shard = folder / "synthetic_01.zip"
    hist = [{"counts": rng.random(64).tolist(), "bin_edges": np.linspace(0, 0.4, 65).tolist()}] * 4
    with zipfile.ZipFile(shard, "w", compression=zipfile.ZIP_STORED) as archive:
        for i in range(tiles):
            roi, era = f"ROI_{i // 2:04d}", ("early", "late")[i % 2]
            path = folder / "tile.tif"
            data = (rng.random((4, size, size)) * 255).astype(np.uint8)
            with rasterio.open(
                path,
                "w",
                driver="GTiff",
                width=size,
                height=size,
                count=4,
                dtype="uint8",
                compress="deflate",
                crs="EPSG:32613",
                transform=Affine(2.5, 0, 500000, 0, -2.5, 4000000),
            ) as dst:
                dst.write(data)
            prefix = f"synthetic_1/{roi}/{era}"
            archive.write(path, f"{prefix}/{i + 1:02d}__m_bench_{i}.tif")
            archive.writestr(f"{prefix}/metadata.json", json.dumps({"sim_histograms": hist}))
            path.unlink()
    return shard


def _timed(call):
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--size", type=int, default=1100)
    args = parser.parse_args()
    hr_data.HR_CACHE_BYTES = 0  # every read goes to the files
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shard = _write_shard(folder, args.tiles, args.size)
        tree = folder / "tree"
        with zipfile.ZipFile(shard) as archive:
            archive.extractall(tree)
        rows = {}
        for name, source in (("zip", shard), ("tree", tree)):
            data, opened = _timed(lambda s=source: open_hr_dataset("sen2naip", s, min_size=64))
            _, read = _timed(lambda d=data: [d.read(i) for i in range(len(d))])
            rows[name] = {"open_s": opened, "read_s_per_tile": read / len(data)}
        data.read(0, matched=True)  # imports torch, warms up
        _, matched = _timed(lambda d=data: [d.read(i, matched=True) for i in range(len(d))])
        matched = matched / len(data) - rows["tree"]["read_s_per_tile"]
    result = {
        "tiles": args.tiles,
        "size": args.size,
        **{f"{k}_{m}": v for k, r in rows.items() for m, v in r.items()},
        "open_ratio_zip_tree": rows["zip"]["open_s"] / rows["tree"]["open_s"],
        "read_ratio_zip_tree": rows["zip"]["read_s_per_tile"] / rows["tree"]["read_s_per_tile"],
        "histogram_match_s_per_tile": matched,
    }
    for name, row in rows.items():
        print(f"{name:5s} open {row['open_s']:.3f} s   read {row['read_s_per_tile']:.3f} s/tile")
    print(
        f"zip / tree: open ×{result['open_ratio_zip_tree']:.2f}, read "
        f"×{result['read_ratio_zip_tree']:.2f}; histogram matching {matched:.3f} s/tile"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
