"""Reading checkpoint files without running code from them.

Three formats:

- **PyTorch Lightning ``.ckpt``** (a ``torch.save`` zip archive): unpickled by
  :class:`RestrictedUnpickler`, whose allow-list names every global a checkpoint may reference.
  The allowed names map to functions *defined here* (tensor rebuilding, plain-data stand-ins for
  config classes), never to the objects the pickle asks for; any other name raises
  :class:`~difffusr_cli.errors.UnsafeCheckpointError` before anything is imported or called.
  ``torch.load(weights_only=True)`` cannot open the official files: their hyper-parameters are
  pickled ``easydict.EasyDict`` objects, which that loader refuses even when allow-listed.
- **``hparams.yaml``** written by Lightning: every nested mapping carries the tag
  ``!!python/object/new:easydict.EasyDict``; :func:`read_hparams_yaml` keeps the data
  (``dictitems``) and constructs no Python objects.
- **safetensors**: :func:`read_safetensors` / :func:`write_safetensors` (the converted format),
  with the string metadata of the safetensors header.

This module knows file formats only; what the tensors mean is decided in ``weights.py``.
"""

from __future__ import annotations

import _compat_pickle
import io
import json
import os
import pickle
import tarfile
import tempfile
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml

from difffusr_cli.errors import UnsafeCheckpointError, WeightsError

__all__ = [
    "ALLOWED_GLOBALS",
    "ConfigDict",
    "RestrictedUnpickler",
    "find_hparams_yaml",
    "read_hparams_yaml",
    "read_lightning_checkpoint",
    "read_safetensors",
    "write_json",
    "write_safetensors",
]


class ConfigDict(dict):
    """Plain-data stand-in for the config classes checkpoints pickle (``easydict.EasyDict``,
    Lightning's ``AttributeDict``, ``argparse.Namespace``).

    It is a ``dict`` and nothing more: the pickled object's items become its items, and the state
    the pickle restores with BUILD (EasyDict repeats its items there; a Namespace keeps its
    fields there) is merged into the items instead of becoming attributes.
    """

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:
            # (dict state, slot state) form; slots of a mapping class carry no config data.
            state = state[0]
        if isinstance(state, Mapping):
            for key, value in state.items():
                self.setdefault(key, value)


@dataclass(frozen=True)
class _StorageType:
    """What a pickled ``torch.<Type>Storage`` global stands for: the element dtype."""

    name: str
    dtype: torch.dtype


@dataclass(frozen=True)
class _TensorClassMarker:
    """What a pickled ``torch.Tensor`` / ``torch.nn.Parameter`` class reference stands for."""

    name: str


_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}


def _as_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, (tuple, list, torch.Size)) and all(type(v) is int for v in value):
        return tuple(value)
    raise WeightsError(f"malformed tensor record in checkpoint: {what} is {value!r}")


@dataclass(frozen=True)
class _StorageRef:
    """A tensor storage the pickle refers to: the archive entry ``data/<key>`` holding ``numel``
    elements of ``dtype``. Read only if a tensor that is kept needs it.
    """

    key: str
    dtype: torch.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """A tensor record, validated against its storage; becomes a tensor in :func:`_materialize`."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: a checked record of a strided view.

    Hooks and metadata are dropped (a state dict has neither).
    """
    if not isinstance(storage, _StorageRef):
        raise WeightsError(
            "malformed tensor record in checkpoint: its storage is not a stored blob"
        )
    if type(storage_offset) is not int or storage_offset < 0:
        raise WeightsError(
            f"malformed tensor record in checkpoint: storage offset {storage_offset!r}"
        )
    shape = _as_int_tuple(size, "size")
    strides = _as_int_tuple(stride, "stride")
    if len(shape) != len(strides) or any(s < 0 for s in shape + strides):
        raise WeightsError(
            f"malformed tensor record in checkpoint: size {shape} with stride {strides}"
        )
    # Bounds check here, before any byte is read: the last element reached must lie inside the
    # storage (as_strided on a CPU tensor does not check every layout).
    if all(s > 0 for s in shape):
        last = storage_offset + sum((n - 1) * st for n, st in zip(shape, strides, strict=True))
        if last >= storage.numel:
            raise WeightsError(
                f"malformed tensor record in checkpoint: a {shape} tensor reaches element {last} "
                f"of a storage holding {storage.numel}"
            )
    return _TensorRef(storage, storage_offset, shape, strides)


