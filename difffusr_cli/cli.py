"""The ``difffusr`` command line: thin Typer commands over the library.

Every command parses and validates its options, then calls one library function. Errors the user
can fix (:class:`~difffusr_cli.errors.DifffusrError`) become one line on stderr and exit code 2;
anything else is an unexpected failure: exit code 1 and the traceback in a log file whose path is
printed (set ``DIFFFUSR_DEBUG=1`` to see it on the terminal instead).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from difffusr_cli import __version__
from difffusr_cli.errors import DifffusrError

app = typer.Typer(
    # Plain Click help: Typer 0.29's rich help prints `<bool>` after flags, as if they took a value.
    rich_markup_mode=None,
    name="difffusr",
    help=(
        "Sentinel-2 L2A to a 12-band GeoTIFF at 2.5 m: diffusion super-resolution of the RGB bands "
        "and learned fusion of every other band.\n\n"
        "Start with `difffusr info SCENE` to see what difffusr reads from a product, then "
        "`difffusr superres SCENE -o out.tif`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"difffusr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Sentinel-2 L2A to a 12-band GeoTIFF at 2.5 m."""


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="A .SAFE folder, .SAFE.zip, MTD_MSIL2A.xml, COG folder, STAC item JSON or multi-band GeoTIFF.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    scale: Annotated[Optional[float], typer.Option(help="Override the radiometric scale: reflectance = DN·scale + offset (e.g. 0.0001).")] = None,
    offset: Annotated[Optional[float], typer.Option(help="Override the radiometric offset in reflectance (e.g. -0.1 for baseline ≥ 04.00 DN).")] = None,
) -> None:
    """Show what difffusr sees in a product: grid, bands found, radiometry."""
    from difffusr_cli.cli_info import print_info

    print_info(path, as_json=json_output, scale=scale, offset=offset)


