"""The training-side pieces: RRDB head, MoCo contrast/queue, U-Net shapes and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from difffusr_cli.models import MoCoConfig, RRDBConfig, UNetConfig
from difffusr_cli.models.degradation import MoCo
from difffusr_cli.models.rrdb import RRDBNet
from difffusr_cli.models.unet import DenoisingUNet


@pytest.mark.parametrize("scale", [4, 2])
def test_rrdbnet_returns_head_and_features(scale: int) -> None:
    torch.manual_seed(0)
    net = RRDBNet(RRDBConfig(num_block=1, num_grow_ch=8, scale=scale))
    lr = torch.rand(2, 3, 16, 16)
    hr, feat = net(lr)
    trunk = 16 * scale // 4  # scales 2 and 1 fold the input so the trunk runs at HR / 4
    assert feat.shape == (2, 64, trunk, trunk)
    assert hr.shape == (2, 3, 4 * trunk, 4 * trunk)
    assert torch.equal(feat, net.features(lr))


def test_moco_contrast_logits_labels_and_queue() -> None:
    torch.manual_seed(0)
    moco = MoCo(MoCoConfig(K=6))
    moco.queue_ptr[0] = 4
    queue_before = moco.queue.clone()
    im = torch.rand(4, 3, 16, 16)
    out = moco.contrast(im, im.flip(-1))
    assert out.fea.shape == (4, 256) and out.logits.shape == (4, 1 + 6)
    assert out.labels.dtype == torch.int64 and not out.labels.any()
    # logits against the queue *before* the update, divided by T
    q = F.normalize(moco.encoder_q(im)[1], dim=1)
    assert torch.allclose(out.logits[:, 1:], q @ queue_before / 0.07, atol=1e-4)
    # 4 new unit keys written at 4, 5, 0, 1 (wrapping); 2 and 3 untouched; pointer advanced
    assert moco.queue_ptr.item() == 2
    assert torch.equal(moco.queue[:, 2:4], queue_before[:, 2:4])
    written = moco.queue[:, [4, 5, 0, 1]]
    assert torch.allclose(written.norm(dim=0), torch.ones(4), atol=1e-5)
    assert torch.allclose(out.logits[:, 0], (q * written.t()).sum(1) / 0.07, atol=1e-4)
    out.logits.sum().backward()  # gradients reach the query encoder only
    assert moco.encoder_q.E[0].weight.grad is not None and moco.encoder_k.E[0].weight.grad is None


def test_moco_momentum_update() -> None:
    moco = MoCo(MoCoConfig(K=4, m=0.9))
    q, k = moco.encoder_q.mlp[0].weight, moco.encoder_k.mlp[0].weight
    assert torch.equal(q, k)  # the key encoder starts as a copy
    with torch.no_grad():
        q.add_(1.0)
    before = k.clone()
    moco.momentum_update()
    assert torch.allclose(k, 0.9 * before + 0.1 * q)


def test_moco_embed_is_the_pooled_query_feature() -> None:
    moco = MoCo(MoCoConfig(K=4)).eval()
    im = torch.rand(2, 3, 20, 12)
    assert torch.equal(moco.embed(im), moco.encoder_q(im)[0])
    assert torch.equal(moco(im), moco.embed(im))


@pytest.mark.parametrize("size", [(32, 32), (44, 36)])
def test_unet_preserves_shape_and_trains(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = DenoisingUNet(
        UNetConfig(inner_channel=32, channel_mults=(1, 2, 1), res_blocks=1, attn_strides=(4,))
    )
    x = torch.randn(2, 3, *size)
    out = net(
        x, torch.rand(2, 1), torch.randn(2, 64, size[0] // 4, size[1] // 4), torch.randn(2, 256)
    )
    assert out.shape == x.shape
    out.square().mean().backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if "block2.block" not in n)
