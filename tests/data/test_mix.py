"""Mixed labels sum to 1 and match the blend weight or the pasted area; training batches only."""

from __future__ import annotations

import torch

from trainer_cli import build
from trainer_cli.config import resolve
from trainer_cli.data.mix import BatchRegularization, CutMix, Cutout, Mixup
from trainer_cli.loop import StepParts, evaluate, train_one_epoch

N = 16  # one class per sample, so each label's weight can be read back from the targets


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(N, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.randperm(N, generator=torch.Generator().manual_seed(1))
    return images, labels


def test_mixup_labels_sum_to_one_and_equal_the_image_blend_weight():
    torch.manual_seed(0)
    images, labels = batch()
    mixed, targets = Mixup(alpha=0.4, num_classes=N)(images, labels)
    assert torch.allclose(targets.sum(1), torch.ones(N))
    weight = targets[torch.arange(N), labels]  # the weight of each sample's own label
    partner = targets[torch.arange(N), labels.roll(1)]
    assert torch.allclose(weight + partner, torch.ones(N))
    blend = weight.view(-1, 1, 1, 1) * images + (1 - weight.view(-1, 1, 1, 1)) * images.roll(1, 0)
    assert torch.allclose(mixed, blend, atol=1e-6)
    assert weight.std() > 0.05  # one weight per sample


def test_cutmix_label_weight_is_the_pasted_area():
    torch.manual_seed(0)
    labels = torch.randperm(N, generator=torch.Generator().manual_seed(1))
    # Each image one constant value, so every pixel tells which image it came from.
    images = (torch.arange(N, dtype=torch.float32) + 1).view(N, 1, 1, 1).expand(N, 3, 10, 10).contiguous()
    mixed, targets = CutMix(alpha=1.0, num_classes=N)(images, labels)
    assert torch.allclose(targets.sum(1), torch.ones(N))
    pasted = (mixed == images.roll(1, 0)).float().mean(dim=(1, 2, 3))
    own = (mixed == images).float().mean(dim=(1, 2, 3))
    assert torch.allclose(pasted + own, torch.ones(N))  # every pixel is one image's or the other's
    assert torch.allclose(targets[torch.arange(N), labels.roll(1)], pasted)
    assert torch.allclose(targets[torch.arange(N), labels], own)
    assert pasted.std() > 0.05


def test_cutout_erases_squares_and_keeps_labels():
    torch.manual_seed(0)
    images, labels = torch.ones(N, 3, 12, 12), torch.arange(N)
    out, targets = Cutout(holes=1, size=4)(images, labels)
    assert torch.equal(targets, labels)
    erased = out[:, 0] == 0
    assert torch.equal(erased.unsqueeze(1).expand_as(out), out == 0)  # all channels together
    counts = erased.sum(dim=(1, 2))
    assert (counts > 0).all() and (counts <= 16).all()
    for mask in erased:  # a (clipped) square: the bounding box is full
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        assert mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        assert rows.numel() <= 4 and cols.numel() <= 4


def test_mixup_then_cutmix_still_sum_to_one():
    torch.manual_seed(0)
    images, labels = batch()
    _, targets = BatchRegularization([Mixup(0.2, N), CutMix(1.0, N)])(images, labels)
    assert torch.allclose(targets.sum(1), torch.ones(N)) and (targets >= 0).all()


def test_regularization_options_build_and_act_on_training_batches_only(make_cfg):
    """The loop mixes training batches (soft-target loss) and evaluation never sees it."""
    cfg = resolve(make_cfg("regularization=[mixup,cutmix,label_smoothing]", "data=synthetic"))
    mix = build.regularization(cfg).batch_transform
    calls = []

    def recording(images, labels):
        calls.append(labels.shape[0])
        images, targets = mix(images, labels)
        assert targets.shape == (labels.shape[0], 10)
        return images, targets

    torch.manual_seed(0)
    images, labels = torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))
    batches = [(images[:32], labels[:32]), (images[32:], labels[32:])]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    loss_fn = build.loss(cfg)
    metrics, _ = train_one_epoch(
        StepParts(model, optimizer, scheduler, loss_fn, batch_transform=recording), batches, step=0
    )
    assert calls == [32, 32] and torch.isfinite(torch.tensor(metrics["loss"]))
    evaluate(model, batches, torch.device("cpu"))
    assert calls == [32, 32]  # evaluation did not mix
    assert build.regularization(resolve(make_cfg("regularization=[l2,label_smoothing]"))).batch_transform is None
