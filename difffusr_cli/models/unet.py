"""The SR3-style denoising U-Net with degradation-aware convolutions (upstream ``DiffUNetSR3Atom``).

``DenoisingUNet(config)(x, noise_level, ctx, fea) -> x0`` with

- ``x`` ``(B, 3, H, W)`` the noisy HR image in [−1, 1] space (H, W even when ``fold`` = 2);
- ``noise_level`` ``(B, 1)`` the continuous noise level √ᾱ (no rescaling);
- ``ctx`` ``(B, 64, h, w)`` the RRDB context at LR size (resized here to the folded grid);
- ``fea`` ``(B, 256)`` the degradation feature of the MoCo query encoder;

and returns the x0 prediction ``(B, 3, H, W)`` (unclamped).

Module names and registration order reproduce the official state-dict layout; some modules exist
only for that (see :class:`DABlock`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difffusr_cli.models.config import (
    CONTEXT_CHANNELS,
    DEGRADATION_CODE_DIM,
    DEGRADATION_DIM,
    UNetConfig,
)


class PositionalEncoding(nn.Module):
    """Sinusoidal encoding of the noise level: ``(B, 1)`` → ``(B, 1, dim)`` = [sin, cos].

    Frequencies are ``exp(−ln(1e4)·k/n)`` for ``k = 0..n−1``, ``n = dim/2`` (WaveGrad style).

    Args:
        dim: encoding width (even; ``dim/2`` frequencies).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, noise_level: Tensor) -> Tensor:
        """Encode the noise level.

        Args:
            noise_level: ``(B, 1)`` float32 continuous noise level √ᾱ in (0, 1].

        Returns:
            ``(B, 1, dim)`` float32 ``[sin, cos]`` features in [−1, 1].
        """
        count = self.dim // 2
        step = torch.arange(count, dtype=noise_level.dtype, device=noise_level.device) / count
        encoding = noise_level.unsqueeze(1) * torch.exp(-math.log(1e4) * step.unsqueeze(0))
        return torch.cat([torch.sin(encoding), torch.cos(encoding)], dim=-1)


class FeatureWiseAffine(nn.Module):
    """Adds a per-channel projection of the noise embedding: ``x + Linear(emb)``.

    Args:
        emb_dim: width of the noise embedding.
        channels: channels of the features it is added to.
    """

    def __init__(self, emb_dim: int, channels: int) -> None:
        super().__init__()
        self.noise_func = nn.Sequential(nn.Linear(emb_dim, channels))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Add the projected embedding to every pixel.

        Args:
            x: ``(B, channels, H, W)`` float32 features.
            emb: ``(B, 1, emb_dim)`` (or ``(B, emb_dim)``) float32 noise embedding.

        Returns:
            ``(B, channels, H, W)`` float32 features.
        """
        return x + self.noise_func(emb).view(x.shape[0], -1, 1, 1)


def _norm_act(channels: int, groups: int, dropout: float) -> nn.Sequential:
    # GroupNorm, Swish, dropout-or-identity: indices 0..2 of the official `block` Sequentials
    return nn.Sequential(
        nn.GroupNorm(groups, channels),
        nn.SiLU(),
        nn.Dropout(dropout) if dropout else nn.Identity(),
    )


class Block(nn.Module):
    """GroupNorm → Swish → (dropout) → conv 3×3.

    Args:
        dim: input channels (divisible by ``groups``).
        dim_out: output channels.
        groups: GroupNorm groups.
        dropout: dropout rate (0: an identity in its place).
    """

    def __init__(self, dim: int, dim_out: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.block = nn.Sequential(
            *_norm_act(dim, groups, dropout), nn.Conv2d(dim, dim_out, 3, padding=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: ``(B, dim, H, W)`` float32 features.

        Returns:
            ``(B, dim_out, H, W)`` float32 features.
        """
        return self.block(x)


class DAConv(nn.Module):
    """Degradation-aware convolution.

    A per-sample depthwise 3×3 convolution whose kernels are predicted from the 64-d degradation
    code (Linear 64→64, LeakyReLU 0.1, Linear 64→C·9, no biases), followed by LeakyReLU 0.1 and
    added to an ordinary 3×3 convolution of the same input.

    Args:
        channels_in: input channels.
        channels_out: output channels (must equal ``channels_in`` for the sum to be defined).
    """

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.kernel = nn.Sequential(
            nn.Linear(DEGRADATION_CODE_DIM, DEGRADATION_CODE_DIM, bias=False),
            nn.LeakyReLU(0.1),
            nn.Linear(DEGRADATION_CODE_DIM, channels_in * 9, bias=False),
        )
        self.conv = nn.Conv2d(channels_in, channels_out, 3, padding=1)

    def forward(self, x: Tensor, code: Tensor) -> Tensor:
        """Apply the degradation-aware convolution.

        Args:
            x: ``(B, channels_in, H, W)`` float32 features.
            code: ``(B, 64)`` float32 compressed degradation code (one kernel set per sample).

        Returns:
            ``(B, channels_out, H, W)`` float32 features.
        """
        b, c, h, w = x.shape
        kernels = self.kernel(code).view(b * c, 1, 3, 3)
        # fold the batch into the channel axis: one depthwise group per (sample, channel)
        depthwise = F.conv2d(x.reshape(1, b * c, h, w), kernels, groups=b * c, padding=1)
        return F.leaky_relu(depthwise.view(b, c, h, w), 0.1) + self.conv(x)


