"""Names → local files: pull (download, verify, convert), resolve, cache status."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from difffusr_cli.errors import WeightsError
from difffusr_cli.weights.format import (
    check_loads,
    converted_intact,
    load_weights,
    save_converted,
    sha256_file,
)
from difffusr_cli.weights.hub import (
    _cached_commit,
    _choose,
    _fetch_hub_file,
    _repo_cache_dir,
    cache_root,
    cached_file,
    hub_cache_dir,
)
from difffusr_cli.weights.manifest import (
    _KIND_NAME,
    _SHA256,
    PACKAGE_ROOT,
    ModelEntry,
    ModelKind,
    load_manifest,
)
from difffusr_cli.weights.report import Reporter, StderrReporter

# ---------------------------------------------------------------------------------------------
# Names → local files


@dataclass(frozen=True)
class PullResult:
    """What :func:`pull` did.

    ``sha256_pinned`` is False when the manifest had no checksum (then ``sha256`` was computed now
    and recorded in the JSON).
    """

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


def check_architecture(entry: ModelEntry, found: str, path: Path) -> None:
    """Refuse weights whose architecture (read from their keys) is not the manifest's.

    An entry whose architecture ends in ``-auto`` (``fusion-auto``) accepts any member of its
    family: the released fusion file may be either architecture.

    Raises:
        WeightsError: ``found`` differs from ``entry.architecture``.
    """
    wanted = entry.architecture
    if not wanted or found == wanted:
        return
    if wanted.endswith("-auto") and found.startswith(wanted.removesuffix("auto")):
        return
    raise WeightsError(
        f"{path}: model '{entry.name}' should be a {wanted} network (weights.toml) but its "
        f"tensors are a {found} network"
    )


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
    reporter.note(f"{entry.name}: {hub_file.repo}@{hub_file.commit[:12]}:{hub_file.filename}")
    record = _read_record(json_path) if converted.is_file() else None
    recorded = (record or {}).get("source", {})
    pinned_digest = ""
    if entry.sha256:  # a pinned checksum is checked against the blob on every pull
        pinned_digest = _verified_blob(entry, hub_file.path, reporter)
    if (
        record is not None
        and recorded.get("blob") == blob
        and recorded.get("size") == size
        and recorded.get("sha256")
        and (not entry.sha256 or recorded["sha256"] == entry.sha256)
    ):
        if converted_intact(converted, record):
            return PullResult(
                entry.name,
                hub_file.path,
                converted,
                recorded["sha256"],
                bool(entry.sha256),
                hub_file.commit,
            )
        reporter.note(
            f"{converted}: does not match the digest recorded at its conversion; converting again"
        )
    digest = pinned_digest or _verified_blob(entry, hub_file.path, reporter)
    weights = load_weights(hub_file.path)
    if weights.kind != entry.kind:
        raise WeightsError(
            f"{hub_file.path}: model '{entry.name}' should be a {entry.kind} model but holds a "
            f"{weights.kind} model"
        )
    check_architecture(entry, weights.architecture, hub_file.path)
    check_loads(weights, hub_file.path)
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
            f"{entry.name}: sha256 {digest} of {hub_file.filename} (not pinned in the manifest; "
            f"recorded in {json_path})"
        )
    return PullResult(
        entry.name, hub_file.path, converted, digest, bool(entry.sha256), hub_file.commit
    )


def _verified_blob(entry: ModelEntry, path: Path, reporter: Reporter) -> str:
    """The sha256 of a downloaded file, checked.

    Checked against the manifest's pin, else against the name of its blob in the Hub cache
    (``blobs/<sha256>`` for LFS files).

    Raises:
        WeightsError: the file does not have the digest it should (one line naming it).
    """
    digest = sha256_file(path, reporter)
    if entry.sha256 and digest != entry.sha256:
        raise WeightsError(
            f"{path}: checksum mismatch for model '{entry.name}': expected sha256 {entry.sha256}, "
            f"got {digest}; the cached file is corrupt or the manifest is out of date: delete it "
            "and pull again"
        )
    blob_name = path.resolve().name
    if not entry.sha256 and _SHA256.match(blob_name) and blob_name != digest:
        raise WeightsError(
            f"{path}: checksum mismatch for model '{entry.name}': its Hub cache blob is named "
            f"{blob_name} but holds sha256 {digest}; the cached file is corrupt: delete it and "
            "pull again"
        )
    return digest


def _entry(name: str, manifest: Mapping[str, ModelEntry]) -> ModelEntry:
    try:
        return manifest[name]
    except KeyError:
        raise WeightsError(
            f"unknown model name {name!r}; known: {', '.join(manifest) or 'none'} (see `difffusr "
            "weights list`)"
        ) from None


def _package_file(entry: ModelEntry) -> Path:
    path = PACKAGE_ROOT / entry.path
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
        record = _read_record(path.with_suffix(".json")) or {}
        if isinstance(record.get("architecture"), str):
            check_architecture(entry, record["architecture"], path)
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
            f"{text!r} is neither a model name ({', '.join(entries) or 'none'}) nor an existing "
            "file"
        )
    entry = entries[text]
    if kind is not None and entry.kind != kind:
        raise WeightsError(
            f"model '{entry.name}' is {_KIND_NAME[entry.kind]} model, not {_KIND_NAME[kind]} model"
        )
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
            "candidates": list(entry.candidates) or None,
            "sha256": self.sha256 or None,
            "sha256_pinned": bool(entry.sha256),
            "downloaded": str(self.source_file) if self.source_file else None,
            "converted": str(self.converted) if self.converted else None,
            "description": entry.description,
        }


def _cached_status(entry: ModelEntry, revision: str | None = None) -> CachedModel:
    if entry.source == "package":
        path = PACKAGE_ROOT / entry.path
        present = path if path.is_file() else None
        return CachedModel(entry, entry.path, present, present, entry.sha256)
    rev = revision or entry.revision or "main"
    commit = _cached_commit(entry.repo, rev)
    filename = entry.file
    source_file: Path | None = None
    if commit:
        snapshot = _repo_cache_dir(entry.repo) / "snapshots" / commit
        if not filename and entry.patterns and snapshot.is_dir():
            with contextlib.suppress(WeightsError):
                filename = _choose(entry, rev, "listing the cache only")[0]
        if filename:
            source_file = cached_file(entry.repo, filename, rev)
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
    """The local file of a manifest model without downloading.

    The converted safetensors if present, else the downloaded original.

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
