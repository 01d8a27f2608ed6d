"""Running ``superres`` on one scene, many inputs, or the generated example.

One opened scene (:func:`superres_scene`), many inputs (:func:`superres_many`, what the CLI
calls) and the generated example (:func:`superres_example`).

Flow for one scene (see docs/superres.md): the region's blocks are rendered top to bottom
(:class:`~difffusr_cli.superres.render.Renderer`); each block is written, flushed and recorded in
the progress file (:mod:`difffusr_cli.superres.resume`), then its rows are dropped. Progress and
messages go to a :class:`~difffusr_cli.superres.progress.ProgressSink`; nothing here prints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from difffusr_cli.bands import BAND_NAMES
from difffusr_cli.device import (
    describe,
    peak_memory,
    precision_name,
    reset_peak_memory,
    select_device,
    select_precision,
)
from difffusr_cli.errors import InputError, OutputError
from difffusr_cli.superres.lock import OutputLock
from difffusr_cli.superres.models import Models, load_models
from difffusr_cli.superres.options import SuperresOptions
from difffusr_cli.superres.outputs import RunSummary, output_paths, product_tags
from difffusr_cli.superres.progress import LoggingProgress, ProgressSink
from difffusr_cli.superres.region import context_region
from difffusr_cli.superres.render import Renderer, make_layout, resolve_region
from difffusr_cli.superres.resume import (
    FINGERPRINT_TAG,
    ProgressFile,
    block_digest,
    changed_settings,
    check_no_interrupted_run,
    fingerprint,
    fingerprint_text,
    progress_path_for,
)

if TYPE_CHECKING:
    from difffusr_cli.io import Scene
    from difffusr_cli.weights import Reporter


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
    record stay for ``--resume``).

    Raises:
        InputError, OutputError: bad window, unusable output, or a resume that does not match.
    """
    from difffusr_cli.io import ProductWriter, output_grid, partial_path_for

    started = time.perf_counter()
    reset_peak_memory(device)
    if models.method != options.fusion:
        raise ValueError(
            f"models are for --fusion {models.method}, options ask for --fusion {options.fusion}"
        )
    scene.require_bands()
    region = resolve_region(scene, options.window, options.bbox)
    if options.patch_size % models.patch_multiple:
        raise InputError(
            f"--patch-size {options.patch_size}: the RGB model {models.rgb_info.name} needs a "
            f"multiple of {models.patch_multiple}"
        )
    context = context_region(scene, region, options, models.fusion_halo)
    layout = make_layout(context, options, models.fusion_halo, window=region)
    transform, width, height = output_grid(scene, region)
    record_path = progress_path_for(output)
    partial = partial_path_for(output)
    expected = fingerprint(scene, region, layout, options, models, device, dtype)
    check_no_interrupted_run(output, options)
    if options.resume and record_path.is_file() and partial.is_file():
        progress = ProgressFile.load(record_path, expected)
        # Keep only the blocks whose stored pixels match their recorded digest: a forged or stale
        # record, or a block lost in a crash, is computed again, never left empty.
        blocks = [layout.block(i) for i in range(layout.block_count)]
        progress.verify(partial, [(b.start, b.stop) for b in blocks])
    else:
        progress = ProgressFile(record_path, expected)
    resumed = len(progress.done)

    radiometry = scene.radiometry

    def open_writer(resume: bool) -> ProductWriter:
        return ProductWriter(
            output,
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
        )

    writer: ProductWriter | None = None
    written = 0
    try:
        writer = open_writer(resume=bool(progress.done))
        progress.save()
        renderer = Renderer(
            scene,
            context,
            layout,
            models,
            steps=options.steps,
            seed=options.seed,
            batch_size=options.batch_size,
            device=device,
            dtype=dtype,
            on_patches=on_patches,
            consistency=options.consistency,
        )
        on_total(renderer.patches_to_run(progress.done))
        for index, pieces in renderer.blocks(progress.done):
            for window, data, valid in pieces:
                writer.write(window, data, valid)
            # Closing flushes the block to disk before it is recorded as done; reopen to go on.
            writer.abort()
            rows = layout.block(index)
            progress.digests[index] = block_digest(partial, (rows.start, rows.stop), writing=True)
            writer = open_writer(resume=True)
            progress.done.add(index)
            progress.save()
            written += 1
            on_block_done(index)
    except BaseException:
        try:
            if writer is not None:
                writer.abort()
        finally:
            if not progress.done:
                # Nothing recorded (e.g. a model error in the first block): nothing to resume, so
                # leave no partial file that would make the next run demand --resume/--overwrite.
                partial.unlink(missing_ok=True)
                record_path.unlink(missing_ok=True)
        raise
    missing = [i for i in range(layout.block_count) if i not in progress.done]
    if missing:  # never finish a product with a hole
        writer.abort()
        raise OutputError(
            f"{partial}: blocks {missing[:5]} were never written; run with --overwrite"
        )
    writer.commit()
    record_path.unlink(missing_ok=True)
    peak, peak_kind = peak_memory(device)
    return RunSummary(
        input=Path(scene.path),
        output=output,
        status="written",
        seconds=time.perf_counter() - started,
        patches_run=renderer.counters.patches_run,
        patches_skipped=renderer.counters.patches_skipped,
        blocks_written=written,
        blocks_resumed=resumed,
        device=f"{describe(device)}, {precision_name(dtype)}",
        peak_memory=peak,
        peak_memory_kind=peak_kind,
        width=width,
        height=height,
    )


