"""Each augmentation changes images as it says, keeps shapes and dtypes, and is training-only."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import build_run, conf_options
from trainer_cli import build
from trainer_cli.config import UserError, resolve
from trainer_cli.data import prepare
from trainer_cli.data.augment import (
    AugMix,
    AutoAugment,
    ColorJitter,
    ElasticTransform,
    PCALighting,
    RandAugment,
    RandomAffine,
    RandomCrop,
    RandomFlip,
    RandomPerspective,
    RandomResizedCrop,
    TrivialAugment,
    save_preview,
)
from trainer_cli.data.sources import TensorData


def images(n: int = 16, channels: int = 1, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("option", [o for o in conf_options("augmentation") if o != "none"])
def test_every_option_keeps_shape_dtype_and_range(option, make_cfg):
    cfg = resolve(make_cfg(f"augmentation=[{option}]", "data=synthetic", "data.in_channels=3"))
    augment = build.augmentation(cfg)
    batch = images(channels=3, size=12)
    out = augment.fit(batch)(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, batch)  # it does something


def test_flip_mirrors_exactly():
    batch = images()
    assert torch.equal(RandomFlip(p=1.0)(batch), batch.flip(-1))
    assert torch.equal(RandomFlip(p=0.0)(batch), batch)
    torch.manual_seed(0)
    out = RandomFlip(p=0.5)(images(n=64))
    mirrored = (out == images(n=64).flip(-1)).flatten(1).all(1)
    kept = (out == images(n=64)).flatten(1).all(1)
    assert (mirrored | kept).all() and mirrored.any() and kept.any()  # per-sample coins


def test_crop_moves_content_by_at_most_the_padding():
    torch.manual_seed(0)
    batch, padding = images(n=32, size=6) + 0.1, 2  # no zeros, so the padding is visible
    out = RandomCrop(padding)(batch)
    padded = torch.nn.functional.pad(batch, (padding,) * 4)
    shifts = set()
    for i in range(len(batch)):
        matches = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 6, dx : dx + 6])
        ]
        assert matches, f"image {i} is not a translation of at most {padding} pixels"
        shifts.add(matches[0])
    assert len(shifts) > 5  # per-sample translations


def test_resized_crop_full_window_is_identity_and_zoom_stays_in_range():
    batch = images()
    assert torch.allclose(RandomResizedCrop(scale=(1, 1), ratio=(1, 1))(batch), batch, atol=1e-5)
    torch.manual_seed(0)
    same = images(n=1).expand(8, -1, -1, -1)
    out = RandomResizedCrop(scale=(0.2, 0.5))(same)
    assert out.min() >= same.min() - 1e-6 and out.max() <= same.max() + 1e-6  # interpolation, no padding
    assert not torch.allclose(out[0], out[1])  # each image its own window


def test_color_jitter_brightness_is_one_factor_per_image_within_range():
    torch.manual_seed(0)
    batch = images(n=32) * 0.5 + 0.1  # in [0.1, 0.6]: factors <= 1.5 never clip
    out = ColorJitter(brightness=0.5, contrast=0, saturation=0, hue=0)(batch)
    factors = out / batch
    per_image = factors.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-5)
    assert per_image.min() >= 0.5 - 1e-6 and per_image.max() <= 1.5 + 1e-6
    assert per_image[:, 0].std() > 0.05


def test_color_jitter_contrast_keeps_the_mean_and_everything_stays_in_0_1():
    torch.manual_seed(0)
    batch = images(n=32) * 0.2 + 0.4
    out = ColorJitter(brightness=0, contrast=0.4, saturation=0, hue=0)(batch)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), batch.mean(dim=(1, 2, 3)), atol=1e-5)
    strong = ColorJitter(brightness=0.9, contrast=0.9, saturation=0.9, hue=0.5)(images(channels=3))
    assert strong.min() >= 0 and strong.max() <= 1


def test_color_jitter_hue_and_saturation_keep_grey_pixels_and_luma():
    torch.manual_seed(0)
    grey = images(n=8).expand(-1, 3, -1, -1).contiguous()
    out = ColorJitter(brightness=0, contrast=0, saturation=0.5, hue=0.5)(grey)
    assert torch.allclose(out, grey, atol=1e-5)  # no chroma to rotate or scale
    colour = images(n=8, channels=3) * 0.4 + 0.3
    hued = ColorJitter(brightness=0, contrast=0, saturation=0, hue=0.1)(colour)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert torch.allclose((hued * luma).sum(1), (colour * luma).sum(1), atol=1e-4)
    assert not torch.allclose(hued, colour, atol=1e-3)


def test_pca_lighting_adds_one_offset_per_image_along_the_principal_components():
    torch.manual_seed(0)
    train = images(n=200, channels=3) * 0.5 + 0.25
    lighting = PCALighting(std=0.1).fit(train)
    batch = images(n=2000, channels=3, size=2) * 0.5 + 0.25
    offset = lighting(batch) - batch
    per_image = offset.flatten(2)  # (N, C, pixels): constant over the pixels
    assert torch.allclose(per_image, per_image[..., :1].expand_as(per_image), atol=1e-5)
    # Projected on u_i, the offset is alpha_i * lambda_i with alpha_i ~ N(0, 0.1).
    alphas = per_image[..., 0] @ lighting.eigenvectors / lighting.eigenvalues
    assert torch.allclose(alphas.std(0), torch.full((3,), 0.1), rtol=0.1)


def test_affine_identity_parameters_change_nothing_and_translation_is_bounded():
    batch = images()
    identity = RandomAffine(degrees=0, translate=0, shear=0, stretch=(1, 1))
    assert torch.allclose(identity(batch), batch, atol=1e-5)
    torch.manual_seed(0)
    dot = torch.zeros(16, 1, 21, 21)
    dot[:, :, 10, 10] = 1.0
    moved = RandomAffine(degrees=0, translate=0.1, shear=0, stretch=(1, 1))(dot)
    grid = torch.arange(21.0)
    centre_y = (moved.sum(dim=(1, 3)) * grid).sum(1) / moved.sum(dim=(1, 2, 3))
    centre_x = (moved.sum(dim=(1, 2)) * grid).sum(1) / moved.sum(dim=(1, 2, 3))
    assert ((centre_y - 10).abs() <= 0.1 * 21 + 1e-4).all() and ((centre_x - 10).abs() <= 0.1 * 21 + 1e-4).all()
    assert (centre_x - 10).abs().max() > 0.5  # it did move
    rotated = RandomAffine(degrees=30, translate=0, shear=0, stretch=(1, 1))(images(n=4, size=9))
    assert torch.allclose(rotated[..., 4, 4], images(n=4, size=9)[..., 4, 4], atol=1e-5)  # the centre is fixed


def test_perspective_off_is_identity_and_on_pulls_the_corners_in():
    batch = images()
    assert torch.allclose(RandomPerspective(distortion=0.5, p=0.0)(batch), batch, atol=1e-5)
    torch.manual_seed(0)
    ones = torch.ones(8, 1, 16, 16)
    out = RandomPerspective(distortion=0.5, p=1.0)(ones)
    assert (out.sum(dim=(1, 2, 3)) < 16 * 16).all()  # content shrinks: zero margins appear
    assert torch.allclose(out[..., 8, 8], torch.ones(8), atol=1e-5)  # the middle stays inside


def test_elastic_displacement_is_bounded_by_alpha():
    batch = images()
    assert torch.allclose(ElasticTransform(alpha=0.0, sigma=2.0)(batch), batch, atol=1e-5)
    torch.manual_seed(0)
    dot = torch.zeros(16, 1, 21, 21)
    dot[:, :, 10, 10] = 1.0
    out = ElasticTransform(alpha=3.0, sigma=2.0)(dot)
    grid = torch.arange(21.0)
    mass = out.sum(dim=(1, 2, 3))
    centre_x = (out.sum(dim=(1, 2)) * grid).sum(1) / mass
    assert ((centre_x - 10).abs() <= 3.0 + 1e-4).all()
    assert not torch.allclose(out, dot, atol=1e-3)


@pytest.mark.parametrize(
    "policy",
    [AutoAugment("cifar10"), AutoAugment("svhn"), RandAugment(2, 9), TrivialAugment(), AugMix()],
    ids=["autoaugment_cifar10", "autoaugment_svhn", "randaugment", "trivialaugment", "augmix"],
)
def test_policies_run_per_image_on_uint8_values(policy):
    torch.manual_seed(0)
    same = images(n=1, channels=3, size=16).expand(32, -1, -1, -1).contiguous()
    out = policy(same)
    assert out.shape == same.shape and out.dtype == same.dtype
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-3)  # went through uint8
    distinct = {tuple(x.flatten().tolist()) for x in (out * 255).round().to(torch.uint8)}
    assert len(distinct) > 4  # identical inputs, different random operations


def test_autoaugment_rejects_an_unknown_policy():
    with pytest.raises(ValueError, match="augmentation.autoaugment.policy: 'mnist' is not accepted"):
        AutoAugment("mnist")


def _synthetic_data(augment):
    images_ = torch.rand(40, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(40) % 4
    source = TensorData(images_, labels, images_[:12], labels[:12], list("abcd"))
    return prepare(source, 0.25, 0, "channel_mean_std", 8, torch.device("cpu"), seed=0, augment=augment)


def test_augmentation_is_training_only_and_keeps_labels():
    from trainer_cli.data.augment import Augmentation

    plain, flipped = _synthetic_data(None), _synthetic_data(Augmentation([RandomFlip(p=1.0)]))
    for (x0, y0), (x1, y1) in zip(plain.train, flipped.train, strict=True):
        assert torch.equal(y0, y1)  # same order, same labels
        assert torch.equal(x1, x0.flip(-1))  # preprocessing is per channel, so it commutes with the flip
    for split in ("val", "test"):
        evaluated = torch.cat([x for x, _ in getattr(flipped, split)])
        assert torch.equal(evaluated, torch.cat([x for x, _ in getattr(plain, split)]))


def test_preview_writes_a_png_and_leaves_the_random_stream_alone(tmp_path):
    from trainer_cli.data.augment import Augmentation

    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    grid = save_preview(images(n=16), Augmentation([RandomCrop(2), RandomFlip()]), tmp_path / "preview.png")
    assert torch.equal(torch.rand(3), expected)
    assert (tmp_path / "preview.png").stat().st_size > 0 and grid.shape[0] == 3


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["augmentation=[flip]", "augmentation.flip.p=1.5"], "augmentation.flip.p"),
        (["augmentation=[crop]", "augmentation.crop.padding=-1"], "augmentation.crop.padding"),
        (["augmentation=[color_jitter]", "augmentation.color_jitter.hue=0.7"], "augmentation.color_jitter.hue"),
        (["augmentation=[randaugment]", "augmentation.randaugment.group_size=0"], "group_size"),
        (["data.preprocess=whiten"], "data.preprocess: 'whiten' is not accepted"),
        (["data.pca_components=0"], "data.pca_components"),
    ],
)
def test_bad_values_are_one_line_errors(overrides, message, make_cfg):
    with pytest.raises(UserError) as error:
        build_run(make_cfg(*overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_image_folders_augment_on_the_device_and_preview_without_shuffling(make_cfg, image_folder):
    from trainer_cli.data import preview_images

    cfg = resolve(make_cfg("data=imagefolder", f"data.path={image_folder}", "augmentation=[flip]",
                           "augmentation.flip.p=1.0", "data.num_workers=0"))  # fmt: skip
    data = build.data(cfg, torch.device("cpu"))
    raw = preview_images(data.train, count=4)
    assert raw.shape == (4, 3, 32, 32) and raw.min() >= 0 and raw.max() <= 1
    state = data.shuffle_generator.get_state()
    images, labels = next(iter(data.train.raw_batches()))
    data.shuffle_generator.set_state(state)
    augmented, same_labels = next(iter(data.train))
    assert torch.equal(same_labels, labels)
    assert torch.allclose(augmented, data.preprocess(images.flip(-1)), atol=1e-6)


@pytest.mark.parametrize(
    "limit", ["trainer.limit_train_batches=0.5", "trainer.limit_train_batches=2", "trainer.max_steps=3"]
)
def test_preview_with_a_batch_limit(make_cfg, tmp_path, limit):
    """Issue 23: `augmentation.preview=true` with a batch limit once failed ('TensorLoader'
    object has no attribute 'dataset'); the preview reads through the limit's wrapper."""
    from trainer_cli.train import run

    run(make_cfg("epochs=1", "augmentation=[crop]", "augmentation.preview=true", limit), tmp_path)
    assert (tmp_path / "augmentation_preview.png").stat().st_size > 0
