"""Test-time augmentation: predict from several views of each test image and combine them.

`eval.tta=flip` uses the image and its mirror; `eval.tta=crops` the lecture's fixed set of
crops: the 4 corners and the centre (`crops_flip`: each with its mirror too), cut from the image padded by
`tta_padding` pixels (or first enlarged by each scale > 1 of `tta_scales`). The views are
made from raw pixels, then preprocessed like any batch. `tta_reduce=mean` averages the
views' class probabilities; `vote` takes the class most views predict (ties go to the
higher mean probability).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from trainer_cli import checks
from trainer_cli.loop import autocast, sum_over_ranks


@dataclass
class TestTimeAugmentation:
    """The final test evaluation's views (`eval.*`): `tta` none | flip | crops, combined by
    `tta_reduce` mean | vote; crops from the image padded by `tta_padding`, at each of
    `tta_scales` (>= 1)."""

    tta: str = "none"
    tta_reduce: str = "mean"
    tta_padding: int = 2
    tta_scales: list[float] = field(default_factory=lambda: [1.0])

    def __post_init__(self) -> None:
        checks.choice("tta", self.tta, VIEWS)
        checks.choice("tta_reduce", self.tta_reduce, REDUCTIONS)
        checks.whole_number("tta_padding", self.tta_padding, minimum=0)
        scales = self.tta_scales
        if (
            not isinstance(scales, (list, tuple))
            or not scales
            or any(isinstance(x, bool) or not isinstance(x, (int, float)) or x < 1 for x in scales)
        ):
            raise ValueError(f"tta_scales: expected a non-empty list of numbers >= 1, got '{scales}'")

    @property
    def enabled(self) -> bool:
        return self.tta != "none"


VIEWS = ("none", "flip", "crops", "crops_flip")
# The training augmentation options (conf/augmentation/) that teach a model each view family.
TRAINED_BY = {"mirror": ("flip",), "crop": ("crop", "resized_crop")}
FAMILIES = {"none": (), "flip": ("mirror",), "crops": ("crop",), "crops_flip": ("crop", "mirror")}


def untrained_views(tta: str, augmentation: Sequence[str]) -> list[str]:
    """The view families of `tta` that no training augmentation in `augmentation` (the
    option names) showed the model: a model never trained on mirrored digits misreads them."""
    return [family for family in FAMILIES[tta] if not set(TRAINED_BY[family]) & set(augmentation)]


REDUCTIONS = ("mean", "vote")


def five_crops(images: torch.Tensor, height: int, width: int) -> list[torch.Tensor]:
    """The 4 corner windows and the centre window of size (height, width)."""
    big_h, big_w = images.shape[-2:]
    top, left = (big_h - height) // 2, (big_w - width) // 2
    corners = [(0, 0), (0, big_w - width), (big_h - height, 0), (big_h - height, big_w - width), (top, left)]
    return [images[..., y : y + height, x : x + width] for y, x in corners]


def tta_views(images: torch.Tensor, tta: str, padding: int = 2, scales: Sequence[float] = (1.0,)) -> list[torch.Tensor]:
    """The views of a raw batch (N, C, H, W) that `eval.tta` names, each of the same shape."""
    if tta == "none":
        return [images]
    if tta == "flip":
        return [images, images.flip(-1)]
    checks.choice("tta", tta, VIEWS)
    height, width = images.shape[-2:]
    views = []
    for scale in scales:
        if scale == 1:
            source = F.pad(images, (padding, padding, padding, padding))
        else:
            size = (round(height * scale), round(width * scale))
            source = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=False)
        for crop in five_crops(source, height, width):
            views += [crop, crop.flip(-1)] if tta == "crops_flip" else [crop]
    return views


def combine(probabilities: torch.Tensor, reduce: str) -> torch.Tensor:
    """Predicted classes from the views' probabilities (V, N, C): `mean` or `vote`."""
    mean = probabilities.mean(dim=0)
    if reduce == "mean":
        return mean.argmax(dim=1)
    checks.choice("tta_reduce", reduce, REDUCTIONS)
    votes = F.one_hot(probabilities.argmax(dim=2), probabilities.shape[2]).sum(dim=0).float()
    # Half the mean probability is < 1: it breaks ties between equal vote counts only.
    return (votes + 0.5 * mean).argmax(dim=1)


@torch.no_grad()
def evaluate_tta(
    model: nn.Module,
    loader,
    device: torch.device,
    precision: str = "32",
    tta: str = "flip",
    reduce: str = "mean",
    padding: int = 2,
    scales: Sequence[float] = (1.0,),
) -> dict[str, float]:
    """Accuracy of the combined views over a loader with `raw_batches()` and `preprocess`."""
    model.eval()
    correct = torch.zeros((), device=device)
    count = 0
    for images, labels in loader.raw_batches():
        probabilities = []
        for view in tta_views(images, tta, padding, scales):
            if loader.preprocess is not None:
                view = loader.preprocess(view)
            with autocast(device, precision):
                logits = model(view)
            probabilities.append(logits.float().softmax(dim=1))
        correct += (combine(torch.stack(probabilities), reduce) == labels).sum()
        count += labels.shape[0]
    _, correct, count = sum_over_ranks(correct, correct, count)  # several processes: every shard
    return {"acc": float(correct) / float(count)}