def superres_many(
    inputs: Sequence[Path],
    output: str | Path,
    options: SuperresOptions,
    *,
    models: Models | None = None,
    on_block_done: Callable[[int], None] = lambda i: None,
    progress: ProgressSink | None = None,
    weights_reporter: Reporter | None = None,
) -> list[RunSummary]:
    """Super-resolve every input into ``output`` (a file for one input, else a folder).

    Everything that can be checked without the models (options, device, inputs readable with all
    12 bands, outputs writable, nothing overwritten by accident) is checked before the models are
    loaded, once, and used for every input. In folder mode complete products are skipped.

    Args:
        inputs: scenes in any format :func:`~difffusr_cli.io.open_scene` accepts.
        output: the product (one input) or a folder (created if missing).
        options: the run's options.
        models: preloaded models (tests, notebooks); None loads those ``options`` names.
        on_block_done: see :func:`superres_scene`.
        progress: where progress and messages go (default: :class:`LoggingProgress`).
        weights_reporter: where downloads and conversions of weights report (default: plain
            lines on stderr).

    Raises:
        InputError, OutputError, WeightsError: anything the user can fix (exit code 2).
    """
    from difffusr_cli.io import check_output_path

    sink: ProgressSink = progress if progress is not None else LoggingProgress()
    options.validate()
    if not inputs:
        raise InputError("no input given")
    device = select_device(options.device)
    dtype = select_precision(options.precision, device)
    for path in [*inputs, output]:
        _require_utf8(path)
    targets, folder = output_paths([Path(p) for p in inputs], output)
    if folder:
        try:
            Path(output).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {output}: {exc}") from None
    locks: list[OutputLock] = []
    try:
        for target in targets:
            check_output_path(target, overwrite=True)  # folder exists and is writable
            lock = OutputLock(target)
            lock.acquire()  # before anything of the output is written; a second run stops here
            locks.append(lock)
        return _run_jobs(
            inputs,
            targets,
            folder,
            options,
            models,
            device,
            dtype,
            on_block_done,
            sink,
            weights_reporter,
        )
    finally:
        for lock in locks:
            lock.release()


def _require_utf8(path: str | Path) -> None:
    """GDAL takes UTF-8 file names: refuse others up front (before any model is loaded)."""
    try:
        os.fsdecode(os.fspath(path)).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsdecode(os.fspath(path)).encode("utf-8", "backslashreplace").decode()
        raise InputError(f"{shown}: the path is not valid UTF-8; rename it") from None


