"""Hugging Face Hub access: cache locations, reachability, file listing and download."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import socket
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from difffusr_cli.errors import WeightsError
from difffusr_cli.weights.manifest import (
    _COMMIT,
    _DEMO_MODEL,
    _MODEL_FLAG,
    DEFAULT_HUB_TIMEOUT,
    ModelEntry,
    manifest_path,
)
from difffusr_cli.weights.report import Reporter

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass

if TYPE_CHECKING:

    pass




# ---------------------------------------------------------------------------------------------
# Cache locations (read from the environment at call time, like huggingface_hub documents them)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_cache_dir() -> Path:
    """The huggingface_hub cache: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub`` (``~/.cache/huggingface/hub``)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def cache_root() -> Path:
    """Where converted weights are kept: ``$DIFFFUSR_CACHE``, else
    ``<HF_HUB_CACHE>/difffusr-converted`` (so copying the Hub cache carries them along)."""
    explicit = os.environ.get("DIFFFUSR_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return hub_cache_dir() / "difffusr-converted"


def _repo_cache_dir(repo: str) -> Path:
    return hub_cache_dir() / ("models--" + repo.replace("/", "--"))


def _cached_commit(repo: str, revision: str) -> str | None:
    """The commit a revision points to in the local Hub cache, if recorded there."""
    if _COMMIT.match(revision):
        return revision
    ref = _repo_cache_dir(repo) / "refs" / revision
    try:
        commit = ref.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return commit if _COMMIT.match(commit) else None


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


def _hub_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def _probe_hub(timeout: float) -> str | None:
    """None when a TCP connection to the Hub (or the configured proxy) opens within
    ``timeout`` seconds, else the reason. Runs in a thread so a stuck DNS lookup is bounded too."""
    url = urllib.parse.urlsplit(_hub_endpoint())
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_url.hostname or host, proxy_url.port or 8080
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"cannot reach {host}:{port} ({exc.strerror or exc})")

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    if not outcome:
        return f"no answer from {host}:{port} within {timeout:g} s"
    return outcome[0]


def _hub_timeout() -> float:
    try:
        return float(os.environ.get("DIFFFUSR_HUB_TIMEOUT", DEFAULT_HUB_TIMEOUT))
    except ValueError:
        return DEFAULT_HUB_TIMEOUT


# ---------------------------------------------------------------------------------------------
# Hub download


@dataclass(frozen=True)
class _HubFile:
    path: Path  # the file inside the Hub cache snapshot
    repo: str
    revision: str
    commit: str
    filename: str


def _guidance(entry: ModelEntry) -> str:
    return (
        f"give a local file with {_MODEL_FLAG[entry.kind]}, or pre-fill the Hugging Face cache "
        f"(`difffusr weights pull {entry.name}` on a connected machine, copy its cache folder to "
        f"{hub_cache_dir()} here, and set HF_HUB_OFFLINE=1); to only try the pipeline, use the "
        f"shipped demonstration model with {_MODEL_FLAG[entry.kind].split()[0]} {_DEMO_MODEL[entry.kind]}"
    )