def _rebuild_parameter(
    data: Any, requires_grad: Any = False, backward_hooks: Any = None, *rest: Any
) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter(_with_state)``: the plain tensor."""
    if not isinstance(data, _TensorRef):
        raise WeightsError("malformed parameter record in checkpoint: its data is not a tensor")
    return data


def _rebuild_from_type(func: Any, new_type: Any, args: Any, state: Any = None) -> _TensorRef:
    """Stand-in for ``torch._tensor._rebuild_from_type_v2``: rebuild with an allowed function,
    keep the plain tensor (subclass and attribute state are not data we need).
    """
    if func not in (_rebuild_tensor, _rebuild_parameter) or not isinstance(
        new_type, _TensorClassMarker
    ):
        raise WeightsError(
            "malformed tensor record in checkpoint: unexpected rebuild function or tensor type"
        )
    if not isinstance(args, tuple):
        raise WeightsError(
            "malformed tensor record in checkpoint: rebuild arguments are not a tuple"
        )
    return func(*args)


#: Bytes an unpickled ``bytearray(n)`` may allocate; set per file by :class:`RestrictedUnpickler`
#: (a pickle cannot describe more data than the file holds).
_BYTEARRAY_BUDGET: list[int] = [0]


def _bounded_bytearray(*args: Any) -> bytearray:
    """``bytearray`` for the unpickler: a length argument larger than the file is refused before
    anything is allocated (``bytearray(2**31)`` in a 61-byte pickle).
    """
    size = args[0] if args else 0
    if type(size) is int and size > _BYTEARRAY_BUDGET[0]:
        raise WeightsError(
            f"the pickle asks for a bytearray of {size} bytes, more than the file could hold "
            f"({_BYTEARRAY_BUDGET[0]} bytes)"
        )
    return bytearray(*args)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("collections", "Counter"): Counter,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
        ("torch", "Tensor"): _TensorClassMarker("torch.Tensor"),
        ("torch.nn.parameter", "Parameter"): _TensorClassMarker("torch.nn.Parameter"),
        # Config classes: plain-data stand-ins, the real classes are never imported.
        ("easydict", "EasyDict"): ConfigDict,
        ("pytorch_lightning.utilities.parsing", "AttributeDict"): ConfigDict,
        ("lightning_fabric.utilities.data", "AttributeDict"): ConfigDict,
        ("lightning.fabric.utilities.data", "AttributeDict"): ConfigDict,
        ("argparse", "Namespace"): ConfigDict,
        # Pure data containers.
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): _bounded_bytearray,
        ("builtins", "complex"): complex,
    }
    for name, dtype in _STORAGE_DTYPES.items():
        allowed[("torch", name)] = _StorageType(name, dtype)
    return allowed


#: ``(module, name)`` → the object the restricted unpickler substitutes for that global.
ALLOWED_GLOBALS: Mapping[tuple[str, str], Any] = _allowed_globals()


def _blob_reader_for(
    archive: zipfile.ZipFile | None, prefix: str, source: Path
) -> Callable[[str, torch.dtype, int], torch.Tensor]:
    """A function loading ``<prefix>data/<key>`` of a torch zip archive as a 1-D tensor."""

    def read_blob(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        if archive is None:
            raise WeightsError(
                f"{source}: the pickle refers to tensor storage, but the file is not a torch zip "
                "archive "
                "(the legacy pre-1.6 torch.save format is not supported)"
            )
        entry = f"{prefix}data/{key}"
        try:
            info = archive.getinfo(entry)
        except KeyError:
            raise WeightsError(
                f"{source}: the checkpoint has no entry {entry} for a tensor it lists"
            ) from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        nbytes = numel * itemsize
        if info.file_size < nbytes:
            raise WeightsError(
                f"{source}: entry {entry} holds {info.file_size} bytes, the pickle expects {nbytes}"
            )
        if nbytes > _inflated_limit(info, source):
            raise WeightsError(
                f"{source}: entry {entry} claims {nbytes} bytes, more than the file could describe "
                f"({info.compress_size} bytes stored); refused before allocating"
            )
        buffer = torch.empty(nbytes, dtype=torch.uint8)
        with archive.open(info) as stream:
            view = memoryview(buffer.numpy())
            filled = 0
            while filled < nbytes:
                got = stream.readinto(view[filled:])
                if not got:
                    raise WeightsError(f"{source}: entry {entry} ended early")
                filled += got
        return buffer.view(dtype) if nbytes else torch.empty(0, dtype=dtype)

    return read_blob


#: How many times its stored size a compressed archive entry may inflate to (torch.save stores
#: entries uncompressed; legitimate compressed copies stay far below this).
MAX_INFLATION = 8


def _inflated_limit(info: zipfile.ZipInfo, source: Path) -> int:
    """Bytes an archive entry may yield: its stored size, or (compressed) ``MAX_INFLATION`` times
    it, never more than ``MAX_INFLATION`` times the whole file (bytes).
    """
    if info.compress_type == zipfile.ZIP_STORED:
        return min(info.compress_size, source.stat().st_size)
    return MAX_INFLATION * min(info.compress_size, source.stat().st_size) + (1 << 20)


def _read_capped(archive: zipfile.ZipFile, name: str, source: Path) -> bytes:
    """The bytes of archive entry ``name``, refusing (before they pile up) more than
    :func:`_inflated_limit` allows: a deflate-bombed ``data.pkl`` stops at the cap.
    """
    info = archive.getinfo(name)
    limit = _inflated_limit(info, source)
    if info.file_size > limit:
        raise WeightsError(
            f"{source}: entry {name} claims {info.file_size} bytes from {info.compress_size} "
            "stored; "
            "refused (decompression bomb)"
        )
    chunks: list[bytes] = []
    total = 0
    with archive.open(info) as stream:
        while chunk := stream.read(1 << 20):
            total += len(chunk)
            if total > limit:
                raise WeightsError(
                    f"{source}: entry {name} inflates past {limit} bytes; refused (decompression "
                    "bomb)"
                )
            chunks.append(chunk)
    return b"".join(chunks)


def _load_build(unpickler: RestrictedUnpickler) -> None:
    """BUILD opcode: only :class:`ConfigDict` takes the state; for every other object (tensors,
    OrderedDicts) the state is dropped, so no ``__setstate__`` of a library class ever runs.
    """
    state = unpickler.stack.pop()
    target = unpickler.stack[-1]
    if isinstance(target, ConfigDict):
        target.__setstate__(state)


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that resolves globals only through :data:`ALLOWED_GLOBALS`.

    Tensor storages (persistent ids ``("storage", <StorageType>, key, location, numel)``) and
    tensors come out as records (``_StorageRef``, ``_TensorRef``); :func:`_materialize` reads the
    bytes afterwards, only for the tensors wanted. It subclasses the pure-Python unpickler so that
    the BUILD opcode, too, is under our control (see :func:`_load_build`); the pickle of a
    checkpoint is small (the tensor bytes live elsewhere in the archive), so speed does not suffer.
    """

    dispatch: ClassVar[dict[int, Callable[..., Any]]] = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _load_build

    def __init__(self, file: io.BufferedIOBase | io.BytesIO, *, source: Path) -> None:
        super().__init__(file)
        self._source = source
        self._storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:
            # Protocol 2 (torch.save's default) spells Python 3 names the Python 2 way
            # (`__builtin__.set`); translate with the standard table, as pickle itself does.
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise UnsafeCheckpointError(
                f"{self._source}: refused to load, the pickle references {module}.{name}, which "
                "is not on "
                "difffusr's allow-list of tensor and plain-data types (nothing was imported or "
                "executed)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise UnsafeCheckpointError(
                f"{self._source}: refused to load, unexpected persistent reference "
                f"{str(pid)[:80]!r}"
            )
        _, storage_type, key, location, numel = pid
        if (
            not isinstance(storage_type, _StorageType)
            or not isinstance(key, str)
            or type(numel) is not int
            or numel < 0
        ):
            raise WeightsError(f"{self._source}: malformed storage reference {str(pid)[:80]!r}")
        if not isinstance(location, (str, bytes)):
            raise WeightsError(f"{self._source}: malformed storage location {location!r}")
        storage = self._storages.setdefault(key, _StorageRef(key, storage_type.dtype, numel))
        if storage.dtype != storage_type.dtype or storage.numel != numel:
            # One blob described two ways (never written by torch.save for plain tensors).
            raise WeightsError(
                f"{self._source}: storage {key} is referenced with two dtypes or sizes"
            )
        return storage