def _run_jobs(
    inputs: Sequence[Path],
    targets: list[Path],
    folder: bool,
    options: SuperresOptions,
    models: Models | None,
    device: torch.device,
    dtype: torch.dtype,
    on_block_done: Callable[[int], None],
    sink: ProgressSink,
    weights_reporter: Reporter | None,
) -> list[RunSummary]:
    """The checks and runs of :func:`superres_many`, with every output locked."""
    from difffusr_cli.io import open_scene

    jobs: list[tuple[Path, Path, bool]] = []
    for source, target in zip(inputs, targets, strict=True):
        complete = target.exists() and not options.overwrite
        if complete and not (folder or options.resume):
            raise OutputError(f"{target} already exists; pass --overwrite to replace it")
        if not complete:
            check_no_interrupted_run(target, options)
        jobs.append((Path(source), target, complete))
    scenes = []
    for source, _, complete in jobs:
        scene = open_scene(source, scale=options.scale, offset=options.offset)
        scene.require_bands()
        resolve_region(scene, options.window, options.bbox)
        if not complete:
            _warn_about_radiometry(scene, source, sink)
        # Checked; release its files until its turn (they reopen on the first read), so that a
        # batch of thousands of inputs does not hold thousands of open rasters.
        scene.close()
        scenes.append(scene)

    if models is None:
        from difffusr_cli.weights import StderrReporter

        models = load_models(options, device, weights_reporter or StderrReporter())
    for (_, target, complete), scene in zip(jobs, scenes, strict=True):
        if complete and folder:
            _require_same_settings(scene, target, options, models, device, dtype)
    summaries: list[RunSummary] = []
    for (source, target, complete), scene in zip(jobs, scenes, strict=True):
        if complete:
            summary = RunSummary(input=source, output=target, status="skipped")
        else:

            def on_total(n: int, label: str = target.name) -> None:
                sink.on_start(label, n)

            with scene:
                try:
                    summary = superres_scene(
                        scene,
                        target,
                        options,
                        models,
                        device,
                        dtype,
                        on_patches=sink.on_advance,
                        on_total=on_total,
                        on_block_done=on_block_done,
                    )
                except KeyboardInterrupt:
                    sink.on_end()
                    if not options.quiet:
                        sink.on_message(_interrupted_message(target))
                    raise
                finally:
                    sink.on_end()
        summaries.append(summary)
        if not options.quiet:
            sink.on_message(summary.paragraph())
    return summaries


def _warn_about_radiometry(scene: Scene, source: Path, sink: ProgressSink) -> None:
    """Data processed on assumptions is processed, but never silently (one ``warning:`` line)."""
    if scene.processing_level == "L1C":
        # A Level-1C SAFE is refused by the reader; COGs and STAC items only say so in their
        # metadata. Their pixels are processed (they are reflectance too), but never silently.
        sink.on_message(
            f"warning: {source}: Level-1C (top-of-atmosphere) data; the models expect Level-2A "
            "surface reflectance, so expect a radiometric bias"
        )
    if getattr(scene.radiometry, "assumed", False):
        sink.on_message(
            f"warning: {source}: no radiometric metadata for some bands, the L2A convention is "
            "assumed (see `difffusr info`; --scale/--offset override it)"
        )


def _require_same_settings(
    scene: Scene,
    target: Path,
    options: SuperresOptions,
    models: Models,
    device: torch.device,
    dtype: torch.dtype,
) -> None:
    """A complete product is skipped only when it was made with these settings."""
    import json

    import rasterio
    from rasterio.errors import RasterioError

    region = resolve_region(scene, options.window, options.bbox)
    context = context_region(scene, region, options, models.fusion_halo)
    expected = fingerprint(
        scene,
        region,
        make_layout(context, options, models.fusion_halo, window=region),
        options,
        models,
        device,
        dtype,
    )
    try:
        with rasterio.open(target) as ds:
            text = ds.tags().get(FINGERPRINT_TAG)
        stored = json.loads(text) if text else None
    except (RasterioError, OSError, ValueError) as exc:
        raise OutputError(f"{target} exists but is unreadable ({exc}); pass --overwrite") from None
    if not isinstance(stored, dict):
        raise OutputError(
            f"{target} exists and records no settings fingerprint (an older difffusr); "
            "pass --overwrite to replace it"
        )
    detail = changed_settings(stored, json.loads(fingerprint_text(expected)))
    if detail:
        raise OutputError(
            f"{target} exists but was made with other settings ({detail}); "
            "pass --overwrite to replace it"
        )


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
    10 m), written to a temporary folder that is removed afterwards; the demonstration models
    ``rgb-tiny``/``fusion-tiny`` are used unless ``options`` names other models.
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
        return superres_many(
            [safe], output, options, progress=sink, weights_reporter=weights_reporter
        )
