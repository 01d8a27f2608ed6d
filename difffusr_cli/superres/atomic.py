"""Small files written whole: a temporary file, then a rename over the target.

The progress record, the rows state of a resume and the batch report are rewritten while a
run goes on; a reader (or an interrupted run) must find the previous version or the new one,
never half of one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from difffusr_cli.errors import OutputError


def os_reason(exc: OSError) -> str:
    """What went wrong, for a one-line error: a full disk says so."""
    return "no space left on the device" if exc.errno == 28 else str(exc.strerror or exc)


def write_atomically(path: Path, write: Callable[[Path], object], tmp: Path | None = None) -> None:
    """Call ``write(tmp)``, then rename ``tmp`` over ``path``.

    Args:
        path: the file to (re)write.
        write: writes the whole content to the path it is given.
        tmp: the temporary name (default ``<path>.tmp``); it is removed on failure.

    Raises:
        OutputError: the file cannot be written (names ``path`` and the reason).
    """
    tmp = tmp or path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # a read-only folder refuses even this
            tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {os_reason(exc)}") from None
