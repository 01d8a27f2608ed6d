"""What both training commands share: configuration, the run folder, checkpoints, logs, RNG, EMA.

- **Configuration** (:func:`load_config`): a preset name (``small``, ``large``) or a TOML file with
  a ``[model]`` table (the architecture, as in a checkpoint's JSON ``config``) and a ``[train]``
  table (hyperparameters), then ``section.key=value`` overrides from the command line. The result
  is a frozen dataclass of the stage (``RGBTrainConfig`` / ``FusionTrainConfig``).
- **Run folder** (:class:`RunDir`): ``last`` / ``best`` / ``epoch-NNNN`` checkpoints in the
  converted weights format (``NAME.safetensors`` + ``NAME.json``, loadable by ``superres
  --rgb-model PATH`` and :func:`difffusr_cli.api.load_rgb_model`), the optimizer state for
  ``--resume`` beside ``last`` (``last.state.pt``, tensors and plain values only, read back with
  ``torch.load(weights_only=True)``), ``log.csv``, ``quicklook/`` PNGs and ``train_config.json``.
- **Reproducibility** (:func:`step_rngs`): every random draw of a training step comes from
  generators seeded by ``(seed, step)``, so a resumed run draws exactly what the uninterrupted run
  would have drawn.
- **EMA** (:func:`ema_update`) and **mixed precision** on CUDA (:class:`Precision`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from difffusr_cli.errors import InputError, OutputError, WeightsError
from difffusr_cli.weights import read_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: ``report(line)`` receives the human-readable lines a run prints (data summary, notes).
Reporter = Callable[[str], None]
#: Checkpoint kinds, as in the converted weights format.
Stage = Literal["rgb", "fusion"]

#: Name of the effective configuration written into the run folder (read back by ``--resume``).
CONFIG_FILE = "train_config.json"
#: Name of the CSV log in the run folder.
LOG_FILE = "log.csv"
#: Suffix of the resumable training state written beside a checkpoint.
STATE_SUFFIX = ".state.pt"

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Configuration


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``--set KEY=VALUE`` option.

    ``KEY`` is dotted (``train.lr``, ``model.unet.inner_channel``; a bare key means ``train.KEY``);
    ``VALUE`` is read as a TOML value (``2e-4``, ``[100, 200]``, ``true``), else as a string.

    Raises:
        InputError: no ``=`` or an empty key.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InputError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.lr=2e-4")
    if "." not in key:
        key = f"train.{key}"
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(mapping: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``mapping`` with each dotted key of ``overrides`` set (``None`` values skipped)."""
    result = json.loads(json.dumps(mapping))
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = result
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InputError(f"--set {dotted}: {part} is a value, not a table")
            node = child
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return result


def load_config(
    spec: str | os.PathLike[str],
    presets: Mapping[str, Callable[[], Mapping[str, Any]]],
    overrides: Mapping[str, Any],
    build: Callable[[Mapping[str, Any], str], T],
) -> T:
    """The configuration named by ``spec`` (a preset name or a TOML file) with ``overrides``.

    Args:
        spec: a key of ``presets`` or a path to a TOML file (``[model]`` and ``[train]`` tables).
        presets: preset name → function returning its ``{"model": ..., "train": ...}`` mapping.
        overrides: dotted key → value (``{"train.batch_size": 4}``), applied last.
        build: turns the final mapping into the stage's config dataclass; ``where`` names the
            source for error messages.

    Raises:
        InputError: unknown preset or missing file, invalid TOML, or invalid values.
    """
    text = os.fspath(spec)
    if text in presets:
        base, where = dict(presets[text]()), f"--config {text}"
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise InputError(
                f"--config {text}: neither a preset ({', '.join(presets)}) nor an existing TOML file"
            )
        base, where = read_toml(path, "the training config", InputError), str(path)
    return build(apply_overrides(base, overrides), where)


