"""What a patch row leaves for the next one, and the overlap-disagreement measure.

:class:`RowTracker` records, per patch row, the overlap disagreement (mean |a − b| in
reflectance between overlapping patches' final predictions before blending, horizontal and
vertical) and the :class:`RowCarry` the next row needs. Carries are kept in memory while they
may be needed and saved beside the progress record when a block is committed
(:meth:`RowTracker.save`), so that a resumed run continues bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from difffusr_cli.superres.atomic import write_atomically
from difffusr_cli.tiling import Layout


@dataclass
class RowCarry:
    """What patch row ``row`` leaves for the next one: its rows from the next row's top down.

    Attributes:
        row: the patch row it comes from.
        top: the first region row held (the next patch row's top edge).
        patches: patch column index → ``(3, n, patch)`` float32 reflectance, the bottom ``n`` rows
            of that patch's final prediction (for the vertical disagreement).
        canvas: ``(3, margin + n, W)`` float32 reflectance of the finished canvas from
            ``margin`` rows above ``top`` (joint sampling), or None.
        covered: ``(margin + n, W)`` bool, where the canvas was computed, or None.
    """

    row: int
    top: int
    patches: dict[int, np.ndarray]
    canvas: np.ndarray | None = None
    covered: np.ndarray | None = None


#: Per patch row: Σ|a − b| and counts, horizontal then vertical, float64.
_STAT_FIELDS = 4


class RowTracker:
    """The overlap disagreement of every patch row and the carries between rows.

    A carry is kept while the next row needs it, and while a resumed run may restart at the
    row after it (``restart_rows``: the patch rows a run restarted at a block start begins at),
    until the blocks that could restart there are committed (:meth:`committed`).

    Args:
        patch: the patch side.
        lefts, tops: the layout's patch columns and patch rows.
        height, width: the region (pixels outside it are not compared).
        restart_rows: the patch row a run restarted at each block begins at (the first one,
            for block 0, is where every run's chain of rows starts).
    """

    def __init__(
        self,
        patch: int,
        lefts: Sequence[int],
        tops: Sequence[int],
        height: int,
        width: int,
        restart_rows: Sequence[int] = (),
    ) -> None:
        self.patch, self.lefts, self.tops = patch, list(lefts), list(tops)
        self.height, self.width = height, width
        self.restart_rows = set(restart_rows)
        # The first row a fresh run computes starts the chain: nothing above it is sampled.
        self.first_row = restart_rows[0] if restart_rows else 0
        self.stats: dict[int, np.ndarray] = {}
        self.carries: dict[int, RowCarry] = {}
        self._committed_until = 0  # no later restart begins above this patch row
        self._latest = -1  # the last row finished
        # The row being added to (add_patch): its sums, the last patch's strip overlapping the
        # next patch, and each patch's rows the next row overlaps.
        self._row = -1
        self._row_stats = np.zeros(_STAT_FIELDS, dtype=np.float64)
        self._right: tuple[int, np.ndarray | None] | None = None
        self._bottoms: dict[int, np.ndarray] = {}

    @classmethod
    def for_layout(cls, layout: Layout, restart_rows: Sequence[int] = ()) -> RowTracker:
        """The tracker of ``layout``'s patch grid."""
        return cls(
            layout.patch,
            layout.patch_cols,
            layout.patch_rows,
            layout.height,
            layout.width,
            restart_rows,
        )

    def has_carry_for(self, index: int) -> bool:
        """Whether patch row ``index`` can be computed now (the row above's carry is here)."""
        return index <= self.first_row or index - 1 in self.carries

    def carry_above(self, index: int) -> RowCarry | None:
        """The carry of patch row ``index − 1`` (None for the first row computed)."""
        return self.carries[index - 1] if index > self.first_row else None

    def start_row(self, index: int) -> None:
        """Begin (or begin again) patch row ``index``: forget what was added to any row."""
        self._row, self._row_stats = index, np.zeros(_STAT_FIELDS, dtype=np.float64)
        self._right, self._bottoms = None, {}

    def add_patch(self, index: int, col: int, prediction: np.ndarray) -> None:
        """Take the final prediction of patch ``col`` of row ``index`` (columns in order).

        Its overlaps with the patch to its left and the row above are measured now; only the
        strips a later patch and the next row need are kept (a full-width row of whole patches
        was 0.4 GB held at once).

        Args:
            index: the patch row (the row being finished).
            col: the patch column, larger than the last one added to this row.
            prediction: ``(3, patch, patch)`` reflectance before blending.
        """
        if self._row != index:
            self.start_row(index)
        elif self._right is not None and col <= self._right[0]:
            raise ValueError(f"patch column {col} after column {self._right[0]} of row {index}")
        stats, p = self._row_stats, self.patch
        rows = min(p, self.height - self.tops[index])
        left = self.lefts[col]
        if self._right is not None and self._right[0] == col - 1 and self._right[1] is not None:
            a = self._right[1]
            b = prediction[:, :rows, : a.shape[2]]
            stats[0] += np.abs(a.astype(np.float64) - b).sum()
            stats[1] += a.size
        strip = None
        if col + 1 < len(self.lefts):  # what overlaps the next patch of the row
            right, stop = self.lefts[col + 1], min(left + p, self.width)
            if stop > right:
                strip = np.ascontiguousarray(prediction[:, :rows, right - left : stop - left])
        self._right = (col, strip)
        above = self.carry_above(index)
        if above is not None and col in above.patches:
            strip = above.patches[col]
            n, cols = strip.shape[1], min(p, self.width - left)
            a, b = strip[:, :, :cols], prediction[:, :n, :cols]
            stats[2] += np.abs(a.astype(np.float64) - b).sum()
            stats[3] += a.size
        if index + 1 < len(self.tops):  # the rows the next patch row overlaps
            start = self.tops[index + 1] - self.tops[index]
            self._bottoms[col] = np.ascontiguousarray(prediction[:, start:])

    def finish_row(
        self,
        index: int,
        predictions: dict[int, np.ndarray] | None = None,
        canvas: np.ndarray | None = None,
        covered: np.ndarray | None = None,
    ) -> None:
        """Record patch row ``index``: its disagreements and its carry for the next row.

        Args:
            index: the patch row.
            predictions: patch column index → ``(3, patch, patch)`` final prediction
                (reflectance, before blending), for the patches that ran and were not given to
                :meth:`add_patch` already.
            canvas: the row's finished canvas from ``margin`` rows above its top, ``(3,
                margin + patch, W)`` (joint sampling only; :attr:`JointRow.context`).
            covered: its ``(margin + patch, W)`` coverage (joint sampling only).
        """
        for col in sorted(predictions or {}):
            self.add_patch(index, col, (predictions or {})[col])
        if self._row != index:  # a row without patches
            self.start_row(index)
        self.stats[index] = self._row_stats
        if index + 1 < len(self.tops):
            start = self.tops[index + 1] - self.tops[index]
            self.carries[index] = RowCarry(
                row=index,
                top=self.tops[index + 1],
                patches=self._bottoms,
                canvas=None if canvas is None else np.ascontiguousarray(canvas[:, start:]),
                covered=None if covered is None else np.ascontiguousarray(covered[start:]),
            )
        self._row, self._right, self._bottoms = -1, None, {}
        self._latest = index
        self._prune()

    def _prune(self) -> None:
        """Keep the latest row's carry and those a later restart may need."""
        for row in list(self.carries):
            restart = row + 1
            wanted = restart in self.restart_rows and restart >= self._committed_until
            if row != self._latest and not wanted:
                del self.carries[row]

    def committed(self, restart_row: int) -> None:
        """Say that no later restart begins above patch row ``restart_row``.

        Called when a block is committed (the blocks before it are written); carries of rows
        above ``restart_row − 1`` are then dropped.
        """
        self._committed_until = max(self._committed_until, restart_row)
        self._prune()

    def disagreement(self) -> dict[str, float | None]:
        """Mean |a − b| (reflectance) over every overlap so far, ``horizontal`` and ``vertical``.

        None where no two patches overlap that way.
        """
        total = np.zeros(_STAT_FIELDS, dtype=np.float64)
        for index in sorted(self.stats):
            total += self.stats[index]
        return {
            "horizontal": float(total[0] / total[1]) if total[1] else None,
            "vertical": float(total[2] / total[3]) if total[3] else None,
        }

    # -- persistence (resume) -----------------------------------------------------------------
    def save(self, folder_stem: Path, restart_row: int) -> Path | None:
        """Save what a run restarting at patch row ``restart_row`` needs, atomically.

        That is the carry of the row above it and the statistics so far, written to
        ``<folder_stem>-<restart_row>.npz``.

        Returns the file written (None when the restart needs nothing: the first row).

        Raises:
            OutputError: the file cannot be written.
        """
        if restart_row <= self.first_row or restart_row - 1 not in self.carries:
            return None
        carry = self.carries[restart_row - 1]
        cols = sorted(carry.patches)
        rows = sorted(self.stats)
        arrays: dict[str, Any] = {
            "row": np.array(carry.row),
            "top": np.array(carry.top),
            "cols": np.array(cols, dtype=np.int64),
            "patches": np.stack([carry.patches[c] for c in cols])
            if cols
            else np.zeros((0, 3, 0, self.patch), np.float32),
            "canvas": carry.canvas if carry.canvas is not None else np.zeros((0,), np.float32),
            "covered": carry.covered if carry.covered is not None else np.zeros((0,), bool),
            "stat_rows": np.array(rows, dtype=np.int64),
            "stats": np.stack([self.stats[i] for i in rows])
            if rows
            else np.zeros((0, _STAT_FIELDS)),
        }
        path = state_path(folder_stem, restart_row)

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # an open file: np.savez would add ".npz" to a name
                np.savez(f, **arrays)

        write_atomically(path, save)
        return path

    def load(self, folder_stem: Path) -> None:
        """Take the carries and statistics saved by an interrupted run.

        Unreadable files are ignored: the rows they stood for are recomputed.
        """
        for path in sorted(state_files(folder_stem)):
            try:
                with np.load(path) as z:
                    row, top = int(z["row"]), int(z["top"])
                    cols = [int(c) for c in z["cols"]]
                    patches = {c: np.array(z["patches"][i]) for i, c in enumerate(cols)}
                    canvas = np.array(z["canvas"]) if z["canvas"].ndim == 3 else None
                    covered = np.array(z["covered"]) if z["covered"].ndim == 2 else None
                    stats = {
                        int(i): np.array(v) for i, v in zip(z["stat_rows"], z["stats"], strict=True)
                    }
            except (OSError, ValueError, KeyError, IndexError):
                continue
            if not 0 <= row < len(self.tops) - 1 or top != self.tops[row + 1]:
                continue
            self.carries[row] = RowCarry(row, top, patches, canvas, covered)
            self.restart_rows.add(row + 1)
            for index, value in stats.items():
                self.stats.setdefault(index, value)


def state_path(folder_stem: Path, restart_row: int) -> Path:
    """The saved state a restart at ``restart_row`` reads: ``<stem>-<row>.npz``."""
    return folder_stem.with_name(f"{folder_stem.name}-{restart_row}.npz")


def state_files(folder_stem: Path) -> list[Path]:
    """Every saved state of ``folder_stem`` (see :func:`state_path`)."""
    if not folder_stem.parent.is_dir():
        return []
    prefix = folder_stem.name + "-"
    return [
        p
        for p in folder_stem.parent.iterdir()
        if p.name.startswith(prefix) and p.name.endswith(".npz")
    ]


def remove_states(folder_stem: Path, keep: Path | None = None) -> None:
    """Delete the saved states of ``folder_stem`` except ``keep``."""
    for path in state_files(folder_stem):
        if path != keep:
            path.unlink(missing_ok=True)


def state_stem_for(output: Path) -> Path:
    """Where a run saves the rows a resume needs: ``<dir>/.<name>.rows-<patch row>.npz``."""
    return output.parent / f".{output.name}.rows"
