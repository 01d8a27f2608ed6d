"""Reading and atomically writing safetensors files (the converted format) and JSON."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from difffusr_cli.errors import WeightsError


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
    """Give a ``mkstemp`` file (always 0600) the mode a plain ``open`` would.

    0666 less the umask, so converted files in a shared cache are readable by the group.
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
