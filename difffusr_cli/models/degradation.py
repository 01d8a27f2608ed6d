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
    Linear–LeakyReLU 0.1–Linear (256 → 256 → 256), the projection head used by the contrastive loss.
    ``forward(x)`` with ``x`` ``(B, 3, h, w)`` in [−1, 1] returns ``(fea, proj)``, both ``(B, 256)``.
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
    """MoCo v1 around two :class:`DegradationEncoder` copies (query ``encoder_q``, key ``encoder_k``).

    Buffers (first in the state dict, as upstream): ``queue`` ``(256, K)`` L2-normalised keys,
    ``queue_ptr`` ``(1,)`` int64 write position.
    """

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
        """
        fea, _ = self.encoder_q(lr)
        return fea

    def forward(self, lr: Tensor) -> Tensor:
        """Same as :meth:`embed` (the inference path)."""
        return self.embed(lr)

    def contrast(self, im_q: Tensor, im_k: Tensor) -> ContrastOutput:
        """One training step of MoCo on a positive pair (two crops sharing a degradation).

        Updates the key encoder by momentum, computes the logits against the queue *before*
        enqueueing, then pushes the new keys into the queue.
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
        for p_q, p_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            p_k.mul_(m).add_(p_q.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` ``(B, 256)`` at the queue pointer (wrapping around) and advance it."""
        K = self.config.K
        keys = keys.detach()[-K:]  # a batch larger than the queue keeps its last K keys
        ptr = int(self.queue_ptr[0])
        idx = (torch.arange(keys.shape[0], device=self.queue.device) + ptr) % K
        self.queue[:, idx] = keys.t().to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + keys.shape[0]) % K
