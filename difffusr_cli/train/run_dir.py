"""The ``--out`` folder of a training run and its one resumable checkpoint.

Layout (see ``docs/training.md``):

- ``last.state.pt``: **the** checkpoint ``--resume`` reads: the network weights, the optimizer(s),
  learning-rate scheduler(s), loss scaler, step and best metric, in one file. It is written to a
  temporary name and renamed (``os.replace``), so it is always complete and self-consistent: a
  crash at any moment resumes from the previous or the new step, never from a mix. Tensors and
  plain values only, read back with ``torch.load(weights_only=True)``.
- ``last`` / ``best`` / ``epoch-NNNN`` in the converted weights format (``NAME.safetensors`` +
  ``NAME.json``): exports for ``superres --rgb-model PATH`` and :mod:`difffusr_cli.api`.
- ``log.csv``, ``quicklook/`` PNGs and ``train_config.json``.

Run folders of earlier versions (weights only in ``last.safetensors``, beside a ``last.state.pt``
without them) are still resumed when both files record the same step, and refused otherwise.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from difffusr_cli.errors import OutputError, WeightsError

#: Checkpoint kinds, as in the converted weights format.
Stage = Literal["rgb", "fusion"]
#: Name of the effective configuration written into the run folder (read back by ``--resume``).
CONFIG_FILE = "train_config.json"
#: Name of the CSV log in the run folder.
LOG_FILE = "log.csv"
#: Suffix of the resumable checkpoint (weights + training state).
STATE_SUFFIX = ".state.pt"


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
        has_run = self.checkpoint("last").is_file() or self.state_file().is_file()
        if resume and not has_run:
            raise OutputError(
                f"--resume: {self.path} holds no run to resume (no last{STATE_SUFFIX})"
            )
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
        """``<out>/<tag>.safetensors`` (its JSON is ``<tag>.json``): a weights export."""
        return self.path / f"{tag}.safetensors"

    def state_file(self, tag: str = "last") -> Path:
        """``<out>/<tag>.state.pt``: the resumable checkpoint (weights and training state)."""
        return self.path / f"{tag}{STATE_SUFFIX}"

    @property
    def config_file(self) -> Path:
        """``<out>/train_config.json``: the effective configuration."""
        return self.path / CONFIG_FILE

    @property
    def log_file(self) -> Path:
        """``<out>/log.csv``: the training and validation log."""
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
        """Write the resumable checkpoint atomically: a temporary file, then ``os.replace``.

        ``state`` holds ``weights`` (the network's state dict) and the training state
        (``step``, ``best_metric``, optimizer / scheduler / scaler state dicts).
        """
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
        """Read the resumable checkpoint (tensors and plain values only; no code runs).

        A checkpoint of an earlier version lacks ``weights``; they are then taken from
        ``<tag>.safetensors`` when it records the same step, else the run is refused.

        Raises:
            OutputError: missing or unreadable file, or an old run whose two files disagree.
        """
        source = self.state_file(tag)
        if not source.is_file():
            raise OutputError(f"--resume: {source} is missing; the run cannot continue exactly")
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file
            raise OutputError(
                f"{source}: unreadable training state ({type(exc).__name__}: {exc})"
            ) from None
        if "weights" not in state:
            state["weights"] = self._legacy_weights(tag, int(state.get("step", -1)))
        return state

    def _legacy_weights(self, tag: str, step: int) -> dict[str, Any]:
        """The weights of a two-file run folder (``<tag>.safetensors`` of the same step)."""
        from difffusr_cli.weights import load_weights

        path = self.checkpoint(tag)
        try:
            loaded = load_weights(path)
        except WeightsError as exc:
            raise OutputError(f"--resume: {exc}") from None
        saved = loaded.meta.get("source", {}).get("step")
        if saved != step:
            raise OutputError(
                f"--resume: {path} (step {saved}) and {self.state_file(tag)} (step {step}) "
                "come from different steps; this older run folder cannot be resumed exactly"
            )
        return dict(loaded.state_dict)


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
        """Append one row; missing columns stay empty, floats get 6 significant digits."""
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
