"""The TTA prediction equals the manual average (or vote) of the views."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainer_cli.data import Preprocess
from trainer_cli.data.loaders import TensorLoader
from trainer_cli.loop import evaluate
from trainer_cli.tta import combine, evaluate_tta, tta_views, untrained_views


def test_flip_views_are_the_image_and_its_mirror():
    images = torch.rand(4, 1, 6, 6)
    views = tta_views(images, "flip")
    assert len(views) == 2 and torch.equal(views[0], images) and torch.equal(views[1], images.flip(-1))


def test_crop_views_are_corners_and_centre_with_mirrors():
    images = torch.rand(2, 1, 6, 6)
    views = tta_views(images, "crops_flip", padding=2, scales=[1.0, 1.5])
    assert len(views) == 20 and all(v.shape == images.shape for v in views)
    padded = F.pad(images, (2, 2, 2, 2))
    expected = [padded[..., :6, :6], padded[..., :6, 4:], padded[..., 4:, :6], padded[..., 4:, 4:], images]
    for i, crop in enumerate(expected):
        assert torch.equal(views[2 * i], crop) and torch.equal(views[2 * i + 1], crop.flip(-1))
    zoomed = F.interpolate(images, size=(9, 9), mode="bilinear", align_corners=False)
    assert torch.equal(views[10], zoomed[..., :6, :6]) and torch.equal(views[18], zoomed[..., 1:7, 1:7])


def test_vote_takes_the_majority_and_breaks_ties_by_mean_probability():
    # 3 views, 2 samples, 3 classes.
    probabilities = torch.tensor(
        [
            [[0.5, 0.4, 0.1], [0.5, 0.4, 0.1]],
            [[0.5, 0.4, 0.1], [0.1, 0.5, 0.4]],
            [[0.0, 0.0, 1.0], [0.1, 0.3, 0.6]],
        ]
    )
    # Sample 0: two votes for class 0, but class 2 has the highest mean probability.
    # Sample 1: a 1-1-1 tie, broken by the highest mean probability (class 1).
    assert combine(probabilities, "vote").tolist() == [0, 1]
    assert combine(probabilities, "mean").tolist() == [2, 1]
    with pytest.raises(ValueError, match="tta_reduce"):
        combine(probabilities, "max")


@pytest.mark.parametrize("tta", ["flip", "crops", "crops_flip"])
@pytest.mark.parametrize("reduce", ["mean", "vote"])
def test_tta_accuracy_equals_the_manual_combination_of_the_views(tta, reduce):
    torch.manual_seed(0)
    images, labels = torch.rand(50, 1, 6, 6), torch.randint(0, 3, (50,))
    prep = Preprocess("channel_mean_std").fit(images)
    loader = TensorLoader(images, labels, batch_size=16, shuffle=False, preprocess=prep)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))
    result = evaluate_tta(model, loader, torch.device("cpu"), tta=tta, reduce=reduce, padding=1, scales=[1.0, 1.25])

    with torch.no_grad():
        views = tta_views(images, tta, padding=1, scales=[1.0, 1.25])
        probabilities = torch.stack([model(prep(v)).softmax(1) for v in views])  # (V, N, C)
    if reduce == "mean":
        predicted = probabilities.mean(0).argmax(1)
    else:
        votes = torch.stack([(probabilities.argmax(2) == c).sum(0) for c in range(3)], 1).float()
        best = votes.max(1, keepdim=True).values
        # the tie-break: among the most-voted classes, the highest mean probability
        predicted = torch.where(votes == best, probabilities.mean(0), torch.tensor(-1.0)).argmax(1)
    assert result["acc"] == pytest.approx((predicted == labels).float().mean().item())
    assert (probabilities.argmax(2) != probabilities[0].argmax(1)).any()  # the views disagree somewhere


def test_tta_none_equals_plain_evaluation():
    torch.manual_seed(0)
    images, labels = torch.rand(40, 1, 6, 6), torch.randint(0, 3, (40,))
    loader = TensorLoader(images, labels, batch_size=16, shuffle=False)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))
    assert (
        evaluate_tta(model, loader, torch.device("cpu"), tta="none")["acc"]
        == evaluate(model, loader, torch.device("cpu"))["acc"]
    )


def test_tta_reads_only_the_batches_limit_test_batches_keeps():
    """`trainer.limit_test_batches` limits test-time augmentation too (it read the whole set)."""
    from trainer_cli.build import LimitedBatches

    torch.manual_seed(0)
    images, labels = torch.rand(40, 1, 6, 6), torch.randint(0, 3, (40,))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))
    limited = LimitedBatches(TensorLoader(images, labels, batch_size=16, shuffle=False), 1)
    first = TensorLoader(images[:16], labels[:16], batch_size=16, shuffle=False)
    assert sum(len(y) for _, y in limited.raw_batches()) == 16
    device = torch.device("cpu")
    assert (
        evaluate_tta(model, limited, device, tta="flip")["acc"] == evaluate_tta(model, first, device, tta="flip")["acc"]
    )


@pytest.mark.slow
def test_run_reports_tta_beside_test_acc_and_preview_changes_nothing(make_cfg, tmp_path):
    """End to end: `eval.tta=flip` adds test/acc_tta; `augmentation.preview=true` writes the
    PNG and leaves every metric bit-identical."""
    import json

    from trainer_cli.train import run

    overrides = ["epochs=1", "augmentation=[flip,crop]", "regularization=[mixup]", "eval.tta=flip"]
    with_preview = run(make_cfg(*overrides, "augmentation.preview=true"), tmp_path / "a")
    without = run(make_cfg(*overrides), tmp_path / "b")
    assert (tmp_path / "a" / "augmentation_preview.png").is_file()
    assert not (tmp_path / "b" / "augmentation_preview.png").exists()
    assert 0 <= with_preview["test/acc_tta"] <= 1
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["test/acc_tta"] == with_preview["test/acc_tta"]
    for key in ("test/acc", "test/acc_tta", "final/train/loss", "best/val/acc"):
        assert with_preview[key] == without[key]


def test_crops_without_mirrors_are_the_mirrored_set_less_its_mirrors():
    images = torch.rand(2, 1, 6, 6)
    plain = tta_views(images, "crops", padding=2, scales=[1.0, 1.5])
    mirrored = tta_views(images, "crops_flip", padding=2, scales=[1.0, 1.5])
    assert len(plain) == 10 and all(torch.equal(a, b) for a, b in zip(plain, mirrored[::2], strict=True))


def test_a_view_family_training_never_showed_is_warned_about(make_cfg, caplog):
    from trainer_cli import build
    from trainer_cli.config import resolve

    assert untrained_views("crops_flip", ["crop"]) == ["mirror"]
    assert untrained_views("crops", ["resized_crop"]) == [] and untrained_views("flip", ["flip"]) == []
    with caplog.at_level("WARNING", logger="trainer_cli"):
        build.test_time_augmentation(resolve(make_cfg("eval.tta=crops_flip")))
    assert "eval.tta=crops_flip: the model was not trained on crop or mirror views" in caplog.text
