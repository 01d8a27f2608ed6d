"""Residual-in-residual dense blocks and the RRDBNet spatial encoder (ESRGAN generator).

The dense blocks are shared by the SR encoder (sub-blocks named ``rdb1..3``) and the fusion
networks (``RDB1..3``): the official checkpoints spell them differently, so :class:`RRDB` takes
the three attribute names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difffusr_cli.models.config import RRDBConfig

#: Sub-block names in the SR encoder's state dict.
SR_RDB_NAMES: tuple[str, str, str] = ("rdb1", "rdb2", "rdb3")
#: Sub-block names in the fusion networks' state dicts.
FUSION_RDB_NAMES: tuple[str, str, str] = ("RDB1", "RDB2", "RDB3")

#: ESRGAN's residual scaling inside dense blocks and RRDBs.
RESIDUAL_SCALE = 0.2


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3×3 convs (LeakyReLU 0.2), output ``x + 0.2·conv5(...)``.

    ``(B, num_feat, H, W) -> (B, num_feat, H, W)``; receptive radius 5 pixels.

    Args:
        num_feat: feature width (input = output).
        num_grow_ch: growth channels of each of the first four convs.
    """

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the dense block.

        Args:
            x: ``(B, num_feat, H, W)`` float32 features.

        Returns:
            ``(B, num_feat, H, W)`` float32 features.
        """
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Three dense blocks with an outer residual: ``x + 0.2·rdb3(rdb2(rdb1(x)))``.

    Args:
        num_feat: feature width.
        num_grow_ch: growth channels of each dense block.
        names: attribute names of the three blocks (:data:`SR_RDB_NAMES` or
            :data:`FUSION_RDB_NAMES`), which fix the state-dict keys.

    Receptive radius: 15 pixels (15 chained 3×3 convs).
    """

    RADIUS = 15

    def __init__(
        self, num_feat: int, num_grow_ch: int, names: tuple[str, str, str] = SR_RDB_NAMES
    ) -> None:
        super().__init__()
        self._block_names = names
        for name in names:
            self.add_module(name, ResidualDenseBlock(num_feat, num_grow_ch))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the three dense blocks and the outer residual.

        Args:
            x: ``(B, num_feat, H, W)`` float32 features.

        Returns:
            ``(B, num_feat, H, W)`` float32 features.
        """
        out = x
        for name in self._block_names:
            out = getattr(self, name)(out)
        return out * RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """The RRDBNet LR encoder of the SR model.

    ``forward(lr)`` with ``lr`` ``(B, 3, h, w)`` in [−1, 1] returns ``(hr, feat)``:

    - ``feat`` ``(B, 64, h, w)``: ``conv_first(lr) + conv_body(body(conv_first(lr)))``, the
      context that conditions the U-Net (at LR size);
    - ``hr`` ``(B, num_out_ch, scale·h, scale·w)``: the ×scale head (nearest ×2 + conv, twice),
      used only for the training L1 loss.

    :meth:`features` computes ``feat`` alone (what inference needs).

    Args:
        config: channels, width, block count, growth and scale of the encoder.
    """

    def __init__(self, config: RRDBConfig) -> None:
        super().__init__()
        self.config = config
        # scales 2 and 1 pixel-unshuffle the input so the trunk always runs at 1/4 of the HR size
        self._unshuffle = {4: 1, 2: 2, 1: 4}[config.scale]
        nf = config.num_feat
        self.conv_first = nn.Conv2d(config.num_in_ch * self._unshuffle**2, nf, 3, 1, 1)
        self.body = nn.Sequential(
            *[RRDB(nf, config.num_grow_ch, SR_RDB_NAMES) for _ in range(config.num_block)]
        )
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, config.num_out_ch, 3, 1, 1)

    def features(self, lr: Tensor) -> Tensor:
        """``(B, 3, h, w)`` in [−1, 1] → ``(B, 64, h/u, w/u)`` context (u = 1 at scale 4).

        Args:
            lr: ``(B, num_in_ch, h, w)`` float32 LR image in [−1, 1]; ``h, w`` divisible by the
                unshuffle factor ``u = 4 / scale``.

        Returns:
            ``(B, num_feat, h/u, w/u)`` float32 trunk features (unbounded).
        """
        if self._unshuffle > 1:
            lr = F.pixel_unshuffle(lr, self._unshuffle)
        feat = self.conv_first(lr)
        return feat + self.conv_body(self.body(feat))

    def head(self, feat: Tensor) -> Tensor:
        """The ×4 reconstruction head on the trunk features (training only).

        Args:
            feat: ``(B, num_feat, h', w')`` float32 trunk features (from :meth:`features`).

        Returns:
            ``(B, num_out_ch, 4h', 4w')`` float32 image in [−1, 1] space (unclamped).
        """
        out = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        out = F.leaky_relu(self.conv_up2(F.interpolate(out, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(out), 0.2))

    def forward(self, lr: Tensor) -> tuple[Tensor, Tensor]:
        """Encode an LR image and reconstruct it at ×scale.

        Args:
            lr: ``(B, num_in_ch, h, w)`` float32 LR image in [−1, 1] (``h, w`` divisible by
                ``4 / scale``).

        Returns:
            ``(hr, feat)``: ``hr`` ``(B, num_out_ch, scale·h, scale·w)`` float32 in [−1, 1]
            space (unclamped) and ``feat`` ``(B, num_feat, scale·h/4, scale·w/4)`` float32
            context (``(B, 64, h, w)`` at the official scale 4).
        """
        feat = self.features(lr)
        return self.head(feat), feat
