"""Loading weights files and the converted safetensors + JSON format."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from difffusr_cli.bands import BAND_NAMES, NORM_MEAN, NORM_STD, RGB
from difffusr_cli.errors import OutputError, WeightsError
from difffusr_cli.weights.manifest import _KINDS, FORMAT_VERSION, RGB_ARCHITECTURE, ModelKind
from difffusr_cli.weights.report import Reporter, StderrReporter

if TYPE_CHECKING:
    import torch

    from difffusr_cli.models.config import FusionConfig, SRConfig


# ---------------------------------------------------------------------------------------------
# Checksums


def sha256_file(path: str | os.PathLike[str], reporter: Reporter | None = None) -> str:
    """SHA-256 of a file, streamed in 8 MiB chunks (lower-case hex)."""
    source = Path(path)
    digest = hashlib.sha256()
    total = source.stat().st_size
    progress = (reporter or StderrReporter()).progress(f"sha256 {source.name}", total)
    with progress as advance, open(source, "rb") as stream:
        for chunk in iter(lambda: stream.read(8 << 20), b""):
            digest.update(chunk)
            advance(len(chunk))
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class LoadedWeights:
    """Weights read from any supported file, with what is needed to build the network.

    Attributes:
        kind: ``"rgb"`` or ``"fusion"``.
        architecture: ``diffusion-sr3-rrdb``, ``fusion-rrdb`` or ``fusion-mtf``.
        config: :class:`~difffusr_cli.models.config.SRConfig` or ``FusionConfig``.
        state_dict: official key names → CPU tensors (float32 weights, int64/int32 buffers).
        meta: the converted-format JSON object (``difffusr_format``, ``kind``, ``architecture``,
            ``config``, ``bands``, ``normalisation``, ``source``, ``config_source``).
    """

    kind: ModelKind
    architecture: str
    config: SRConfig | FusionConfig
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    meta: dict[str, Any] = field(repr=False)


def _architecture(kind: str, config: Any) -> str:
    return RGB_ARCHITECTURE if kind == "rgb" else f"fusion-{config.arch}"


def _normalisation(kind: str) -> dict[str, Any]:
    if kind == "rgb":
        return {
            "input": "reflectance",
            "network_input": (
                "(reflectance - 0.5) / 0.5, network output mapped back by x * 0.5 + 0.5"
            ),
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
        }
    return {
        "input": "reflectance",
        "network_input": (
            "per-band z-score (reflectance - mean) / std; SR RGB guidance uses the B04, B03, "
            "B02 entries"
        ),
        "bands": list(BAND_NAMES),
        "mean": list(NORM_MEAN),
        "std": list(NORM_STD),
    }


def _build_meta(
    kind: str, config: Any, source: Mapping[str, Any], config_source: str
) -> dict[str, Any]:
    return {
        "difffusr_format": FORMAT_VERSION,
        "kind": kind,
        "architecture": _architecture(kind, config),
        "config": config.to_dict(),
        "bands": list(RGB) if kind == "rgb" else list(BAND_NAMES),
        "normalisation": _normalisation(kind),
        "source": dict(source),
        "config_source": config_source,
    }


def _tensors_only(mapping: Mapping[Any, Any], source: Path) -> dict[str, torch.Tensor]:
    import torch

    state = {k: v for k, v in mapping.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not state:
        raise WeightsError(f"{source}: holds no tensors under state_dict")
    return state


def _config_for(
    kind: str,
    state: Mapping[str, torch.Tensor],
    hparams: Mapping[str, Any] | None,
    hparams_from: str,
    source: Path,
) -> tuple[Any, str]:
    """The architecture config of a state dict.

    From the hparams mapping when given (SR), else inferred from tensor names and shapes. Errors
    name ``source``.
    """
    from difffusr_cli.models.config import MoCoConfig, SRConfig
    from difffusr_cli.models.infer import infer_fusion_config, infer_sr_config

    try:
        if kind == "fusion":
            return infer_fusion_config(dict(state)), "inferred from tensor names and shapes"
        if hparams:
            # The MoCo queue length is not in hparams (hard-wired upstream): the buffer says it.
            queue = state.get("E.queue")
            moco = (
                MoCoConfig(K=int(queue.shape[1]))
                if queue is not None and queue.dim() == 2
                else None
            )
            try:
                return SRConfig.from_hparams(dict(hparams), moco=moco), hparams_from
            except WeightsError as exc:
                raise WeightsError(f"{hparams_from}: {exc}") from None
        return infer_sr_config(dict(state)), "inferred from tensor names and shapes"
    except WeightsError as exc:
        message = str(exc)
        raise WeightsError(
            message if message.startswith(str(source)) else f"{source}: {message}"
        ) from None


def _detect_kind(state: Mapping[str, torch.Tensor], source: Path) -> ModelKind:
    from difffusr_cli.models.infer import detect_kind

    try:
        return detect_kind(dict(state))
    except WeightsError as exc:
        raise WeightsError(f"{source}: {exc}") from None


def _load_pickled(source: Path) -> LoadedWeights:
    from difffusr_cli.checkpoint import (
        find_hparams_yaml,
        read_hparams_yaml,
        read_lightning_checkpoint,
    )

    # Only the state dict's tensors are read: a training checkpoint's optimizer state (twice the
    # size of the weights) never reaches memory.
    checkpoint = read_lightning_checkpoint(source, tensors_under={"state_dict"})
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        state = _tensors_only(checkpoint["state_dict"], source)
    elif isinstance(checkpoint, Mapping):
        state = _tensors_only(checkpoint, source)  # a bare torch.save(state_dict)
    else:
        raise WeightsError(
            f"{source}: holds a {type(checkpoint).__name__}, expected a checkpoint dict with a "
            "state_dict"
        )
    kind = _detect_kind(state, source)
    hparams: Mapping[str, Any] | None = None
    hparams_from = ""
    if kind == "rgb":
        hparams_file = find_hparams_yaml(source)
        if hparams_file is not None:
            hparams, hparams_from = (
                read_hparams_yaml(hparams_file),
                f"hparams.yaml ({hparams_file})",
            )
        elif isinstance(checkpoint.get("hyper_parameters"), Mapping):
            hparams, hparams_from = checkpoint["hyper_parameters"], "checkpoint hyper_parameters"
    config, config_source = _config_for(kind, state, hparams, hparams_from, source)
    meta = _build_meta(kind, config, {"file": str(source)}, config_source)
    return LoadedWeights(kind, meta["architecture"], config, state, meta)


def _meta_from_json(text: str, origin: str) -> dict[str, Any] | None:
    """The converted-format JSON in ``text``.

    None when it is some other JSON (e.g. compat files).
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise WeightsError(f"{origin}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "difffusr_format" not in data:
        return None
    if data["difffusr_format"] != FORMAT_VERSION:
        raise WeightsError(
            f"{origin}: difffusr_format {data['difffusr_format']!r} is not supported by this "
            "difffusr "
            f"(it reads format {FORMAT_VERSION}); convert the original checkpoint again"
        )
    if data.get("kind") not in _KINDS or not isinstance(data.get("config"), dict):
        raise WeightsError(f"{origin}: converted-format JSON without a valid kind and config")
    return data


def _load_safetensors(source: Path) -> LoadedWeights:
    from difffusr_cli.checkpoint import read_safetensors
    from difffusr_cli.models.config import FusionConfig, SRConfig

    tensors, header = read_safetensors(source)
    if any(k.startswith("weights/") for k in tensors):
        # compat test files: weights under `weights/`, test vectors under `vec/`.
        tensors = {k[len("weights/") :]: v for k, v in tensors.items() if k.startswith("weights/")}
    if not tensors:
        raise WeightsError(f"{source}: holds no tensors")
    meta: dict[str, Any] | None = None
    sidecar = source.with_suffix(".json")
    if sidecar.is_file():
        meta = _meta_from_json(sidecar.read_text(encoding="utf-8"), str(sidecar))
        if meta is not None and not converted_intact(source, meta):
            raise WeightsError(
                f"{source}: its sha256 differs from the file_sha256 recorded in {sidecar.name} at "
                "conversion (modified or corrupt); convert or pull it again"
            )
    if meta is None and "difffusr" in header:
        meta = _meta_from_json(header["difffusr"], f"{source} (header metadata)")
    if meta is not None:
        kind = meta["kind"]
        try:
            config = (
                SRConfig.from_dict(meta["config"])
                if kind == "rgb"
                else FusionConfig.from_dict(meta["config"])
            )
        except (WeightsError, KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{source}: the config in its JSON is not valid ({exc})") from None
        meta = {**meta, "architecture": _architecture(kind, config)}
        if meta.get("export"):  # an inference-only / fp16 export of `save_network`
            tensors = _complete_export(tensors, kind, config)
        return LoadedWeights(kind, meta["architecture"], config, tensors, meta)
    kind = _detect_kind(tensors, source)
    config, config_source = _config_for(kind, tensors, None, "", source)
    meta = _build_meta(kind, config, {"file": str(source)}, config_source)
    return LoadedWeights(kind, meta["architecture"], config, tensors, meta)


def load_weights(path: str | os.PathLike[str]) -> LoadedWeights:
    """Read weights from a file, without executing code from it.

    Accepts a Lightning/``torch.save`` checkpoint (``.ckpt``, ``.pt``, ``.pth``: restricted
    unpickler), a converted ``.safetensors`` with its ``.json`` beside it (or the JSON in the
    safetensors header), a bare ``.safetensors`` in the official key layout, and the compat files
    whose weights sit under ``weights/``. For SR checkpoints the config comes from
    ``hparams.yaml`` (beside the file or two folders up), else the embedded
    ``hyper_parameters``, else the tensor shapes; fusion configs always from the shapes.

    Raises:
        UnsafeCheckpointError: the pickle references code outside the allow-list.
        WeightsError: missing file, unknown format or layout.
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise WeightsError(f"{source}: no such weights file")
    with open(source, "rb") as stream:
        head = stream.read(16)
    if source.suffix == ".safetensors":
        return _load_safetensors(source)
    if (
        head.startswith(b"PK\x03\x04")
        or head[:1] == b"\x80"
        or source.suffix in (".ckpt", ".pt", ".pth", ".bin")
    ):
        return _load_pickled(source)
    if len(head) >= 9 and head[8:9] == b"{":
        return _load_safetensors(
            source
        )  # safetensors without the suffix: 8-byte length + JSON header
    raise WeightsError(
        f"{source}: unknown weights format; expected .ckpt (Lightning), .pt/.pth or .safetensors"
    )


# ---------------------------------------------------------------------------------------------
# Writing the converted format


def save_converted(
    weights: LoadedWeights,
    destination: str | os.PathLike[str],
    *,
    source: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``destination`` (``NAME.safetensors``) and ``NAME.json`` beside it.

    ``source`` replaces the JSON's ``source`` record (file, sha256, hub repo/revision/commit).
    The JSON is also stored in the safetensors header (key ``difffusr``) so a lone copy of the
    ``.safetensors`` file still describes itself.
    """
    from difffusr_cli.checkpoint import write_json, write_safetensors

    target = Path(destination)
    meta = dict(weights.meta)
    if source is not None:
        meta["source"] = dict(source)
    write_safetensors(
        target, weights.state_dict, {"difffusr": json.dumps(meta, sort_keys=False), "format": "pt"}
    )
    # The sidecar records the converted file's own digest: loading checks it, so the provenance
    # in the JSON always describes the bytes that run.
    meta["file_sha256"] = sha256_file(target)
    write_json(target.with_suffix(".json"), meta)
    return target


def converted_intact(path: Path, meta: Mapping[str, Any]) -> bool:
    """True when ``path`` has the ``file_sha256`` its sidecar JSON ``meta`` recorded.

    The digest is recorded at conversion; also True when nothing was recorded (files converted
    before the digest existed).
    """
    recorded = meta.get("file_sha256")
    return not isinstance(recorded, str) or sha256_file(path) == recorded


def check_loads(weights: LoadedWeights, source: Path) -> None:
    """Load ``weights`` strictly into the network its config describes.

    On the meta device, no copy of the tensors: wrong shapes, missing or extra keys, a config that
    does not match the tensors are refused before anything is written.

    Raises:
        WeightsError: one line naming ``source``.
    """
    from difffusr_cli.api import load_network

    load_network(weights, origin=str(source))


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    reporter: Reporter | None = None,
) -> Path:
    """Convert any readable weights file to ``dst`` (``.safetensors``) + the JSON beside it.

    ``dst`` may be an existing folder (the file is named after ``src``). The source's sha256 is
    recorded in the JSON.

    Raises:
        OutputError: ``dst`` exists (without ``overwrite``) or does not end in ``.safetensors``.
        WeightsError / UnsafeCheckpointError: as :func:`load_weights`.
    """
    source = Path(src).expanduser()
    target = Path(dst).expanduser()
    if target.is_dir():
        target = target / f"{source.stem}.safetensors"
    if target.suffix != ".safetensors":
        raise OutputError(
            f"{target}: the converted file must end in .safetensors (its JSON goes beside it)"
        )
    if not overwrite and (target.exists() or target.with_suffix(".json").exists()):
        raise OutputError(f"{target}: exists; pass --overwrite to replace it")
    if target.resolve() == source.resolve():
        raise OutputError(f"{target}: is the source file itself; choose another destination")
    if not target.parent.is_dir():
        raise OutputError(f"{target.parent}: no such folder")
    weights = load_weights(source)
    check_loads(weights, source)
    record = {"file": source.name, "sha256": sha256_file(source, reporter)}
    return save_converted(weights, target, source=record)


# ---------------------------------------------------------------------------------------------
# Saving trained networks (added for `difffusr train`): checkpoints and compact exports

#: What an inference-only RGB export leaves out: the trained (non-EMA) U-Net and the MoCo key
#: encoder and queue. Inference uses only the EMA U-Net, the RRDB encoder and the query encoder.
INFERENCE_ONLY_DROPS: tuple[str, ...] = ("model.", "E.encoder_k.", "E.queue", "E.queue_ptr")


def save_network(
    state_dict: Mapping[str, torch.Tensor],
    kind: ModelKind,
    config: SRConfig | FusionConfig,
    destination: str | os.PathLike[str],
    *,
    source: Mapping[str, Any],
    inference_only: bool = False,
    half: bool = False,
) -> Path:
    """Write a network's ``state_dict`` in the converted format.

    The files are ``NAME.safetensors`` + ``NAME.json``.

    Args:
        state_dict: official key layout (``DiffusionSR`` / ``FusionNetwork`` ``state_dict()``).
        kind: ``"rgb"`` or ``"fusion"``.
        config: an ``SRConfig`` for ``"rgb"``, a ``FusionConfig`` for ``"fusion"``.
        destination: the ``.safetensors`` path.
        source: the JSON's ``source`` record (e.g. the training run, step, data).
        inference_only: RGB only — leave out :data:`INFERENCE_ONLY_DROPS` (about half the
            tensors); :func:`load_weights` rebuilds them (``model.`` ← ``ema.``, key encoder ←
            query encoder, a fresh queue), so the file still loads everywhere and can seed
            fine-tuning.
        half: store floating-point weights as float16 (the schedule tables ``diffusion.*`` stay
            float32: sampling needs them exact); loading casts back to float32.

    The JSON records what was done under ``"export"``.
    """
    tensors = {k: v.detach().cpu() for k, v in state_dict.items()}
    meta = _build_meta(kind, config, source, "written by difffusr train")
    export: dict[str, Any] = {}
    if inference_only and kind == "rgb":
        tensors = {k: v for k, v in tensors.items() if not k.startswith(INFERENCE_ONLY_DROPS)}
        export["inference_only"] = True
        export["dropped"] = list(INFERENCE_ONLY_DROPS)
    if half:
        tensors = {
            k: v.half() if v.is_floating_point() and not k.startswith("diffusion.") else v
            for k, v in tensors.items()
        }
        export["dtype"] = "float16"
    if export:
        meta["export"] = export
    weights = LoadedWeights(kind, meta["architecture"], config, tensors, meta)
    return save_converted(weights, destination)


def _complete_export(
    tensors: Mapping[str, torch.Tensor], kind: str, config: Any
) -> dict[str, torch.Tensor]:
    """The full official state dict of a :func:`save_network` export.

    Float32, dropped parts rebuilt.
    """
    import torch

    full = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    if kind != "rgb":
        return full
    for key in [k for k in full if k.startswith("ema.")]:
        full.setdefault("model." + key[len("ema.") :], full[key].clone())
    for key in [k for k in full if k.startswith("E.encoder_q.")]:
        full.setdefault("E.encoder_k." + key[len("E.encoder_q.") :], full[key].clone())
    if "E.queue" not in full:
        # any unit-norm keys do (only training reads the queue); seeded for reproducibility
        generator = torch.Generator().manual_seed(0)
        queue = torch.randn(config.moco.dim, config.moco.K, generator=generator)
        full["E.queue"] = torch.nn.functional.normalize(queue, dim=0)
        full["E.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return full
