"""`difffusr eval ...`: OpenSR-test and fusion benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, cast

import typer

# `difffusr eval ...`: benchmarks, thin commands over difffusr_cli.evaluate.
eval_app = typer.Typer(
    # Plain Click help: Typer 0.29's rich help prints `<bool>` after flags, as if they took a value.
    rich_markup_mode=None,
    name="eval",
    help="Measure models: the OpenSR-test benchmark for the RGB model (and fusion quality).",
    no_args_is_help=True,
)


def _split_names(values: Optional[list[str]]) -> list[str]:
    # Repeated flags and comma/space separated lists both work: --dataset naip,spot --dataset venus.
    return [name for value in values or [] for name in value.replace(",", " ").split()]


@eval_app.command("opensr")
def eval_opensr(
    rgb_model: Annotated[
        Optional[str],
        typer.Option(
            "--rgb-model",
            help=(
                "RGB weights NAME or PATH, or `bicubic` for the zero-parameter stand-in (default: "
                "the default RGB model)."
            ),
        ),
    ] = None,
    dataset: Annotated[
        Optional[list[str]],
        typer.Option(
            "--dataset",
            help=(
                "Datasets: naip, spot, spain_crops, spain_urban, venus (repeat or comma-separate; "
                "default: the four ×4 ones)."
            ),
        ),
    ] = None,
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--data-dir",
            help=(
                "Folder with <dataset>.pkl (opensr-test's layout) or the Hugging Face repo's "
                "<version>/<dataset>/<dataset>.pkl. Default: opensr-test's cache, downloaded when "
                "online."
            ),
        ),
    ] = None,
    data_version: Annotated[
        str, typer.Option("--data-version", help="opensr-test dataset version: v1, v2 or v3.")
    ] = "v3",
    distance: Annotated[
        Optional[list[str]],
        typer.Option(
            "--distance",
            help=(
                "Correctness distances: nd, lpips, clip (default: all; nd is always scored, "
                "lpips/clip are skipped with a warning when unavailable)."
            ),
        ),
    ] = None,
    steps: Annotated[int, typer.Option(help="Sampler steps.")] = 20,
    seed: Annotated[
        Optional[int], typer.Option(help="Seed; image i of a dataset uses seed + i.")
    ] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    limit: Annotated[
        Optional[int], typer.Option(help="Score only the first N images of each dataset.")
    ] = None,
    name: Annotated[
        Optional[str],
        typer.Option("--name", help="The model's label in the results (default: --rgb-model)."),
    ] = None,
    csv_path: Annotated[
        Optional[Path],
        typer.Option("--csv", help="Per-image results CSV (default: opensr-<name>.csv)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing results CSV.")] = False,
    compare: Annotated[
        Optional[list[Path]],
        typer.Option("--compare", help="Other models' result CSVs to rank against (repeatable)."),
    ] = None,
    save_sr: Annotated[
        Optional[Path],
        typer.Option(
            "--save-sr", help="Save the super-resolved images as GeoTIFFs under DIR/<dataset>/."
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of tables.")
    ] = False,
) -> None:
    """Score an RGB model on the OpenSR-test benchmark with the opensr-test package's metrics."""
    import json

    from difffusr_cli.cli.eval_tables import print_opensr_report
    from difffusr_cli.cli.run_bars import image_bars
    from difffusr_cli.evaluate import opensr, opensr_report
    from difffusr_cli.evaluate.opensr_data import DataVersion

    # The user's words, typed as the choices they must be: OpenSRConfig refuses anything else
    # with a message naming the flag.
    distances = cast("tuple[opensr.Distance, ...]", tuple(_split_names(distance)))
    config = opensr.OpenSRConfig(
        rgb_model=rgb_model,
        datasets=tuple(_split_names(dataset)) or opensr.DEFAULT_DATASETS,
        data_dir=data_dir,
        data_version=cast("DataVersion", data_version),
        distances=distances or opensr.DISTANCES,
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
    with image_bars() as progress:
        report = opensr.evaluate_opensr(
            config, progress=progress, warn=lambda line: typer.echo(f"warning: {line}", err=True)
        )
    opensr_report.write_rows_csv(report.rows, target)
    ranking = opensr_report.rank_models(report, others, config.datasets)
    if json_output:
        typer.echo(json.dumps(opensr_report.report_json(report, ranking, target), indent=1))
        return
    print_opensr_report(report, ranking)
    typer.echo(f"per-image results: {target}")


@eval_app.command(
    "fusion",
    help=(
        "Score fusion against Gram–Schmidt and bilinear: Wald's protocol (--data) or a product's "
        "consistency (--product/--source)."
    ),
)
def eval_fusion(
    data: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--data",
            help=(
                "Wald mode: Sentinel-2 products (SAFE, COG folder, STAC item, stacked GeoTIFF); "
                "repeat for several."
            ),
            show_default=False,
        ),
    ] = None,
    product: Annotated[
        Optional[Path],
        typer.Option(
            "--product",
            help="Product mode: a 2.5 m GeoTIFF of `difffusr superres` (with --source).",
            show_default=False,
        ),
    ] = None,
    source: Annotated[
        Optional[Path],
        typer.Option(
            "--source",
            help="Product mode: the scene the product was made from.",
            show_default=False,
        ),
    ] = None,
    fusion_model: Annotated[
        Optional[str],
        typer.Option(
            "--fusion-model",
            help=(
                "Fusion weights NAME or PATH (Wald mode; default: the manifest's default, whose "
                "absence only marks the net row missing)."
            ),
        ),
    ] = None,
    no_net: Annotated[
        bool, typer.Option("--no-net", help="Evaluate only Gram–Schmidt and bilinear (Wald mode).")
    ] = False,
    window: Annotated[
        Optional[tuple[int, int, int, int]],
        typer.Option(
            help="Evaluate only COL ROW WIDTH HEIGHT of the 10 m grid (as superres).",
            metavar="COL ROW WIDTH HEIGHT",
        ),
    ] = None,
    bbox: Annotated[
        Optional[tuple[float, float, float, float]],
        typer.Option(
            help="Evaluate only XMIN YMIN XMAX YMAX, in the scene's CRS (as superres).",
            metavar="XMIN YMIN XMAX YMAX",
        ),
    ] = None,
    block: Annotated[
        Optional[int],
        typer.Option(
            help="Block side in 10 m pixels (default 960 Wald, 240 product mode): bounds memory."
        ),
    ] = None,
    halo: Annotated[
        Optional[int],
        typer.Option(
            help="Context around each block in 10 m pixels (default: the methods' reach)."
        ),
    ] = None,
    gs_pan: Annotated[
        Literal["regression", "mean"],
        typer.Option(
            "--gs-pan",
            help=(
                "Gram–Schmidt synthetic pan: regression (GSA, as superres --fusion gs) or mean "
                "(classic GS)."
            ),
        ),
    ] = "regression",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    scale: Annotated[
        Optional[float],
        typer.Option(
            help="Override the source's radiometric scale: reflectance = DN·scale + offset."
        ),
    ] = None,
    offset: Annotated[
        Optional[float],
        typer.Option(help="Override the source's radiometric offset in reflectance (e.g. -0.1)."),
    ] = None,
    csv_path: Annotated[
        Optional[Path],
        typer.Option(
            "--csv",
            help="Write every score (per band, group, overall) to this CSV.",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --csv file.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of tables.")
    ] = False,
    plot: Annotated[
        Optional[Path],
        typer.Option(
            "--plot",
            help=(
                "Write quicklook PNGs (true colour, SWIR false colour) of the central block to DIR."
            ),
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Score fusion against Gram–Schmidt and bilinear (Wald's protocol or a product's check)."""
    import json

    from difffusr_cli.cli.eval_tables import print_fusion_report
    from difffusr_cli.cli.run_bars import block_bars
    from difffusr_cli.errors import InputError
    from difffusr_cli.evaluate import fusion, fusion_product, fusion_report, fusion_wald
    from difffusr_cli.io.writer import check_output_path

    if bool(data) == (product is not None or source is not None):
        raise InputError(
            "give --data SCENE (Wald mode) or --product FILE --source SCENE (product mode), not "
            "both or neither"
        )
    if product is not None and (source is None or fusion_model is not None or no_net):
        raise InputError(
            "product mode needs --product and --source, and takes no --fusion-model/--no-net (the "
            "product holds the nets' output)"
        )
    if source is not None and product is None:
        raise InputError("--source needs --product")
    options = fusion.FusionEvalOptions(
        fusion_model=fusion_model,
        use_net=not no_net,
        device=device,
        window=window,
        bbox=bbox,
        block=block,
        halo=halo,
        scale=scale,
        offset=offset,
        gs_pan=gs_pan,
    )
    if csv_path is not None:
        check_output_path(csv_path, overwrite=overwrite)
    with block_bars(not quiet) as progress:
        if data:
            report = fusion_wald.evaluate_wald(
                data, options, progress=progress, quicklooks=plot is not None
            )
        else:
            assert product is not None and source is not None
            report = fusion_product.evaluate_product(
                product, source, options, progress=progress, quicklooks=plot is not None
            )
    extra: dict[str, object] = {}
    if csv_path is not None:
        extra["csv"] = str(fusion_report.write_csv(report, csv_path))
    if plot is not None:
        from difffusr_cli.evaluate.quicklook import write_quicklooks

        plots = [str(p) for p in write_quicklooks(report.quicklooks, plot)]
        extra["plots"] = plots
    if json_output:
        typer.echo(json.dumps(fusion_report.report_json(report, extra), indent=1, allow_nan=False))
        return
    print_fusion_report(report)
    if "csv" in extra:
        typer.echo(f"scores: {extra['csv']}")
    if plot is not None:
        typer.echo(f"quicklooks: {len(plots)} PNG files in {plot}")