class ModelTrainConfig:
    """Shared by the frozen training configs, which hold the network config in ``model``: their
    TOML/JSON layout is a ``[model]`` section (``model_config.to_dict()``) and a ``[train]`` one.

    Subclasses set ``model_config`` to the network config class (``SRConfig``, ``FusionConfig``).
    """

    model_config: ClassVar[Any]

    def _check_counts(self, positive: Sequence[str], non_negative: Sequence[str] = ()) -> None:
        """The checks every training config shares: ``max_steps`` 0 means none, the named
        counts are positive (or ≥ 0) integers, ``checkpoint_every`` ≥ 0, valid milestones.

        Raises:
            ValueError: the first value that breaks a rule, named.
        """
        if self.max_steps == 0:  # type: ignore[attr-defined]
            object.__setattr__(self, "max_steps", None)
        for name in positive:
            check_positive_int(getattr(self, name), name)
        if self.max_steps is not None:  # type: ignore[attr-defined]
            check_positive_int(self.max_steps, "max_steps")  # type: ignore[attr-defined]
        for name in (*non_negative, "checkpoint_every"):
            check_positive_int(getattr(self, name), name, minimum=0)
        check_milestones(self.milestones)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        """``{"model": ..., "train": ...}`` (JSON-able; the TOML layout)."""
        train = {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(self).items()  # type: ignore[call-overload]
            if k != "model"
        }
        return {"model": self.model.to_dict(), "train": train}  # type: ignore[attr-defined]

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str) -> Any:
        """Inverse of :meth:`to_dict`; ``where`` names the source in errors.

        Raises:
            InputError: unknown sections or keys, invalid values.
        """
        unknown = set(mapping) - {"model", "train"}
        if unknown:
            raise InputError(
                f"{where}: unknown sections {', '.join(sorted(unknown))} (expected [model] and [train])"
            )
        try:
            model = cls.model_config.from_dict(mapping.get("model", {}))
        except (WeightsError, ValueError) as exc:
            raise InputError(f"{where}: [model] {exc}") from None
        train = dict(mapping.get("train", {}))
        train["model"] = model
        return dataclass_from_mapping(cls, train, where)


