"""Device and precision selection for inference, with errors a user can act on."""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Iterator, Mapping
from typing import Literal

import numpy as np
import torch

from difffusr_cli.errors import InputError

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def select_device(spec: str = "auto") -> torch.device:
    """Turn ``auto | cpu | cuda | cuda:N | mps`` into a usable :class:`torch.device`.

    ``auto`` picks CUDA, then MPS, then the CPU.

    Raises:
        InputError: the spec is malformed or names a device this machine does not have.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise InputError(
                "--device mps: Apple Metal (MPS) is not available on this machine; use --device cpu"
            )
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        index_text = spec.partition(":")[2]
        if index_text and not index_text.isdigit():
            raise InputError(f"--device {spec}: expected cuda or cuda:N with N a GPU number")
        if not torch.cuda.is_available():
            raise InputError(
                f"--device {spec}: no CUDA GPU is available (torch {torch.__version__}); "
                "use --device cpu"
            )
        index = int(index_text) if index_text else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise InputError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA GPU(s) found (cuda:0…)"
            )
        return torch.device("cuda", index)
    raise InputError(f"--device {spec!r}: expected auto, cpu, cuda, cuda:N or mps")


def select_precision(spec: str, device: torch.device) -> torch.dtype:
    """The compute dtype for ``spec`` on ``device``: ``auto`` is bf16 on CUDA, fp32 elsewhere.

    Raises:
        InputError: unknown spec, bf16 on a GPU without bf16 support, or fp16 on the CPU.
    """
    spec = spec.strip().lower()
    if spec not in PRECISIONS:
        raise InputError(f"--precision {spec!r}: expected one of {', '.join(PRECISIONS)}")
    if spec == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if spec == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InputError(
            f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support; "
            "use fp16 or fp32"
        )
    if spec == "fp16" and device.type == "cpu":
        raise InputError("--precision fp16 needs a GPU (cuda or mps); on the CPU use fp32 or bf16")
    return _DTYPES[spec]


def precision_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` → ``"bf16"`` (the CLI's spelling)."""
    return {v: k for k, v in _DTYPES.items()}[dtype]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Mixed-precision autocast for ``dtype`` (nothing for fp32), inside inference mode.

    Args:
        device: where the model runs (autocast is per device type).
        dtype: ``torch.float32`` (no autocast), ``torch.bfloat16`` or ``torch.float16``.

    Yields:
        None, inside ``torch.inference_mode()`` and, unless fp32, ``torch.autocast``.
    """
    with torch.inference_mode():
        if dtype == torch.float32:
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield


#: CPU cores left to the writing thread and GDAL's compression by :func:`host_threads`.
WRITER_CORES = 2


@contextlib.contextmanager
def host_threads(device: torch.device) -> Iterator[None]:
    """Run torch's host-side work (blending, consistency, bilinear/Gram–Schmidt) on fewer threads.

    On the CPU, these are short, memory-bound operations; split over every core, each one waits
    for its slowest part, which the writing thread and GDAL's compression (always running
    beside them) keep busy: on 2 cores a 9-tap filter ran 6 × slower on 2 threads than on 1.
    They get the cores but :data:`WRITER_CORES` (at least one); the networks keep them all.
    Elsewhere (a GPU) nothing changes. torch's thread count is process-wide: a thread that makes
    its first torch call while another is inside this block starts with the lower count (the
    command runs torch in one thread; callers of the API from several threads should know).
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(before - WRITER_CORES, 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def describe(device: torch.device) -> str:
    """A short human description: ``"cuda:0 (NVIDIA H100 80GB HBM3)"`` or ``"cpu (8 threads)"``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement (GPU only; the process RSS peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[int, str]:
    """Peak memory in bytes and what was measured.

    CUDA: ``torch.cuda.max_memory_allocated`` since the last :func:`reset_peak_memory`;
    elsewhere the peak resident set size of the process.
    """
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "GPU memory allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(rss if sys.platform == "darwin" else rss * 1024), "process RSS"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def to_device(
    arrays: Mapping[str, np.ndarray], device: torch.device, staging: torch.Tensor | None = None
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Move several arrays to ``device`` as float32 in one host→device copy.

    The arrays are packed into one flat buffer, copied once and returned as views of the copy.
    On CUDA the buffer is pinned host memory (the copy is non-blocking) and is reused between
    calls: pass back the returned ``staging``. Reuse is safe as long as the caller waits for the
    results of one call (e.g. copies them back) before the next call. On the CPU nothing is
    packed: contiguous float32 arrays are shared with the tensors (no copy), others converted.

    Args:
        arrays: name → array of any shape (bool or numeric; stored as float32).
        device: the target device.
        staging: the pinned buffer of a previous call, or None.

    Returns:
        ``(tensors, staging)``: name → float32 tensor of the array's shape on ``device``, and the
        pinned buffer to pass next time (None off CUDA).
    """
    if device.type == "cpu":
        # Nothing to copy to: float32 arrays are used in place, others converted once (packing
        # them into one buffer would be a copy of every pixel for nothing).
        return {
            name: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
            for name, a in arrays.items()
        }, staging
    total = sum(int(a.size) for a in arrays.values())
    if device.type == "cuda":
        if staging is None or staging.numel() < total:
            staging = torch.empty(total, dtype=torch.float32, pin_memory=True)
        flat = staging[:total]
    else:
        flat = torch.empty(total, dtype=torch.float32)
    on_device = pack_arrays(arrays, flat).to(device, non_blocking=True)
    return unpack_arrays(arrays, on_device), staging


def pack_arrays(arrays: Mapping[str, np.ndarray], flat: torch.Tensor) -> torch.Tensor:
    """Copy ``arrays`` one after another into the float32 CPU buffer ``flat``; return it."""
    host = flat.numpy()
    offset = 0
    for a in arrays.values():
        host[offset : offset + a.size].reshape(a.shape)[...] = a
        offset += a.size
    return flat


def unpack_arrays(arrays: Mapping[str, np.ndarray], flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Views of ``flat`` (packed by :func:`pack_arrays`) with the arrays' names and shapes."""
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, a in arrays.items():
        out[name] = flat[offset : offset + a.size].view(a.shape)
        offset += a.size
    return out
