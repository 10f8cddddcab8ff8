"""The figures a run writes (trainer_cli/figures.py)."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from trainer_cli.figures import save_curves, smoothed


def test_smoothed_starts_at_the_first_point_and_skips_non_finite_points():
    """Issue 23: the centred mean started the train-loss line far below epoch 1's point; the
    bias-corrected EMA (TensorBoard's) starts on it and then lags, never leads."""
    values = [1.62, 0.9, 0.6, 0.5, 0.45, 0.42, 0.4, 0.39, 0.38, 0.37]
    line = smoothed(values, 3)
    assert line[0] == values[0]
    assert line[1] == (0.5 * 0.5 * 1.62 + 0.5 * 0.9) / (1 - 0.5**2)
    assert all(smooth >= raw for smooth, raw in zip(line, values, strict=True))  # a falling curve: above it
    assert smoothed([1.0, 2.0], 1) == [1.0, 2.0]
    assert smoothed([math.nan, 1.0, math.nan, 3.0], 3)[:3] == [pytest.approx(math.nan, nan_ok=True), 1.0, 1.0]


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