def dataclass_from_mapping(cls: type[T], values: Any, where: str) -> T:
    """Build the frozen dataclass ``cls`` from a mapping of its fields (lists become tuples).

    Raises:
        InputError: not a mapping, unknown keys, or a value the dataclass rejects; the message
            names ``where``.
    """
    if not isinstance(values, Mapping):
        raise InputError(f"{where}: [train] must be a table, got {type(values).__name__}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(
            f"{where}: unknown [train] keys {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**clean)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from None


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` (for ``__post_init__`` checks)."""
    if not condition:
        raise ValueError(message)


def check_positive_int(value: Any, name: str, minimum: int = 1) -> None:
    """``ValueError`` unless ``value`` is an int (not a bool) ≥ ``minimum``."""
    require(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        f"{name} must be an integer >= {minimum}, got {value!r}",
    )


def check_milestones(milestones: Sequence[int]) -> None:
    """``ValueError`` unless the milestones are positive, strictly increasing integers."""
    require(
        all(isinstance(m, int) and m > 0 for m in milestones)
        and list(milestones) == sorted(set(milestones)),
        f"milestones must be increasing positive integers (epochs), got {list(milestones)}",
    )


def lr_factor(epoch: int, milestones: Sequence[int], gamma: float) -> float:
    """Learning-rate multiplier of the multi-step schedule during ``epoch`` (0-based).

    The rate is multiplied by ``gamma`` once each milestone epoch has been *completed*, the same
    as ``torch.optim.lr_scheduler.MultiStepLR`` stepped once per epoch.
    """
    return gamma ** sum(1 for m in milestones if epoch >= m)


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    """Set every parameter group's rate to ``base_lr · factor``; returns it."""
    rate = base_lr * factor
    for group in optimizer.param_groups:
        group["lr"] = rate
    return rate


# ---------------------------------------------------------------------------------------------
# Randomness


def step_rngs(seed: int, stream: int, step: int) -> tuple[torch.Generator, np.random.Generator]:
    """Generators for one training step (or one fixed stream such as validation).

    Seeded from ``(seed, stream, step)`` through NumPy's ``SeedSequence``, so they depend on
    nothing but the run's seed and the step: a run resumed at step ``s`` draws what the
    uninterrupted run drew at ``s``. Returns a CPU ``torch.Generator`` and a NumPy ``Generator``.
    """
    sequence = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(stream), int(step)])
    torch_seed, numpy_seed = sequence.generate_state(2, dtype=np.uint64)
    generator = torch.Generator().manual_seed(int(torch_seed) & ((1 << 63) - 1))
    return generator, np.random.default_rng(int(numpy_seed))


def seed_global(seed: int, step: int) -> None:
    """Seed torch's global RNG (dropout, weight initialisation) from ``(seed, step)``; ``step`` ≥ −1
    (−1: before the first step, for the initial weights)."""
    sequence = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 99, int(step) + 1])
    torch.manual_seed(int(sequence.generate_state(1, dtype=np.uint64)[0]) & ((1 << 63) - 1))


# ---------------------------------------------------------------------------------------------
# EMA and precision


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``θ_ema ← decay·θ_ema + (1 − decay)·θ`` for parameters; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach().to(p_ema.dtype), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


@torch.no_grad()
def copy_weights(target: nn.Module, source: nn.Module) -> None:
    """Make ``target`` an exact copy of ``source`` (same architecture), e.g. to start an EMA."""
    target.load_state_dict(source.state_dict())


class Precision:
    """Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling); fp32 elsewhere.

    Use :meth:`autocast` around forward passes and losses, and :meth:`step` instead of
    ``loss.backward(); optimizer.step()``.
    """

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.device = device
        self.dtype = torch.float32
        if enabled and device.type == "cuda":
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    @property
    def name(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``."""
        return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> Any:
        """Context manager: autocast to the mixed dtype (no-op in fp32)."""
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def step(
        self,
        loss: Tensor,
        optimizer: torch.optim.Optimizer,
        clip: float | None = None,
        parameters: Sequence[Tensor] = (),
    ) -> None:
        """Backward, optional gradient clipping of ``parameters``, optimizer step (scaled in fp16)."""
        self.scaler.scale(loss).backward()
        if clip:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, clip)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(dict(state))


# ---------------------------------------------------------------------------------------------
# Run folder


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or stopped) training run left behind.

    Attributes:
        out: the run folder.
        step: number of optimisation steps done.
        epoch: epochs completed.
        last: ``last.safetensors`` (the newest weights).
        best: ``best.safetensors`` or None when no validation ran.
        best_metric: the best validation metric (PSNR dB for RGB, mean ERGAS for fusion).
        losses: the training loss of every step this process ran (first loss term: the total).
    """

    out: Path
    step: int
    epoch: int
    last: Path
    best: Path | None
    best_metric: float | None
    losses: tuple[float, ...]


class RunDir:
    """The ``--out`` folder of a training run.

    The folder is only checked here; :meth:`create` makes it once the data and options have
    been validated, so that a run failing on bad input leaves nothing behind.

    Args:
        path: the folder (may not exist yet).
        resume: continue the run found there; otherwise the folder must not hold a run yet.

    Raises:
        OutputError: ``path`` (or a folder above it) is a file, holds a run and ``resume`` is
            False, or holds none and ``resume`` is True.
    """

    def __init__(self, path: str | os.PathLike[str], *, resume: bool) -> None:
        self.path = Path(path).expanduser()
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"--out {self.path}: is a file, not a folder")
        blocker = next(
            (p for p in self.path.absolute().parents if p.exists() and not p.is_dir()), None
        )
        if blocker is not None:
            raise OutputError(f"--out {self.path}: cannot be created, {blocker} is a file")
        has_run = self.checkpoint("last").is_file()
        if resume and not has_run:
            raise OutputError(f"--resume: {self.path} holds no run to resume (no last.safetensors)")
        if not resume and has_run:
            raise OutputError(
                f"--out {self.path}: already holds a training run; pass --resume to continue it "
                "or choose another folder"
            )

    def create(self) -> None:
        """Make the folder (and its parents) if missing.

        Raises:
            OutputError: it cannot be created.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"--out {self.path}: cannot create the folder ({exc.strerror or exc})"
            ) from exc

    def checkpoint(self, tag: str) -> Path:
        """``<out>/<tag>.safetensors`` (its JSON is ``<tag>.json``)."""
        return self.path / f"{tag}.safetensors"

    def state_file(self, tag: str = "last") -> Path:
        """``<out>/<tag>.state.pt``: optimizer and progress for ``--resume``."""
        return self.path / f"{tag}{STATE_SUFFIX}"

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    def quicklook(self, step: int) -> Path:
        """``<out>/quicklook/step-NNNNNNN.png``."""
        return self.path / "quicklook" / f"step-{step:07d}.png"

    def write_config(self, data: Mapping[str, Any]) -> None:
        """Write the effective configuration (``train_config.json``)."""
        from difffusr_cli.checkpoint import write_json

        try:
            write_json(self.config_file, data)
        except WeightsError as exc:
            raise OutputError(str(exc)) from None

    def read_config(self) -> dict[str, Any]:
        """The configuration a resumed run was started with.

        Raises:
            OutputError: missing or unreadable ``train_config.json``.
        """
        try:
            return json.loads(self.config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise OutputError(
                f"{self.config_file}: cannot read the run's configuration ({exc})"
            ) from exc

    def save_weights(
        self, tag: str, network: nn.Module, kind: Stage, config: Any, source: Mapping[str, Any]
    ) -> Path:
        """Write ``<tag>.safetensors`` + ``<tag>.json`` in the converted weights format."""
        from difffusr_cli.weights import save_network

        try:
            return save_network(
                network.state_dict(), kind, config, self.checkpoint(tag), source=source
            )
        except WeightsError as exc:
            raise OutputError(str(exc)) from None

    def save_state(self, state: Mapping[str, Any], tag: str = "last") -> None:
        """Write the resumable state (optimizers, progress) atomically beside ``tag``."""
        target = self.state_file(tag)
        tmp = target.with_name(f".{target.name}.partial")
        try:
            torch.save(dict(state), tmp)
            os.replace(tmp, target)
        except OSError as exc:
            raise OutputError(
                f"{target}: cannot write the training state ({exc.strerror or exc})"
            ) from exc

    def load_state(self, tag: str = "last") -> dict[str, Any]:
        """Read the resumable state (tensors and plain values only; no code runs).

        Raises:
            OutputError: missing or unreadable state file.
        """
        source = self.state_file(tag)
        if not source.is_file():
            raise OutputError(f"--resume: {source} is missing; the run cannot continue exactly")
        try:
            return torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file
            raise OutputError(
                f"{source}: unreadable training state ({type(exc).__name__}: {exc})"
            ) from None


class CsvLog:
    """Append-only CSV log with a fixed header (``step, epoch, phase, …``).

    Args:
        path: the CSV file; an existing file with the same header is appended to (``--resume``),
            after dropping rows of steps beyond ``resume_step`` (written after the last checkpoint).
        columns: the column names.
        resume_step: keep only rows with ``step <= resume_step`` of an existing file; None starts
            a new file.
    """

    def __init__(self, path: Path, columns: Sequence[str], resume_step: int | None = None) -> None:
        self.path = path
        self.columns = tuple(columns)
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():
            with open(path, newline="", encoding="utf-8") as stream:
                reader = csv.DictReader(stream)
                if tuple(reader.fieldnames or ()) == self.columns:
                    rows = [r for r in reader if _as_int(r.get("step")) <= resume_step]
        try:
            with open(path, "w", newline="", encoding="utf-8") as stream:
                writer = csv.DictWriter(stream, fieldnames=self.columns)
                writer.writeheader()
                writer.writerows(rows)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write the log ({exc.strerror or exc})") from exc

    def write(self, **values: Any) -> None:
        """Append one row; missing columns stay empty, floats are written with 6 significant digits."""
        unknown = set(values) - set(self.columns)
        if unknown:
            raise ValueError(f"unknown log columns {sorted(unknown)}")
        row = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items()}
        with open(self.path, "a", newline="", encoding="utf-8") as stream:
            csv.DictWriter(stream, fieldnames=self.columns).writerow(row)


def _as_int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def export_weights(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    inference_only: bool = True,
    half: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a compact copy of a checkpoint for shipping (e.g. the packaged demonstration models).

    ``inference_only`` drops what only training needs (RGB: the non-EMA U-Net, the MoCo key
    encoder and queue); ``half`` stores float16. The copy loads everywhere the original does
    (:func:`difffusr_cli.weights.load_weights` restores the full layout in float32).

    Raises:
        WeightsError: unreadable source; OutputError: bad or existing destination.
    """
    from difffusr_cli.weights import load_weights, save_network, sha256_file

    source, target = Path(src).expanduser(), Path(dst).expanduser()
    if target.suffix != ".safetensors":
        raise OutputError(
            f"{target}: the exported file must end in .safetensors (its JSON goes beside it)"
        )
    if not overwrite and (target.exists() or target.with_suffix(".json").exists()):
        raise OutputError(f"{target}: exists; pass --overwrite to replace it")
    if not target.parent.is_dir():
        raise OutputError(f"{target.parent}: no such folder")
    loaded = load_weights(source)
    record = {
        **loaded.meta.get("source", {}),
        "exported_from": source.name,
        "exported_from_sha256": sha256_file(source),
    }
    return save_network(
        loaded.state_dict,
        loaded.kind,
        loaded.config,
        target,
        source=record,
        inference_only=inference_only,
        half=half,
    )


# ---------------------------------------------------------------------------------------------
# Quicklooks


def to_uint8(
    images: Sequence[np.ndarray], low_pct: float = 1.0, high_pct: float = 99.0
) -> list[np.ndarray]:
    """Stretch ``(3, H, W)`` float images to uint8 with one shared percentile stretch."""
    stacked = np.concatenate(
        [np.asarray(im, dtype=np.float32).reshape(3, -1) for im in images], axis=1
    )
    finite = stacked[np.isfinite(stacked)]
    low, high = np.percentile(finite, [low_pct, high_pct]) if finite.size else (0.0, 1.0)
    scale = 255.0 / max(float(high - low), 1e-6)
    return [np.clip((np.nan_to_num(im) - low) * scale, 0, 255).astype(np.uint8) for im in images]


def mosaic(rows: Sequence[Sequence[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Lay ``(3, h, w)`` uint8 panels out in rows (nearest-neighbour resized to the largest panel)."""
    height = max(p.shape[1] for row in rows for p in row)
    width = max(p.shape[2] for row in rows for p in row)
    columns = max(len(row) for row in rows)
    canvas = np.full(
        (3, len(rows) * (height + gap) - gap, columns * (width + gap) - gap), 255, np.uint8
    )
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            ry = np.arange(height) * panel.shape[1] // height
            rx = np.arange(width) * panel.shape[2] // width
            y0, x0 = r * (height + gap), c * (width + gap)
            canvas[:, y0 : y0 + height, x0 : x0 + width] = panel[:, ry][:, :, rx]
    return canvas


def write_png(path: Path, image: np.ndarray) -> Path:
    """Write a ``(3, H, W)`` uint8 image as PNG, creating its folder; returns ``path``.

    The writing itself is :func:`difffusr_cli.png.write_png`'s.
    """
    from difffusr_cli.png import write_png as write_rgb_png

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path.parent}: cannot create the quicklook folder ({exc})") from None
    write_rgb_png(path, image)
    return path


# ---------------------------------------------------------------------------------------------
# Progress


@contextmanager
def progress_bar(
    total: int, initial: int, description: str, enabled: bool
) -> Iterator[Callable[..., None]]:
    """A tqdm bar on stderr; yields ``advance(**postfix)`` which moves it one step."""
    if not enabled:
        yield lambda **_: None
        return
    from tqdm.auto import tqdm

    with tqdm(
        total=total,
        initial=initial,
        desc=description,
        unit="step",
        dynamic_ncols=True,
        file=sys.stderr,
    ) as bar:

        def advance(**postfix: Any) -> None:
            bar.set_postfix(
                {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in postfix.items()},
                refresh=False,
            )
            bar.update(1)

        yield advance


def finite_or_raise(value: float, what: str, step: int) -> float:
    """``value``, or an ``InputError`` when a loss became NaN/inf (lower the rate or check the data)."""
    if not math.isfinite(value):
        raise InputError(
            f"{what} became {value} at step {step}; lower the learning rate (--set train.lr=...) "
            "or check the training data for invalid values"
        )
    return value
