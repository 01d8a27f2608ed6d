"""Domain exceptions.

Library code raises these where a problem is first seen, with a message that names the file
and the problem and, where possible, how to fix it. The CLI turns them into one line on stderr
and exit code 2; anything else is an unexpected failure (exit code 1, traceback in a log file).
"""

from __future__ import annotations


class DifffusrError(Exception):
    """A problem the user can fix (bad input, bad option, missing weights). Exit code 2."""


class InputError(DifffusrError):
    """An input product or file is missing, unreadable or not what difffusr needs."""


class OutputError(DifffusrError):
    """The output path cannot be written, or exists and may not be replaced."""


class WeightsError(DifffusrError):
    """Model weights are missing, unverifiable, unsafe or of an unknown layout."""


class BatchError(DifffusrError):
    """Some inputs of a ``--keep-going`` batch failed (the others were processed)."""


class UnsafeCheckpointError(WeightsError):
    """A pickled checkpoint references code outside the allow-list; nothing was executed."""
