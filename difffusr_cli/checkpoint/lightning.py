"""Reading ``torch.save`` / PyTorch Lightning ``.ckpt`` files without running code from them."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import torch

from difffusr_cli.checkpoint.bounds import _BYTEARRAY_BUDGET, _blob_reader_for, _read_capped
from difffusr_cli.checkpoint.records import ConfigDict, _StorageRef, _TensorRef
from difffusr_cli.checkpoint.unpickler import RestrictedUnpickler
from difffusr_cli.errors import UnsafeCheckpointError, WeightsError


def _materialize(
    loaded: Any,
    read_blob: Callable[[str, torch.dtype, int], torch.Tensor],
    tensors_under: Collection[str] | None,
) -> Any:
    """Replace every tensor record in the unpickled object by a tensor, or by None.

    A kept tensor reads its storage once; tensors outside the top-level keys ``tensors_under`` (when
    the top level holds any of them) become None.

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
    """The folder of ``data.pkl`` inside a torch zip.

    ``archive/`` today, the file stem in old ones.
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
