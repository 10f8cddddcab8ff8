"""The figures a run writes (trainer_cli/figures.py)."""

from __future__ import annotations

import math

from PIL import Image

from trainer_cli.figures import moving_average, save_curves


def test_moving_average_is_centred_and_skips_non_finite_points():
    assert moving_average([1.0, 2.0, 3.0, 4.0], 3) == [1.5, 2.0, 3.0, 3.5]
    assert moving_average([1.0, math.nan, 3.0], 3) == [1.0, 2.0, 3.0]


def test_every_run_writes_curves_png(make_cfg, tmp_path):
    from trainer_cli.train import run

    run(make_cfg("logger=[]"), tmp_path)
    with Image.open(tmp_path / "curves.png") as image:
        assert image.format == "PNG" and image.size == (1100, 400)


def test_curves_png_without_an_lr_column(tmp_path):
    history = [{"epoch": e, "train/loss": 1 / e, "val/loss": 1.2 / e, "train/acc": 0.5, "val/acc": 0.4} for e in (1, 2)]
    with Image.open(save_curves(history, tmp_path / "c.png")) as image:
        assert image.size == (1100, 400)


def test_first_layer_filters_are_the_first_convolutions_kernels_scaled_each_to_0_1():
    import torch

    from trainer_cli.figures import first_layer_filters

    assert first_layer_filters(torch.nn.Sequential(torch.nn.Linear(4, 2))) is None
    conv = torch.nn.Conv2d(3, 4, 3)
    grid = first_layer_filters(torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3)), tile=30)
    assert grid.shape == (3, 30 + 4, 4 * 30 + 5 * 2)  # one row of 4 tiles of 3x3 kernels enlarged 10x, 2 px padding
    first = conv.weight.detach()[0]
    expected = (first - first.min()) / (first.max() - first.min())
    assert torch.allclose(grid[:, 2:32:10, 2:32:10], expected, atol=1e-6)


def test_a_conv_run_writes_first_layer_png(make_cfg, tmp_path):
    from trainer_cli.train import run

    run(make_cfg("model=cnn", "epochs=1", "logger=[]"), tmp_path)
    with Image.open(tmp_path / "first_layer.png") as image:
        assert image.format == "PNG"
