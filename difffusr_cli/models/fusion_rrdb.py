"""FusionRRDBNet: the RRDB fusion branch (one per band group) of the authors' older fusion model.

``FusionRRDBNet(rgb_in, ms_in, out)(rgb, ms) -> (B, out, H, W)`` with ``rgb`` ``(B, 3, H, W)``
the z-scored SR RGB guidance and ``ms`` ``(B, ms_in, H, W)`` the z-scored bands already upsampled
to the same 2.5 m grid. Output: the group's bands, z-scored, on that grid.

Structure: an RGB stem and an MS stem (conv + LeakyReLU 0.2, ``nb`` RRDBs, [RGB only: dropout
0.2 in training], channel attention, spatial attention), concatenated as [ms, rgb], a fusion
conv + ``nb`` RRDBs, then two conv + LeakyReLU (the authors' "upsampling" convs at scale 1),
HRconv + LeakyReLU and ``conv_last``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difffusr_cli.models.rrdb import FUSION_RDB_NAMES, RRDB


class ChannelAttention(nn.Module):
    """CBAM channel attention: ``x · σ(mlp(avgpool x) + mlp(maxpool x))``, mlp C→C/4→C (ReLU).

    The pooling is global over the whole tile.

    Args:
        channels: feature width (input = output).
        reduction: width divisor of the hidden layer.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def _mlp(self, pooled: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(pooled)))

    def forward(self, x: Tensor) -> Tensor:
        """Reweight the channels.

        Args:
            x: ``(B, channels, H, W)`` float32 features.

        Returns:
            ``(B, channels, H, W)`` float32 features, each channel scaled by a weight in (0, 1).
        """
        avg = self._mlp(F.adaptive_avg_pool2d(x, 1))
        peak = self._mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: ``x · σ(conv7×7([mean_c x, max_c x]))``.

    Args:
        kernel_size: odd size of the attention conv (the official 7).
    """

    RADIUS = 3

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Reweight the pixels.

        Args:
            x: ``(B, C, H, W)`` float32 features.

        Returns:
            ``(B, C, H, W)`` float32 features, each pixel scaled by a weight in (0, 1).
        """
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv1(pooled))


class FusionRRDBNet(nn.Module):
    """One RRDB fusion branch; see the module docstring.

    Args:
        rgb_in_nc: guidance channels (3).
        ms_in_nc: multispectral input channels.
        out_nc: output bands.
        nf, nb, gc: feature width, RRDBs per stage, growth channels.
    """

    def __init__(
        self, rgb_in_nc: int, ms_in_nc: int, out_nc: int, nf: int, nb: int, gc: int
    ) -> None:
        super().__init__()
        self.nb = nb
        # the official RGB stem drops 20 % of its features while training (no weights)
        self.rgb_dropout = nn.Dropout(0.2)
        # registration order fixes the official state-dict order
        self.ms_channel_attention = ChannelAttention(nf)
        self.rgb_channel_attention = ChannelAttention(nf)
        self.spatial_attention_rgb = SpatialAttention(7)
        self.spatial_attention_ms = SpatialAttention(7)
        self.rgb_conv_first = nn.Conv2d(rgb_in_nc, nf, 3, 1, 1)
        self.rgb_rrdb = nn.Sequential(*[RRDB(nf, gc, FUSION_RDB_NAMES) for _ in range(nb)])
        self.ms_conv_first = nn.Conv2d(ms_in_nc, nf, 3, 1, 1)
        self.ms_rrdb = nn.Sequential(*[RRDB(nf, gc, FUSION_RDB_NAMES) for _ in range(nb)])
        self.fusion_conv = nn.Conv2d(nf * 2, nf, 3, 1, 1)
        self.fusion_rrdb = nn.Sequential(*[RRDB(nf, gc, FUSION_RDB_NAMES) for _ in range(nb)])
        self.upconv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.upconv2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.HRconv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_nc, 3, 1, 1)

    @property
    def receptive_radius(self) -> int:
        """Local receptive radius in output pixels (channel attention adds a global term)."""
        stem = 1 + RRDB.RADIUS * self.nb + SpatialAttention.RADIUS
        return stem + 1 + RRDB.RADIUS * self.nb + 4

    def forward(self, rgb: Tensor, ms: Tensor) -> Tensor:
        """Fuse a group's upsampled bands with the guidance.

        Args:
            rgb: ``(B, rgb_in_nc, H, W)`` float32 z-scored SR R, G, B on the 2.5 m grid
                (unbounded).
            ms: ``(B, ms_in_nc, H, W)`` float32 z-scored bands, already upsampled to the same grid.

        Returns:
            ``(B, out_nc, H, W)`` float32 z-scored bands of the group.
        """
        rgb_feat = self.rgb_dropout(self.rgb_rrdb(F.leaky_relu(self.rgb_conv_first(rgb), 0.2)))
        rgb_feat = self.spatial_attention_rgb(self.rgb_channel_attention(rgb_feat))
        ms_feat = self.ms_rrdb(F.leaky_relu(self.ms_conv_first(ms), 0.2))
        ms_feat = self.spatial_attention_ms(self.ms_channel_attention(ms_feat))
        fused = F.leaky_relu(self.fusion_conv(torch.cat((ms_feat, rgb_feat), dim=1)), 0.2)
        fused = self.fusion_rrdb(fused)
        fea = F.leaky_relu(self.upconv1(fused), 0.2)
        fea = F.leaky_relu(self.upconv2(fea), 0.2)
        return self.conv_last(F.leaky_relu(self.HRconv(fea), 0.2))
