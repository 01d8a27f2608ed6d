"""The weights manifest (``weights.toml``): entries, parsing and validation, defaults."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from difffusr_cli.errors import DifffusrError, WeightsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


ModelKind = Literal["rgb", "fusion"]
#: Version of the converted JSON format (``"difffusr_format"``).
FORMAT_VERSION = 1
#: Architecture name of the diffusion RGB model in manifests and converted JSON.
RGB_ARCHITECTURE = "diffusion-sr3-rrdb"
#: Seconds allowed for the Hub reachability probe (``DIFFFUSR_HUB_TIMEOUT`` overrides).
DEFAULT_HUB_TIMEOUT = 3.0

#: The difffusr_cli package folder (the manifest and packaged models live there).
PACKAGE_ROOT = Path(__file__).resolve().parent.parent

_KINDS = ("rgb", "fusion")
_SOURCES = ("hub", "package")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_MODEL_FLAG = {"rgb": "--rgb-model PATH", "fusion": "--fusion-model PATH"}
#: The models shipped in the package (weights.toml): offline use, `superres --example` and the
#: offline guidance (rgb-tiny is a demonstration; fusion-s2 is trained on real Sentinel-2).
DEMO_MODELS: dict[str, str] = {"rgb": "rgb-tiny", "fusion": "fusion-s2"}
_KIND_NAME = {"rgb": "an RGB", "fusion": "a fusion"}

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
        candidates: repository paths or globs (``*`` within a folder, ``**`` across folders), in
            order of preference, used when ``file`` is empty: the first that matches anything
            decides; among several matches of one glob see :func:`~difffusr_cli.weights.hub.rank`.
        discover: one more glob, tried after ``candidates`` (the older single-glob field).
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
    candidates: tuple[str, ...] = ()
    path: str = ""
    sha256: str = ""
    default: bool = False
    description: str = ""

    @property
    def patterns(self) -> tuple[str, ...]:
        """What to look for in the repository, best first.

        The pinned ``file`` alone, else the ``candidates`` then ``discover``.
        """
        if self.file:
            return (self.file,)
        return self.candidates + ((self.discover,) if self.discover else ())


def manifest_path() -> Path:
    """The manifest in use.

    ``$DIFFFUSR_WEIGHTS_TOML`` if set, else the packaged ``weights.toml``.
    """
    override = os.environ.get("DIFFFUSR_WEIGHTS_TOML")
    if override:
        return Path(override).expanduser()
    return PACKAGE_ROOT / "weights.toml"


_ENTRY_FIELDS = {f for f in ModelEntry.__dataclass_fields__ if f != "name"}


def _parse_entry(name: str, raw: Any, source: Path) -> ModelEntry:
    where = f"{source}: [models.{name}]"
    if not isinstance(raw, dict):
        raise WeightsError(f"{where} is not a table")
    unknown = sorted(set(raw) - _ENTRY_FIELDS)
    if unknown:
        raise WeightsError(
            f"{where}: unknown field(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(_ENTRY_FIELDS))}"
        )
    for key, value in raw.items():
        if key == "candidates":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise WeightsError(f"{where}: field candidates must be a list of paths or globs")
            continue
        expected = bool if key == "default" else str
        if not isinstance(value, expected):
            raise WeightsError(f"{where}: field {key} must be a {expected.__name__}, got {value!r}")
    fields = {**raw, "candidates": tuple(raw.get("candidates", ()))}
    entry = ModelEntry(name=name, **fields)
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
        if not entry.patterns:
            raise WeightsError(
                f"{where}: a hub entry needs file, or candidates / discover (globs) when the file "
                "is unknown"
            )
    elif not entry.path:
        raise WeightsError(f"{where}: a package entry needs path")
    return entry


def read_toml(path: Path, what: str, error: type[DifffusrError]) -> dict[str, Any]:
    """Parse the TOML file ``path``.

    ``what`` names it in messages, e.g. ``"the weights manifest"``.

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
