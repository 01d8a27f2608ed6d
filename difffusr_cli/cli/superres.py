"""`difffusr superres`: the 12-band 2.5 m product.

A thin command over :mod:`difffusr_cli.superres`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer


def superres(
    # str, not Path: a trailing slash ("products/") means a folder and Path would drop it.
    output: Annotated[
        str,
        typer.Option(
            "-o",
            "--output",
            help=(
                "Output GeoTIFF (.tif), or a folder (several inputs, or a path ending in /): one "
                "<input stem>_difffusr.tif per input."
            ),
            show_default=False,
        ),
    ],
    inputs: Annotated[
        Optional[list[Path]],
        typer.Argument(
            help=(
                "One or more scenes: .SAFE folder or .zip, MTD_MSIL2A.xml, COG folder, STAC item "
                "JSON or multi-band GeoTIFF."
            ),
            show_default=False,
        ),
    ] = None,
    example: Annotated[
        bool,
        typer.Option(
            "--example",
            help=(
                "Instead of INPUTS, run on a small generated (synthetic) L2A product with the "
                "shipped models rgb-tiny (demo) and fusion-s2: works offline."
            ),
        ),
    ] = False,
    rgb_model: Annotated[
        Optional[str],
        typer.Option(
            "--rgb-model",
            help=(
                "RGB diffusion weights: a name of `difffusr weights list` or a file (default: the "
                "manifest's default); `bicubic` is the built-in baseline (no weights)."
            ),
        ),
    ] = None,
    fusion_model: Annotated[
        Optional[str],
        typer.Option(
            "--fusion-model",
            help=(
                "Fusion weights: a name or a file (default: the manifest's default); --fusion net "
                "only."
            ),
        ),
    ] = None,
    fusion: Annotated[
        Literal["net", "gs", "bilinear"],
        typer.Option(
            help="Fusion of the other bands: net (learned), gs (Gram–Schmidt) or bilinear."
        ),
    ] = "net",
    consistency: Annotated[
        Literal["box", "off"],
        typer.Option(
            help=(
                "box: after fusion, correct every band so that its 2.5 m pixels averaged over "
                "each native pixel (10, 20 or 60 m) give back the input reflectance exactly, with "
                "a smooth correction (no blocks); nodata pixels are left alone. off: keep the "
                "models' pixels as they are."
            )
        ),
    ] = "box",
    steps: Annotated[int, typer.Option(help="Diffusion sampler steps per patch.")] = 20,
    seed: Annotated[
        int,
        typer.Option(
            help="Noise seed: the same seed gives the same file (same device and batch size)."
        ),
    ] = 0,
    patch_size: Annotated[
        Optional[int],
        typer.Option(
            "--patch-size",
            help=(
                "Diffusion patch side in 2.5 m pixels (multiple of 32 for the published models). "
                "Default: 672 (10 % of the compute on overlap; 256 spent 31 %), smaller for "
                "models with fine self-attention and for small regions."
            ),
        ),
    ] = None,
    overlap: Annotated[
        int,
        typer.Option(
            help=(
                "Overlap of neighbouring patches in 2.5 m pixels (multiple of 4), blended smoothly."
            )
        ),
    ] = 32,
    batch_size: Annotated[
        str,
        typer.Option(
            "--batch-size",
            help=(
                "Patches per network call, or auto: from the free GPU memory on CUDA, 4 "
                "elsewhere (pixels agree across batch sizes within float rounding)."
            ),
        ),
    ] = "auto",
    compile: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="torch.compile the denoiser and fusion nets (slow first batch; GPU runs).",
        ),
    ] = False,
    channels_last: Annotated[
        bool,
        typer.Option(
            "--channels-last", help="Run the networks in the channels-last memory format."
        ),
    ] = False,
    sampling: Annotated[
        Literal["joint", "independent"],
        typer.Option(
            help=(
                "joint: the patches of a row step together on one canvas that continues the row "
                "above, so overlapping patches agree (no seams); independent: each patch on its "
                "own, then blended."
            )
        ),
    ] = "joint",
    joint_margin: Annotated[
        int,
        typer.Option(
            "--joint-margin",
            help=(
                "Joint sampling: context pixels each patch sees beyond its edges (multiple of 4), "
                "at (patch + 2·margin)²/patch² of the network time. 32 keeps the demo model's "
                "darkened patch edges out of the overlaps (16 left a line along every patch "
                "row); 0 is fastest. At most the patch size; the default 32 shrinks to a smaller "
                "--patch-size."
            ),
        ),
    ] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[
        Literal["auto", "fp32", "bf16", "fp16"],
        typer.Option(help="auto (bf16 on CUDA, fp32 elsewhere), fp32, bf16 or fp16."),
    ] = "auto",
    window: Annotated[
        Optional[tuple[int, int, int, int]],
        typer.Option(
            help=(
                "Process only COL ROW WIDTH HEIGHT of the 10 m grid (widened to whole 60 m pixels)."
            ),
            metavar="COL ROW WIDTH HEIGHT",
        ),
    ] = None,
    bbox: Annotated[
        Optional[tuple[float, float, float, float]],
        typer.Option(
            help=(
                "Process only XMIN YMIN XMAX YMAX, in the scene's CRS (widened to whole 60 m "
                "pixels)."
            ),
            metavar="XMIN YMIN XMAX YMAX",
        ),
    ] = None,
    dtype: Annotated[
        Literal["uint16", "float32"],
        typer.Option(
            help=(
                "uint16 (the input's DN convention, scale/offset in the metadata) or float32 "
                "(reflectance)."
            )
        ),
    ] = "uint16",
    cog: Annotated[
        bool, typer.Option("--cog", help="Write a Cloud-Optimized GeoTIFF with overviews.")
    ] = False,
    compress: Annotated[
        Literal["zstd", "deflate", "lzw", "none"],
        typer.Option(help="The product's codec (zstd falls back to deflate without GDAL ZSTD)."),
    ] = "zstd",
    compress_level: Annotated[
        Optional[int],
        typer.Option(
            "--compress-level",
            help=(
                "Codec level: zstd 1-22, deflate 1-9 (default 1, the fastest; higher levels "
                "write smaller files more slowly). Pixels never change."
            ),
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run with the same options.")
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace existing outputs (and discard interrupted runs)."
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")
    ] = False,
    scale: Annotated[
        Optional[float],
        typer.Option(help="Override the radiometric scale: reflectance = DN·scale + offset."),
    ] = None,
    offset: Annotated[
        Optional[float],
        typer.Option(help="Override the radiometric offset in reflectance (e.g. -0.1)."),
    ] = None,
    inputs_from: Annotated[
        Optional[Path],
        typer.Option(
            "--inputs-from",
            help=(
                "Read inputs from FILE, one path a line (blank lines and # comments ignored; "
                "relative paths are relative to FILE's folder), after any INPUTS."
            ),
            metavar="FILE",
        ),
    ] = None,
    shard: Annotated[
        Optional[str],
        typer.Option(
            help=(
                "Process only shard I of N (0-based) of the inputs: every N-th from the I-th, "
                "e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT in a job array."
            ),
            metavar="I/N",
        ),
    ] = None,
    keep_going: Annotated[
        bool,
        typer.Option(
            "--keep-going",
            help="A failing input is reported and the others go on; exit status 2 if any failed.",
        ),
    ] = False,
    scheduler: Annotated[
        Optional[str],
        typer.Option(
            help=(
                "Run each input as a task on a Dask cluster: a scheduler ADDRESS, or local:N for "
                "N local worker processes (default: $DASK_SCHEDULER_ADDRESS, else no cluster). "
                "Needs the dask extra."
            ),
            metavar="ADDRESS",
        ),
    ] = None,
    log_interval: Annotated[
        float,
        typer.Option(
            "--log-interval",
            help="Seconds between progress lines when stderr is not a terminal.",
            min=0.05,
        ),
    ] = 30.0,
    log_format: Annotated[
        Literal["text", "json"],
        typer.Option(
            "--log-format",
            help=(
                "Progress lines when stderr is not a terminal: text, or json (one object a "
                "line, also on a terminal)."
            ),
        ),
    ] = "text",
) -> None:
    """Super-resolve scenes to 12-band GeoTIFFs at 2.5 m: diffusion RGB, fused other bands.

    Example: `difffusr superres S2B_MSIL2A_….SAFE -o out.tif`. Try `--example -o example.tif` first.
    """
    from difffusr_cli.cli.progress import LogProgress, LogReporter, RichProgress
    from difffusr_cli.errors import InputError

    if not os.environ.get("DIFFFUSR_DEBUG"):
        # GDAL prints write errors (e.g. a full disk) itself; difffusr checks every write and
        # reports the failure in one line, so GDAL's own lines only repeat it.
        os.environ.setdefault("CPL_LOG", os.devnull)
        from difffusr_cli.io.libtiff import silence_libtiff

        silence_libtiff()  # and libtiff's own copies of a failed write, printed to stderr
    from difffusr_cli.superres import SuperresOptions, superres_example, superres_many
    from difffusr_cli.superres.batch import REPORT_NAME

    options = SuperresOptions(
        rgb_model=rgb_model,
        fusion_model=fusion_model,
        fusion=fusion,
        consistency=consistency,
        steps=steps,
        seed=seed,
        patch_size=patch_size,
        overlap=overlap,
        batch_size=_batch_size(batch_size),
        compile=compile,
        channels_last=channels_last,
        sampling=sampling,
        joint_margin=joint_margin,
        device=device,
        precision=precision,
        window=window,
        bbox=bbox,
        dtype=dtype,
        cog=cog,
        compress=compress,
        compress_level=compress_level,
        resume=resume,
        overwrite=overwrite,
        quiet=quiet,
        scale=scale,
        offset=offset,
    )
    all_inputs = list(inputs or [])
    if inputs_from is not None:
        from difffusr_cli.superres.batch import read_inputs_file

        all_inputs += read_inputs_file(inputs_from)
    if example and all_inputs:
        raise InputError("--example runs on a generated product: give no INPUTS with it")
    report_name = REPORT_NAME
    if shard is not None:
        from difffusr_cli.superres.batch import parse_shard
        from difffusr_cli.superres.batch import shard as take_shard

        index, count = parse_shard(shard)
        all_inputs = take_shard(all_inputs, index, count)
        report_name = f"difffusr-batch.shard-{index}-of-{count}.json"
        if not all_inputs:
            raise InputError(f"--shard {shard}: this shard holds no input")
    from difffusr_cli.cli.console import ConsoleReporter
    from difffusr_cli.weights import StderrReporter

    lines = log_format == "json" or not sys.stderr.isatty()
    progress: LogProgress | RichProgress
    reporter: ConsoleReporter | LogReporter | StderrReporter
    if lines:  # a batch log: timed lines (text or JSON), weights notes among them
        progress = LogProgress(log_interval, log_format, progress=not quiet)
        reporter = LogReporter(progress)
    else:
        progress = RichProgress(bar=not quiet)
        reporter = StderrReporter() if quiet else ConsoleReporter()
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    close_client = None
    try:
        if example:
            superres_example(output, options, progress=progress, weights_reporter=reporter)
            return
        client = None
        if address:
            from difffusr_cli.superres.distributed import connect

            client, close_client = connect(address)
        summaries = superres_many(
            all_inputs,
            output,
            options,
            progress=progress,
            weights_reporter=reporter,
            keep_going=keep_going,
            client=client,
            report_name=report_name,
        )
    finally:
        if isinstance(progress, LogProgress):
            progress.close()
        if close_client is not None:
            close_client()
        if isinstance(reporter, ConsoleReporter):
            reporter.close()
    failed = [s for s in summaries if s.status == "failed"]
    if failed:
        from difffusr_cli.errors import BatchError

        names = ", ".join(str(s.input) for s in failed[:3]) + (", ..." if len(failed) > 3 else "")
        report = Path(output) / report_name
        where = f"; see {report}" if report.is_file() else ""
        raise BatchError(f"{len(failed)} of {len(summaries)} inputs failed ({names}){where}")


def _batch_size(text: str) -> int | None:
    """``--batch-size``: ``auto`` (None) or a positive integer."""
    from difffusr_cli.errors import InputError

    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise InputError(f"--batch-size {text!r}: expected a positive integer or auto") from None
