"""Buffers kept between uses for hot loops (fresh large arrays cost a page fault per page).

glibc maps every allocation over 32 MiB afresh, and each fresh page costs a fault and its
clearing: a loop that allocates the same large temporaries block after block spends much of
its time in the kernel. :class:`Scratch` keeps one buffer and lends it out in any shape;
:class:`ScratchRing` lends a few in turn, for results another thread still reads.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["Scratch", "ScratchRing"]


class Scratch:
    """A float32 buffer kept between uses and lent out in any shape (grown, never shrunk).

    For hot loops that would otherwise allocate the same large temporaries again and again:
    glibc maps every array over 32 MiB afresh, and each fresh page costs a fault and its
    clearing. What :meth:`take` returns is overwritten by the next call.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._flat: torch.Tensor | None = None

    def take(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A ``shape`` float32 tensor on :attr:`device` over the kept buffer (contents: any)."""
        size = math.prod(shape)
        if self._flat is None or self._flat.numel() < size:
            self._flat = torch.empty(size, dtype=torch.float32, device=self.device)
        return self._flat[:size].view(shape)

    def array(self, shape: tuple[int, ...]) -> np.ndarray:
        """:meth:`take` as a numpy array (CPU only)."""
        return self.take(shape).numpy()


class ScratchRing:
    """``count`` :class:`Scratch` buffers lent out in turn (CPU arrays).

    What :meth:`array` returns stays untouched by the next ``count − 1`` calls: a consumer in
    another thread may still read the previous result while the next one is computed.
    """

    def __init__(self, count: int = 2) -> None:
        self._buffers = [Scratch() for _ in range(count)]
        self._next = 0

    def array(self, shape: tuple[int, ...]) -> np.ndarray:
        """The next buffer as a ``shape`` float32 array (contents: any)."""
        buffer = self._buffers[self._next]
        self._next = (self._next + 1) % len(self._buffers)
        return buffer.array(shape)