def _materialize(
    loaded: Any,
    read_blob: Callable[[str, torch.dtype, int], torch.Tensor],
    tensors_under: Collection[str] | None,
) -> Any:
    """Replace every tensor record in the unpickled object by a tensor (reading its storage once)
    or, outside the top-level keys ``tensors_under`` (when the top level holds any of them), by
    None.

    Containers are rebuilt with their own (allow-listed) types; shared and recursive references
    stay shared.
    """
    blobs: dict[str, torch.Tensor] = {}
    memo: dict[tuple[int, bool], Any] = {}

    def tensor(ref: _TensorRef) -> torch.Tensor:
        blob = blobs.get(ref.storage.key)
        if blob is None:
            blob = blobs[ref.storage.key] = read_blob(
                ref.storage.key, ref.storage.dtype, ref.storage.numel
            )
        return blob.as_strided(ref.shape, ref.stride, ref.offset)

    def walk(value: Any, keep: bool) -> Any:
        if isinstance(value, (_StorageRef, str, bytes, int, float, bool, type(None))):
            return None if isinstance(value, _StorageRef) else value
        marker = (id(value), keep)
        if marker in memo:
            return memo[marker]
        if isinstance(value, _TensorRef):
            out_tensor = memo[marker] = tensor(value) if keep else None
            return out_tensor
        if isinstance(value, dict):
            out: Any = (
                type(value)() if type(value) in (dict, OrderedDict, Counter, ConfigDict) else {}
            )
            memo[marker] = out
            for key, item in value.items():
                out[key] = walk(item, keep)
            return out
        if isinstance(value, list):
            out = memo[marker] = []
            out.extend(walk(item, keep) for item in value)
            return out
        if isinstance(value, tuple):
            out = memo[marker] = tuple(walk(item, keep) for item in value)
            return out
        if isinstance(value, (set, frozenset)):
            out = memo[marker] = type(value)(walk(item, keep) for item in value)
            return out
        return value

    if (
        tensors_under is not None
        and isinstance(loaded, dict)
        and any(k in loaded for k in tensors_under)
    ):
        top: Any = type(loaded)() if type(loaded) in (dict, OrderedDict) else {}
        for key, item in loaded.items():
            top[key] = walk(item, key in tensors_under)
        return top
    return walk(loaded, True)


