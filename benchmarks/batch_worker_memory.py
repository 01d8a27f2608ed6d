"""Host memory of one batch worker with the published-size networks (random weights), on the CPU.

Writes an RGB diffusion model of the published architecture (``SRConfig.large()``, ~129 M U-Net
parameters) and RRDB fusion networks (``FusionConfig.large_rrdb()``) with random weights, then runs
``difffusr superres`` in a fresh process on the generated example scene (48 × 48 px at 10 m, one
diffusion patch) and prints the run's summary, whose ``peak memory`` is the process's peak RSS:
the models, torch and one patch batch's activations (``--fusion net`` adds the fusion networks'
tile activations; bilinear, the default, leaves them out). The scene buffers come on top
(about 3.3 GB for a full 10,980-pixel-wide tile, docs/superres.md "Memory").

    python benchmarks/batch_worker_memory.py [--patch-size 256] [--batch-size 1] [--steps 2]
        [--fusion bilinear|net]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from difffusr_cli.example import make_example_safe
from difffusr_cli.models.config import FusionConfig, SRConfig
from difffusr_cli.models.fusion import FusionNetwork
from difffusr_cli.models.sr import DiffusionSR


def write_large_models(folder: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    rgb, fusion = folder / "sr_large.safetensors", folder / "fusion_large.safetensors"
    sr = DiffusionSR(SRConfig.large())
    save_file({k: v.contiguous() for k, v in sr.state_dict().items()}, str(rgb))
    del sr
    net = FusionNetwork(FusionConfig.large_rrdb())
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(fusion))
    return rgb, fusion


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patch-size", default="256")
    parser.add_argument("--batch-size", default="1")
    parser.add_argument("--steps", default="2")
    # The published-size RRDB fusion takes many minutes on a small CPU: bilinear by default.
    parser.add_argument("--fusion", default="bilinear", choices=["net", "bilinear"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rgb, fusion = write_large_models(folder)
        safe = make_example_safe(folder / "scene", size=48)
        command = [
            sys.executable, "-m", "difffusr_cli.cli", "superres", str(safe),
            "-o", str(folder / "o.tif"), "--rgb-model", str(rgb), "--fusion", args.fusion,
            *(["--fusion-model", str(fusion)] if args.fusion == "net" else []),
            "--patch-size", args.patch_size, "--batch-size", args.batch_size,
            "--steps", args.steps, "--device", "cpu",
        ]  # fmt: skip
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
