"""`difffusr train ...`: training and export of the RGB model and the fusion nets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from difffusr_cli.train.run_dir import TrainResult

# `difffusr train ...`: thin commands over difffusr_cli.train (docs/training.md).
train_app = typer.Typer(
    # Plain Click help: Typer 0.29's rich help prints `<bool>` after flags, as if they took a value.
    rich_markup_mode=None,
    name="train",
    help="Train or fine-tune the RGB diffusion model and the fusion nets (see docs/training.md).",
    no_args_is_help=True,
)

_ConfigOpt = Annotated[
    str,
    typer.Option(
        "--config",
        help=(
            "Preset `small` (CPU-sized) or `large` (official), or a TOML file with `model` and "
            "`train` tables."
        ),
    ),
]
_SetOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        help=(
            "Override any hyperparameter: KEY=VALUE, e.g. --set train.lr=2e-4 or --set "
            "model.nf=32 (repeatable)."
        ),
    ),
]
_OutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        help="Run folder: checkpoints (last/best/epoch-N), log.csv, quicklook/, train_config.json.",
    ),
]
_MaxStepsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--max-steps",
        help="Stop after N >= 1 steps in total (0 is refused; leave it out to train every epoch).",
    ),
]
_EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", help="Epochs to train.")]
_BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", help="Samples per step.")]
_SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Seed of every random draw.")]
_DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
_ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume", help="Continue the run in --out from its last checkpoint and optimizer state."
    ),
]
_InitOpt = Annotated[
    Optional[str],
    typer.Option(
        "--init",
        help="Fine-tune from these weights: a model NAME (see `difffusr weights list`) or a PATH.",
    ),
]
_ProgressOpt = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")
]


def _train_overrides(sets: Optional[list[str]], **flags: object) -> dict[str, object]:
    from difffusr_cli.train.config import parse_override

    overrides: dict[str, object] = dict(parse_override(text) for text in sets or [])
    overrides.update({f"train.{key}": value for key, value in flags.items() if value is not None})
    return overrides


def _print_result(result: TrainResult) -> None:
    typer.echo(f"trained {result.step} step(s) ({result.epoch} epoch(s)); last: {result.last}")
    if result.best is not None:
        typer.echo(f"best: {result.best} (validation {result.best_metric:.4g})")


def _parse_shards(text: Optional[str]) -> Optional[tuple[int, ...]]:
    """``"1,2"`` → ``(1, 2)``; None stays None."""
    from difffusr_cli.errors import InputError

    if text is None:
        return None
    try:
        numbers = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        numbers = ()
    if not numbers or min(numbers) < 1:
        raise InputError(f"--shards {text!r}: expected shard numbers like 1,2")
    return numbers


@train_app.command("rgb")
def train_rgb_command(
    data: Annotated[
        str, typer.Option("--data", help="Dataset layout: sen2naip, worldstrat or folder.")
    ],
    out: _OutOpt,
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--data-dir",
            help=(
                "Folder of high-resolution images (searched recursively); sen2naip: also a "
                "synthetic_NN.zip shard, a folder of them, an extracted ROI_* tree, or SEN2NAIP "
                "v2 .taco files, read in place."
            ),
        ),
    ] = None,
    hub_repo: Annotated[
        Optional[str],
        typer.Option(
            "--hub-repo",
            help=(
                "sen2naip: a Hugging Face dataset repo (ORG/NAME, e.g. isp-uv-es/SEN2NAIP); its "
                "shards come through the Hub cache (HF_HUB_OFFLINE=1: the cache only)."
            ),
        ),
    ] = None,
    shards: Annotated[
        Optional[str],
        typer.Option(
            "--shards",
            help="sen2naip: only these shard numbers, e.g. 1,2 (synthetic_01.zip, _02.zip).",
        ),
    ] = None,
    gsd: Annotated[
        Optional[float],
        typer.Option(
            "--gsd",
            help=(
                "Pixel size of the images in metres (default: their georeferencing); resampled to "
                "2.5 m."
            ),
        ),
    ] = None,
    value_scale: Annotated[
        Optional[float],
        typer.Option(
            "--value-scale",
            help="Reflectance = value × this (default 1/255 for uint8, 1/10000 for uint16).",
        ),
    ] = None,
    harmonize: Annotated[
        Optional[str],
        typer.Option(
            "--harmonize",
            "--harmonise",
            help=(
                "NAIP → Sentinel-2 harmonisation: gamma, histogram (SEN2NAIP v1 sim_histograms) "
                "or none (default: gamma for sen2naip, none otherwise)."
            ),
        ),
    ] = None,
    no_harmonize: Annotated[
        bool, typer.Option("--no-harmonize", help="Same as --harmonize none.")
    ] = False,
    pairs: Annotated[
        Optional[str],
        typer.Option(
            "--pairs",
            help=(
                "Where the LR comes from: own (SEN2NAIP v2 .taco LR/HR pairs as published, no "
                "degradation or harmonisation), degrade (the HR through the degradation model) "
                "or auto (default: own when every .taco sample has lr and hr items)."
            ),
        ),
    ] = None,
    config: _ConfigOpt = "large",
    sets: _SetOpt = None,
    max_steps: _MaxStepsOpt = None,
    epochs: _EpochsOpt = None,
    batch_size: _BatchOpt = None,
    patch_size: Annotated[
        Optional[int],
        typer.Option("--patch-size", help="HR crop side in 2.5 m pixels (LR = a quarter)."),
    ] = None,
    seed: _SeedOpt = None,
    device: _DeviceOpt = "auto",
    resume: _ResumeOpt = False,
    init: _InitOpt = None,
    progress: _ProgressOpt = True,
) -> None:
    """Train the RGB diffusion super-resolution model on high-resolution RGB tiles."""
    from difffusr_cli.cli.run_bars import step_bar
    from difffusr_cli.errors import InputError
    from difffusr_cli.train import rgb
    from difffusr_cli.train.hr_data import open_hr_dataset
    from difffusr_cli.train.run_dir import RunDir

    if no_harmonize and harmonize not in (None, "none"):
        raise InputError(f"--no-harmonize and --harmonize {harmonize} exclude each other")
    overrides = _train_overrides(
        sets,
        max_steps=max_steps,
        epochs=epochs,
        batch_size=batch_size,
        patch_size=patch_size,
        seed=seed,
        harmonize="none" if no_harmonize else harmonize,
        pairs=pairs,
    )
    run = RunDir(out, resume=resume)
    settings = rgb.resolve_config(config, overrides, run if resume else None)
    dataset = open_hr_dataset(
        data,
        data_dir,
        min_size=settings.patch_size,
        gsd=gsd,
        value_scale=value_scale,
        hub_repo=hub_repo,
        shards=_parse_shards(shards),
        pairs=settings.pairs,
    )
    with step_bar(progress) as advance:
        result = rgb.train_rgb(
            settings,
            dataset,
            run,
            device=device,
            init=init,
            resume=resume,
            progress=advance,
            report=typer.echo,
        )
    _print_result(result)


@train_app.command("fusion")
def train_fusion_command(
    data_dir: Annotated[
        list[Path],
        typer.Option(
            "--data-dir",
            help=(
                "Sentinel-2 product(s): SAFE, COG folder, STAC item, a folder of products, or a "
                ".txt list (repeatable)."
            ),
        ),
    ],
    out: _OutOpt,
    arch: Annotated[
        Optional[str],
        typer.Option(
            "--arch",
            help=(
                "Fusion architecture: rrdb or mtf (default: the config's; rrdb for the presets "
                "small and large)."
            ),
        ),
    ] = None,
    config: Annotated[
        str,
        typer.Option(
            "--config",
            help=(
                "Preset `s2` (the recipe of the shipped fusion-s2: local regression fusion "
                "refined by small MTF nets, CPU minutes), `small` (CPU-sized) or `large` "
                "(official), or a TOML file with `model` and `train` tables."
            ),
        ),
    ] = "large",
    sets: _SetOpt = None,
    max_steps: _MaxStepsOpt = None,
    epochs: _EpochsOpt = None,
    batch_size: _BatchOpt = None,
    patch_size: Annotated[
        Optional[int],
        typer.Option(
            "--patch-size", help="Patch side in 10 m pixels, a multiple of 144 (144 = 1440 m)."
        ),
    ] = None,
    seed: _SeedOpt = None,
    device: _DeviceOpt = "auto",
    resume: _ResumeOpt = False,
    init: _InitOpt = None,
    progress: _ProgressOpt = True,
) -> None:
    """Train the three fusion nets on Sentinel-2 products (Wald protocol)."""
    from difffusr_cli.cli.run_bars import step_bar
    from difffusr_cli.train import fusion
    from difffusr_cli.train.data import open_s2_products
    from difffusr_cli.train.run_dir import RunDir

    overrides = _train_overrides(
        sets,
        max_steps=max_steps,
        epochs=epochs,
        batch_size=batch_size,
        patch_size=patch_size,
        seed=seed,
    )
    run = RunDir(out, resume=resume)
    settings = fusion.resolve_config(config, overrides, arch, run if resume else None)
    sampler = open_s2_products(
        data_dir,
        patch=settings.patch_size,
        max_nodata=settings.max_nodata,
        val_fraction=settings.val_fraction,
    )
    with step_bar(progress) as advance:
        result = fusion.train_fusion(
            settings,
            sampler,
            run,
            device=device,
            init=init,
            resume=resume,
            progress=advance,
            report=typer.echo,
        )
    _print_result(result)


@train_app.command("export")
def train_export_command(
    src: Annotated[Path, typer.Argument(help="A checkpoint, e.g. RUN/best.safetensors.")],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="The .safetensors to write (its .json goes beside it)."
        ),
    ],
    inference_only: Annotated[
        bool,
        typer.Option(
            "--inference-only/--full",
            help="Drop what only training needs (RGB: non-EMA U-Net, MoCo key encoder and queue).",
        ),
    ] = True,
    half: Annotated[
        bool, typer.Option("--half/--fp32", help="Store float16 weights (loaded back as float32).")
    ] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Write a compact copy of a checkpoint for shipping; it loads wherever the original does."""
    from difffusr_cli.train.export import export_weights

    typer.echo(
        str(
            export_weights(
                src, output, inference_only=inference_only, half=half, overwrite=overwrite
            )
        )
    )
