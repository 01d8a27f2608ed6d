"""The OpenSR-test benchmark data as ``opensr_test.load`` provides it, turned into reflectance.

``opensr_test.load(dataset, model_dir, version)`` reads ``<model_dir>/<dataset>.pkl`` and downloads
it from the Hugging Face dataset ``isp-uv-es/opensr-test`` (``<version folder>/<dataset>/
<dataset>.pkl``) when it is missing. The pickle is a dict: ``"L2A"`` ``(N, bands, h, w)``
Sentinel-2 L2A digital numbers in band order B01, B02, …; ``"HRharm"`` ``(N, 4, H, W)`` the
harmonised high-resolution R, G, B, NIR; ``"metadata"`` a pandas table with ``hr_file``, ``crs``
and ``affine`` per image. Both image arrays hold reflectance × 10000. See ``docs/evaluation.md``.

difffusr reads the same files without ``opensr_test.load`` (which would ``pickle.load`` them):
local files, the package's cache and downloads (through huggingface_hub's cache) are all read by
the restricted reader of :mod:`difffusr_cli.evaluate.safe_pickle` (numpy arrays and the pandas
metadata table only; no code runs).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from affine import Affine

from difffusr_cli.bands import RGB, indices
from difffusr_cli.errors import InputError

DataVersion = Literal["v1", "v2", "v3"]

#: Every dataset opensr-test ships, and the scale of its HR over its LR.
DATASET_SCALE: dict[str, int] = {
    "naip": 4,
    "spot": 4,
    "spain_crops": 4,
    "spain_urban": 4,
    "venus": 2,
}
#: The four ×4 datasets of the paper's table (the default).
DEFAULT_DATASETS: tuple[str, ...] = ("naip", "spot", "spain_crops", "spain_urban")
#: opensr_test.load's ``version`` argument → the folder of the Hugging Face dataset repository.
VERSION_FOLDER: dict[str, str] = {"v1": "020", "v2": "100", "v3": "021"}
#: The Hugging Face dataset repository the package downloads from.
HF_DATASET_REPO = "isp-uv-es/opensr-test"
#: Seconds to wait for the Hub's answer about a file before giving up (the download itself may
#: take longer: the pickles are tens to hundreds of MB).
HUB_TIMEOUT_S = 10.0
#: The benchmark stores reflectance × 10000 as integers (reflectance = DN / 10000, as its
#: reference scripts divide); the L2A BOA offset is not applied (the HR images were harmonised to
#: that LR, so the benchmark is self-consistent without it).
DN_PER_REFLECTANCE = 10000.0
#: The opensr-test release the protocol was read from.
OPENSR_TEST_VERSION = "1.3.3"
#: How to install it without replacing a CPU torch (its own requirements pull torchvision).
INSTALL_HINT = (
    "pip install 'difffusr[eval]' && pip install --no-deps opensr-test==" + OPENSR_TEST_VERSION
)


@dataclass(frozen=True)
class BenchmarkDataset:
    """One opensr-test dataset as float32 reflectance.

    Attributes:
        name: dataset name (``"naip"``…).
        source: the pickle it was read from.
        lr: ``(N, 3, h, w)`` float32 reflectance, R, G, B = L2A B04, B03, B02.
        hr: ``(N, 3, H, W)`` float32 reflectance, harmonised HR R, G, B; ``H = scale · h``.
        image_ids: ``N`` ids (the metadata's ``hr_file``; ``<name>_<i>`` without metadata).
        crs: per image the HR grid's CRS as the metadata gives it, or None.
        transforms: per image the HR grid's affine transform, or None.
    """

    name: str
    source: Path
    lr: np.ndarray
    hr: np.ndarray
    image_ids: tuple[str, ...]
    crs: tuple[str | None, ...]
    transforms: tuple[Affine | None, ...]

    @property
    def scale(self) -> int:
        """The HR/LR size ratio (4, or 2 for venus)."""
        return self.hr.shape[-1] // self.lr.shape[-1]


# --------------------------------------------------------------------------------------------
# Locating and loading the benchmark


def package_cache_dir() -> Path:
    """Where ``opensr_test.load`` keeps downloaded pickles (``~/.config/opensr_test``)."""
    return Path.home() / ".config" / "opensr_test"


def candidate_files(name: str, data_dir: Path, version: str) -> tuple[Path, Path]:
    """The two layouts accepted under ``data_dir``.

    The package's cache layout ``<dir>/<name>.pkl`` and the Hugging Face repository's
    ``<dir>/<folder>/<name>/<name>.pkl``.
    """
    return data_dir / f"{name}.pkl", data_dir / VERSION_FOLDER[version] / name / f"{name}.pkl"


def locate_datasets(
    datasets: Sequence[str], data_dir: Path | None, version: str
) -> dict[str, Path | None]:
    """The pickle of every dataset; None where it must be downloaded (:func:`download_dataset`).

    Raises:
        InputError: ``data_dir`` is given and lacks some datasets (all are named), or ``data_dir``
            is None, a pickle is not in the package cache and the Hub is offline
            (``HF_HUB_OFFLINE=1``).
    """
    found: dict[str, Path | None] = {}
    missing: list[str] = []
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise InputError(f"--data-dir {data_dir}: no such folder")
        for name in datasets:
            hit = next(
                (p for p in candidate_files(name, Path(data_dir), version) if p.is_file()), None
            )
            if hit is None:
                flat, nested = candidate_files(name, Path(data_dir), version)
                missing.append(f"{name} ({flat.name} or {nested.relative_to(data_dir)})")
            found[name] = hit
        if missing:
            raise InputError(
                f"--data-dir {data_dir}: missing opensr-test data for {'; '.join(missing)}; "
                f"download them from the Hugging Face dataset {HF_DATASET_REPO} (folder "
                f"{VERSION_FOLDER[version]}/)"
            )
        return found
    cache = package_cache_dir()
    for name in datasets:
        path = cache / f"{name}.pkl"
        found[name] = path if path.is_file() else cached_hub_file(name, version)
        if found[name] is None:
            missing.append(name)
    if missing and _hub_offline():
        raise InputError(
            f"opensr-test data for {', '.join(missing)} not in {cache} and HF_HUB_OFFLINE is set; "
            f"pass --data-dir DIR holding {', '.join(m + '.pkl' for m in missing)} "
            f"(Hugging Face dataset {HF_DATASET_REPO}, folder {VERSION_FOLDER[version]}/)"
        )
    return found


def hub_filename(name: str, version: str) -> str:
    """The dataset's file in the Hugging Face repository: ``<folder>/<name>/<name>.pkl``."""
    return f"{VERSION_FOLDER[version]}/{name}/{name}.pkl"


def cached_hub_file(name: str, version: str) -> Path | None:
    """The dataset's file in the Hugging Face cache, if a download put it there."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(HF_DATASET_REPO, hub_filename(name, version), repo_type="dataset")
    return Path(hit) if isinstance(hit, str) else None


def download_dataset(name: str, version: str) -> Path:
    """Fetch the dataset's pickle into the Hugging Face cache (or find it there offline).

    The download goes through huggingface_hub, not ``opensr_test.load``, so the file is read
    afterwards by the same restricted reader as a local one.

    Raises:
        InputError: the Hub is unreachable or the file is not there.
    """
    from huggingface_hub import hf_hub_download

    filename = hub_filename(name, version)
    try:
        local = hf_hub_download(
            HF_DATASET_REPO, filename, repo_type="dataset", etag_timeout=HUB_TIMEOUT_S
        )
    except Exception as exc:  # noqa: BLE001 - every Hub failure is the same advice
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"cannot download {filename} from the Hugging Face dataset {HF_DATASET_REPO} "
            f"({first}); pass --data-dir DIR holding {name}.pkl"
        ) from None
    return Path(local)


def load_dataset(name: str, path: Path | None, version: str) -> BenchmarkDataset:
    """Read one dataset, downloading it through the Hugging Face cache when ``path`` is None.

    Every file, local or downloaded, is read with the restricted reader of
    :mod:`difffusr_cli.evaluate.safe_pickle` (arrays and the metadata table; no code runs),
    never with ``pickle.load``.

    Raises:
        InputError: the download failed, or the file is not an opensr-test pickle of usable shape.
    """
    from difffusr_cli.evaluate.safe_pickle import read_benchmark_pickle

    if path is None:
        path = download_dataset(name, version)
    return benchmark_from_dict(name, path, read_benchmark_pickle(path))


def benchmark_from_dict(name: str, source: Path, raw: Any) -> BenchmarkDataset:
    """Convert the package's dict to reflectance arrays, checking shapes.

    Raises:
        InputError: keys missing, arrays not 4-D, too few bands, counts or scale inconsistent.
    """
    if not isinstance(raw, Mapping) or "L2A" not in raw or "HRharm" not in raw:
        keys = sorted(raw) if isinstance(raw, Mapping) else type(raw).__name__
        raise InputError(
            f"{source}: expected an opensr-test dict with 'L2A' and 'HRharm', got {keys}"
        )
    l2a = np.asarray(raw["L2A"])
    hr_all = np.asarray(raw["HRharm"])
    if l2a.ndim != 4 or l2a.shape[1] < 4:
        raise InputError(f"{source}: 'L2A' has shape {l2a.shape}; expected (N, bands ≥ 4, h, w)")
    if hr_all.ndim != 4 or hr_all.shape[1] < 3:
        raise InputError(f"{source}: 'HRharm' has shape {hr_all.shape}; expected (N, ≥ 3, H, W)")
    if l2a.shape[0] != hr_all.shape[0] or l2a.shape[0] == 0:
        raise InputError(f"{source}: {l2a.shape[0]} L2A images but {hr_all.shape[0]} HRharm images")
    ratio_y, ratio_x = hr_all.shape[2] / l2a.shape[2], hr_all.shape[3] / l2a.shape[3]
    if ratio_y != ratio_x or not ratio_x.is_integer() or ratio_x < 1:
        raise InputError(
            f"{source}: HRharm {hr_all.shape[2:]} is not an integer multiple of L2A {l2a.shape[2:]}"
        )
    # The pickles keep L2A in Sentinel-2 band order B01, B02, … (the benchmark's reference scripts
    # take [3, 2, 1] for R, G, B and 7 for B08): the product order of bands.py for these bands.
    lr = l2a[:, indices(RGB)].astype(np.float32) / np.float32(DN_PER_REFLECTANCE)
    hr = hr_all[:, 0:3].astype(np.float32) / np.float32(DN_PER_REFLECTANCE)
    count = lr.shape[0]
    ids, crs, transforms = _image_metadata(raw.get("metadata"), name, count)
    return BenchmarkDataset(name, source, lr, hr, ids, crs, transforms)


def _image_metadata(
    meta: Any, name: str, count: int
) -> tuple[tuple[str, ...], tuple[str | None, ...], tuple[Affine | None, ...]]:
    """Image ids, CRS and HR transforms from the metadata table; defaults where absent.

    The table is a pandas DataFrame in the pickles: ``hr_file``, ``crs``, ``affine`` =
    ``"a,b,c,d,e,f"``.
    """

    def column(key: str) -> list[Any] | None:
        try:
            values = list(meta[key])
        except (KeyError, TypeError, IndexError, ValueError):
            return None
        return values if len(values) == count else None

    hr_files = column("hr_file") if meta is not None else None
    ids = [str(v) for v in hr_files] if hr_files else [f"{name}_{i:03d}" for i in range(count)]
    if len(set(ids)) != count:  # ids name the saved files: keep them unique
        ids = [f"{i:03d}_{v}" for i, v in enumerate(ids)]
    crs_values = column("crs") if meta is not None else None
    crs = tuple(
        str(v) if v is not None and str(v) not in ("", "nan", "None") else None
        for v in crs_values or [None] * count
    )
    affines = column("affine") if meta is not None else None
    transforms: list[Affine | None] = []
    for value in affines or [None] * count:
        try:
            numbers = [float(x) for x in str(value).split(",")]
        except ValueError:
            numbers = []
        transforms.append(Affine(*numbers[:6]) if len(numbers) >= 6 else None)
    return tuple(ids), crs, tuple(transforms)


def import_opensr_test() -> Any:
    """Import the ``opensr_test`` package.

    Raises:
        InputError: not installed, or installed but not importable (e.g. a satalign release that
            imports torchvision), with the command that fixes it.
    """
    try:
        return importlib.import_module("opensr_test")
    except ModuleNotFoundError as exc:
        if exc.name in (None, "opensr_test"):
            raise InputError(f"eval opensr needs the opensr-test package: {INSTALL_HINT}") from exc
        raise InputError(
            f"opensr-test is installed but cannot be imported (no module {exc.name!r}); "
            f"{INSTALL_HINT} "
            "installs the dependencies it needs without torchvision (satalign==0.1.12)"
        ) from exc
    except ImportError as exc:
        raise InputError(f"opensr-test cannot be imported ({exc}); {INSTALL_HINT}") from exc


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
