"""The diffusion patch rows of a region: read, sampled (jointly or patch by patch), tracked.

:class:`PatchRows` computes one row of diffusion patches at a time for the
:class:`~difffusr_cli.superres.render.Renderer`'s RGB stage. With ``--sampling joint`` the row is
one canvas (:func:`~difffusr_cli.superres.joint.sample_row_jointly`) that continues the finished
row above; with ``independent`` (and for models without a joint sampler) every patch is sampled
from its own noise (:func:`~difffusr_cli.tiling.patch_noise`). Either way the row's
disagreements and what the next row needs go to a :class:`~difffusr_cli.superres.rows.RowTracker`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window

from difffusr_cli.bands import RGB, SCALE
from difffusr_cli.device import autocast, host_threads
from difffusr_cli.superres.joint import (
    check_finite,
    joint_margin,
    sample_row_jointly,
    samples_jointly,
)
from difffusr_cli.superres.models import Models
from difffusr_cli.superres.rows import RowTracker
from difffusr_cli.tiling import Contribution, Layout, blend_weights, patch_noise

#: ``read(band names, window of the 10 m grid) -> ((C, h, w) filled data, (h, w) validity,
#: ratio)`` (:meth:`Renderer._read <difffusr_cli.superres.render.Renderer>`).
Reader = Callable[[Sequence[str], Window], tuple[np.ndarray, np.ndarray, int]]


@dataclass
class Counters:
    """What a render did so far."""

    patches_run: int = 0
    patches_skipped: int = 0


@dataclass(frozen=True)
class PatchSampling:
    """Sampler settings of a render.

    DDIM steps, seed, patches per network call, device and precision, ``joint`` or
    ``independent`` sampling and the joint margin (context pixels beyond each patch edge).
    """

    steps: int
    seed: int
    batch_size: int
    device: torch.device
    dtype: torch.dtype
    sampling: str = "joint"
    joint_margin: int = 32


class PatchRows:
    """Computes the rows of diffusion patches of a region.

    Args:
        read: reads bands on their grid for a window of the 10 m grid.
        region: the processed window of the 10 m grid.
        layout: the region's tiling.
        models: the models (``rgb`` samples).
        settings: the sampler settings.
        counters: patch counts, updated here.
        on_patches: called with the number of patches finished (run or skipped).
        restarts: the patch row a run restarted at each block begins at.
    """

    def __init__(
        self,
        read: Reader,
        region: Window,
        layout: Layout,
        models: Models,
        settings: PatchSampling,
        counters: Counters,
        on_patches: Callable[[int], None],
        restarts: Sequence[int] = (),
    ) -> None:
        self.read, self.region, self.layout, self.models = read, region, layout, models
        self.settings, self.counters, self.on_patches = settings, counters, on_patches
        # Joint sampling needs a model with a joint sampler; others are sampled patch by patch.
        joint = settings.sampling == "joint" and samples_jointly(models.rgb)
        self.sampling = "joint" if joint else "independent"
        self.tracker = RowTracker.for_layout(layout, restarts)
        self._patch_weights = blend_weights(layout.patch, layout.overlap)

    def row(self, index: int, top: int) -> Iterator[Contribution]:
        """Super-resolve one row of patches (batched), skipping patches without valid pixels.

        With joint sampling the row is one canvas continuing the finished row above; a row whose
        row above is unknown (a resume without its saved state) first recomputes the rows above
        it, from the nearest one that is known, without contributing them again.
        """
        if not self.tracker.has_carry_for(index):
            first = max(i for i in range(index + 1) if self.tracker.has_carry_for(i))
            for row in range(first, index):
                for _ in self._compute_patch_row(row, self.layout.patch_rows[row], replay=True):
                    pass
        yield from self._compute_patch_row(index, top)

    def _compute_patch_row(
        self, index: int, top: int, replay: bool = False
    ) -> Iterator[Contribution]:
        """The patches of row ``index`` (``replay``: only for the carry to the next row)."""
        patch, cols = self.layout.patch, self.layout.patch_cols
        lr_size, joint = patch // SCALE, self.sampling == "joint"
        # Joint sampling gives each patch context beyond its edges (read from the scene).
        margin = (
            joint_margin(self.settings.joint_margin, self.models.patch_multiple) if joint else 0
        )
        extra = margin // SCALE
        window = Window(
            self.region.col_off - extra,
            self.region.row_off + top // SCALE - extra,
            (cols[-1] + patch) // SCALE + 2 * extra,
            lr_size + 2 * extra,
        )
        lr_read, valid_read, _ = self.read(RGB, window)
        inner = np.s_[extra : extra + lr_size, extra : valid_read.shape[1] - extra]
        lr_strip, valid = lr_read[:, inner[0], inner[1]], valid_read[inner]
        todo: list[tuple[int, int]] = []
        for col, left in enumerate(cols):
            if valid[:, left // SCALE : left // SCALE + lr_size].any():
                todo.append((col, left))
            elif not replay:
                self.counters.patches_skipped += 1
                self.on_patches(1)
        lr_of = [lr_strip[:, :, left // SCALE : left // SCALE + lr_size] for _, left in todo]
        predictions: dict[int, np.ndarray] = {}
        self.tracker.start_row(index)
        if joint and todo:
            with autocast(self.settings.device, self.settings.dtype):
                row = sample_row_jointly(
                    self.models.rgb,  # type: ignore[arg-type]
                    lr_read,
                    [left for _, left in todo],
                    margin=margin,
                    seed=self.settings.seed,
                    top=top,
                    width=cols[-1] + patch,
                    weights=self._patch_weights,
                    steps=self.settings.steps,
                    batch_size=self.settings.batch_size,
                    above=self.tracker.carry_above(index),
                    device=self.settings.device,
                )
            canvas, name = row.canvas, self.models.rgb_info.name
            views = [canvas[:, :, left : left + patch] for _, left in todo]
            check_finite(name, self.region, index, top, todo, views)
            predictions = {col: row.patches_x0[k] for k, (col, _) in enumerate(todo)}
            self.tracker.finish_row(index, predictions, row.context, row.covered)
            if not replay:
                # One contribution, weight 1 where computed: the row's pixels are the canvas, and
                # rows shared with the row above are equal in both, so blending changes nothing.
                yield 0, canvas, row.covered[margin:].astype(np.float32)
                self.counters.patches_run += len(todo)
                self.on_patches(len(todo))
            return
        for start in range(0, len(todo), self.settings.batch_size):
            batch = todo[start : start + self.settings.batch_size]
            lr = np.stack(lr_of[start : start + self.settings.batch_size])
            uses_noise = getattr(self.models.rgb, "uses_noise", True)
            noise = (  # a model without sampling (bicubic) says so: no noise is drawn for it
                torch.stack(
                    [patch_noise(self.settings.seed, index, col, patch) for col, _ in batch]
                ).to(self.settings.device)
                if uses_noise
                else None
            )
            # A model without sampling (bicubic) is a cheap, memory-bound filter: host work.
            threads = contextlib.nullcontext() if uses_noise else host_threads(self.settings.device)
            with autocast(self.settings.device, self.settings.dtype), threads:
                sr = self.models.rgb.super_resolve(
                    torch.from_numpy(lr).to(self.settings.device),
                    steps=self.settings.steps,
                    noise=noise,
                )
            values_np = sr.float().cpu().numpy()
            check_finite(self.models.rgb_info.name, self.region, index, top, batch, list(values_np))
            for (col, left), values in zip(batch, values_np, strict=True):
                self.tracker.add_patch(index, col, values)
                if not replay:
                    yield left, values, self._patch_weights
            if not replay:
                self.counters.patches_run += len(batch)
                self.on_patches(len(batch))
        self.tracker.finish_row(index)