def _archive_prefix(archive: zipfile.ZipFile, source: Path) -> str:
    """The folder of ``data.pkl`` inside a torch zip (``archive/`` today, the file stem in old
    ones).
    """
    candidates = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(candidates) != 1:
        raise WeightsError(
            f"{source}: not a torch checkpoint archive (expected one <folder>/data.pkl entry)"
        )
    prefix = candidates[0][: -len("data.pkl")]
    byteorder_entry = f"{prefix}byteorder"
    if byteorder_entry in archive.namelist():
        order = archive.read(byteorder_entry).decode("ascii", "replace").strip()
        if order != "little":
            raise WeightsError(
                f"{source}: tensors are stored {order}-endian; only little-endian checkpoints are "
                "supported"
            )
    return prefix


def _unpickle(data: bytes, source: Path, *, legacy_ok: bool = False) -> Any:
    """Restricted unpickling of ``data`` with the bytearray budget set to its length.

    A legacy (pre-zip) torch file holds several pickles; only its first object (the magic number)
    is read when ``legacy_ok``.
    """
    _BYTEARRAY_BUDGET[0] = max(len(data), source.stat().st_size)
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source).load()
    except WeightsError as exc:
        message = str(exc)
        if message.startswith(str(source)):
            raise
        raise type(exc)(f"{source}: {message}") from None
    finally:
        _BYTEARRAY_BUDGET[0] = 0


