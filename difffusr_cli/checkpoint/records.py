"""Plain-data stand-ins the restricted unpickler substitutes for a checkpoint's globals.

Config classes become :class:`ConfigDict`; storages and tensors become checked records
(``_StorageRef``, ``_TensorRef``) that are turned into tensors only after unpickling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from difffusr_cli.errors import WeightsError


class ConfigDict(dict):
    """Plain-data stand-in for the config classes checkpoints pickle.

    Those are ``easydict.EasyDict``, Lightning's ``AttributeDict`` and ``argparse.Namespace``.

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
    """A tensor storage the pickle refers to.

    The archive entry ``data/<key>`` holding ``numel`` elements of ``dtype``. Read only if a tensor
    that is kept needs it.
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
    """Stand-in for ``torch._tensor._rebuild_from_type_v2``.

    Rebuild with an allowed function, keep the plain tensor (subclass and attribute state are not
    data we need).
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