@app.command()
def superres(
    # str, not Path: a trailing slash ("products/") means a folder and Path would drop it.
    output: Annotated[str, typer.Option("-o", "--output", help="Output GeoTIFF (.tif), or a folder (several inputs, or a path ending in /): one <input stem>_difffusr.tif per input.", show_default=False)],
    inputs: Annotated[Optional[list[Path]], typer.Argument(help="One or more scenes: .SAFE folder or .zip, MTD_MSIL2A.xml, COG folder, STAC item JSON or multi-band GeoTIFF.", show_default=False)] = None,
    example: Annotated[bool, typer.Option("--example", help="Instead of INPUTS, run on a small generated (synthetic) L2A product with the shipped demo models rgb-tiny/fusion-tiny: works offline.")] = False,
    rgb_model: Annotated[Optional[str], typer.Option("--rgb-model", help="RGB diffusion weights: a name of `difffusr weights list` or a file (default: the manifest's default).")] = None,
    fusion_model: Annotated[Optional[str], typer.Option("--fusion-model", help="Fusion weights: a name or a file (default: the manifest's default); --fusion net only.")] = None,
    fusion: Annotated[Literal["net", "gs", "bilinear"], typer.Option(help="Fusion of the other bands: net (learned), gs (Gram–Schmidt) or bilinear.")] = "net",
    steps: Annotated[int, typer.Option(help="Diffusion sampler steps per patch.")] = 20,
    seed: Annotated[int, typer.Option(help="Noise seed: the same seed gives the same file (same device and batch size).")] = 0,
    patch_size: Annotated[int, typer.Option("--patch-size", help="Diffusion patch side in 2.5 m pixels (multiple of 32 for the published models).")] = 256,
    overlap: Annotated[int, typer.Option(help="Overlap of neighbouring patches in 2.5 m pixels (multiple of 4), blended smoothly.")] = 32,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Patches per network call.")] = 4,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[Literal["auto", "fp32", "bf16", "fp16"], typer.Option(help="auto (bf16 on CUDA, fp32 elsewhere), fp32, bf16 or fp16.")] = "auto",
    window: Annotated[Optional[tuple[int, int, int, int]], typer.Option(help="Process only COL ROW WIDTH HEIGHT of the 10 m grid (widened to whole 60 m pixels).", metavar="COL ROW WIDTH HEIGHT")] = None,
    bbox: Annotated[Optional[tuple[float, float, float, float]], typer.Option(help="Process only XMIN YMIN XMAX YMAX, in the scene's CRS (widened to whole 60 m pixels).", metavar="XMIN YMIN XMAX YMAX")] = None,
    dtype: Annotated[Literal["uint16", "float32"], typer.Option(help="uint16 (the input's DN convention, scale/offset in the metadata) or float32 (reflectance).")] = "uint16",
    cog: Annotated[bool, typer.Option("--cog", help="Write a Cloud-Optimized GeoTIFF with overviews.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run with the same options.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (and discard interrupted runs).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")] = False,
    scale: Annotated[Optional[float], typer.Option(help="Override the radiometric scale: reflectance = DN·scale + offset.")] = None,
    offset: Annotated[Optional[float], typer.Option(help="Override the radiometric offset in reflectance (e.g. -0.1).")] = None,
) -> None:
    """Super-resolve scenes to 12-band GeoTIFFs at 2.5 m: diffusion RGB, fused other bands.

    Example: `difffusr superres S2B_MSIL2A_….SAFE -o out.tif`. Try `--example -o example.tif` first.
    """
    from difffusr_cli.errors import InputError
    from difffusr_cli.cli_progress import RichProgress

    if not os.environ.get("DIFFFUSR_DEBUG"):
        # GDAL prints write errors (e.g. a full disk) itself; difffusr checks every write and
        # reports the failure in one line, so GDAL's own lines only repeat it.
        os.environ.setdefault("CPL_LOG", os.devnull)
    from difffusr_cli.superres import SuperresOptions, superres_example, superres_many

    options = SuperresOptions(
        rgb_model=rgb_model, fusion_model=fusion_model, fusion=fusion,
        steps=steps, seed=seed, patch_size=patch_size, overlap=overlap, batch_size=batch_size,
        device=device, precision=precision, window=window, bbox=bbox, dtype=dtype,
        cog=cog, resume=resume, overwrite=overwrite, quiet=quiet, scale=scale, offset=offset,
    )
    if example and inputs:
        raise InputError("--example runs on a generated product: give no INPUTS with it")
    from difffusr_cli.cli_console import ConsoleReporter
    from difffusr_cli.weights import StderrReporter

    reporter = StderrReporter() if quiet else ConsoleReporter()
    progress = RichProgress(bar=not quiet)
    try:
        if example:
            superres_example(output, options, progress=progress, weights_reporter=reporter)
        else:
            superres_many(
                inputs or [], output, options, progress=progress, weights_reporter=reporter
            )
    finally:
        if isinstance(reporter, ConsoleReporter):
            reporter.close()


