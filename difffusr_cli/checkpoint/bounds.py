"""Memory bounds: what a checkpoint file may make the reader allocate.

A pickle cannot describe more data than its file holds, and a compressed archive entry may
inflate only so far: lengths beyond these bounds are refused before anything is allocated.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch

from difffusr_cli.errors import WeightsError

#: Bytes an unpickled ``bytearray(n)`` may allocate; set per file by :class:`RestrictedUnpickler`
#: (a pickle cannot describe more data than the file holds).
_BYTEARRAY_BUDGET: list[int] = [0]


def _bounded_bytearray(*args: Any) -> bytearray:
    """``bytearray`` for the unpickler.

    A length argument larger than the file is refused before anything is allocated
    (``bytearray(2**31)`` in a 61-byte pickle).
    """
    size = args[0] if args else 0
    if type(size) is int and size > _BYTEARRAY_BUDGET[0]:
        raise WeightsError(
            f"the pickle asks for a bytearray of {size} bytes, more than the file could hold "
            f"({_BYTEARRAY_BUDGET[0]} bytes)"
        )
    return bytearray(*args)


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
        with archive.open(info) as opened:
            # ZipFile.open is typed IO[bytes]; for reading it returns a ZipExtFile.
            stream = cast(zipfile.ZipExtFile, opened)
            view = buffer.numpy().data
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
    """Bytes an archive entry may yield.

    Its stored size, or (compressed) ``MAX_INFLATION`` times it, never more than ``MAX_INFLATION``
    times the whole file (bytes).
    """
    if info.compress_type == zipfile.ZIP_STORED:
        return min(info.compress_size, source.stat().st_size)
    return MAX_INFLATION * min(info.compress_size, source.stat().st_size) + (1 << 20)


def _read_capped(archive: zipfile.ZipFile, name: str, source: Path) -> bytes:
    """The bytes of archive entry ``name``, refusing more than :func:`_inflated_limit` allows.

    The cap is checked before the bytes pile up: a deflate-bombed ``data.pkl`` stops at it.
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
