"""A restricted reader for the opensr-test benchmark pickles (``<dataset>.pkl``).

``opensr_test.load`` calls ``pickle.load`` on them, which runs whatever code the file names. This
reader resolves globals only through an allow-list of numpy array and pandas table
reconstructors (plain containers come from pickle opcodes themselves), so a hostile file can
build arrays and a metadata table, nothing else; anything else is refused before it is
imported. The file is read whole first (bytes), so a length field cannot make the reader
allocate more than the file holds.
"""

from __future__ import annotations

import builtins
import importlib
import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from difffusr_cli.errors import InputError

__all__ = ["ALLOWED", "read_benchmark_pickle"]

#: ``(module, name)`` the benchmark pickles may reference: numpy arrays, pandas tables.
ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.dtypes", "StringDType"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("pandas", "StringDtype"),
        ("builtins", "slice"),
        ("_codecs", "encode"),  # protocol 2 spells bytes as encode(str, "latin1")
        ("copyreg", "_reconstructor"),  # cls and base come from this list too
        ("collections", "OrderedDict"),
        ("pandas", "DataFrame"),
        ("pandas.core.frame", "DataFrame"),
        ("pandas", "Index"),
        ("pandas", "RangeIndex"),
        ("pandas.core.indexes.base", "Index"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas.core.indexes.range", "RangeIndex"),
        ("pandas.core.internals.managers", "BlockManager"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas._libs.internals", "BlockPlacement"),
        ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
        ("pandas.arrays", "StringArray"),
        ("pandas.core.arrays.string_", "StringArray"),
        ("pandas.core.arrays.string_", "StringDtype"),
        ("pandas.core.arrays.string_arrow", "ArrowStringArray"),
    }
)


class _Restricted(pickle.Unpickler):
    def __init__(self, data: bytes, source: Path) -> None:
        super().__init__(io.BytesIO(data))
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # protocol 2 spelling
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(
                f"the pickle references {module}.{name}, which is not on difffusr's allow-list "
                "of array and table types (nothing was imported or executed)"
            )
        if module == "builtins":
            return getattr(builtins, name)
        return getattr(importlib.import_module(module), name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("the pickle uses persistent references")


def read_benchmark_pickle(path: Path) -> Mapping[str, Any]:
    """The dict of an opensr-test ``<dataset>.pkl``, read with the allow-list above.

    Its keys are ``L2A``, ``HRharm`` and ``metadata``.

    Raises:
        InputError: unreadable, refused, or not a dict (one line naming ``path``).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        loaded = _Restricted(data, path).load()
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        MemoryError,
        TypeError,
        ValueError,
    ) as exc:
        raise InputError(
            f"{path}: not a readable opensr-test pickle ({type(exc).__name__}: {exc}); delete it "
            "and download it again"
        ) from None
    if not isinstance(loaded, Mapping):
        raise InputError(f"{path}: expected an opensr-test dict, got {type(loaded).__name__}")
    return loaded