# `difffusr weights ...`: thin commands over difffusr_cli.weights.
weights_app = typer.Typer(
    # Plain Click help: Typer 0.29's rich help prints `<bool>` after flags, as if they took a value.
    rich_markup_mode=None,
    name="weights",
    help="Pretrained weights: list the known models, download and convert them, convert local checkpoints.",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def weights_list(
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """List the models of the manifest (weights.toml) and what of each is on this machine."""
    import json

    from difffusr_cli import weights

    rows = [model.as_dict() for model in weights.list_models()]
    if json_output:
        info_out = {"manifest": str(weights.manifest_path()), "hub_cache": str(weights.hub_cache_dir()),
                    "converted_cache": str(weights.cache_root()), "models": rows}
        typer.echo(json.dumps(info_out, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    repos = sorted({f"{row['repo']}@{row['revision']}" for row in rows if row["source"] == "hub"})
    table = Table(title=f"{weights.manifest_path()}", title_justify="left",
                  caption=f"Hub: {', '.join(repos) or '-'}; cache: {weights.hub_cache_dir()}; "
                          "* = sha256 not pinned in the manifest", caption_justify="left")
    for column in ("name", "kind", "default", "local", "sha256", "file"):
        table.add_column(column, overflow="fold", no_wrap=column != "file")
    for row in rows:
        local = "converted" if row["converted"] else "downloaded" if row["downloaded"] else "-"
        sha = (row["sha256"] or "unknown")[:12] + ("" if row["sha256_pinned"] else "*")
        patterns = [*(row.get("candidates") or []), *([row["discover"]] if row["discover"] else [])]
        file = row["file"] or f"(first of {', '.join(patterns)})"
        table.add_row(row["name"], row["kind"], "yes" if row["default"] else "", local, sha, file)
    Console().print(table)


@weights_app.command("pull")
def weights_pull(
    name: Annotated[Optional[str], typer.Argument(help="Model name (see `difffusr weights list`).")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Pull every model of the manifest.")] = False,
    revision: Annotated[Optional[str], typer.Option(help="Hub branch, tag or commit (default: the manifest's).")] = None,
) -> None:
    """Download a model through the Hugging Face cache, verify its sha256 and convert it to safetensors."""
    from difffusr_cli import weights

    if (name is None) == (not all_models):
        raise typer.BadParameter("give one model NAME or --all")
    names = list(weights.load_manifest()) if all_models else [str(name)]
    from difffusr_cli.cli_console import ConsoleReporter

    reporter = ConsoleReporter()
    failed: list[str] = []
    try:
        for model in names:
            try:
                result = weights.pull(model, revision=revision, reporter=reporter)
            except DifffusrError as exc:
                if not all_models:
                    raise
                typer.echo(f"error: {exc}", err=True)
                failed.append(model)
                continue
            typer.echo(f"{result.name}: {result.converted}")
    finally:
        reporter.close()
    if failed:
        raise DifffusrError(f"{len(failed)} of {len(names)} models could not be pulled: {', '.join(failed)}")


@weights_app.command("convert")
def weights_convert(
    src: Annotated[Path, typer.Argument(help="A Lightning .ckpt, torch .pt/.pth or .safetensors file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .safetensors to write (its .json goes beside it), or a folder.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Convert a checkpoint to safetensors + JSON without running pickled code."""
    from difffusr_cli import weights

    from difffusr_cli.cli_console import ConsoleReporter

    reporter = ConsoleReporter()
    try:
        typer.echo(str(weights.convert(src, output, overwrite=overwrite, reporter=reporter)))
    finally:
        reporter.close()


@weights_app.command("path")
def weights_path(
    name: Annotated[str, typer.Argument(help="Model name (see `difffusr weights list`).")],
    revision: Annotated[Optional[str], typer.Option(help="Hub branch, tag or commit (default: the manifest's).")] = None,
) -> None:
    """Print the local file of a model (converted safetensors, else the download). Downloads nothing."""
    from difffusr_cli import weights

    typer.echo(str(weights.locate(name, revision=revision)))


# `difffusr eval ...`: benchmarks, thin commands over difffusr_cli.evaluate.
eval_app = typer.Typer(
    # Plain Click help: Typer 0.29's rich help prints `<bool>` after flags, as if they took a value.
    rich_markup_mode=None,
    name="eval",
    help="Measure models: the OpenSR-test benchmark for the RGB model (and fusion quality).",
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")


def _split_names(values: Optional[list[str]]) -> list[str]:
    # Repeated flags and comma/space separated lists both work: --dataset naip,spot --dataset venus.
    return [name for value in values or [] for name in value.replace(",", " ").split()]


@eval_app.command("opensr")
def eval_opensr(
    rgb_model: Annotated[Optional[str], typer.Option("--rgb-model", help="RGB weights NAME or PATH, or `bicubic` for the zero-parameter stand-in (default: the default RGB model).")] = None,
    dataset: Annotated[Optional[list[str]], typer.Option("--dataset", help="Datasets: naip, spot, spain_crops, spain_urban, venus (repeat or comma-separate; default: the four ×4 ones).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Folder with <dataset>.pkl (opensr-test's layout) or the Hugging Face repo's <version>/<dataset>/<dataset>.pkl. Default: opensr-test's cache, downloaded when online.")] = None,
    data_version: Annotated[str, typer.Option("--data-version", help="opensr-test dataset version: v1, v2 or v3.")] = "v3",
    distance: Annotated[Optional[list[str]], typer.Option("--distance", help="Correctness distances: nd, lpips, clip (default: all; nd is always scored, lpips/clip are skipped with a warning when unavailable).")] = None,
    steps: Annotated[int, typer.Option(help="Sampler steps.")] = 20,
    seed: Annotated[Optional[int], typer.Option(help="Seed; image i of a dataset uses seed + i.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    limit: Annotated[Optional[int], typer.Option(help="Score only the first N images of each dataset.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="The model's label in the results (default: --rgb-model).")] = None,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Per-image results CSV (default: opensr-<name>.csv).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing results CSV.")] = False,
    compare: Annotated[Optional[list[Path]], typer.Option("--compare", help="Other models' result CSVs to rank against (repeatable).")] = None,
    save_sr: Annotated[Optional[Path], typer.Option("--save-sr", help="Save the super-resolved images as GeoTIFFs under DIR/<dataset>/.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Score an RGB model on the OpenSR-test benchmark with the opensr-test package's metrics."""
    import json

    from difffusr_cli.evaluate import opensr, opensr_report

    config = opensr.OpenSRConfig(
        rgb_model=rgb_model,
        datasets=tuple(_split_names(dataset)) or opensr.DEFAULT_DATASETS,
        data_dir=data_dir,
        data_version=data_version,  # type: ignore[arg-type] - validated by OpenSRConfig
        distances=tuple(_split_names(distance)) or opensr.DISTANCES,  # type: ignore[arg-type]
        steps=steps,
        seed=seed,
        device=device,
        limit=limit,
        save_sr=save_sr,
        label=name,
    )
    label = config.model_label
    target = opensr_report.results_csv_path(csv_path, label, overwrite=overwrite)
    others = opensr_report.load_comparisons(compare or [], label)
    report = opensr.evaluate_opensr(config, progress=True, warn=lambda line: typer.echo(f"warning: {line}", err=True))
    opensr_report.write_rows_csv(report.rows, target)
    ranking = opensr_report.rank_models(report, others, config.datasets)
    if json_output:
        typer.echo(json.dumps(opensr_report.report_json(report, ranking, target), indent=1))
        return
    opensr_report.print_report(report, ranking)
    typer.echo(f"per-image results: {target}")


@eval_app.command("fusion")
def eval_fusion(
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="Wald mode: Sentinel-2 products (SAFE, COG folder, STAC item, stacked GeoTIFF); repeat for several.", show_default=False)] = None,
    product: Annotated[Optional[Path], typer.Option("--product", help="Product mode: a 2.5 m GeoTIFF of `difffusr superres` (with --source).", show_default=False)] = None,
    source: Annotated[Optional[Path], typer.Option("--source", help="Product mode: the scene the product was made from.", show_default=False)] = None,
    fusion_model: Annotated[Optional[str], typer.Option("--fusion-model", help="Fusion weights NAME or PATH (Wald mode; default: the manifest's default, whose absence only marks the net row missing).")] = None,
    no_net: Annotated[bool, typer.Option("--no-net", help="Evaluate only Gram–Schmidt and bilinear (Wald mode).")] = False,
    window: Annotated[Optional[tuple[int, int, int, int]], typer.Option(help="Evaluate only COL ROW WIDTH HEIGHT of the 10 m grid (as superres).", metavar="COL ROW WIDTH HEIGHT")] = None,
    bbox: Annotated[Optional[tuple[float, float, float, float]], typer.Option(help="Evaluate only XMIN YMIN XMAX YMAX, in the scene's CRS (as superres).", metavar="XMIN YMIN XMAX YMAX")] = None,
    block: Annotated[Optional[int], typer.Option(help="Block side in 10 m pixels (default 960 Wald, 240 product mode): bounds memory.")] = None,
    halo: Annotated[Optional[int], typer.Option(help="Context around each block in 10 m pixels (default: the methods' reach).")] = None,
    gs_pan: Annotated[Literal["regression", "mean"], typer.Option("--gs-pan", help="Gram–Schmidt synthetic pan: regression (GSA, as superres --fusion gs) or mean (classic GS).")] = "regression",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    scale: Annotated[Optional[float], typer.Option(help="Override the source's radiometric scale: reflectance = DN·scale + offset.")] = None,
    offset: Annotated[Optional[float], typer.Option(help="Override the source's radiometric offset in reflectance (e.g. -0.1).")] = None,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Write every score (per band, group, overall) to this CSV.", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --csv file.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write quicklook PNGs (true colour, SWIR false colour) of the central block to DIR.", metavar="DIR", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Score fusion against Gram–Schmidt and bilinear: Wald's protocol (--data) or a product's consistency (--product/--source)."""
    import json

    from difffusr_cli.errors import InputError
    from difffusr_cli.evaluate import fusion, fusion_product, fusion_report, fusion_wald
    from difffusr_cli.io.writer import check_output_path

    if bool(data) == (product is not None or source is not None):
        raise InputError("give --data SCENE (Wald mode) or --product FILE --source SCENE (product mode), not both or neither")
    if product is not None and (source is None or fusion_model is not None or no_net):
        raise InputError("product mode needs --product and --source, and takes no --fusion-model/--no-net (the product holds the nets' output)")
    if source is not None and product is None:
        raise InputError("--source needs --product")
    options = fusion.FusionEvalOptions(
        fusion_model=fusion_model, use_net=not no_net, device=device, window=window, bbox=bbox,
        block=block, halo=halo, scale=scale, offset=offset, gs_pan=gs_pan,
    )
    if csv_path is not None:
        check_output_path(csv_path, overwrite=overwrite)
    with fusion_report.block_progress(not quiet) as progress:
        if data:
            report = fusion_wald.evaluate_wald(data, options, progress=progress, quicklooks=plot is not None)
        else:
            assert product is not None and source is not None
            report = fusion_product.evaluate_product(product, source, options, progress=progress, quicklooks=plot is not None)
    extra: dict[str, object] = {}
    if csv_path is not None:
        extra["csv"] = str(fusion_report.write_csv(report, csv_path))
    if plot is not None:
        from difffusr_cli.evaluate.quicklook import write_quicklooks

        extra["plots"] = [str(p) for p in write_quicklooks(report.quicklooks, plot)]
    if json_output:
        typer.echo(json.dumps(fusion_report.report_json(report, extra), indent=1, allow_nan=False))
        return
    fusion_report.print_report(report)
    if "csv" in extra:
        typer.echo(f"scores: {extra['csv']}")
    if plot is not None:
        typer.echo(f"quicklooks: {len(extra['plots'])} PNG files in {plot}")  # type: ignore[arg-type]


# `difffusr train ...`: thin commands over difffusr_cli.train (docs/training.md).
train_app = typer.Typer(
    # Plain Click help: Typer 0.29's rich help prints `<bool>` after flags, as if they took a value.
    rich_markup_mode=None,
    name="train",
    help="Train or fine-tune the RGB diffusion model and the fusion nets (see docs/training.md).",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")

_ConfigOpt = Annotated[str, typer.Option("--config", help="Preset `small` (CPU-sized) or `large` (official), or a TOML file with `model` and `train` tables.")]
_SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override any hyperparameter: KEY=VALUE, e.g. --set train.lr=2e-4 or --set model.nf=32 (repeatable).")]
_OutOpt = Annotated[Path, typer.Option("--out", help="Run folder: checkpoints (last/best/epoch-N), log.csv, quicklook/, train_config.json.")]
_MaxStepsOpt = Annotated[Optional[int], typer.Option("--max-steps", help="Stop after N >= 1 steps in total (0 is refused; leave it out to train every epoch).")]
_EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", help="Epochs to train.")]
_BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", help="Samples per step.")]
_SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Seed of every random draw.")]
_DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
_ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint and optimizer state.")]
_InitOpt = Annotated[Optional[str], typer.Option("--init", help="Fine-tune from these weights: a model NAME (see `difffusr weights list`) or a PATH.")]
_ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")]


def _train_overrides(sets: Optional[list[str]], **flags: object) -> dict[str, object]:
    from difffusr_cli.train.config import parse_override

    overrides: dict[str, object] = dict(parse_override(text) for text in sets or [])
    overrides.update({f"train.{key}": value for key, value in flags.items() if value is not None})
    return overrides


def _print_result(result: object) -> None:
    typer.echo(f"trained {result.step} step(s) ({result.epoch} epoch(s)); last: {result.last}")  # type: ignore[attr-defined]
    if result.best is not None:  # type: ignore[attr-defined]
        typer.echo(f"best: {result.best} (validation {result.best_metric:.4g})")  # type: ignore[attr-defined]


@train_app.command("rgb")
def train_rgb_command(
    data: Annotated[str, typer.Option("--data", help="Dataset layout: sen2naip, worldstrat or folder.")],
    out: _OutOpt,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Folder of high-resolution images (searched recursively).")] = None,
    hub_repo: Annotated[Optional[str], typer.Option("--hub-repo", help="sen2naip: download this Hugging Face dataset repo (ORG/NAME) when online.")] = None,
    gsd: Annotated[Optional[float], typer.Option("--gsd", help="Pixel size of the images in metres (default: their georeferencing); resampled to 2.5 m.")] = None,
    value_scale: Annotated[Optional[float], typer.Option("--value-scale", help="Reflectance = value × this (default 1/255 for uint8, 1/10000 for uint16).")] = None,
    harmonize: Annotated[Optional[bool], typer.Option("--harmonize/--no-harmonize", help="NAIP → Sentinel-2 harmonisation (default: on for sen2naip).")] = None,
    config: _ConfigOpt = "large",
    sets: _SetOpt = None,
    max_steps: _MaxStepsOpt = None,
    epochs: _EpochsOpt = None,
    batch_size: _BatchOpt = None,
    patch_size: Annotated[Optional[int], typer.Option("--patch-size", help="HR crop side in 2.5 m pixels (LR = a quarter).")] = None,
    seed: _SeedOpt = None,
    device: _DeviceOpt = "auto",
    resume: _ResumeOpt = False,
    init: _InitOpt = None,
    progress: _ProgressOpt = True,
) -> None:
    """Train the RGB diffusion super-resolution model on high-resolution RGB tiles."""
    from difffusr_cli.train import rgb
    from difffusr_cli.train.run_dir import RunDir
    from difffusr_cli.train.hr_data import open_hr_dataset

    overrides = _train_overrides(sets, max_steps=max_steps, epochs=epochs, batch_size=batch_size,
                                 patch_size=patch_size, seed=seed, harmonize=harmonize)
    run = RunDir(out, resume=resume)
    settings = rgb.resolve_config(config, overrides, run if resume else None)
    dataset = open_hr_dataset(data, data_dir, min_size=settings.patch_size, gsd=gsd,  # type: ignore[arg-type]
                              value_scale=value_scale, hub_repo=hub_repo)
    _print_result(rgb.train_rgb(settings, dataset, run, device=device, init=init, resume=resume,
                                progress=progress, report=typer.echo))


@train_app.command("fusion")
def train_fusion_command(
    data_dir: Annotated[list[Path], typer.Option("--data-dir", help="Sentinel-2 product(s): SAFE, COG folder, STAC item, a folder of products, or a .txt list (repeatable).")],
    out: _OutOpt,
    arch: Annotated[Optional[str], typer.Option("--arch", help="Fusion architecture: rrdb or mtf (default: the config's, rrdb for presets).")] = None,
    config: _ConfigOpt = "large",
    sets: _SetOpt = None,
    max_steps: _MaxStepsOpt = None,
    epochs: _EpochsOpt = None,
    batch_size: _BatchOpt = None,
    patch_size: Annotated[Optional[int], typer.Option("--patch-size", help="Patch side in 10 m pixels, a multiple of 144 (144 = 1440 m).")] = None,
    seed: _SeedOpt = None,
    device: _DeviceOpt = "auto",
    resume: _ResumeOpt = False,
    init: _InitOpt = None,
    progress: _ProgressOpt = True,
) -> None:
    """Train the three fusion nets on Sentinel-2 products (Wald protocol)."""
    from difffusr_cli.train import fusion
    from difffusr_cli.train.run_dir import RunDir
    from difffusr_cli.train.data import open_s2_products

    overrides = _train_overrides(sets, max_steps=max_steps, epochs=epochs, batch_size=batch_size,
                                 patch_size=patch_size, seed=seed)
    run = RunDir(out, resume=resume)
    settings = fusion.resolve_config(config, overrides, arch, run if resume else None)
    sampler = open_s2_products(data_dir, patch=settings.patch_size, max_nodata=settings.max_nodata,
                               val_fraction=settings.val_fraction)
    _print_result(fusion.train_fusion(settings, sampler, run, device=device, init=init, resume=resume,
                                      progress=progress, report=typer.echo))


@train_app.command("export")
def train_export_command(
    src: Annotated[Path, typer.Argument(help="A checkpoint, e.g. RUN/best.safetensors.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .safetensors to write (its .json goes beside it).")],
    inference_only: Annotated[bool, typer.Option("--inference-only/--full", help="Drop what only training needs (RGB: non-EMA U-Net, MoCo key encoder and queue).")] = True,
    half: Annotated[bool, typer.Option("--half/--fp32", help="Store float16 weights (loaded back as float32).")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Write a compact copy of a checkpoint for shipping; it loads wherever the original does."""
    from difffusr_cli.train.export import export_weights

    typer.echo(str(export_weights(src, output, inference_only=inference_only, half=half, overwrite=overwrite)))


def _log_failure(exc: BaseException) -> Path:
    """Write the traceback of an unexpected failure to a log file and return its path."""
    log_dir = Path(tempfile.gettempdir()) / "difffusr-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"difffusr-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    log.write_text(
        f"difffusr {__version__}\nargv: {sys.argv}\n\n"
        + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    )
    return log


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``difffusr`` console script; returns the exit code."""
    try:
        result = app(args=argv, prog_name="difffusr", standalone_mode=False)
    except DifffusrError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the CLI boundary
        if _is_click_exception(exc):
            if type(exc).__name__ == "NoArgsIsHelpError":  # `difffusr weights`: show the help
                exc.show()
                return exc.exit_code
            # Usage errors in one line, like every other error, with where to read more.
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            typer.echo(f"error: {exc.format_message()}{hint}", err=True)
            return exc.exit_code
        if os.environ.get("DIFFFUSR_DEBUG"):
            traceback.print_exc()
        else:
            try:
                where = f"traceback in {_log_failure(exc)}"
            except OSError as log_exc:
                where = f"no log written: {log_exc}; set DIFFFUSR_DEBUG=1 to see the traceback"
            typer.echo(f"unexpected failure: {type(exc).__name__}: {exc} ({where})", err=True)
        return 1
    return result if isinstance(result, int) else 0


def _is_click_exception(exc: BaseException) -> bool:
    # Typer bundles its own Click; match by duck type so both work.
    return callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int)


def _terminate(signum: int, frame: object) -> None:
    # Batch schedulers stop jobs with SIGTERM: treat it as Ctrl-C, so a run says how to resume
    # and exits 130 instead of dying silently.
    raise KeyboardInterrupt


def run() -> None:
    """The ``difffusr`` console script."""
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(main())


if __name__ == "__main__":
    run()