#: First object of the pickle stream that torch.save wrote before the zip format (torch < 1.6).
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C


def read_lightning_checkpoint(
    path: str | os.PathLike[str], *, tensors_under: Collection[str] | None = None
) -> Any:
    """Unpickle a ``torch.save`` / Lightning checkpoint without executing code from it.

    Args:
        path: the checkpoint (torch zip archive; a plain pickle is read too, without tensors).
        tensors_under: if the checkpoint's top level holds any of these keys (e.g.
            ``{"state_dict"}``), only tensors below them are read, and every other tensor comes
            back as None: the optimizer state of a training checkpoint is never loaded into
            memory. None reads every tensor.

    Returns:
        The checkpoint object (for Lightning a dict with ``state_dict``, ``hyper_parameters``, …).
        Tensors come back as CPU tensors with their stored dtype; config objects as
        :class:`ConfigDict`.

    Raises:
        UnsafeCheckpointError: the pickle references a global outside :data:`ALLOWED_GLOBALS`.
        WeightsError: the file is missing, truncated, malformed or not a pickle.
    """
    source = Path(path)
    if not source.is_file():
        raise WeightsError(f"{source}: no such checkpoint file")
    try:
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                prefix = _archive_prefix(archive, source)
                pickled = _read_capped(archive, f"{prefix}data.pkl", source)
                loaded = _unpickle(pickled, source)
                return _materialize(
                    loaded, _blob_reader_for(archive, prefix, source), tensors_under
                )
        if tarfile.is_tarfile(source):
            raise WeightsError(
                f"{source}: legacy tar-format torch checkpoint (torch < 0.4) is not supported; "
                "re-save it with a current torch"
            )
        # Read whole (bounded by the file size): a length field in the pickle then cannot make the
        # reader allocate more than the file holds.
        with open(source, "rb") as stream:
            data = stream.read()
        loaded = _unpickle(data, source, legacy_ok=True)
        if type(loaded) is int and loaded == _LEGACY_TORCH_MAGIC:
            raise WeightsError(
                f"{source}: legacy torch.save format (torch < 1.6) is not supported; re-save it "
                "with a current torch"
            )
        return _materialize(loaded, _blob_reader_for(None, "", source), tensors_under)
    except (UnsafeCheckpointError, WeightsError):
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        RuntimeError,
    ) as exc:
        raise WeightsError(
            f"{source}: not a readable checkpoint ({type(exc).__name__}: {exc})"
        ) from exc


# ---------------------------------------------------------------------------------------------
# hparams.yaml


class _HparamsLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads Lightning's Python-tagged mappings as plain dicts."""


_MAPPING_CLASS_TAGS = (
    "tag:yaml.org,2002:python/object/new:easydict.EasyDict",
    "tag:yaml.org,2002:python/object/new:pytorch_lightning.utilities.parsing.AttributeDict",
    "tag:yaml.org,2002:python/object/new:lightning_fabric.utilities.data.AttributeDict",
    "tag:yaml.org,2002:python/object/new:lightning.fabric.utilities.data.AttributeDict",
    "tag:yaml.org,2002:python/object:argparse.Namespace",
)


def _construct_plain_mapping(loader: _HparamsLoader, node: yaml.Node) -> dict[str, Any]:
    if not isinstance(node, yaml.MappingNode):
        raise yaml.constructor.ConstructorError(
            None, None, f"expected a mapping for {node.tag}", node.start_mark
        )
    fields = loader.construct_mapping(node, deep=True)
    if node.tag.startswith("tag:yaml.org,2002:python/object/new:"):
        # `!!python/object/new:` records the dict items under `dictitems` (and a copy under
        # `state`).
        items = fields.get("dictitems") or {}
        state = fields.get("state") or {}
        merged = dict(state) if isinstance(state, Mapping) else {}
        merged.update(items if isinstance(items, Mapping) else {})
        return merged
    return dict(fields)  # `!!python/object:` (Namespace): the mapping is the object's fields


