"""The Python API: pretrained DiffFuSR models ready to call, for notebooks and scripts.

>>> import difffusr_cli
>>> sr = difffusr_cli.load_rgb_model()            # default RGB model of weights.toml
>>> hr = sr.super_resolve(lr, steps=20, seed=0)   # (B, 3, h, w) → (B, 3, 4h, 4w) reflectance
>>> fusion = difffusr_cli.load_fusion_model()
>>> product = fusion(hr, {"10m": b10, "20m": b20, "60m": b60})  # (B, 12, 4h, 4w)

Scaling to [−1, 1], the EMA weights and the normalisation statistics live inside the returned
objects; callers pass and get reflectance. See ``docs/python-api.md``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, cast

import torch

from difffusr_cli.errors import WeightsError
from difffusr_cli.weights import (
    LoadedWeights,
    ModelKind,
    Reporter,
    default_model_name,
    load_weights,
    resolve,
)

if TYPE_CHECKING:
    from difffusr_cli.models.predictors import FusionPredictor, RGBSuperResolver

__all__ = ["load_fusion_model", "load_network", "load_rgb_model"]


def _device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    from difffusr_cli.device import select_device

    return select_device(device)


def _weights_for(
    name_or_path: str | os.PathLike[str] | None, kind: ModelKind, reporter: Reporter | None
) -> tuple[LoadedWeights, str]:
    target = name_or_path if name_or_path is not None else default_model_name(kind)
    path = resolve(target, kind, reporter=reporter)
    loaded = load_weights(path)
    if loaded.kind != kind:
        names = {"rgb": "an RGB", "fusion": "a fusion"}
        raise WeightsError(f"{path}: holds {names[loaded.kind]} model, not {names[kind]} model")
    return loaded, str(path)


def load_network(loaded: LoadedWeights, *, origin: str = "weights") -> torch.nn.Module:
    """Build the network a :class:`~difffusr_cli.weights.LoadedWeights` describes.

    Its tensors are loaded with ``strict=True``; returned in eval mode on the CPU.

    The modules are created on the ``meta`` device and the loaded tensors are assigned to them,
    so no random initialisation runs and the weights are not held twice in memory.

    Raises:
        WeightsError: key names or shapes differ from the architecture (``origin`` names the file).
    """
    from difffusr_cli.models.fusion import FusionNetwork
    from difffusr_cli.models.sr import DiffusionSR

    build: Any = DiffusionSR if loaded.kind == "rgb" else FusionNetwork
    try:
        with torch.device("meta"):
            network = build(loaded.config)
        assign = True
    except (RuntimeError, NotImplementedError, ValueError):
        network, assign = build(loaded.config), False  # a constructor that needs real data
    try:
        network.load_state_dict(loaded.state_dict, strict=True, assign=assign)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise WeightsError(
            f"{origin}: tensors do not match the {loaded.architecture} architecture "
            f"({detail[:300]})"
        ) from None
    if any(t.is_meta for t in (*network.parameters(), *network.buffers())):
        # A non-persistent buffer (in no state dict) stayed on meta: build for real instead.
        network = build(loaded.config)
        network.load_state_dict(loaded.state_dict, strict=True)
    return network.eval()


def load_rgb_model(
    name_or_path: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    *,
    reporter: Reporter | None = None,
) -> RGBSuperResolver:
    """The diffusion super-resolution model for the RGB bands, ready to call.

    Args:
        name_or_path: a model name of ``weights.toml`` (``"rgb-naip-harm"``, …), a local file
            (Lightning ``.ckpt``, converted or bare ``.safetensors``), or None for the
            manifest's default RGB model. Names are downloaded once into the Hugging Face cache
            and converted (see ``docs/weights.md``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, ``"auto"`` or a ``torch.device``.
        reporter: where download/checksum progress and notes go (default: notes on stderr).

    Returns:
        :class:`~difffusr_cli.models.predictors.RGBSuperResolver` in eval mode on ``device``,
        sampling with the EMA weights; ``.super_resolve(lr, steps=20, seed=None, noise=None)``
        maps ``(B, 3, h, w)`` float32 R, G, B (B04, B03, B02) reflectance in [0, 1] to
        ``(B, 3, 4h, 4w)`` reflectance.

    Raises:
        WeightsError: unknown name, missing or unsafe file, a fusion checkpoint, weights that do
            not fit the architecture, or no Hub access and nothing cached.
        InputError: a device this machine does not have.
    """
    from difffusr_cli.models.predictors import RGBSuperResolver
    from difffusr_cli.models.sr import DiffusionSR

    target = _device(device)
    loaded, origin = _weights_for(name_or_path, "rgb", reporter)
    # An "rgb" kind builds a DiffusionSR (see load_network).
    network = cast(DiffusionSR, load_network(loaded, origin=origin))
    return RGBSuperResolver(network.to(target))


def load_fusion_model(
    name_or_path: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    *,
    reporter: Reporter | None = None,
) -> FusionPredictor:
    """The three fusion networks (10 m, 20 m, 60 m groups), ready to call.

    Args:
        name_or_path: ``"fusion"`` (or another fusion name of ``weights.toml``), a local file, or
            None for the manifest's default fusion model. RRDB and MTF checkpoints are told apart
            by their keys.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, ``"auto"`` or a ``torch.device``.
        reporter: where download/checksum progress and notes go (default: notes on stderr).

    Returns:
        :class:`~difffusr_cli.models.predictors.FusionPredictor` in eval mode on ``device``;
        calling it with the SR RGB ``(B, 3, 4h, 4w)`` and the native groups
        ``{"10m": (B, 4, h, w), "20m": (B, 6, h/2, w/2), "60m": (B, 2, h/6, w/6)}`` (reflectance,
        bands in ``bands.GROUPS`` order) returns ``(B, 12, 4h, 4w)`` reflectance in product order.

    Raises:
        WeightsError: as :func:`load_rgb_model`, or an RGB checkpoint.
        InputError: a device this machine does not have.
    """
    from difffusr_cli.models.fusion import FusionNetwork
    from difffusr_cli.models.predictors import FusionPredictor

    target = _device(device)
    loaded, origin = _weights_for(name_or_path, "fusion", reporter)
    # A "fusion" kind builds a FusionNetwork (see load_network).
    network = cast(FusionNetwork, load_network(loaded, origin=origin))
    return FusionPredictor(network.to(target), provenance=loaded.meta.get("source", {}))
