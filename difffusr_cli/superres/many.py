"""Running ``superres`` on many inputs: :func:`superres_many` (what the CLI calls).

The inputs are checked up front (:func:`_check_jobs`), then run one after the other in this process
(:func:`_run_serial`, one :func:`run_job` each) or as tasks on a Dask cluster
(:mod:`difffusr_cli.superres.distributed`). The batch report and the skip rule live in
:mod:`difffusr_cli.superres.batch`; one scene's run is :func:`~.run.superres_scene`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from difffusr_cli.device import select_device, select_precision
from difffusr_cli.errors import DifffusrError, InputError, OutputError
from difffusr_cli.superres.batch import (
    REPORT_NAME,
    BatchReport,
    SceneJob,
    check_complete,
    error_line,
    warn_about_radiometry,
)
from difffusr_cli.superres.lock import OutputLock
from difffusr_cli.superres.models import Models, load_models
from difffusr_cli.superres.options import SuperresOptions
from difffusr_cli.superres.outputs import RunSummary, output_paths
from difffusr_cli.superres.progress import LoggingProgress, ProgressSink
from difffusr_cli.superres.render import resolve_region
from difffusr_cli.superres.resume import check_no_interrupted_run
from difffusr_cli.superres.run import _interrupted_message, superres_scene

if TYPE_CHECKING:
    from difffusr_cli.weights import Reporter


def superres_many(
    inputs: Sequence[Path],
    output: str | Path,
    options: SuperresOptions,
    *,
    models: Models | None = None,
    on_block_done: Callable[[int], None] = lambda i: None,
    progress: ProgressSink | None = None,
    weights_reporter: Reporter | None = None,
    keep_going: bool = False,
    client: Any = None,
    retries: int = 2,
    report_name: str | None = REPORT_NAME,
) -> list[RunSummary]:
    """Super-resolve every input into ``output`` (a file for one input, else a folder).

    Everything that can be checked without the models (options, device, inputs readable with all
    12 bands, outputs writable, nothing overwritten by accident) is checked before the models are
    loaded, once, and used for every input. Complete products (folder mode, or one ``.tif`` with
    ``--resume``) are skipped when their recorded settings fingerprint matches, and
    ``DIR/difffusr-batch.json`` (:class:`~difffusr_cli.superres.batch.BatchReport`) says what
    happened to each input.

    Args:
        inputs: scenes in any format :func:`~difffusr_cli.io.open_scene` accepts.
        output: the product (one input) or a folder (created if missing).
        options: the run's options.
        models: preloaded models (tests, notebooks); None loads those ``options`` names. Not
            used with ``client`` (each worker loads its own, once).
        on_block_done: see :func:`superres_scene`; with ``client`` it runs on the worker (it
            must pickle).
        progress: where progress and messages go (default: :class:`LoggingProgress`).
        weights_reporter: where downloads and conversions of weights report (default: plain
            lines on stderr).
        keep_going: a failing input is reported (a ``failed`` summary, its line in the report)
            and the others go on; otherwise the first failure raises.
        client: a ``distributed.Client``: each input is one task on its cluster
            (:mod:`difffusr_cli.superres.distributed`).
        retries: with ``client``, how often a task that raised an unexpected error is retried
            (a task whose worker died is rescheduled by Dask itself); the retry resumes.
        report_name: file name of the batch report in the output folder (None: none).

    Returns:
        One :class:`RunSummary` per input, in input order (``failed`` ones with ``keep_going``).

    Raises:
        InputError, OutputError, WeightsError: anything the user can fix (exit code 2).
    """
    from difffusr_cli.io import check_output_path

    sink: ProgressSink = progress if progress is not None else LoggingProgress()
    options.validate()
    if not inputs:
        raise InputError("no input given")
    if client is None:  # a cluster's workers choose their own device
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
    report = BatchReport(Path(output) / report_name if folder and report_name else None)
    locks: list[OutputLock] = []
    try:
        for target in targets:
            check_output_path(target, overwrite=True)  # folder exists and is writable
            lock = OutputLock(target)
            lock.acquire()  # before anything of the output is written; a second run stops here
            locks.append(lock)
        jobs = _check_jobs(inputs, targets, folder, options, sink, keep_going)
        for job in jobs:
            report.add(job)
        report.save(force=True)
        if client is not None:
            from difffusr_cli.superres.distributed import run_on_cluster

            return run_on_cluster(
                client, jobs, options, sink, report, on_block_done, keep_going, retries
            )
        if models is None and any(job.error is None for job in jobs):
            from difffusr_cli.weights import StderrReporter

            models = load_models(options, device, weights_reporter or StderrReporter())
        return _run_serial(
            jobs, options, models, device, dtype, on_block_done, sink, report, keep_going
        )
    finally:
        try:
            report.save(force=True)
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


def _check_jobs(
    inputs: Sequence[Path],
    targets: list[Path],
    folder: bool,
    options: SuperresOptions,
    sink: ProgressSink,
    keep_going: bool,
) -> list[SceneJob]:
    """The up-front checks of every input (outputs locked); failures raise unless ``keep_going``."""
    from difffusr_cli.io import open_scene

    jobs = []
    for index, (source, target) in enumerate(zip(inputs, targets, strict=True)):
        # A complete product is kept only when made with these settings, in folder mode and
        # for a single .tif with --resume alike (--resume promises the same options).
        job = SceneJob(index, Path(source), target)
        try:
            job.complete = target.exists() and not options.overwrite
            if job.complete and not (folder or options.resume):
                raise OutputError(f"{target} already exists; pass --overwrite to replace it")
            if not job.complete:
                check_no_interrupted_run(target, options)
            scene = open_scene(source, scale=options.scale, offset=options.offset)
            scene.require_bands()
            resolve_region(scene, options.window, options.bbox)
            if not job.complete:
                warn_about_radiometry(scene, job.source, sink)
            # Checked; release its files until its turn (they reopen on the first read), so that
            # a batch of thousands of inputs does not hold thousands of open rasters.
            scene.close()
            job.scene = scene
        except DifffusrError as exc:
            if not keep_going:
                raise
            job.error = error_line(exc)
        jobs.append(job)
    return jobs


def _run_serial(
    jobs: list[SceneJob],
    options: SuperresOptions,
    models: Models | None,
    device: torch.device,
    dtype: torch.dtype,
    on_block_done: Callable[[int], None],
    sink: ProgressSink,
    report: BatchReport,
    keep_going: bool,
) -> list[RunSummary]:
    """The jobs one after the other in this process."""
    if not keep_going and models is not None:  # refuse other settings before computing anything
        for job in jobs:
            if job.complete and job.scene is not None:
                check_complete(job.scene, job.target, options, models, device, dtype)
    summaries: list[RunSummary] = []
    for job in jobs:
        if job.error is not None or models is None:
            summary = failed_summary(job, job.error or "not checked")
        else:
            report.running(job.index)
            try:
                summary = run_job(job, options, models, device, dtype, sink, on_block_done)
            except Exception as exc:
                if not keep_going:
                    report.finished(job.index, failed_summary(job, error_line(exc)))
                    raise
                summary = failed_summary(job, error_line(exc))
            except BaseException:
                report.finished(job.index, failed_summary(job, "interrupted"))
                raise
        report.finished(job.index, summary)
        summaries.append(summary)
        emit_summary(sink, summary, options.quiet)
    return summaries


def failed_summary(job: SceneJob, error: str) -> RunSummary:
    """The summary of an input that failed with ``error`` (one line)."""
    return RunSummary(input=job.source, output=job.target, status="failed", error=error)


def emit_summary(sink: ProgressSink, summary: RunSummary, quiet: bool) -> None:
    """Hand a product's summary to the sink (failures even when ``quiet``)."""
    if quiet and summary.status != "failed":
        return
    on_result = getattr(sink, "on_result", None)
    if on_result is not None:
        on_result(summary)
    else:
        sink.on_message(summary.paragraph())


def run_job(
    job: SceneJob,
    options: SuperresOptions,
    models: Models,
    device: torch.device,
    dtype: torch.dtype,
    sink: ProgressSink,
    on_block_done: Callable[[int], None],
) -> RunSummary:
    """One input of a batch: skipped when complete with the same settings, else rendered.

    Raises:
        OutputError: a complete product made with other settings; anything
            :func:`superres_scene` raises.
    """
    from difffusr_cli.io import open_scene

    scene = job.scene or open_scene(job.source, scale=options.scale, offset=options.offset)
    with scene:
        if job.complete:
            digest = check_complete(scene, job.target, options, models, device, dtype)
            return RunSummary(job.source, job.target, "skipped", fingerprint=digest)

        def on_total(n: int, label: str = job.target.name) -> None:
            sink.on_start(label, n)

        try:
            summary = superres_scene(
                scene,
                job.target,
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
            # Also with --quiet: what to do next is part of the failure.
            sink.on_message(_interrupted_message(job.target))
            raise
        finally:
            sink.on_end()
    return summary
