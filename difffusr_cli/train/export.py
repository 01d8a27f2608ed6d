"""``difffusr train export``: a compact copy of a checkpoint for shipping."""

from __future__ import annotations

import os
from pathlib import Path

from difffusr_cli.errors import OutputError


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
