"""The restricted unpickler and its allow-list of globals."""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from difffusr_cli.checkpoint.bounds import _bounded_bytearray
from difffusr_cli.checkpoint.records import (
    _STORAGE_DTYPES,
    ConfigDict,
    _rebuild_from_type,
    _rebuild_parameter,
    _rebuild_tensor,
    _StorageRef,
    _StorageType,
    _TensorClassMarker,
)
from difffusr_cli.errors import UnsafeCheckpointError, WeightsError


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


def _load_build(unpickler: RestrictedUnpickler) -> None:
    """BUILD opcode.

    Only :class:`ConfigDict` takes the state; for every other object (tensors, OrderedDicts) the
    state is dropped, so no ``__setstate__`` of a library class ever runs.
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

    # Set by pickle's pure-Python ``load()``; typeshed does not declare them on ``_Unpickler``.
    stack: list[Any]
    proto: int
    fix_imports: bool

    dispatch: ClassVar[dict[int, Callable[..., Any]]] = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _load_build

    def __init__(self, file: io.BufferedIOBase | io.BytesIO, *, source: Path) -> None:
        super().__init__(file)
        self._source = source
        self._storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        """The allow-listed stand-in for global ``module.name``; any other global is refused."""
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
        """A checked ``_StorageRef`` for a tensor storage reference; nothing else is accepted."""
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