def _discover_file(entry: ModelEntry, revision: str, offline_reason: str | None) -> str:
    """The file of an entry whose ``file`` is empty: the one repository path matching ``discover``
    (several: the single ``last.ckpt`` among them). Offline (``offline_reason`` set) the cached
    snapshot of the revision is searched instead of the Hub's file list."""
    if offline_reason is not None:
        commit = _cached_commit(entry.repo, revision)
        snapshot = _repo_cache_dir(entry.repo) / "snapshots" / commit if commit else None
        if snapshot is None or not snapshot.is_dir():
            raise WeightsError(
                f"model '{entry.name}': its file in {entry.repo}@{revision} is not pinned in {manifest_path()} "
                f"and must be discovered by listing the repository, but {offline_reason} and there is no cached "
                f"snapshot in {hub_cache_dir()}; {_guidance(entry)}"
            )
        candidates = sorted(
            p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()
        )
    else:
        from huggingface_hub import HfApi

        try:
            candidates = HfApi(endpoint=_hub_endpoint(), token=_hub_token()).list_repo_files(
                entry.repo, revision=revision
            )
        except Exception as exc:  # noqa: BLE001 - any network-library failure becomes one line
            raise WeightsError(
                f"model '{entry.name}': cannot list {entry.repo}@{revision} "
                f"({type(exc).__name__}: {_first_line(exc)}); {_guidance(entry)}"
            ) from exc
    matches = [c for c in candidates if fnmatch.fnmatchcase(c, entry.discover)]
    if len(matches) > 1:
        last = [m for m in matches if m.rsplit("/", 1)[-1] == "last.ckpt"]
        matches = last if len(last) == 1 else matches
    if len(matches) == 1:
        return matches[0]
    found = "none" if not matches else ", ".join(matches[:6]) + (" …" if len(matches) > 6 else "")
    raise WeightsError(
        f"model '{entry.name}': expected one file matching {entry.discover!r} in {entry.repo}@{revision}, found {found}; "
        f'set file = "..." in a copy of the manifest (DIFFFUSR_WEIGHTS_TOML) or give {_MODEL_FLAG[entry.kind]}'
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _fetch_hub_file(entry: ModelEntry, revision: str | None, reporter: Reporter) -> _HubFile:
    """Download (or find in the Hub cache) the file of a hub entry."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    rev = revision or entry.revision or "main"
    offline_reason = (
        "HF_HUB_OFFLINE is set" if _env_flag("HF_HUB_OFFLINE") else _probe_hub(_hub_timeout())
    )
    offline = offline_reason is not None
    filename = entry.file or _discover_file(entry, rev, offline_reason)
    where = f"{entry.repo}@{rev}:{filename}"
    common: dict[str, Any] = {
        "revision": rev,
        "cache_dir": str(hub_cache_dir()),
        "local_files_only": offline,
        "token": _hub_token(),
        "endpoint": _hub_endpoint(),
        "etag_timeout": _hub_timeout(),
    }
    try:
        local = Path(
            hf_hub_download(entry.repo, filename, tqdm_class=reporter.download_bar, **common)
        )
    except LocalEntryNotFoundError as exc:
        commit = _cached_commit(entry.repo, rev)
        if commit and (_repo_cache_dir(entry.repo) / "snapshots" / commit).is_dir():
            missing = f"{filename} is not in the cached snapshot {commit[:12]} of {entry.repo}"
        else:
            missing = f"{entry.repo}@{rev} is not in the Hugging Face cache {hub_cache_dir()}"
        why = offline_reason or "the Hub could not be reached"
        raise WeightsError(
            f"model '{entry.name}': {why} and {missing}; {_guidance(entry)}"
        ) from exc
    except EntryNotFoundError as exc:
        raise WeightsError(
            f"model '{entry.name}': {where} does not exist on the Hub (file missing in that revision)"
        ) from exc
    except GatedRepoError as exc:
        raise WeightsError(
            f"model '{entry.name}': {entry.repo} is gated; accept its terms on the Hub and set HF_TOKEN"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise WeightsError(
            f"model '{entry.name}': repository {entry.repo} not found (or private: set HF_TOKEN)"
        ) from exc
    except RevisionNotFoundError as exc:
        raise WeightsError(
            f"model '{entry.name}': revision {rev!r} not found in {entry.repo}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - network, disk or HTTP: one line, not a traceback
        raise WeightsError(
            f"model '{entry.name}': download of {where} failed "
            f"({type(exc).__name__}: {_first_line(exc)}); {_guidance(entry)}"
        ) from exc
    commit = _snapshot_commit(local, filename) or _cached_commit(entry.repo, rev) or rev
    if entry.kind == "rgb":
        _fetch_hparams_beside(entry, filename, common)
    return _HubFile(path=local, repo=entry.repo, revision=rev, commit=commit, filename=filename)


def _snapshot_commit(local: Path, filename: str) -> str | None:
    """``…/snapshots/<commit>/<filename>`` → ``<commit>``."""
    parts = local.parts
    depth = len(Path(filename).parts)
    if (
        len(parts) > depth + 1
        and parts[-depth - 2] == "snapshots"
        and _COMMIT.match(parts[-depth - 1])
    ):
        return parts[-depth - 1]
    return None


def _fetch_hparams_beside(entry: ModelEntry, filename: str, common: Mapping[str, Any]) -> None:
    """Best effort: bring ``<exp>/version_N/hparams.yaml`` (two folders above the ckpt) into the
    snapshot so the SR config comes from it; the embedded ``hyper_parameters`` are the fallback."""
    parts = filename.split("/")
    if len(parts) < 3 or not filename.endswith(".ckpt"):
        return
    from huggingface_hub import hf_hub_download

    with contextlib.suppress(Exception):  # optional file: any failure means "use the fallback"
        hf_hub_download(entry.repo, "/".join(parts[:-2] + ["hparams.yaml"]), **common)

