"""The ``difffusr`` command line: one module per command group over importable library calls.

``root`` holds the root Typer app and the one place that maps errors to exit codes; ``info``,
``superres``, ``weights``, ``evaluate`` and ``train`` hold the commands; ``console``,
``progress`` and ``info_table`` render with rich. Nothing outside this package draws on a
console.
"""

import os

# Before torch is imported: large host tensors on transparent huge pages. A fresh 4 KiB page
# costs a page fault; the pipeline's many full-size temporaries made the kernel's page
# clearing a third of its host time (benchmarks/host_throughput.py). A user's setting wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from difffusr_cli.cli.root import app, main, run  # noqa: E402

__all__ = ["app", "main", "run"]
