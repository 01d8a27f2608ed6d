"""Hugging Face Hub access: cache locations, reachability, file listing and download."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from difffusr_cli.errors import WeightsError
from difffusr_cli.weights.choose import choose_file
from difffusr_cli.weights.manifest import (
    _COMMIT,
    _MODEL_FLAG,
    DEFAULT_HUB_TIMEOUT,
    DEMO_MODELS,
    ModelEntry,
    manifest_path,
)
from difffusr_cli.weights.report import Reporter

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Cache locations (read from the environment at call time, like huggingface_hub documents them)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_cache_dir() -> Path:
    """The huggingface_hub cache.

    ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``
    (``~/.cache/huggingface/hub``).
    """
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def cache_root() -> Path:
    """Where converted weights are kept.

    ``$DIFFFUSR_CACHE``, else ``<HF_HUB_CACHE>/difffusr-converted`` (so copying the Hub cache
    carries them along).
    """
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


def cached_file(repo: str, filename: str, revision: str) -> Path | None:
    """``filename`` of ``repo@revision`` in the Hub cache, None when not cached.

    Asks huggingface_hub's ``try_to_load_from_cache``; no network.
    """
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        repo, filename, cache_dir=str(hub_cache_dir()), revision=revision
    )
    return Path(found) if isinstance(found, str) else None


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


def _hub_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def _probe_hub(timeout: float) -> str | None:
    """None when a TCP connection to the Hub opens within ``timeout`` seconds, else the reason.

    The connection goes to the configured proxy if there is one. Runs in a thread so a stuck DNS
    lookup is bounded too.
    """
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
        f"{hub_cache_dir()} here, and set HF_HUB_OFFLINE=1); {_SHIPPED[entry.kind]} "
        f"{_MODEL_FLAG[entry.kind].split()[0]} {DEMO_MODELS[entry.kind]}"
    )


#: How the offline guidance names the packaged model of each kind (rgb-tiny is only a demo).
_SHIPPED = {
    "rgb": "to only try the pipeline, use the shipped demonstration model with",
    "fusion": "offline, use the shipped fusion model trained on real Sentinel-2 with",
}


#: Seconds the repository listing may take in all, retries included (``DIFFFUSR_HUB_DEADLINE``).
DEFAULT_HUB_DEADLINE = 15.0
#: Seconds huggingface_hub waits for a download's bytes to keep flowing, when
#: ``HF_HUB_DOWNLOAD_TIMEOUT`` is not set.
DEFAULT_DOWNLOAD_TIMEOUT = 30.0

#: (endpoint, repo, revision) → (commit, files) or the failure, one listing per process.
_LISTINGS: dict[tuple[str, str, str], tuple[str, tuple[str, ...]] | WeightsError] = {}


def _hub_deadline() -> float:
    try:
        return float(os.environ.get("DIFFFUSR_HUB_DEADLINE", DEFAULT_HUB_DEADLINE))
    except ValueError:
        return DEFAULT_HUB_DEADLINE


def _set_hub_timeouts() -> None:
    """Explicit huggingface_hub timeouts (seconds) unless the user set them.

    Metadata requests wait :func:`_hub_timeout`, downloads :data:`DEFAULT_DOWNLOAD_TIMEOUT` for
    bytes to arrive.
    """
    from huggingface_hub import constants

    if "HF_HUB_ETAG_TIMEOUT" not in os.environ:
        constants.HF_HUB_ETAG_TIMEOUT = int(max(1.0, _hub_timeout()))
    if "HF_HUB_DOWNLOAD_TIMEOUT" not in os.environ:
        constants.HF_HUB_DOWNLOAD_TIMEOUT = int(DEFAULT_DOWNLOAD_TIMEOUT)


def _bounded(call: Callable[[], T], deadline: float) -> T:
    """``call()`` in a worker thread, given up after ``deadline`` seconds.

    huggingface_hub retries a silent server for minutes. Its retry warnings are kept off the console
    meanwhile.

    Raises:
        TimeoutError: no result within ``deadline``.
    """
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome.append((False, exc))

    hf_logger = logging.getLogger("huggingface_hub")
    level = hf_logger.level
    hf_logger.setLevel(logging.ERROR)
    worker = threading.Thread(target=run, daemon=True, name="difffusr-hub")
    worker.start()
    worker.join(deadline)
    if not outcome:
        raise TimeoutError(f"no answer within {deadline:g} s")
    hf_logger.setLevel(level)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _snapshot_listing(entry: ModelEntry, revision: str) -> tuple[str, tuple[str, ...]] | None:
    """(commit, files) of the cached snapshot of ``revision``, None when there is none."""
    commit = _cached_commit(entry.repo, revision)
    snapshot = _repo_cache_dir(entry.repo) / "snapshots" / commit if commit else None
    if commit is None or snapshot is None or not snapshot.is_dir():
        return None
    files = tuple(
        sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    )
    return commit, files


def _hub_listing(entry: ModelEntry, revision: str) -> tuple[str, tuple[str, ...]]:
    """(commit, files) of ``revision`` on the Hub: one ``model_info`` call per process."""
    from huggingface_hub import HfApi

    key = (_hub_endpoint(), entry.repo, revision)
    cached = _LISTINGS.get(key)
    if isinstance(cached, WeightsError):
        raise WeightsError(f"model '{entry.name}': {str(cached).split(': ', 1)[1]}")
    if cached is not None:
        return cached
    api = HfApi(endpoint=_hub_endpoint(), token=_hub_token())
    deadline = _hub_deadline()
    try:
        info = _bounded(
            lambda: api.model_info(entry.repo, revision=revision, timeout=_hub_timeout()),
            deadline,
        )
    except TimeoutError:
        failure = WeightsError(
            f"model '{entry.name}': the Hub at {_hub_endpoint()} accepted the connection but did "
            "not "
            f"answer within {deadline:g} s (DIFFFUSR_HUB_DEADLINE); {_guidance(entry)}"
        )
        _LISTINGS[key] = failure
        raise failure from None
    except Exception as exc:  # noqa: BLE001 - any network-library failure becomes one line
        raise _hub_error(entry, exc, f"listing {entry.repo}@{revision}") from exc
    files = tuple(sorted(s.rfilename for s in (info.siblings or [])))
    listing = (str(info.sha or revision), files)
    _LISTINGS[key] = listing
    return listing


def _choose(
    entry: ModelEntry, revision: str, offline_reason: str | None
) -> tuple[str, str | None, tuple[str, ...] | None]:
    """(file, commit, listing) of an entry at ``revision``.

    Online the Hub's file list decides, offline the cached snapshot's tree; a pinned ``file``
    offline without a snapshot is passed on as is (huggingface_hub then says what is missing).
    ``commit``/``listing`` None: unknown.
    """
    where = f"model '{entry.name}': {entry.repo}@{revision}"
    if offline_reason is None:
        commit, files = _hub_listing(entry, revision)
    else:
        cached = _snapshot_listing(entry, revision)
        if cached is None:
            if entry.file:
                return entry.file, None, None
            raise WeightsError(
                f"model '{entry.name}': its file in {entry.repo}@{revision} is not pinned in "
                f"{manifest_path()} and must be discovered by listing the repository, but "
                f"{offline_reason} and there is no cached snapshot in {hub_cache_dir()}; "
                f"{_guidance(entry)}"
            )
        commit, files = cached
        if entry.file and entry.file not in files:
            return entry.file, commit, files  # reported by the download as missing in the snapshot
    return choose_file(entry.patterns, files, where), commit, files


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
    _set_hub_timeouts()
    filename, listed_commit, files = _choose(entry, rev, offline_reason)
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
            hf_hub_download(entry.repo, filename, tqdm_class=reporter.download_bar, **common)  # type: ignore[arg-type]
        )
    except WeightsError:
        raise
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
            f"model '{entry.name}': {where} does not exist on the Hub (file missing in that "
            "revision)"
        ) from exc
    except GatedRepoError as exc:
        raise WeightsError(
            f"model '{entry.name}': {entry.repo} is gated; accept its terms on the Hub and set "
            "HF_TOKEN"
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
        raise _hub_error(entry, exc, f"download of {where}") from exc
    commit = (
        _snapshot_commit(local, filename) or listed_commit or _cached_commit(entry.repo, rev) or rev
    )
    hparams = _hparams_path(filename)
    if entry.kind == "rgb" and hparams and (files is None or hparams in files):
        _fetch_hparams_beside(entry, hparams, common)
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


def _hparams_path(filename: str) -> str | None:
    """``<exp>/version_N/hparams.yaml`` for ``<exp>/version_N/checkpoint(s)/X.ckpt``."""
    parts = filename.split("/")
    if len(parts) < 3 or not filename.endswith(".ckpt"):
        return None
    return "/".join(parts[:-2] + ["hparams.yaml"])


def _fetch_hparams_beside(entry: ModelEntry, hparams: str, common: Mapping[str, Any]) -> None:
    """Best effort.

    Bring ``hparams`` (two folders above the ckpt) into the snapshot so the SR config comes from it;
    the embedded ``hyper_parameters`` are the fallback.
    """
    from huggingface_hub import hf_hub_download

    with contextlib.suppress(Exception):  # optional file: any failure means "use the fallback"
        hf_hub_download(entry.repo, hparams, **common)


def _hub_error(entry: ModelEntry, exc: BaseException, what: str) -> WeightsError:
    """One line for a failed Hub call.

    ``what`` names the call: ``"listing org/repo@main"``, ``"download of …"``.
    """
    from huggingface_hub.utils import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return WeightsError(
            f"model '{entry.name}': {entry.repo} is gated; accept its terms on the Hub and set "
            "HF_TOKEN"
        )
    if isinstance(exc, RevisionNotFoundError):
        return WeightsError(f"model '{entry.name}': revision not found in {entry.repo} ({what})")
    if isinstance(exc, RepositoryNotFoundError):
        return WeightsError(
            f"model '{entry.name}': repository {entry.repo} not found (or private: set HF_TOKEN)"
        )
    return WeightsError(
        f"model '{entry.name}': {what} failed ({type(exc).__name__}: {_first_line(exc)}); "
        f"{_guidance(entry)}"
    )
