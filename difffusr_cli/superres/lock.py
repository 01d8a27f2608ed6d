"""An exclusive lock per output: ``<dir>/.<name>.lock`` holding the holder's pid and host.

Taken before anything of the output is written and released when the run ends (also on errors
and Ctrl-C). A second run on the same output fails at once naming the holder. A lock whose
holder is gone (same host, pid no longer alive) is stale and taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from difffusr_cli.errors import OutputError
from difffusr_cli.superres.atomic import os_reason


def lock_path_for(output: Path) -> Path:
    """Where the lock of ``output`` lives: ``<dir>/.<name>.lock``."""
    return output.parent / f".{output.name}.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class OutputLock:
    """The lock of one output (a context manager; :meth:`acquire` / :meth:`release`)."""

    def __init__(self, output: Path) -> None:
        self.output = Path(output)
        self.path = lock_path_for(self.output)
        self.held = False

    def acquire(self) -> None:
        """Take the lock, or raise ``OutputError`` naming the live holder."""
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None:
                    raise OutputError(
                        f"{self.output} is being written by another difffusr run ({holder}; lock "
                        f"{self.path}); wait for it, or delete the lock if that run is gone"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its holder is gone
                continue
            except OSError as exc:
                raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
            try:
                os.write(fd, record.encode())
            except OSError as exc:
                os.close(fd)
                with contextlib.suppress(OSError):
                    self.path.unlink(missing_ok=True)
                raise OutputError(f"cannot write {self.path}: {os_reason(exc)}") from None
            os.close(fd)
            self.held = True
            return
        raise OutputError(f"cannot take the lock {self.path}; delete it if no run is writing")

    def _holder(self) -> str | None:
        """``"pid N on host H"`` of a live holder, or None when the lock is stale."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            pid, host = int(data["pid"]), str(data["host"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return "unreadable lock file"  # being written right now, or damaged: not ours to take
        if host == socket.gethostname() and not _alive(pid):
            return None
        return f"pid {pid} on host {host}"

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if self.held:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.held = False

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