class DABlock(nn.Module):
    """Second half of a residual block: a :class:`DAConv` of the *un-normalised* input.

    Upstream computes GroupNorm → Swish here and throws the result away; the GroupNorm weights
    are in the state dict but have no effect, so the module is kept and not evaluated.

    Args:
        dim: input channels.
        dim_out: output channels (equal to ``dim`` in the U-Net).
        groups: GroupNorm groups of the unused ``block``.
        dropout: dropout rate of the unused ``block``.
    """

    def __init__(self, dim: int, dim_out: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.block = _norm_act(dim, groups, dropout)
        self.da_conv = DAConv(dim, dim_out)

    def forward(self, x: Tensor, code: Tensor) -> Tensor:
        """Apply the DA conv to the un-normalised input.

        Args:
            x: ``(B, dim, H, W)`` float32 features.
            code: ``(B, 64)`` float32 compressed degradation code.

        Returns:
            ``(B, dim_out, H, W)`` float32 features.
        """
        return self.da_conv(x, code)


class ResnetBlock(nn.Module):
    """``block1`` (GN, Swish, conv) → + noise embedding → ``block2`` (DA conv) → + residual.

    Args:
        dim: input channels.
        dim_out: output channels.
        emb_dim: width of the noise embedding.
        groups: GroupNorm groups.
        dropout: dropout rate of ``block2``'s (unused) norm block.
    """

    def __init__(self, dim: int, dim_out: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.noise_func = FeatureWiseAffine(emb_dim, dim_out)
        self.block1 = Block(dim, dim_out, groups)
        self.block2 = DABlock(dim_out, dim_out, groups, dropout)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor, code: Tensor) -> Tensor:
        """Apply the residual block.

        Args:
            x: ``(B, dim, H, W)`` float32 features.
            emb: ``(B, 1, emb_dim)`` float32 noise embedding (``noise_level_mlp`` output).
            code: ``(B, 64)`` float32 compressed degradation code.

        Returns:
            ``(B, dim_out, H, W)`` float32 features.
        """
        h = self.noise_func(self.block1(x), emb)
        return self.block2(h, code) + self.res_conv(x)


class SelfAttention(nn.Module):
    """Single-head self-attention over all positions.

    GN → 1×1 qkv (no bias) → softmax(qᵀk/√C)·v → 1×1 out → + input.

    Args:
        channels: feature width (input = output; divisible by ``groups``).
        groups: GroupNorm groups.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Attend over all ``H·W`` positions.

        Args:
            x: ``(B, channels, H, W)`` float32 features.

        Returns:
            ``(B, channels, H, W)`` float32 features.
        """
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, 3, c, h * w).unbind(1)
        # (B, 1, HW, C) tokens; the default SDPA scale is 1/sqrt(C), as upstream
        attended = F.scaled_dot_product_attention(
            q.transpose(1, 2).unsqueeze(1),
            k.transpose(1, 2).unsqueeze(1),
            v.transpose(1, 2).unsqueeze(1),
        )
        attended = attended.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return self.out(attended) + x


class ResnetBlockWithAttn(nn.Module):
    """A :class:`ResnetBlock` optionally followed by :class:`SelfAttention`.

    Args:
        dim: input channels.
        dim_out: output channels.
        emb_dim: width of the noise embedding.
        groups: GroupNorm groups.
        dropout: dropout rate passed to the residual block.
        with_attn: add self-attention after the residual block.
    """

    def __init__(
        self, dim: int, dim_out: int, *, emb_dim: int, groups: int, dropout: float, with_attn: bool
    ) -> None:
        super().__init__()
        self.res_block = ResnetBlock(dim, dim_out, emb_dim, groups, dropout)
        self.attn = SelfAttention(dim_out, groups) if with_attn else None

    def forward(self, x: Tensor, emb: Tensor, code: Tensor) -> Tensor:
        """Apply the residual block, then the attention if any.

        Args:
            x: ``(B, dim, H, W)`` float32 features.
            emb: ``(B, 1, emb_dim)`` float32 noise embedding (``noise_level_mlp`` output).
            code: ``(B, 64)`` float32 compressed degradation code.

        Returns:
            ``(B, dim_out, H, W)`` float32 features.
        """
        x = self.res_block(x, emb, code)
        return self.attn(x) if self.attn is not None else x


