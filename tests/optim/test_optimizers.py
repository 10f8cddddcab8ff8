"""Every optimizer moves a tiny tensor exactly as its update rule says; L-BFGS beats SGD on a
convex problem per function evaluation; the linear scaling rule and L-BFGS's refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import build_run, conf_options
from trainer_cli import build
from trainer_cli.config import UserError, resolve

# A diagonal quadratic f(w) = 1/2 sum(a * w^2): the gradient a * w changes every step, so two
# steps exercise each optimizer's state.
CURVATURE = np.array([[1.0, 4.0], [0.5, 2.0]])
START = np.array([[1.0, -2.0], [0.5, 3.0]])


class Weight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(START, dtype=torch.float64))


def run_steps(cfg, steps: int = 2) -> np.ndarray:
    """Build the optimizer from the config, take `steps` steps on the quadratic, return w."""
    model = Weight()
    optimizer = build.optimizer(cfg, model)
    curvature = torch.tensor(CURVATURE, dtype=torch.float64)

    def closure():
        optimizer.zero_grad()
        loss = 0.5 * (curvature * model.weight**2).sum()
        loss.backward()
        return loss

    for _ in range(steps):
        optimizer.step(closure)
    return model.weight.detach().numpy()


def by_hand(name: str, opt: dict, steps: int = 2) -> np.ndarray:
    """The update rules as the lecture writes them, in float64 numpy."""
    w, lr = START.copy(), opt["lr"]
    m, v, s = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    for t in range(1, steps + 1):
        g = CURVATURE * w
        if name == "sgd":
            w = w - lr * g
        elif name in ("momentum", "nesterov"):
            rho = opt["momentum"]
            v = rho * v + g
            w = w - lr * (g + rho * v if name == "nesterov" else v)
        elif name == "adagrad":
            s = s + g * g
            w = w - lr * g / (np.sqrt(s) + 1e-10)
        elif name == "rmsprop":
            s = opt["alpha"] * s + (1 - opt["alpha"]) * g * g
            w = w - lr * g / (np.sqrt(s) + 1e-8)
        elif name in ("adam", "adamw", "adam_nobias"):
            beta1, beta2 = opt["betas"]
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            if name == "adam_nobias":
                m_hat, v_hat = m, v
            else:
                m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
            if name == "adamw":  # decoupled: W <- W - lr * lambda * W, before the Adam step
                w = w - lr * opt["weight_decay"] * w
            w = w - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
        else:
            raise AssertionError(name)
    return w


# The options `by_hand` writes out; L-BFGS has its own test below. Written here, not read from
# conf/, so that a new optimizer file without a hand-written rule fails the next test.
FIRST_ORDER = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adam_nobias", "adamw"]


def test_every_optimizer_option_has_a_hand_written_rule():
    assert set(conf_options("optimizer")) == {*FIRST_ORDER, "lbfgs"}


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_two_steps_follow_the_update_rule(name, make_cfg):
    overrides = [f"optimizer={name}"]
    if name == "adamw":
        overrides.append("optimizer.weight_decay=0.1")  # AdamW's own, decoupled
    cfg = resolve(make_cfg(*overrides))
    expected = by_hand(name, dict(cfg.optimizer))
    np.testing.assert_allclose(run_steps(cfg), expected, rtol=1e-12, atol=1e-12)
    assert not np.allclose(expected, START)  # the rule moved the weights


def test_lbfgs_two_iterations_follow_the_two_loop_recursion(make_cfg):
    # Without line search: first direction -g with step lr*min(1, 1/|g|_1); the second is
    # -H g from one curvature pair (s, y) with H0 = s.y / y.y, step lr.
    overrides = ["optimizer.line_search_fn=null", "optimizer.max_iter=2", "optimizer.max_eval=3"]
    cfg = resolve(make_cfg("optimizer=lbfgs", *overrides))
    got = run_steps(cfg, steps=1)
    lr = cfg.optimizer.lr
    w0 = START.ravel()
    a = CURVATURE.ravel()
    g0 = a * w0
    s = -lr * min(1.0, 1.0 / np.abs(g0).sum()) * g0
    w1 = w0 + s
    g1 = a * w1
    y = g1 - g0
    rho = 1.0 / (y @ s)
    alpha = rho * (s @ g1)
    q = g1 - alpha * y
    r = (s @ y) / (y @ y) * q
    beta = rho * (y @ r)
    r = r + s * (alpha - beta)
    w2 = w1 - lr * r
    np.testing.assert_allclose(got.ravel(), w2, rtol=1e-10)


def test_adam_nobias_first_steps_are_much_larger_than_adams(make_cfg):
    # Without bias correction m/sqrt(v) = (1-b1)/sqrt(1-b2) = 3.16 at step 1 and still ~6 at
    # step 10: the lecture's "very large first step" that bias correction removes.
    def first_moves(option: str) -> np.ndarray:
        cfg = resolve(make_cfg(f"optimizer={option}", "lr=1e-3"))
        model = nn.Linear(64, 10)
        optimizer = build.optimizer(cfg, model)
        x, y = torch.randn(128, 64, generator=torch.Generator().manual_seed(0)), torch.arange(128) % 10
        moves = []
        for _ in range(10):
            before = model.weight.detach().clone()
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            moves.append(float((model.weight.detach() - before).norm()))
        return np.array(moves)

    adam, nobias = first_moves("adam"), first_moves("adam_nobias")
    assert nobias[0] / adam[0] == pytest.approx(0.1 / math.sqrt(0.001), rel=1e-3)
    assert np.all(nobias / adam > 2.5)


def _digits_logistic_regression():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def test_lbfgs_beats_sgd_per_function_evaluation_on_logistic_regression(make_cfg):
    x, y = _digits_logistic_regression()
    budget = 40  # full-batch loss-and-gradient evaluations

    def train(option: str, *overrides: str) -> tuple[float, int]:
        torch.manual_seed(0)
        model = nn.Linear(64, 10)
        optimizer = build.optimizer(resolve(make_cfg(f"optimizer={option}", *overrides)), model)
        evaluations = 0

        def closure():
            nonlocal evaluations
            evaluations += 1
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        while evaluations < budget:
            optimizer.step(closure)
        with torch.no_grad():
            return float(nn.functional.cross_entropy(model(x), y)), evaluations

    lbfgs_loss, lbfgs_evaluations = train("lbfgs", f"optimizer.max_eval={budget}")
    # SGD at its default lr and the best of a small grid, with the same number of evaluations.
    sgd_losses = [train("sgd", f"lr={lr}")[0] for lr in (0.1, 0.3, 1.0)]
    assert lbfgs_evaluations == budget
    assert lbfgs_loss < 0.5 * min(sgd_losses), (lbfgs_loss, sgd_losses)


def test_linear_scaling_rule_records_the_effective_lr(make_cfg):
    cfg = resolve(make_cfg("optimizer=sgd", "optimizer.scale_lr_with_batch=true", "batch_size=512"))
    assert cfg.optimizer.lr == pytest.approx(0.2) and cfg.lr is None  # 0.1 * 512 / 256, one value
    cfg = resolve(make_cfg("optimizer=adam", "lr=0.01", "optimizer.scale_lr_with_batch=true", "batch_size=64"))
    assert cfg.optimizer.lr == pytest.approx(0.0025)
    cfg = resolve(make_cfg("optimizer=sgd", "batch_size=512"))
    assert cfg.optimizer.lr == pytest.approx(0.1)  # off by default
    model = nn.Linear(2, 2)
    optimizer = build.optimizer(resolve(make_cfg("optimizer.scale_lr_with_batch=true", "batch_size=128")), model)
    assert all(group["lr"] == pytest.approx(5e-4) for group in optimizer.param_groups)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["regularization=[dropout]"], "torch.optim.LBFGS runs full-batch on a deterministic loss; turn off dropout"),
        (["model.dropout=0.2"], "turn off dropout"),
        (["augmentation=[flip]"], "turn off augmentation flip (augmentation=[none])"),
        (["augmentation=[crop,flip]"], "augmentation crop, flip"),
        (
            ["regularization=[dropout]", "augmentation=[flip]"],
            "turn off dropout (model.dropout=0) and augmentation flip",
        ),
        (
            ["regularization=[l2]", "regularization.l2.decoupled=true"],
            "regularization.l2.decoupled: a full-batch optimizer takes weight decay only as a",
        ),
        (["regularization=[mixup]"], "turn off regularization mixup"),
    ],
)
def test_lbfgs_refuses_noise_in_one_line(overrides, message, make_cfg):
    with pytest.raises(UserError) as error:
        build_run(make_cfg("optimizer=lbfgs", *overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optimizer.scale_lr_with_batch=true", "optimizer.base_batch_size=0"], "optimizer.base_batch_size"),
        (["regularization=[l2]", "optimizer.weight_decay=0.1"], "optimizer.weight_decay: regularization=l2"),
        (["regularization=[l1]", "regularization.l1.strength=-1"], "regularization.l1.strength"),
        (["trainer.grad_clip_value=0"], "trainer.grad_clip_value"),
        (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches"),
        (["trainer.ema_decay=1.5"], "trainer.ema_decay"),
        (["trainer.swa_start_epoch=9"], "trainer.swa_start_epoch"),
        (["optimizer=adam_nobias", "optimizer.betas=[1.5,0.9]"], "optimizer.betas"),
    ],
)
def test_bad_optimization_values_are_one_line_errors(overrides, message, make_cfg):
    with pytest.raises(UserError) as error:
        build_run(make_cfg(*overrides))
    assert message in str(error.value) and "\n" not in str(error.value)
