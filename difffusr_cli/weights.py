"""Pretrained weights: the manifest, the Hub cache, safe loading and conversion.

- **Manifest** (:func:`load_manifest`): ``difffusr_cli/weights.toml``, one ``[models.NAME]``
  entry per model (``DIFFFUSR_WEIGHTS_TOML`` points at another file, e.g. a copy with a
  ``file`` or ``sha256`` filled in).
- **Resolution** (:func:`resolve`): a path is used as is; a name is looked up in the manifest,
  downloaded through ``huggingface_hub`` (honouring ``HF_HOME``, ``HF_HUB_CACHE``,
  ``HF_HUB_OFFLINE``, ``HF_TOKEN``, ``HF_ENDPOINT``), checked against its sha256 and converted
  once to safetensors + JSON in difffusr's cache (``$DIFFFUSR_CACHE``, default
  ``<HF_HUB_CACHE>/difffusr-converted/NAME/<commit>/``).
- **Loading** (:func:`load_weights`): Lightning ``.ckpt`` through the restricted unpickler of
  :mod:`difffusr_cli.checkpoint` (no pickled code ever runs), converted safetensors + JSON, bare
  safetensors in the official key layout (architecture inferred from names and shapes), and the
  ``weights/``-prefixed compat files.
- **Conversion** (:func:`convert`): any of those → ``NAME.safetensors`` + ``NAME.json``.

When the Hub cannot be reached and nothing is cached, the error says how to proceed within a few
seconds: reachability is probed with a short timeout before huggingface_hub (whose retries
take ~25 s) is asked anything.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import re
import socket
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from difffusr_cli.bands import BAND_NAMES, NORM_MEAN, NORM_STD, RGB
from difffusr_cli.errors import DifffusrError, OutputError, WeightsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    import torch

    from difffusr_cli.models.config import FusionConfig, SRConfig

__all__ = [
    "FORMAT_VERSION",
    "CachedModel",
    "ConsoleReporter",
    "LoadedWeights",
    "ModelEntry",
    "ModelKind",
    "PullResult",
    "Reporter",
    "StderrReporter",
    "cache_root",
    "convert",
    "default_model_name",
    "hub_cache_dir",
    "list_models",
    "load_manifest",
    "load_weights",
    "locate",
    "manifest_path",
    "pull",
    "resolve",
    "save_converted",
    "sha256_file",
]

ModelKind = Literal["rgb", "fusion"]
#: Version of the converted JSON format (``"difffusr_format"``).
FORMAT_VERSION = 1
#: Architecture name of the diffusion RGB model in manifests and converted JSON.
RGB_ARCHITECTURE = "diffusion-sr3-rrdb"
#: Seconds allowed for the Hub reachability probe (``DIFFFUSR_HUB_TIMEOUT`` overrides).
DEFAULT_HUB_TIMEOUT = 3.0

_KINDS = ("rgb", "fusion")
_SOURCES = ("hub", "package")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_MODEL_FLAG = {"rgb": "--rgb-model PATH", "fusion": "--fusion-model PATH"}
#: Packaged demonstration models (weights.toml), named in the offline guidance.
_DEMO_MODEL = {"rgb": "rgb-tiny", "fusion": "fusion-tiny"}
_KIND_NAME = {"rgb": "an RGB", "fusion": "a fusion"}


# ---------------------------------------------------------------------------------------------
# Progress reporting (the library reports; the CLI decides how it looks)


class Reporter(Protocol):
    """Where long operations report. ``note`` is a one-line message for the user;
    ``progress`` yields an ``advance(n_bytes)`` callback; ``download_bar`` is handed to
    huggingface_hub as its ``tqdm_class`` (None: huggingface_hub's own bars)."""

    def note(self, message: str) -> None: ...

    def progress(
        self, description: str, total: int | None
    ) -> contextlib.AbstractContextManager[Callable[[int], None]]: ...

    @property
    def download_bar(self) -> Callable[..., Any] | None: ...


class StderrReporter:
    """Notes on stderr, no progress bars: the default for library calls (notebooks, scripts)."""

    def note(self, message: str) -> None:
        print(message, file=sys.stderr)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        yield lambda n: None

    @property
    def download_bar(self) -> Callable[..., Any] | None:
        return None


class _RichDownloadBar:
    """The tqdm-shaped object huggingface_hub drives during a download, drawn as a task of a rich
    progress display. It implements the part of tqdm's interface that huggingface_hub's HTTP and
    Xet downloaders use (``update``, ``n``, ``total``, ``set_postfix_str``, ``refresh``, ``close``,
    context manager); everything else of tqdm is deliberately absent."""

    def __init__(
        self,
        progress: Any,
        *,
        desc: str = "download",
        total: int | None = None,
        initial: int = 0,
        **_: Any,
    ) -> None:
        self._progress = progress
        self._task = progress.add_task(desc, total=total, completed=initial)
        self.n = initial
        self._total = total

    @property
    def total(self) -> int | None:
        return self._total

    @total.setter
    def total(self, value: int | None) -> None:
        self._total = value
        self._progress.update(self._task, total=value)

    @property
    def format_dict(self) -> dict[str, Any]:
        return {"n": self.n, "total": self._total}

    def update(self, n: int = 1) -> None:
        self.n += n
        self._progress.advance(self._task, n)

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        """Speed text; the rich columns show the speed already."""

    def refresh(self) -> None:
        self._progress.refresh()

    def close(self) -> None:
        self._progress.stop_task(self._task)

    def __enter__(self) -> _RichDownloadBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ConsoleReporter:
    """Rich progress bars (download, checksum) and notes on stderr: what ``difffusr weights`` uses."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            transient=True,
        )

    def note(self, message: str) -> None:
        self._console.print(message, markup=False, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        with self._progress:
            task = self._progress.add_task(description, total=total)
            try:
                yield lambda n: self._progress.advance(task, n)
            finally:
                self._progress.remove_task(task)

    @property
    def download_bar(self) -> Callable[..., Any] | None:
        progress = self._progress

        def make_bar(**kwargs: Any) -> _RichDownloadBar:
            progress.start()
            return _RichDownloadBar(progress, **kwargs)

        return make_bar

    def close(self) -> None:
        if self._progress.live.is_started:  # stopping a display never shown prints a blank line
            self._progress.stop()


# ---------------------------------------------------------------------------------------------
# Manifest


@dataclass(frozen=True)
class ModelEntry:
    """One ``[models.NAME]`` entry of ``weights.toml``.

    Attributes:
        name: the model's name (``rgb-naip-harm``).
        kind: ``"rgb"`` (diffusion SR of B04, B03, B02) or ``"fusion"`` (the three group nets).
        source: ``"hub"`` (Hugging Face Hub) or ``"package"`` (shipped inside difffusr).
        architecture: network family (``diffusion-sr3-rrdb``, ``fusion-rrdb``, ``fusion-mtf``, or
            ``fusion-auto`` when the checkpoint decides).
        repo, revision, file: Hub coordinates. An empty ``file`` means "not known yet": the file is
            discovered by matching ``discover`` against the repository's file list (online) or the
            cached snapshot (offline).
        discover: glob over repository paths used when ``file`` is empty.
        path: file inside the package (``source = "package"``).
        sha256: expected checksum of the file, lower-case hex; empty when unknown.
        default: the model used for this kind when none is named.
        description: one line for ``difffusr weights list``.
    """

    name: str
    kind: ModelKind
    source: Literal["hub", "package"]
    architecture: str
    repo: str = ""
    revision: str = "main"
    file: str = ""
    discover: str = ""
    path: str = ""
    sha256: str = ""
    default: bool = False
    description: str = ""


def manifest_path() -> Path:
    """The manifest in use: ``$DIFFFUSR_WEIGHTS_TOML`` if set, else the packaged ``weights.toml``."""
    override = os.environ.get("DIFFFUSR_WEIGHTS_TOML")
    if override:
        return Path(override).expanduser()
    return Path(__file__).with_name("weights.toml")


_ENTRY_FIELDS = {f for f in ModelEntry.__dataclass_fields__ if f != "name"}


def _parse_entry(name: str, raw: Any, source: Path) -> ModelEntry:
    where = f"{source}: [models.{name}]"
    if not isinstance(raw, dict):
        raise WeightsError(f"{where} is not a table")
    unknown = sorted(set(raw) - _ENTRY_FIELDS)
    if unknown:
        raise WeightsError(
            f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_ENTRY_FIELDS))}"
        )
    for key, value in raw.items():
        expected = bool if key == "default" else str
        if not isinstance(value, expected):
            raise WeightsError(f"{where}: field {key} must be a {expected.__name__}, got {value!r}")
    entry = ModelEntry(name=name, **raw)
    if entry.kind not in _KINDS:
        raise WeightsError(f"{where}: kind must be one of {', '.join(_KINDS)}, got {entry.kind!r}")
    if entry.source not in _SOURCES:
        raise WeightsError(
            f"{where}: source must be one of {', '.join(_SOURCES)}, got {entry.source!r}"
        )
    if entry.sha256 and not _SHA256.match(entry.sha256):
        raise WeightsError(f"{where}: sha256 must be 64 lower-case hex digits or empty")
    if entry.source == "hub":
        if not entry.repo or "/" not in entry.repo:
            raise WeightsError(f'{where}: a hub entry needs repo = "org/name"')
        if not entry.file and not entry.discover:
            raise WeightsError(
                f"{where}: a hub entry needs file, or discover (a glob) when the file is unknown"
            )
    elif not entry.path:
        raise WeightsError(f"{where}: a package entry needs path")
    return entry


def read_toml(path: Path, what: str, error: type[DifffusrError]) -> dict[str, Any]:
    """Parse the TOML file ``path`` (``what`` names it in messages, e.g. ``"the weights manifest"``).

    Raises:
        error: the file cannot be read, or is not valid TOML (one line naming ``path``).
    """
    try:
        with open(path, "rb") as stream:
            return tomllib.load(stream)
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML ({exc})") from exc


def load_manifest(path: str | os.PathLike[str] | None = None) -> dict[str, ModelEntry]:
    """Read and validate a manifest (default: :func:`manifest_path`), name → entry.

    Raises:
        WeightsError: unreadable TOML, unknown or mistyped fields, two defaults for one kind.
    """
    source = Path(path) if path is not None else manifest_path()
    data = read_toml(source, "the weights manifest", WeightsError)
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise WeightsError(f"{source}: [models] must be a table of [models.NAME] entries")
    entries = {name: _parse_entry(name, raw, source) for name, raw in models.items()}
    for kind in _KINDS:
        defaults = [e.name for e in entries.values() if e.kind == kind and e.default]
        if len(defaults) > 1:
            raise WeightsError(
                f"{source}: more than one default {kind} model ({', '.join(defaults)})"
            )
    return entries


def default_model_name(kind: ModelKind, manifest: Mapping[str, ModelEntry] | None = None) -> str:
    """The manifest's default model name for ``kind``.

    Raises:
        WeightsError: the manifest names no default for ``kind``.
    """
    entries = manifest if manifest is not None else load_manifest()
    for entry in entries.values():
        if entry.kind == kind and entry.default:
            return entry.name
    raise WeightsError(
        f"{manifest_path()}: no default {kind} model; name one, or give {_MODEL_FLAG[kind]}"
    )


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


# ---------------------------------------------------------------------------------------------
# Checksums


def sha256_file(path: str | os.PathLike[str], reporter: Reporter | None = None) -> str:
    """SHA-256 of a file, streamed in 8 MiB chunks (lower-case hex)."""
    source = Path(path)
    digest = hashlib.sha256()
    total = source.stat().st_size
    progress = (reporter or StderrReporter()).progress(f"sha256 {source.name}", total)
    with progress as advance, open(source, "rb") as stream:
        for chunk in iter(lambda: stream.read(8 << 20), b""):
            digest.update(chunk)
            advance(len(chunk))
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class LoadedWeights:
    """Weights read from any supported file, with what is needed to build the network.

    Attributes:
        kind: ``"rgb"`` or ``"fusion"``.
        architecture: ``diffusion-sr3-rrdb``, ``fusion-rrdb`` or ``fusion-mtf``.
        config: :class:`~difffusr_cli.models.config.SRConfig` or ``FusionConfig``.
        state_dict: official key names → CPU tensors (float32 weights, int64/int32 buffers).
        meta: the converted-format JSON object (``difffusr_format``, ``kind``, ``architecture``,
            ``config``, ``bands``, ``normalisation``, ``source``, ``config_source``).
    """

    kind: ModelKind
    architecture: str
    config: SRConfig | FusionConfig
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    meta: dict[str, Any] = field(repr=False)


def _architecture(kind: str, config: Any) -> str:
    return RGB_ARCHITECTURE if kind == "rgb" else f"fusion-{config.arch}"


def _normalisation(kind: str) -> dict[str, Any]:
    if kind == "rgb":
        return {
            "input": "reflectance",
            "network_input": "(reflectance - 0.5) / 0.5, network output mapped back by x * 0.5 + 0.5",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
        }
    return {
        "input": "reflectance",
        "network_input": "per-band z-score (reflectance - mean) / std; SR RGB guidance uses the B04, B03, B02 entries",
        "bands": list(BAND_NAMES),
        "mean": list(NORM_MEAN),
        "std": list(NORM_STD),
    }


def _build_meta(
    kind: str, config: Any, source: Mapping[str, Any], config_source: str
) -> dict[str, Any]:
    return {
        "difffusr_format": FORMAT_VERSION,
        "kind": kind,
        "architecture": _architecture(kind, config),
        "config": config.to_dict(),
        "bands": list(RGB) if kind == "rgb" else list(BAND_NAMES),
        "normalisation": _normalisation(kind),
        "source": dict(source),
        "config_source": config_source,
    }


def _tensors_only(mapping: Mapping[Any, Any], source: Path) -> dict[str, torch.Tensor]:
    import torch

    state = {k: v for k, v in mapping.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not state:
        raise WeightsError(f"{source}: holds no tensors under state_dict")
    return state


def _config_for(
    kind: str,
    state: Mapping[str, torch.Tensor],
    hparams: Mapping[str, Any] | None,
    hparams_from: str,
    source: Path,
) -> tuple[Any, str]:
    """The architecture config of a state dict: from the hparams mapping when given (SR), else
    inferred from tensor names and shapes. Errors name ``source``."""
    from difffusr_cli.models.config import MoCoConfig, SRConfig
    from difffusr_cli.models.infer import infer_fusion_config, infer_sr_config

    try:
        if kind == "fusion":
            return infer_fusion_config(dict(state)), "inferred from tensor names and shapes"
        if hparams:
            # The MoCo queue length is not in hparams (hard-wired upstream): the buffer says it.
            queue = state.get("E.queue")
            moco = (
                MoCoConfig(K=int(queue.shape[1]))
                if queue is not None and queue.dim() == 2
                else None
            )
            try:
                return SRConfig.from_hparams(dict(hparams), moco=moco), hparams_from
            except WeightsError as exc:
                raise WeightsError(f"{hparams_from}: {exc}") from None
        return infer_sr_config(dict(state)), "inferred from tensor names and shapes"
    except WeightsError as exc:
        message = str(exc)
        raise WeightsError(
            message if message.startswith(str(source)) else f"{source}: {message}"
        ) from None


def _detect_kind(state: Mapping[str, torch.Tensor], source: Path) -> ModelKind:
    from difffusr_cli.models.infer import detect_kind

    try:
        return detect_kind(dict(state))
    except WeightsError as exc:
        raise WeightsError(f"{source}: {exc}") from None


def _load_pickled(source: Path) -> LoadedWeights:
    from difffusr_cli.checkpoint import (
        find_hparams_yaml,
        read_hparams_yaml,
        read_lightning_checkpoint,
    )

    # Only the state dict's tensors are read: a training checkpoint's optimizer state (twice the
    # size of the weights) never reaches memory.
    checkpoint = read_lightning_checkpoint(source, tensors_under={"state_dict"})
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        state = _tensors_only(checkpoint["state_dict"], source)
    elif isinstance(checkpoint, Mapping):
        state = _tensors_only(checkpoint, source)  # a bare torch.save(state_dict)
    else:
        raise WeightsError(
            f"{source}: holds a {type(checkpoint).__name__}, expected a checkpoint dict with a state_dict"
        )
    kind = _detect_kind(state, source)
    hparams: Mapping[str, Any] | None = None
    hparams_from = ""
    if kind == "rgb":
        hparams_file = find_hparams_yaml(source)
        if hparams_file is not None:
            hparams, hparams_from = (
                read_hparams_yaml(hparams_file),
                f"hparams.yaml ({hparams_file})",
            )
        elif isinstance(checkpoint.get("hyper_parameters"), Mapping):
            hparams, hparams_from = checkpoint["hyper_parameters"], "checkpoint hyper_parameters"
    config, config_source = _config_for(kind, state, hparams, hparams_from, source)
    meta = _build_meta(kind, config, {"file": str(source)}, config_source)
    return LoadedWeights(kind, meta["architecture"], config, state, meta)


def _meta_from_json(text: str, origin: str) -> dict[str, Any] | None:
    """The converted-format JSON in ``text``, None when it is some other JSON (e.g. compat files)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise WeightsError(f"{origin}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "difffusr_format" not in data:
        return None
    if data["difffusr_format"] != FORMAT_VERSION:
        raise WeightsError(
            f"{origin}: difffusr_format {data['difffusr_format']!r} is not supported by this difffusr "
            f"(it reads format {FORMAT_VERSION}); convert the original checkpoint again"
        )
    if data.get("kind") not in _KINDS or not isinstance(data.get("config"), dict):
        raise WeightsError(f"{origin}: converted-format JSON without a valid kind and config")
    return data


def _load_safetensors(source: Path) -> LoadedWeights:
    from difffusr_cli.checkpoint import read_safetensors
    from difffusr_cli.models.config import FusionConfig, SRConfig

    tensors, header = read_safetensors(source)
    if any(k.startswith("weights/") for k in tensors):
        # compat test files: weights under `weights/`, test vectors under `vec/`.
        tensors = {k[len("weights/") :]: v for k, v in tensors.items() if k.startswith("weights/")}
    if not tensors:
        raise WeightsError(f"{source}: holds no tensors")
    meta: dict[str, Any] | None = None
    sidecar = source.with_suffix(".json")
    if sidecar.is_file():
        meta = _meta_from_json(sidecar.read_text(encoding="utf-8"), str(sidecar))
    if meta is None and "difffusr" in header:
        meta = _meta_from_json(header["difffusr"], f"{source} (header metadata)")
    if meta is not None:
        kind = meta["kind"]
        try:
            config = (
                SRConfig.from_dict(meta["config"])
                if kind == "rgb"
                else FusionConfig.from_dict(meta["config"])
            )
        except (WeightsError, KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{source}: the config in its JSON is not valid ({exc})") from None
        meta = {**meta, "architecture": _architecture(kind, config)}
        if meta.get("export"):  # an inference-only / fp16 export of `save_network`
            tensors = _complete_export(tensors, kind, config)
        return LoadedWeights(kind, meta["architecture"], config, tensors, meta)
    kind = _detect_kind(tensors, source)
    config, config_source = _config_for(kind, tensors, None, "", source)
    meta = _build_meta(kind, config, {"file": str(source)}, config_source)
    return LoadedWeights(kind, meta["architecture"], config, tensors, meta)


def load_weights(path: str | os.PathLike[str]) -> LoadedWeights:
    """Read weights from a file, without executing code from it.

    Accepts a Lightning/``torch.save`` checkpoint (``.ckpt``, ``.pt``, ``.pth``: restricted
    unpickler), a converted ``.safetensors`` with its ``.json`` beside it (or the JSON in the
    safetensors header), a bare ``.safetensors`` in the official key layout, and the compat files
    whose weights sit under ``weights/``. For SR checkpoints the config comes from
    ``hparams.yaml`` (beside the file or two folders up), else the embedded
    ``hyper_parameters``, else the tensor shapes; fusion configs always from the shapes.

    Raises:
        UnsafeCheckpointError: the pickle references code outside the allow-list.
        WeightsError: missing file, unknown format or layout.
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise WeightsError(f"{source}: no such weights file")
    with open(source, "rb") as stream:
        head = stream.read(16)
    if source.suffix == ".safetensors":
        return _load_safetensors(source)
    if (
        head.startswith(b"PK\x03\x04")
        or head[:1] == b"\x80"
        or source.suffix in (".ckpt", ".pt", ".pth", ".bin")
    ):
        return _load_pickled(source)
    if len(head) >= 9 and head[8:9] == b"{":
        return _load_safetensors(
            source
        )  # safetensors without the suffix: 8-byte length + JSON header
    raise WeightsError(
        f"{source}: unknown weights format; expected .ckpt (Lightning), .pt/.pth or .safetensors"
    )


# ---------------------------------------------------------------------------------------------
# Writing the converted format


def save_converted(
    weights: LoadedWeights,
    destination: str | os.PathLike[str],
    *,
    source: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``destination`` (``NAME.safetensors``) and ``NAME.json`` beside it.

    ``source`` replaces the JSON's ``source`` record (file, sha256, hub repo/revision/commit).
    The JSON is also stored in the safetensors header (key ``difffusr``) so a lone copy of the
    ``.safetensors`` file still describes itself.
    """
    from difffusr_cli.checkpoint import write_json, write_safetensors

    target = Path(destination)
    meta = dict(weights.meta)
    if source is not None:
        meta["source"] = dict(source)
    write_safetensors(
        target, weights.state_dict, {"difffusr": json.dumps(meta, sort_keys=False), "format": "pt"}
    )
    write_json(target.with_suffix(".json"), meta)
    return target


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    reporter: Reporter | None = None,
) -> Path:
    """Convert any readable weights file to ``dst`` (``.safetensors``) + the JSON beside it.

    ``dst`` may be an existing folder (the file is named after ``src``). The source's sha256 is
    recorded in the JSON.

    Raises:
        OutputError: ``dst`` exists (without ``overwrite``) or does not end in ``.safetensors``.
        WeightsError / UnsafeCheckpointError: as :func:`load_weights`.
    """
    source = Path(src).expanduser()
    target = Path(dst).expanduser()
    if target.is_dir():
        target = target / f"{source.stem}.safetensors"
    if target.suffix != ".safetensors":
        raise OutputError(
            f"{target}: the converted file must end in .safetensors (its JSON goes beside it)"
        )
    if not overwrite and (target.exists() or target.with_suffix(".json").exists()):
        raise OutputError(f"{target}: exists; pass --overwrite to replace it")
    if target.resolve() == source.resolve():
        raise OutputError(f"{target}: is the source file itself; choose another destination")
    if not target.parent.is_dir():
        raise OutputError(f"{target.parent}: no such folder")
    weights = load_weights(source)
    record = {"file": source.name, "sha256": sha256_file(source, reporter)}
    return save_converted(weights, target, source=record)


# ---------------------------------------------------------------------------------------------
# Saving trained networks (added for `difffusr train`): checkpoints and compact exports

#: What an inference-only RGB export leaves out: the trained (non-EMA) U-Net and the MoCo key
#: encoder and queue. Inference uses only the EMA U-Net, the RRDB encoder and the query encoder.
INFERENCE_ONLY_DROPS: tuple[str, ...] = ("model.", "E.encoder_k.", "E.queue", "E.queue_ptr")


def save_network(
    state_dict: Mapping[str, torch.Tensor],
    kind: ModelKind,
    config: SRConfig | FusionConfig,
    destination: str | os.PathLike[str],
    *,
    source: Mapping[str, Any],
    inference_only: bool = False,
    half: bool = False,
) -> Path:
    """Write a network's ``state_dict`` in the converted format (``NAME.safetensors`` + ``NAME.json``).

    Args:
        state_dict: official key layout (``DiffusionSR`` / ``FusionNetwork`` ``state_dict()``).
        kind, config: ``"rgb"`` with an ``SRConfig`` or ``"fusion"`` with a ``FusionConfig``.
        destination: the ``.safetensors`` path.
        source: the JSON's ``source`` record (e.g. the training run, step, data).
        inference_only: RGB only — leave out :data:`INFERENCE_ONLY_DROPS` (about half the
            tensors); :func:`load_weights` rebuilds them (``model.`` ← ``ema.``, key encoder ←
            query encoder, a fresh queue), so the file still loads everywhere and can seed
            fine-tuning.
        half: store floating-point weights as float16 (the schedule tables ``diffusion.*`` stay
            float32: sampling needs them exact); loading casts back to float32.

    The JSON records what was done under ``"export"``.
    """
    tensors = {k: v.detach().cpu() for k, v in state_dict.items()}
    meta = _build_meta(kind, config, source, "written by difffusr train")
    export: dict[str, Any] = {}
    if inference_only and kind == "rgb":
        tensors = {k: v for k, v in tensors.items() if not k.startswith(INFERENCE_ONLY_DROPS)}
        export["inference_only"] = True
        export["dropped"] = list(INFERENCE_ONLY_DROPS)
    if half:
        tensors = {
            k: v.half() if v.is_floating_point() and not k.startswith("diffusion.") else v
            for k, v in tensors.items()
        }
        export["dtype"] = "float16"
    if export:
        meta["export"] = export
    weights = LoadedWeights(kind, meta["architecture"], config, tensors, meta)
    return save_converted(weights, destination)


def _complete_export(
    tensors: Mapping[str, torch.Tensor], kind: str, config: Any
) -> dict[str, torch.Tensor]:
    """The full official state dict of a :func:`save_network` export: float32, dropped parts rebuilt."""
    import torch

    full = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    if kind != "rgb":
        return full
    for key in [k for k in full if k.startswith("ema.")]:
        full.setdefault("model." + key[len("ema.") :], full[key].clone())
    for key in [k for k in full if k.startswith("E.encoder_q.")]:
        full.setdefault("E.encoder_k." + key[len("E.encoder_q.") :], full[key].clone())
    if "E.queue" not in full:
        # any unit-norm keys do (only training reads the queue); seeded for reproducibility
        queue = torch.randn(config.moco.dim, config.moco.K, generator=torch.Generator().manual_seed(0))
        full["E.queue"] = torch.nn.functional.normalize(queue, dim=0)
        full["E.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return full


# ---------------------------------------------------------------------------------------------
# Names → local files


@dataclass(frozen=True)
class PullResult:
    """What :func:`pull` did. ``sha256_pinned`` is False when the manifest had no checksum
    (then ``sha256`` was computed now and recorded in the JSON)."""

    name: str
    source_file: Path
    converted: Path
    sha256: str
    sha256_pinned: bool
    commit: str


def _converted_dir(entry: ModelEntry, commit: str) -> Path:
    return cache_root() / entry.name / commit


def _read_record(json_path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _ensure_converted(entry: ModelEntry, revision: str | None, reporter: Reporter) -> PullResult:
    hub_file = _fetch_hub_file(entry, revision, reporter)
    out_dir = _converted_dir(entry, hub_file.commit)
    converted = out_dir / f"{entry.name}.safetensors"
    json_path = converted.with_suffix(".json")
    resolved = hub_file.path.resolve()
    size = resolved.stat().st_size
    # Recorded relative to the Hub cache, so a cache copied to another place keeps its conversions.
    try:
        blob = resolved.relative_to(hub_cache_dir().resolve()).as_posix()
    except ValueError:
        blob = str(resolved)
    record = _read_record(json_path) if converted.is_file() else None
    recorded = (record or {}).get("source", {})
    if (
        recorded.get("blob") == blob
        and recorded.get("size") == size
        and recorded.get("sha256")
        and (not entry.sha256 or recorded["sha256"] == entry.sha256)
    ):
        return PullResult(
            entry.name,
            hub_file.path,
            converted,
            recorded["sha256"],
            bool(entry.sha256),
            hub_file.commit,
        )
    digest = sha256_file(hub_file.path, reporter)
    if entry.sha256 and digest != entry.sha256:
        raise WeightsError(
            f"{hub_file.path}: checksum mismatch for model '{entry.name}': expected sha256 {entry.sha256}, got {digest}; "
            f"the cached file is corrupt or the manifest is out of date: delete it and pull again"
        )
    weights = load_weights(hub_file.path)
    if weights.kind != entry.kind:
        raise WeightsError(
            f"{hub_file.path}: model '{entry.name}' should be a {entry.kind} model but holds a {weights.kind} model"
        )
    save_converted(
        weights,
        converted,
        source={
            "file": hub_file.filename,
            "sha256": digest,
            "sha256_pinned": bool(entry.sha256),
            "repo": hub_file.repo,
            "revision": hub_file.revision,
            "commit": hub_file.commit,
            "blob": blob,
            "size": size,
        },
    )
    if not entry.sha256:
        reporter.note(
            f"{entry.name}: sha256 {digest} of {hub_file.filename} (not pinned in the manifest; recorded in {json_path})"
        )
    return PullResult(
        entry.name, hub_file.path, converted, digest, bool(entry.sha256), hub_file.commit
    )


def _entry(name: str, manifest: Mapping[str, ModelEntry]) -> ModelEntry:
    try:
        return manifest[name]
    except KeyError:
        raise WeightsError(
            f"unknown model name {name!r}; known: {', '.join(manifest) or 'none'} (see `difffusr weights list`)"
        ) from None


def _package_file(entry: ModelEntry) -> Path:
    path = Path(__file__).parent / entry.path
    if not path.is_file():
        raise WeightsError(
            f"model '{entry.name}': packaged file {path} is missing; reinstall difffusr"
        )
    return path


def pull(
    name: str,
    *,
    revision: str | None = None,
    reporter: Reporter | None = None,
    manifest: Mapping[str, ModelEntry] | None = None,
) -> PullResult:
    """Download (or find cached), verify and convert a manifest model.

    Raises:
        WeightsError: unknown name, Hub unreachable with nothing cached, missing file, checksum
            mismatch, unreadable checkpoint.
    """
    entries = manifest if manifest is not None else load_manifest()
    entry = _entry(name, entries)
    if entry.source == "package":
        path = _package_file(entry)
        return PullResult(entry.name, path, path, entry.sha256, bool(entry.sha256), "")
    return _ensure_converted(entry, revision, reporter or StderrReporter())


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text
        or "/" in text
        or text.startswith(".")
        or Path(text).suffix in (".ckpt", ".pt", ".pth", ".safetensors")
    )


def resolve(
    name_or_path: str | os.PathLike[str],
    kind: ModelKind | None = None,
    *,
    revision: str | None = None,
    reporter: Reporter | None = None,
    manifest: Mapping[str, ModelEntry] | None = None,
) -> Path:
    """A local weights file for a manifest name or a path.

    A path (``os.PathLike``, or a string that is not a manifest name) is returned as is when it
    exists. A name is downloaded if needed, verified and converted (see :func:`pull`); the
    converted ``.safetensors`` is returned.

    Raises:
        WeightsError: missing path, unknown name, a name of the other ``kind``, or any
            :func:`pull` failure.
    """
    entries = manifest if manifest is not None else load_manifest()
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or text not in entries:
        path = Path(text).expanduser()
        if path.is_file():
            return path
        if path.exists():
            raise WeightsError(f"{path}: is not a file; give a .ckpt or .safetensors weights file")
        if _looks_like_path(text):
            raise WeightsError(f"{path}: no such weights file")
        raise WeightsError(
            f"{text!r} is neither a model name ({', '.join(entries) or 'none'}) nor an existing file"
        )
    entry = entries[text]
    if kind is not None and entry.kind != kind:
        raise WeightsError(f"model '{entry.name}' is {_KIND_NAME[entry.kind]} model, not {_KIND_NAME[kind]} model")
    return pull(entry.name, revision=revision, reporter=reporter, manifest=entries).converted


# ---------------------------------------------------------------------------------------------
# What is cached


@dataclass(frozen=True)
class CachedModel:
    """A manifest entry and what of it is on this machine."""

    entry: ModelEntry
    file: str  # the pinned file, or the one discovered in the cache ("" if unknown)
    source_file: Path | None  # the downloaded file in the Hub cache
    converted: Path | None  # the converted safetensors in difffusr's cache
    sha256: str  # pinned or recorded ("" if neither)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able record (``difffusr weights list --json``)."""
        entry = self.entry
        return {
            "name": entry.name,
            "kind": entry.kind,
            "default": entry.default,
            "architecture": entry.architecture,
            "source": entry.source,
            "repo": entry.repo or None,
            "revision": entry.revision or None,
            "file": self.file or None,
            "discover": entry.discover or None,
            "sha256": self.sha256 or None,
            "sha256_pinned": bool(entry.sha256),
            "downloaded": str(self.source_file) if self.source_file else None,
            "converted": str(self.converted) if self.converted else None,
            "description": entry.description,
        }


def _cached_status(entry: ModelEntry, revision: str | None = None) -> CachedModel:
    if entry.source == "package":
        path = Path(__file__).parent / entry.path
        present = path if path.is_file() else None
        return CachedModel(entry, entry.path, present, present, entry.sha256)
    rev = revision or entry.revision or "main"
    commit = _cached_commit(entry.repo, rev)
    filename = entry.file
    source_file: Path | None = None
    if commit:
        snapshot = _repo_cache_dir(entry.repo) / "snapshots" / commit
        if not filename and entry.discover and snapshot.is_dir():
            with contextlib.suppress(WeightsError):
                filename = _discover_file(entry, rev, offline_reason="listing the cache only")
        if filename and (snapshot / filename).is_file():
            source_file = snapshot / filename
    converted: Path | None = None
    sha = entry.sha256
    if commit:
        candidate = _converted_dir(entry, commit) / f"{entry.name}.safetensors"
        if candidate.is_file():
            converted = candidate
            sha = sha or (_read_record(candidate.with_suffix(".json")) or {}).get("source", {}).get(
                "sha256", ""
            )
    return CachedModel(entry, filename, source_file, converted, sha)


def list_models(manifest: Mapping[str, ModelEntry] | None = None) -> list[CachedModel]:
    """Every manifest entry with its cache status (no network access)."""
    entries = manifest if manifest is not None else load_manifest()
    return [_cached_status(entry) for entry in entries.values()]


def locate(
    name: str, *, revision: str | None = None, manifest: Mapping[str, ModelEntry] | None = None
) -> Path:
    """The local file of a manifest model without downloading: the converted safetensors if
    present, else the downloaded original.

    Raises:
        WeightsError: unknown name, or nothing of it on this machine.
    """
    entries = manifest if manifest is not None else load_manifest()
    status = _cached_status(_entry(name, entries), revision)
    if status.converted is not None:
        return status.converted
    if status.source_file is not None:
        return status.source_file
    raise WeightsError(
        f"model '{name}' is not on this machine (looked in {hub_cache_dir()} and {cache_root()}); "
        f"run `difffusr weights pull {name}`"
    )
