"""The degradation encoder and its MoCo wrapper (contrastive degradation representation).

At inference only :meth:`MoCo.embed` is used: the query encoder's globally pooled 256-d feature
(eval mode, BatchNorm running statistics). Training uses :meth:`MoCo.contrast`, which returns the
InfoNCE logits of a positive pair against the queue and updates the key encoder and the queue.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difffusr_cli.models.config import DEGRADATION_DIM, MoCoConfig

# (in, out, stride) of the six 3×3 convs: 3→64→64→128/2→128→256/2→256
_CONV_PLAN: tuple[tuple[int, int, int], ...] = (
    (3, 64, 1),
    (64, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, DEGRADATION_DIM, 2),
    (DEGRADATION_DIM, DEGRADATION_DIM, 1),
)


class DegradationEncoder(nn.Module):
    """Small CNN that summarises how an LR image was degraded.

    ``E`` is (conv 3×3, BatchNorm, LeakyReLU 0.1) × 6 then global average pooling; ``mlp`` is
    Linear–LeakyReLU 0.1–Linear (256 → 256 → 256), the projection head used by the contrastive
    loss. ``forward(x)`` with ``x`` ``(B, 3, h, w)`` in [−1, 1] returns ``(fea, proj)``, both
    ``(B, 256)``.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out, stride in _CONV_PLAN:
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.1),
            ]
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.E = nn.Sequential(*layers)
        self.mlp = nn.Sequential(
            nn.Linear(DEGRADATION_DIM, DEGRADATION_DIM),
            nn.LeakyReLU(0.1),
            nn.Linear(DEGRADATION_DIM, DEGRADATION_DIM),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Encode the degradation of an LR image.

        Args:
            x: ``(B, 3, h, w)`` float32 LR image, R, G, B in [−1, 1] (h, w ≥ 1; the two
                stride-2 convs and the global pooling accept any size).

        Returns:
            ``(fea, proj)``: ``fea`` ``(B, 256)`` float32 pooled feature (what conditions the
            U-Net) and ``proj`` ``(B, 256)`` float32 its projection by ``mlp`` (contrastive loss
            only; not normalised).
        """
        fea = self.E(x).flatten(1)
        return fea, self.mlp(fea)


@dataclass(frozen=True)
class ContrastOutput:
    """Training output of :meth:`MoCo.contrast`.

    Attributes:
        fea: ``(B, 256)`` pooled query features (the code that conditions the U-Net).
        logits: ``(B, 1 + K)`` InfoNCE logits / T; column 0 is the positive key.
        labels: ``(B,)`` int64 zeros (the positive's index), for ``F.cross_entropy``.
    """

    fea: Tensor
    logits: Tensor
    labels: Tensor


class MoCo(nn.Module):
    """MoCo v1 around two :class:`DegradationEncoder` copies (``encoder_q``, ``encoder_k``).

    ``encoder_q`` is the query encoder, ``encoder_k`` the momentum (key) encoder. Buffers (first in
    the state dict, as upstream): ``queue`` ``(256, K)`` L2-normalised keys, ``queue_ptr`` ``(1,)``
    int64 write position.

    Args:
        config: queue length ``K``, feature ``dim``, momentum ``m`` and temperature ``T``.
    """

    # registered buffers, declared for type checkers (nn.Module.__getattr__ is untyped)
    queue: Tensor
    queue_ptr: Tensor

    def __init__(self, config: MoCoConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("queue", F.normalize(torch.randn(config.dim, config.K), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.encoder_q = DegradationEncoder()
        self.encoder_k = DegradationEncoder()
        self.encoder_k.load_state_dict(self.encoder_q.state_dict())
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)

    def embed(self, lr: Tensor) -> Tensor:
        """``(B, 3, h, w)`` LR in [−1, 1] → ``(B, 256)`` pooled query feature.

        Call in eval mode for inference (BatchNorm then uses its running statistics).

        Args:
            lr: ``(B, 3, h, w)`` float32 LR image, R, G, B in [−1, 1].

        Returns:
            ``(B, 256)`` float32 degradation feature.
        """
        fea, _ = self.encoder_q(lr)
        return fea

    def forward(self, lr: Tensor) -> Tensor:
        """Same as :meth:`embed` (the inference path).

        Args:
            lr: ``(B, 3, h, w)`` float32 LR image, R, G, B in [−1, 1].

        Returns:
            ``(B, 256)`` float32 degradation feature of the query encoder.
        """
        return self.embed(lr)

    def contrast(self, im_q: Tensor, im_k: Tensor) -> ContrastOutput:
        """One training step of MoCo on a positive pair (two crops sharing a degradation).

        Updates the key encoder by momentum, computes the logits against the queue *before*
        enqueueing, then pushes the new keys into the queue.

        Args:
            im_q: ``(B, 3, h, w)`` float32 query crops in [−1, 1].
            im_k: ``(B, 3, h, w)`` float32 key crops in [−1, 1], same degradation as ``im_q``.

        Returns:
            The pooled query features, the ``(B, 1 + K)`` logits and their labels.
        """
        fea, q = self.encoder_q(im_q)
        q = F.normalize(q, dim=1)
        with torch.no_grad():
            self.momentum_update()
            _, k = self.encoder_k(im_k)
            k = F.normalize(k, dim=1)
        l_pos = (q * k).sum(dim=1, keepdim=True)
        l_neg = q @ self.queue.clone().detach()
        logits = torch.cat([l_pos, l_neg], dim=1) / self.config.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        self.enqueue(k)
        return ContrastOutput(fea=fea, logits=logits, labels=labels)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``θ_k ← m·θ_k + (1 − m)·θ_q`` for every parameter."""
        m = self.config.m
        for p_q, p_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters(), strict=True):
            p_k.mul_(m).add_(p_q.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` at the queue pointer (wrapping around) and advance it.

        Args:
            keys: ``(B, 256)`` L2-normalised key features; only the last ``K`` are kept.
        """
        K = self.config.K
        keys = keys.detach()[-K:]  # a batch larger than the queue keeps its last K keys
        ptr = int(self.queue_ptr[0])
        idx = (torch.arange(keys.shape[0], device=self.queue.device) + ptr) % K
        self.queue[:, idx] = keys.t().to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + keys.shape[0]) % K
