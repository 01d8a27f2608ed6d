"""Running ``superres`` on one scene, or the generated example.

One opened scene (:func:`superres_scene`) and the generated example (:func:`superres_example`);
many inputs are :func:`~difffusr_cli.superres.many.superres_many` (what the CLI calls).

Flow for one scene (see docs/superres.md): the region's blocks are rendered top to bottom
(:class:`~difffusr_cli.superres.render.Renderer`); each block is written, flushed and recorded in
the progress file (:mod:`difffusr_cli.superres.resume`), then its rows are dropped. Progress and
messages go to a :class:`~difffusr_cli.superres.progress.ProgressSink`; nothing here prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from difffusr_cli.bands import BAND_NAMES, SCALE
from difffusr_cli.device import (
    describe,
    peak_memory,
    precision_name,
    reset_peak_memory,
)
from difffusr_cli.errors import InputError
from difffusr_cli.superres.batch import fingerprint_sha256, warn_about_radiometry
from difffusr_cli.superres.compute import recorded_fingerprint, resolve_compute
from difffusr_cli.superres.models import Models
from difffusr_cli.superres.options import SuperresOptions
from difffusr_cli.superres.outputs import RunSummary, product_tags
from difffusr_cli.superres.progress import LoggingProgress, ProgressSink
from difffusr_cli.superres.region import context_region
from difffusr_cli.superres.render import WRITE_COLUMNS, Renderer, make_layout, resolve_region
from difffusr_cli.superres.resume import (
    FINGERPRINT_TAG,
    ProgressFile,
    check_no_interrupted_run,
    fingerprint,
    fingerprint_text,
    progress_path_for,
    rebuild_partial,
    source_path_for,
)
from difffusr_cli.superres.rows import remove_states, state_files, state_stem_for
from difffusr_cli.superres.sink import BlockSink

#: Kept under its former name (tests use it).
_warn_about_radiometry = warn_about_radiometry

if TYPE_CHECKING:
    from difffusr_cli.io import Scene
    from difffusr_cli.weights import Reporter


#: GDAL's block cache during a run, MiB (reads of the inputs and the product's writes).
GDAL_CACHE_MB = 64


def superres_scene(
    scene: Scene,
    output: Path,
    options: SuperresOptions,
    models: Models,
    device: torch.device,
    dtype: torch.dtype,
    *,
    on_patches: Callable[[int], None] = lambda n: None,
    on_total: Callable[[int], None] = lambda n: None,
    on_block_done: Callable[[int], None] = lambda i: None,
) -> RunSummary:
    """Write the product of one opened scene to ``output`` (models already loaded).

    ``on_total`` receives the number of patches this run will process, ``on_patches`` each
    increment, ``on_block_done`` each block index once it is written, flushed and recorded (an
    exception raised there interrupts the run like Ctrl-C: the partial file and the progress
    record stay for ``--resume``). Writing runs in its own thread (:class:`BlockSink`): block
    ``i`` is written while block ``i + 1`` is computed, and is recorded before block ``i + 2``
    is computed.

    Raises:
        InputError, OutputError: bad window, unusable output, or a resume that does not match.
    """
    import rasterio

    # One GDAL session writes the whole product (io/flush.py): a bounded block cache keeps the
    # blocks already flushed from piling up in memory (GDAL's default is 5 % of the RAM).
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        return _superres_scene(
            scene,
            output,
            options,
            models,
            device,
            dtype,
            on_patches=on_patches,
            on_total=on_total,
            on_block_done=on_block_done,
        )


def _superres_scene(
    scene: Scene,
    output: Path,
    options: SuperresOptions,
    models: Models,
    device: torch.device,
    dtype: torch.dtype,
    *,
    on_patches: Callable[[int], None],
    on_total: Callable[[int], None],
    on_block_done: Callable[[int], None],
) -> RunSummary:
    """:func:`superres_scene` inside its GDAL environment."""
    from difffusr_cli.io import ProductWriter, output_grid, partial_path_for

    started = time.perf_counter()
    reset_peak_memory(device)
    if models.method != options.fusion:
        raise ValueError(
            f"models are for --fusion {models.method}, options ask for --fusion {options.fusion}"
        )
    scene.require_bands()
    region = resolve_region(scene, options.window, options.bbox)
    record_path = progress_path_for(output)
    recorded = recorded_fingerprint(record_path) if options.resume else None
    shape = (int(region.height) * SCALE, int(region.width) * SCALE)
    options = resolve_compute(options, models, device, dtype, shape, recorded)
    if (options.patch_size or 0) % models.patch_multiple:
        raise InputError(
            f"--patch-size {options.patch_size}: the RGB model {models.rgb_info.name} needs a "
            f"multiple of {models.patch_multiple}"
        )
    context = context_region(scene, region, options, models.fusion_halo)
    layout = make_layout(context, options, models.fusion_halo, window=region)
    transform, width, height = output_grid(scene, region)
    states = state_stem_for(output)
    partial = partial_path_for(output)
    expected = fingerprint(scene, region, layout, options, models, device, dtype)
    check_no_interrupted_run(output, options)
    block_rows = [(b.start, b.stop) for b in map(layout.block, range(layout.block_count))]
    if options.resume and record_path.is_file() and partial.is_file():
        progress = ProgressFile.load(record_path, expected)
        # Keep only the blocks whose stored pixels match their recorded digest: a forged or stale
        # record, or a block lost in a crash, is computed again, never left empty.
        progress.verify(partial, block_rows)
    else:
        progress = ProgressFile(record_path, expected)

    radiometry = scene.radiometry

    def open_writer(resume: bool, target: Path = output) -> ProductWriter:
        return ProductWriter(
            target,
            crs=scene.crs,
            transform=transform,
            width=width,
            height=height,
            dtype=options.dtype,
            scale=[radiometry.scale[n] for n in BAND_NAMES],
            offset=[radiometry.offset[n] for n in BAND_NAMES],
            tags={
                **product_tags(scene, region, options, models, dtype, device),
                FINGERPRINT_TAG: fingerprint_text(expected),
            },
            cog=options.cog,
            overwrite=options.overwrite,
            resume=resume,
            compress=options.compress,
            compress_level=options.compress_level,
        )

    source = source_path_for(output)
    later: list[int] = []
    rebuilt: ProductWriter | None = None
    if progress.done:
        # The product is the partial file itself: what is kept is written again in the order
        # of an uninterrupted run, so that the finished file is byte for byte the same.
        rebuilt, later = rebuild_partial(
            partial,
            progress,
            block_rows,
            WRITE_COLUMNS,
            lambda target, resume: open_writer(resume, target),
            output,
            output.parent / f".{output.name}.rebuild",
            source,
        )
    resumed = len(progress.done)

    sink: BlockSink | None = None
    try:
        writer = rebuilt if rebuilt is not None else open_writer(False)
        sink = BlockSink(
            writer, partial, progress, block_rows, WRITE_COLUMNS, later, source, on_block_done
        )
        progress.save()
        renderer = Renderer(
            scene,
            context,
            layout,
            models,
            steps=options.steps,
            seed=options.seed,
            batch_size=int(options.batch_size or 1),
            fusion_batch_size=int(options.fusion_batch_size or 1),
            device=device,
            dtype=dtype,
            on_patches=on_patches,
            consistency=options.consistency,
            sampling=options.sampling,
            joint_margin=options.joint_margin,
        )
        if progress.done:
            renderer.tracker.load(states)  # the rows above the restart, saved at the last commit
        else:
            remove_states(states)
        saved: set[Path] = set()

        def on_handover(index: int) -> tuple[int, Path | None]:
            # What a run restarting after this block needs, saved before the block is recorded
            # (now: the renderer has not yet computed the next block).
            restart = renderer.restart_patch_row(index + 1) if index + 1 < layout.block_count else 0
            kept = renderer.tracker.save(states, restart)
            if kept is not None:
                saved.add(kept)
            return restart, kept

        def on_recorded(index: int, token: object) -> None:
            restart, kept = token if isinstance(token, tuple) else (0, None)
            # States of earlier restarts go; this block's and those of blocks in flight stay.
            newer = {p for p in saved if p != kept and _state_row(p) > restart}
            for path in state_files(states):
                if path != kept and path not in newer:
                    path.unlink(missing_ok=True)
            saved.intersection_update(newer | {kept})
            renderer.tracker.committed(restart)

        sink.on_handover, sink.on_recorded = on_handover, on_recorded
        on_total(renderer.patches_to_run(progress.done))
        for index, pieces in renderer.blocks(progress.done):
            sink.write(index, pieces)
        # A failure here with blocks recorded keeps them for --resume.
        disagreement: dict = {}

        def final_tags() -> dict:
            disagreement.update(renderer.tracker.disagreement())
            return {"overlap_disagreement": disagreement}

        sink.finish(final_tags)
    except BaseException:
        try:
            if sink is not None:
                sink.abort()
            source.unlink(missing_ok=True)
        finally:
            if not progress.done:
                # Nothing recorded (e.g. a model error in the first block): nothing to resume, so
                # leave no partial file that would make the next run demand --resume/--overwrite.
                partial.unlink(missing_ok=True)
                record_path.unlink(missing_ok=True)
                remove_states(states)
        raise
    record_path.unlink(missing_ok=True)
    remove_states(states)
    peak, peak_kind = peak_memory(device)
    return RunSummary(
        input=Path(scene.path),
        output=output,
        status="written",
        seconds=time.perf_counter() - started,
        patches_run=renderer.counters.patches_run,
        patches_skipped=renderer.counters.patches_skipped,
        blocks_written=sink.written,
        blocks_resumed=resumed,
        device=f"{describe(device)}, {precision_name(dtype)}",
        peak_memory=peak,
        peak_memory_kind=peak_kind,
        width=width,
        height=height,
        sampling=renderer.sampling,
        overlap_disagreement=disagreement,
        fingerprint=fingerprint_sha256(expected),
    )


def _state_row(path: Path) -> int:
    """The restart patch row of a saved rows state (``….rows-<row>.npz``)."""
    try:
        return int(path.stem.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _interrupted_message(target: Path) -> str:
    from difffusr_cli.io import partial_path_for

    if partial_path_for(target).exists():
        return f"interrupted: rerun with --resume to continue {target}"
    return f"interrupted: nothing of {target} was kept; rerun to start again"


#: Side of the generated example product on the 10 m grid (a multiple of 6): 480 m × 480 m.
EXAMPLE_SIZE = 48


def superres_example(
    output: str | Path,
    options: SuperresOptions,
    *,
    progress: ProgressSink | None = None,
    weights_reporter: Reporter | None = None,
) -> list[RunSummary]:
    """Run the whole pipeline on a small generated L2A product (``difffusr superres --example``).

    The product is synthetic (:func:`difffusr_cli.example.make_example_safe`, 48 × 48 pixels at
    10 m), written to a temporary folder that is removed afterwards; the packaged models
    ``rgb-tiny`` (a demonstration) and ``fusion-s2`` are used unless ``options`` names other models.
    """
    import tempfile

    from difffusr_cli.example import make_example_safe
    from difffusr_cli.weights import DEMO_MODELS  # shipped in the package: works offline

    options = replace(
        options,
        rgb_model=options.rgb_model or DEMO_MODELS["rgb"],
        fusion_model=options.fusion_model
        or (DEMO_MODELS["fusion"] if options.fusion == "net" else None),
    )
    with tempfile.TemporaryDirectory(prefix="difffusr-example-") as tmp:
        safe = make_example_safe(Path(tmp), size=EXAMPLE_SIZE, seed=options.seed)
        sink: ProgressSink = progress if progress is not None else LoggingProgress()
        if not options.quiet:
            sink.on_message(
                f"example: generated synthetic L2A product {safe.name} "
                f"({EXAMPLE_SIZE}×{EXAMPLE_SIZE} px at 10 m)"
            )
        from difffusr_cli.superres.many import superres_many

        return superres_many(
            [safe], output, options, progress=sink, weights_reporter=weights_reporter
        )