class Downsample(nn.Module):
    """3×3 conv with stride 2.

    Args:
        dim: channels (input = output).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Halve the resolution.

        Args:
            x: ``(B, dim, H, W)`` float32 features.

        Returns:
            ``(B, dim, ⌈H/2⌉, ⌈W/2⌉)`` float32 features.
        """
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest ×2 then 3×3 conv.

    Args:
        dim: channels (input = output).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Double the resolution.

        Args:
            x: ``(B, dim, H, W)`` float32 features.

        Returns:
            ``(B, dim, 2H, 2W)`` float32 features.
        """
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class DenoisingUNet(nn.Module):
    """The x0-predicting U-Net; see the module docstring for the call.

    Args:
        config: channels, widths, levels, attention strides, dropout, fold and norm groups.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        inner, groups, dropout = config.inner_channel, config.norm_groups, config.dropout
        self.first_conv_x = nn.Conv2d(config.in_channel * config.fold**2, inner, 3, padding=1)
        self.first_conv_ctx = nn.Conv2d(CONTEXT_CHANNELS, inner, 3, padding=1)
        self.compress = nn.Sequential(
            nn.Linear(DEGRADATION_DIM, DEGRADATION_CODE_DIM, bias=False), nn.LeakyReLU(0.1)
        )
        self.noise_level_mlp = nn.Sequential(
            PositionalEncoding(inner),
            nn.Linear(inner, inner * 4),
            nn.SiLU(),
            nn.Linear(inner * 4, inner),
        )

        def res(dim: int, dim_out: int, level: int) -> ResnetBlockWithAttn:
            return ResnetBlockWithAttn(
                dim,
                dim_out,
                emb_dim=inner,
                groups=groups,
                dropout=dropout,
                with_attn=2**level in config.attn_strides,
            )

        # down path: the stem conv merges [x, ctx]; every layer's output is a skip
        downs: list[nn.Module] = [nn.Conv2d(2 * inner, inner, 3, padding=1)]
        skip_channels = [inner]
        width = inner
        for level, mult in enumerate(config.channel_mults):
            for _ in range(config.res_blocks):
                downs.append(res(width, inner * mult, level))
                width = inner * mult
                skip_channels.append(width)
            if level != config.levels - 1:
                downs.append(Downsample(width))
                skip_channels.append(width)
        self.downs = nn.ModuleList(downs)

        self.mid = nn.ModuleList(
            [
                ResnetBlockWithAttn(
                    width, width, emb_dim=inner, groups=groups, dropout=dropout, with_attn=True
                ),
                ResnetBlockWithAttn(
                    width, width, emb_dim=inner, groups=groups, dropout=dropout, with_attn=False
                ),
            ]
        )

        ups: list[nn.Module] = []
        for level in reversed(range(config.levels)):
            for _ in range(config.res_blocks + 1):
                ups.append(
                    res(width + skip_channels.pop(), inner * config.channel_mults[level], level)
                )
                width = inner * config.channel_mults[level]
            if level != 0:
                ups.append(Upsample(width))
        self.ups = nn.ModuleList(ups)

        self.final_conv = Block(width, config.out_channel * config.fold**2, groups)

    def forward(self, x: Tensor, noise_level: Tensor, ctx: Tensor, fea: Tensor) -> Tensor:
        """Predict the clean image x0 from a noisy one.

        Args:
            x: ``(B, 3, H, W)`` float32 noisy HR image x_t in the model's [−1, 1] space (x_t
                itself is not bounded: it is √ᾱ·x0 + √(1 − ᾱ)·ε); ``H, W`` divisible by
                ``fold`` (2).
            noise_level: ``(B, 1)`` float32 continuous noise level √ᾱ_t in (0, 1].
            ctx: ``(B, 64, h, w)`` float32 RRDB context at LR size (``h, w`` = ``H/4, W/4``
                officially; resized bilinearly to the folded grid here).
            fea: ``(B, 256)`` float32 degradation feature of the MoCo query encoder.

        Returns:
            ``(B, 3, H, W)`` float32 x0 prediction in [−1, 1] space, unclamped.
        """
        fold = self.config.fold
        x = self.first_conv_x(F.pixel_unshuffle(x, fold) if fold > 1 else x)
        ctx = F.interpolate(ctx, size=x.shape[2:], mode="bilinear", align_corners=False)
        h = torch.cat([x, self.first_conv_ctx(ctx)], dim=1)
        code = self.compress(fea)
        emb = self.noise_level_mlp(noise_level)

        skips = []
        for layer in self.downs:
            h = layer(h, emb, code) if isinstance(layer, ResnetBlockWithAttn) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb, code)
        for layer in self.ups:
            if isinstance(layer, ResnetBlockWithAttn):
                skip = skips.pop()
                # crop after an upsample of an odd-sized level, then concatenate [h, skip]
                h = layer(
                    torch.cat((h[:, :, : skip.shape[2], : skip.shape[3]], skip), dim=1), emb, code
                )
            else:
                h = layer(h)
        out = self.final_conv(h)
        return F.pixel_shuffle(out, fold) if fold > 1 else out
