"""Training data from the Hugging Face Hub: SEN2NAIP v1 shards, or a repository's GeoTIFFs.

Datasets live in the same huggingface_hub cache as the weights
(:func:`~difffusr_cli.weights.hub.hub_cache_dir`), as ``datasets--ORG--NAME/{refs,blobs,
snapshots}``. With ``HF_HUB_OFFLINE=1`` only that cache is read: the file list comes from the
cached snapshot and each shard from ``hf_hub_download(..., local_files_only=True)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from difffusr_cli.errors import InputError
from difffusr_cli.weights.hub import hub_cache_dir

#: A SEN2NAIP v1 shard inside the repository (``synthetic/synthetic_01.zip``).
_SHARD_FILE = re.compile(r"(?:^|/)synthetic_0*(\d+)\.zip$", re.IGNORECASE)
#: A SEN2NAIP v2 TACO part (``sen2naipv2-unet.0001.part.taco``; a lone ``x.taco`` is part 1).
_TACO_FILE = re.compile(r"(?:\.0*(\d+)\.part)?\.taco$", re.IGNORECASE)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _repo_dir(repo: str) -> Path:
    return hub_cache_dir() / ("datasets--" + repo.replace("/", "--"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _cached_listing(repo: str, revision: str) -> tuple[str, list[str]] | None:
    """``(commit, files)`` of the cached snapshot of ``revision``; None when not cached."""
    root = _repo_dir(repo)
    commit = revision
    if not re.fullmatch(r"[0-9a-f]{40}", revision):
        try:
            commit = (root / "refs" / revision).read_text(encoding="utf-8").strip()
        except OSError:
            return None
    snapshot = root / "snapshots" / commit
    if not snapshot.is_dir():
        return None
    files = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    return commit, files


#: Seconds the repository listing may wait for the Hub (``DIFFFUSR_HUB_TIMEOUT`` overrides).
LISTING_TIMEOUT = 10.0


def _online_listing(repo: str, revision: str) -> tuple[str, list[str], bool]:
    """``(commit, files, offline)``: the Hub's listing, else the cached one when the Hub fails.

    ``offline`` is True when the cached snapshot stands in (downloads then use the cache only).
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        timeout = float(os.environ.get("DIFFFUSR_HUB_TIMEOUT", LISTING_TIMEOUT))
    except ValueError:
        timeout = LISTING_TIMEOUT
    try:
        info = HfApi().dataset_info(repo, revision=revision, timeout=timeout)
    except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise InputError(f"--hub-repo {repo}@{revision}: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - any network-library failure becomes one line
        cached = _cached_listing(repo, revision)
        if cached is not None:
            return (*cached, True)
        raise InputError(
            f"--hub-repo {repo}: listing the dataset failed ({type(exc).__name__}: "
            f"{_first_line(exc)}) and it is not in the Hugging Face cache {hub_cache_dir()}; "
            "download the shards yourself and pass --data-dir"
        ) from None
    return str(info.sha or revision), sorted(s.rfilename for s in info.siblings or []), False


def _taco_parts(files: Sequence[str]) -> dict[int, str]:
    """Part number → file of the ``.taco`` containers (numbered in file order when unnumbered)."""
    tacos = [(m, name) for name in files if (m := _TACO_FILE.search(name))]
    numbered = {int(m.group(1)): name for m, name in tacos if m.group(1)}
    return numbered if len(numbered) == len(tacos) else {i + 1: n for i, (_, n) in enumerate(tacos)}


def hub_shards(
    repo: str,
    revision: str | None,
    shards: Sequence[int] | None,
    local_dir: str | os.PathLike[str] | None = None,
) -> tuple[list[Path], str] | None:
    """The SEN2NAIP shards of a dataset repository, downloaded or found in the cache.

    v1 shards are ``synthetic_NN.zip``; without them, the repository's ``.taco`` containers
    (SEN2NAIP v2, ``NAME.000N.part.taco``) are the shards, numbered by part.

    Args:
        repo: ``ORG/NAME`` (``isp-uv-es/SEN2NAIP``).
        revision: branch, tag or commit (default ``main``).
        shards: the shard numbers to use (``synthetic_NN.zip``); None: every shard.
        local_dir: download into this folder instead of the cache.

    Returns:
        ``(paths, "repo@commit")``, or None when the repository has no shards (then its
        GeoTIFFs are the data, :func:`download_hub_dataset`).

    Raises:
        InputError: offline with nothing cached, the Hub unreachable, a shard number the
            repository lacks, or a failed download.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    rev = revision or "main"
    offline = _offline()
    if offline:
        listing = _cached_listing(repo, rev)
        if listing is None:
            raise InputError(
                f"--hub-repo {repo}: HF_HUB_OFFLINE is set and {repo}@{rev} is not in the "
                f"Hugging Face cache {hub_cache_dir()}; go online once, or download the shards "
                "yourself and pass --data-dir"
            )
        commit, files = listing
    else:
        commit, files, offline = _online_listing(repo, rev)
    available = {int(m.group(1)): name for name in files if (m := _SHARD_FILE.search(name))}
    if not available:
        available = _taco_parts(files)
    if not available:
        return None
    wanted = sorted(available) if shards is None else list(shards)
    missing = [n for n in wanted if n not in available]
    if missing:
        raise InputError(
            f"--shards {','.join(map(str, missing))}: {repo}@{rev} has shards "
            f"{','.join(map(str, sorted(available)))}"
        )
    paths = []
    for number in wanted:
        filename = available[number]
        try:
            local = hf_hub_download(
                repo,
                filename,
                repo_type="dataset",
                revision=commit,
                cache_dir=str(hub_cache_dir()),
                local_dir=None if local_dir is None else str(local_dir),
                local_files_only=offline,
            )
        except LocalEntryNotFoundError:
            raise InputError(
                f"--hub-repo {repo}: {filename} is not in the cached snapshot {commit[:12]} and "
                f"{'HF_HUB_OFFLINE is set' if offline else 'the Hub cannot be reached'}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - network, disk or HTTP: one line
            raise InputError(
                f"--hub-repo {repo}: download of {filename} failed ({type(exc).__name__}: "
                f"{_first_line(exc)})"
            ) from None
        paths.append(Path(local))
    return paths, f"{repo}@{commit[:12]}"


def download_hub_dataset(
    repo: str, revision: str | None, local_dir: str | os.PathLike[str] | None
) -> Path:
    """Download (or find cached) a Hugging Face *dataset* repository's GeoTIFFs; returns its folder.

    Raises:
        InputError: offline (``HF_HUB_OFFLINE``) with nothing cached, the Hub unreachable, or an
            unknown repository.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = _offline()
    try:
        path = snapshot_download(
            repo_id=repo,
            repo_type="dataset",
            revision=revision,
            allow_patterns=["*.tif", "*.tiff", "**/*.tif", "**/*.tiff"],
            local_dir=None if local_dir is None else str(local_dir),
            cache_dir=str(hub_cache_dir()),
            local_files_only=offline,
        )
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub cannot be reached"
        raise InputError(
            f"--hub-repo {repo}: {why} and the dataset is not in the local cache; go online once, "
            "or "
            "download it yourself and pass --data-dir"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"--hub-repo {repo}: download failed ({first})") from None
    return Path(path)
