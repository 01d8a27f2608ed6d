"""`difffusr weights ...`: the manifest, downloads and conversions of pretrained weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from difffusr_cli.errors import DifffusrError

# `difffusr weights ...`: thin commands over difffusr_cli.weights.
weights_app = typer.Typer(
    # Plain Click help: Typer 0.29's rich help prints `<bool>` after flags, as if they took a value.
    rich_markup_mode=None,
    name="weights",
    help=(
        "Pretrained weights: list the known models, download and convert them, convert local "
        "checkpoints."
    ),
    no_args_is_help=True,
)


@weights_app.command("list")
def weights_list(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
) -> None:
    """List the manifest's models (weights.toml), what is on this machine, and built-in models."""
    import json

    from difffusr_cli import weights
    from difffusr_cli.models.bicubic import BUILTIN_RGB_MODELS

    rows = [model.as_dict() for model in weights.list_models()]
    builtin = [
        {"name": name, "kind": "rgb", "source": "built-in", "description": text}
        for name, text in BUILTIN_RGB_MODELS.items()
    ]
    if json_output:
        info_out = {
            "manifest": str(weights.manifest_path()),
            "hub_cache": str(weights.hub_cache_dir()),
            "converted_cache": str(weights.cache_root()),
            "models": rows,
            "builtin": builtin,
        }
        typer.echo(json.dumps(info_out, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    repos = sorted({f"{row['repo']}@{row['revision']}" for row in rows if row["source"] == "hub"})
    table = Table(
        title=f"{weights.manifest_path()}",
        title_justify="left",
        caption=f"Hub: {', '.join(repos) or '-'}; cache: {weights.hub_cache_dir()}; "
        "* = sha256 not pinned in the manifest",
        caption_justify="left",
    )
    for column in ("name", "kind", "default", "local", "sha256", "file"):
        table.add_column(column, overflow="fold", no_wrap=column != "file")
    for row in rows:
        local = "converted" if row["converted"] else "downloaded" if row["downloaded"] else "-"
        sha = (row["sha256"] or "unknown")[:12] + ("" if row["sha256_pinned"] else "*")
        patterns = [*(row.get("candidates") or []), *([row["discover"]] if row["discover"] else [])]
        file = row["file"] or f"(first of {', '.join(patterns)})"
        table.add_row(row["name"], row["kind"], "yes" if row["default"] else "", local, sha, file)
    for row in builtin:
        none = f"(none: {row['description']})"
        table.add_row(row["name"], row["kind"], "", "built-in", "-", none)
    Console().print(table)


@weights_app.command("pull")
def weights_pull(
    name: Annotated[
        Optional[str], typer.Argument(help="Model name (see `difffusr weights list`).")
    ] = None,
    all_models: Annotated[
        bool, typer.Option("--all", help="Pull every model of the manifest.")
    ] = False,
    revision: Annotated[
        Optional[str], typer.Option(help="Hub branch, tag or commit (default: the manifest's).")
    ] = None,
) -> None:
    """Download a model through the Hugging Face cache, verify its sha256 and convert it to
    safetensors.
    """  # noqa: D205 - the paragraph is the command's --help text, a blank line would split it
    from difffusr_cli import weights

    if (name is None) == (not all_models):
        raise typer.BadParameter("give one model NAME or --all")
    names = list(weights.load_manifest()) if all_models else [str(name)]
    from difffusr_cli.cli.console import ConsoleReporter

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
        raise DifffusrError(
            f"{len(failed)} of {len(names)} models could not be pulled: {', '.join(failed)}"
        )


@weights_app.command("convert")
def weights_convert(
    src: Annotated[
        Path, typer.Argument(help="A Lightning .ckpt, torch .pt/.pth or .safetensors file.")
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="The .safetensors to write (its .json goes beside it), or a folder.",
        ),
    ],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Convert a checkpoint to safetensors + JSON without running pickled code."""
    from difffusr_cli import weights
    from difffusr_cli.cli.console import ConsoleReporter

    reporter = ConsoleReporter()
    try:
        typer.echo(str(weights.convert(src, output, overwrite=overwrite, reporter=reporter)))
    finally:
        reporter.close()


@weights_app.command("path")
def weights_path(
    name: Annotated[str, typer.Argument(help="Model name (see `difffusr weights list`).")],
    revision: Annotated[
        Optional[str], typer.Option(help="Hub branch, tag or commit (default: the manifest's).")
    ] = None,
) -> None:
    """Print the local file of a model (converted safetensors, else the download). Downloads
    nothing.
    """  # noqa: D205 - the paragraph is the command's --help text, a blank line would split it
    from difffusr_cli import weights

    typer.echo(str(weights.locate(name, revision=revision)))
