"""The model summary and activation statistics, and what a run writes of them."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainer_cli.models import MLP, ResNet
from trainer_cli.models.stats import activation_layers, activation_stats, activation_values
from trainer_cli.models.summary import summarize, summary_text
from trainer_cli.train import run


def test_summary_rows_shapes_and_counts():
    model = MLP(1, 4, 3, width=8, depth=2)
    rows, totals = summarize(model, (1, 4, 4))
    assert [(r.kind, r.output_shape, r.parameters) for r in rows] == [
        ("Flatten", (16,), 0),
        ("Linear", (8,), 16 * 8 + 8),
        ("ReLU", (8,), 0),
        ("Linear", (8,), 8 * 8 + 8),
        ("ReLU", (8,), 0),
        ("Linear", (3,), 8 * 3 + 3),
    ]
    assert totals == {"parameters": 235, "trainable": 235, "frozen": 0}


def test_summary_numbers_its_rows_without_gaps():
    """The `#` column counts 0, 1, 2, ... although the module paths skip the left-out Identity
    placeholders (issue 23)."""
    lines = summary_text(MLP(1, 4, 3, width=8, depth=2), (1, 4, 4)).splitlines()
    rows = lines[3:-1]
    assert [line.split()[0] for line in rows] == [str(i) for i in range(6)]
    assert [line.split()[1] for line in rows] == ["0", "1", "3", "4", "6", "7"]


def test_summary_counts_frozen_parameters_and_moves_no_running_statistic():
    model = ResNet(1, 8, 4, stages=[1, 1], channels=[4, 8])
    for parameter in model.stem.parameters():
        parameter.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows, totals = summarize(model, (1, 8, 8))
    frozen = sum(p.numel() for p in model.stem.parameters())
    assert totals["frozen"] == frozen > 0
    assert totals["trainable"] + frozen == sum(p.numel() for p in model.parameters())
    assert {r.name: r.output_shape for r in rows}["stages.1.0"] == (8, 4, 4)  # a block is one row
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training
    text = summary_text(model, (1, 8, 8))
    assert f"frozen {frozen:,}" in text and "BasicBlock" in text


def test_activation_values_per_layer_in_forward_order():
    torch.manual_seed(0)
    model = MLP(1, 4, 3, width=8, depth=3, activation="tanh", activation_gpn=True)
    assert [name for name, _ in activation_layers(model)] == ["3", "6", "9"]  # not the inner Tanh
    x = torch.randn(5, 1, 4, 4)
    values = activation_values(model, x)
    hidden = model[3](model[2](model[1](model[0](x))))
    assert torch.allclose(values["3"], hidden.flatten())
    stats = activation_stats(values)
    assert stats["3"] == pytest.approx((hidden.mean().item(), hidden.std().item()))


def test_run_writes_the_summary_and_logs_activation_statistics(make_cfg, tmp_path, capsys):
    cfg = make_cfg(
        "epochs=1",
        "model.width=16",
        "trainer.log_activations=true",
        "trainer.log_activations_every_n_steps=8",
        "trainer.log_every_n_steps=4",
    )
    run(cfg, tmp_path)
    summary = (tmp_path / "model_summary.txt").read_text()
    # digits: 64 inputs -> 16 -> 16 -> 10 classes
    total = (64 * 16 + 16) + (16 * 16 + 16) + (16 * 10 + 10)
    assert f"parameters: {total:,} (trainable {total:,}, frozen 0)" in summary
    assert "Activations at step 0" in capsys.readouterr().out

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"activations/3", "activations/6"} <= set(tags["histograms"])
    steps = [e.step for e in events.Scalars("activations/6/std")]
    # step 0, then the first logging step at or after each multiple of 8 (21 steps per epoch)
    assert steps == [0, 8, 16]
    assert all(e.value > 0 for e in events.Scalars("activations/6/std"))
    # On the same cadence: each ReLU layer's dead-unit fraction, each parameter's gradient
    # histogram (none at step 0, before any gradient), the gradient the last step left.
    dead = events.Scalars("activations/3/dead_fraction")
    assert [e.step for e in dead] == [0, 8, 16] and all(0 <= e.value < 0.5 for e in dead)
    assert {"gradients/1.weight", "gradients/1.bias", "gradients/7.weight"} <= set(tags["histograms"])
    gradient = events.Histograms("gradients/7.weight")
    assert [e.step for e in gradient] == [8, 16]
    assert all(e.histogram_value.num == 16 * 10 and e.histogram_value.sum_squares > 0 for e in gradient)
    # The epoch's row keeps the health readings the curves rules read.
    import csv

    with open(tmp_path / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["update_ratio"]) > 0 and row["dead_layer"] in ("3", "6") and 0 <= float(row["dead_fraction"]) < 1


def test_activation_values_use_batch_statistics_and_have_no_side_effects():
    """Training-mode statistics (batch norm normalizes the probe batch), yet the running
    statistics and the random number generator are as they were: logging changes no result."""
    torch.manual_seed(0)
    model = MLP(1, 4, 3, width=32, depth=2, norm="batch", activation="relu", dropout=0.5)
    x = 5.0 + 3.0 * torch.randn(64, 1, 4, 4)
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    values = activation_values(model, x)
    assert all(torch.equal(buffers[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    # ReLU of batch-normalized units: mean 1/sqrt(2π) ≈ 0.40 (running statistics would give ~5).
    assert next(iter(values.values())).mean().item() == pytest.approx(0.40, abs=0.05)