def _construct_sequence_as_tuple(loader: _HparamsLoader, node: yaml.Node) -> tuple[Any, ...]:
    return tuple(loader.construct_sequence(node, deep=True))


def _refuse_python_tag(loader: _HparamsLoader, suffix: str, node: yaml.Node) -> Any:
    raise UnsafeCheckpointError(
        f"refused the YAML tag !!python/{suffix}: only plain data and config-dict tags are read"
    )


for _tag in _MAPPING_CLASS_TAGS:
    _HparamsLoader.add_constructor(_tag, _construct_plain_mapping)
_HparamsLoader.add_constructor("tag:yaml.org,2002:python/tuple", _construct_sequence_as_tuple)
_HparamsLoader.add_multi_constructor("tag:yaml.org,2002:python/", _refuse_python_tag)


def read_hparams_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a Lightning ``hparams.yaml`` as plain data.

    ``!!python/object/new:easydict.EasyDict`` (and Lightning's AttributeDict / argparse Namespace)
    mappings become dicts of their items; any other ``!!python/`` tag is refused.

    Raises:
        WeightsError: unreadable file, YAML error, a refused tag, or a top level that is not a
            mapping.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise WeightsError(f"{source}: cannot read hparams file ({exc.strerror or exc})") from exc
    try:
        data = yaml.load(text, Loader=_HparamsLoader)
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise WeightsError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise WeightsError(
            f"{source}: hparams file holds a {type(data).__name__}, expected a mapping"
        )
    return data


def find_hparams_yaml(checkpoint: str | os.PathLike[str]) -> Path | None:
    """The ``hparams.yaml`` of a checkpoint, if there is one.

    Looked for beside the checkpoint, then two folders up (Lightning's
    ``<exp>/version_N/checkpoints/last.ckpt`` next to ``<exp>/version_N/hparams.yaml``).
    """
    ckpt = Path(checkpoint)
    for folder in (ckpt.parent, ckpt.parent.parent):
        candidate = folder / "hparams.yaml"
        if candidate.is_file():
            return candidate
    return None


# ---------------------------------------------------------------------------------------------
# safetensors


def read_safetensors(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor of a safetensors file (CPU) and its header metadata.

    Raises:
        WeightsError: missing or malformed file.
    """
    from safetensors import SafetensorError, safe_open

    source = Path(path)
    if not source.is_file():
        raise WeightsError(f"{source}: no such weights file")
    try:
        with safe_open(str(source), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open is no dict
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{source}: not a readable safetensors file ({exc})") from exc
    return tensors, metadata


def _detach_for_saving(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors that share no memory (safetensors refuses shared or strided ones)."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
        covers_storage = tensor.numel() * tensor.element_size() == tensor.untyped_storage().nbytes()
        if not tensor.is_contiguous() or ptr in seen or not covers_storage:
            tensor = tensor.contiguous().clone()
        elif ptr != -1:
            seen.add(ptr)
        out[key] = tensor
    return out


def _honour_umask(path: str) -> None:
    """Give a ``mkstemp`` file (always 0600) the mode a plain ``open`` would: 0666 less the umask,
    so converted files in a shared cache are readable by the group.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``tensors`` to ``path`` atomically (temporary file, then rename).

    ``metadata`` (str → str) goes into the safetensors header.

    Raises:
        WeightsError: the folder cannot be written.
    """
    from safetensors.torch import save_file

    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".partial", dir=target.parent
        )
        os.close(fd)
        try:
            save_file(_detach_for_saving(tensors), tmp_name, metadata=dict(metadata or {}))
            _honour_umask(tmp_name)
            os.replace(tmp_name, target)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    except OSError as exc:
        raise WeightsError(f"{target}: cannot write weights ({exc.strerror or exc})") from exc
    return target


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".partial", dir=target.parent
        )
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=1, sort_keys=False)
            stream.write("\n")
        _honour_umask(tmp_name)
        os.replace(tmp_name, target)
    except OSError as exc:
        raise WeightsError(f"{target}: cannot write ({exc.strerror or exc})") from exc
    return target
