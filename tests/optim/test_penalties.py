"""Weight penalties: values equal their formulas on the right parameters, are logged as
their own loss curves, coupled L2's gradient and decoupled decay move the weights as
written, and L1 really makes weights (near) zero."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer_cli import build
from trainer_cli.config import resolve
from trainer_cli.loop import StepOptions, StepParts, train_one_epoch
from trainer_cli.optim.penalties import decay_weights_

CPU = torch.device("cpu")


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.ndim >= 2]


def test_penalty_values_follow_their_formulas_on_weight_matrices_only(make_cfg):
    cfg = resolve(
        make_cfg(
            "regularization=[l1,elastic_net,l2]",
            "regularization.l2.decoupled=false",
            "regularization.l2.weight_decay=0.01",
            "regularization.l1.strength=0.002",
            "regularization.elastic_net.strength=0.003",
            "regularization.elastic_net.l2_ratio=0.25",
        )
    )
    model = mlp()
    terms = build.penalties(cfg, model)()
    squares = sum(float(w.detach().pow(2).sum()) for w in weights(model))
    absolutes = sum(float(w.detach().abs().sum()) for w in weights(model))
    assert float(terms["l2"].detach()) == pytest.approx(0.01 * squares, rel=1e-6)
    assert float(terms["l1"].detach()) == pytest.approx(0.002 * absolutes, rel=1e-6)
    assert float(terms["elastic_net"].detach()) == pytest.approx(0.003 * (0.25 * squares + absolutes), rel=1e-6)
    with_biases = build.penalties(resolve(make_cfg("regularization=[l1]", "regularization.l1.strength=1")), model)
    assert float(with_biases()["l1"].detach()) == pytest.approx(absolutes, rel=1e-6)  # biases are not penalized


def test_no_penalty_when_none_is_selected(make_cfg):
    assert build.penalties(resolve(make_cfg()), mlp()) is None
    decoupled = make_cfg("regularization=[l2]", "regularization.l2.decoupled=true")
    assert build.penalties(resolve(decoupled), mlp()) is None  # decoupled: not a loss term


def _one_logged_step(cfg, model, optimizer, x, y) -> dict[str, float]:
    logged = []
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    parts = StepParts(
        model, optimizer, scheduler, nn.CrossEntropyLoss(), StepOptions(log_every_n_steps=1),
        penalties=build.penalties(cfg, model),
    )  # fmt: skip
    train_one_epoch(parts, [(x, y)], step=0, on_log=lambda s, scalars: logged.append(scalars))
    return logged[0]


def test_penalty_is_logged_as_its_own_loss_curve(make_cfg):
    cfg = resolve(make_cfg("regularization=[l1]", "regularization.l1.strength=0.01"))
    model = mlp()
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    expected_penalty = 0.01 * sum(float(w.detach().abs().sum()) for w in weights(model))
    with torch.no_grad():
        expected_loss = float(nn.functional.cross_entropy(model(x), y))
    scalars = _one_logged_step(cfg, model, torch.optim.SGD(model.parameters(), lr=0.1), x, y)
    assert scalars["train/penalty/l1"] == pytest.approx(expected_penalty, rel=1e-5)
    assert scalars["train/loss_step"] == pytest.approx(expected_loss, rel=1e-5)  # the data loss alone


def test_coupled_l2_adds_2_lambda_w_to_the_gradient(make_cfg):
    cfg = resolve(make_cfg("optimizer=sgd", "lr=0.1", "regularization=[l2]", "regularization.l2.decoupled=false"))
    lam = cfg.regularization.l2.weight_decay
    model, reference = mlp(), mlp()
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    _one_logged_step(cfg, model, build.optimizer(cfg, model), x, y)
    nn.functional.cross_entropy(reference(x), y).backward()
    for p, r in zip(model.parameters(), reference.parameters(), strict=True):
        penalty_grad = 2 * lam * r.detach() if r.ndim >= 2 else 0.0
        torch.testing.assert_close(p.detach(), r.detach() - 0.1 * (r.grad + penalty_grad), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("option", ["sgd", "momentum", "adam"])
def test_decoupled_l2_scales_weight_matrices_by_1_minus_lr_lambda(option, make_cfg):
    cfg = resolve(
        make_cfg(
            f"optimizer={option}", "regularization=[l2]", "regularization.l2.weight_decay=0.1",
            "regularization.l2.decoupled=true",
        )
    )  # fmt: skip
    model, reference = mlp(), mlp()
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    _one_logged_step(cfg, model, build.optimizer(cfg, model), x, y)
    # AdamW's order: the gradient at W, then W <- W * (1 - lr * lambda), then the plain step
    plain = build.optimizer(resolve(make_cfg(f"optimizer={option}")), reference)
    plain.zero_grad()
    nn.functional.cross_entropy(reference(x), y).backward()
    with torch.no_grad():
        for r in weights(reference):
            r.mul_(1 - cfg.optimizer.lr * 0.1)
    plain.step()
    for p, r in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-7)


def test_decay_1d_extends_decay_to_biases(make_cfg):
    model = mlp()
    cfg = resolve(
        make_cfg(
            "optimizer=sgd",
            "regularization=[l2]",
            "regularization.l2.decay_1d=true",
            "regularization.l2.decoupled=true",
        )
    )
    optimizer = build.optimizer(cfg, model)
    biases = [p.detach().clone() for p in model.parameters() if p.ndim == 1]
    for p in model.parameters():  # the decay is part of a step: only tensors with a gradient decay
        p.grad = torch.zeros_like(p)
    decay_weights_(optimizer)
    shrunk = [p for p in model.parameters() if p.ndim == 1]
    for b, p in zip(biases, shrunk, strict=True):
        torch.testing.assert_close(p.detach(), b * (1 - 0.1 * 5e-4))


def test_l1_drives_weights_to_near_zero_where_plain_training_does_not(make_cfg):
    def near_zero_fraction(*overrides: str) -> tuple[float, float]:
        cfg = resolve(make_cfg("optimizer=sgd", "model.width=32", "model.depth=1", *overrides))
        data = build.data(cfg, CPU)
        torch.manual_seed(0)
        model = build.model(cfg)
        optimizer = build.optimizer(cfg, model)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        for _ in range(4):
            parts = StepParts(model, optimizer, scheduler, nn.CrossEntropyLoss(), penalties=build.penalties(cfg, model))
            metrics, _ = train_one_epoch(parts, data.train, step=0)
        flat = torch.cat([w.detach().flatten() for w in weights(model)])
        return float((flat.abs() < 1e-3).float().mean()), metrics["acc"]

    plain, plain_acc = near_zero_fraction()
    sparse, sparse_acc = near_zero_fraction("regularization=[l1]", "regularization.l1.strength=1e-2")
    # measured: 0.8% without L1, 27% with it (|W| < 1e-3, 4 epochs, one seed)
    assert plain < 0.02 and sparse > 0.2, (plain, sparse)
    assert sparse_acc > 0.85  # still a working classifier


def test_l2_is_the_lectures_loss_penalty_by_default(make_cfg):
    """`regularization=[l2]` alone is lambda * sum(W^2) in the loss (coupled), not AdamW's decay."""
    cfg = resolve(make_cfg("regularization=[l2]", "regularization.l2.weight_decay=0.01"))
    model = mlp()
    terms = build.penalties(cfg, model)
    squares = sum(float((w.detach() ** 2).sum()) for w in weights(model))
    assert float(terms()["l2"].detach()) == pytest.approx(0.01 * squares, rel=1e-6)
    assert all(group["decoupled_l2"] == 0.0 for group in build.optimizer(cfg, model).param_groups)
