"""Helpers shared by the weights tests: a tiny fusion checkpoint, a Hub cache laid out as
huggingface_hub does, manifests."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from difffusr_cli.models.config import FusionConfig
from difffusr_cli.models.fusion import FusionNetwork

REPO_ID = "difffusr-test/tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
FUSION_FILE = "logs/GSD/run_1/checkpoints/last.ckpt"
TINY_FUSION = FusionConfig("mtf", 8, 3, 4)


def _tiny_fusion_ckpt(path: Path, seed: int = 0) -> Path:
    """A Lightning-shaped checkpoint of a tiny MTF fusion network (torch.save, zip format)."""
    torch.manual_seed(seed)
    network = FusionNetwork(TINY_FUSION)
    for tensor in network.state_dict().values():
        if tensor.is_floating_point():
            tensor.add_(torch.randn_like(tensor) * 0.01)  # every stored number matters
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "epoch": 3,
            "state_dict": OrderedDict(network.state_dict()),
            "hyper_parameters": {"lr": 1e-4},
        },
        path,
    )
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hub_cache(
    cache: Path,
    files: dict[str, Path],
    *,
    repo: str = REPO_ID,
    commit: str = COMMIT,
    ref: str = "main",
) -> Path:
    """Lay files out as huggingface_hub does.

    blobs/<sha256>, snapshots/<commit>/<path> → blob, refs/<ref>.
    """
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    for name, source in files.items():
        blob = root / "blobs" / _sha256(source)
        shutil.copyfile(source, blob)
        link = root / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs" / ref).write_text(commit)
    return root


def _manifest(path: Path, **entries: dict) -> Path:
    lines = []
    for name, fields in entries.items():
        lines.append(f"[models.{name}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in fields.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def _fusion_entry(**overrides) -> dict:
    entry = {
        "kind": "fusion",
        "source": "hub",
        "repo": REPO_ID,
        "revision": "main",
        "file": FUSION_FILE,
        "sha256": "",
        "architecture": "fusion-auto",
        "default": True,
    }
    entry.update(overrides)
    return entry


def _err_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected a message on stderr"
    return err[-1]
