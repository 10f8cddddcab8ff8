"""Weight initialization schemes: each draws the scale its formula says, and the lecture's
experiments (symmetry, small random numbers, saturation, Xavier/Kaiming) come out as taught."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainer_cli.models import CNN, MLP
from trainer_cli.models.init import INITS, initialize
from trainer_cli.models.stats import activation_values

FAN_IN, FAN_OUT = 400, 300


def _hidden_weight(scheme: str, activation: str = "relu", std: float = 0.01) -> torch.Tensor:
    torch.manual_seed(0)
    model = MLP(1, 20, 10, width=FAN_OUT, depth=1, activation=activation, init=scheme, init_std=std)
    return model[1].weight.detach()


@pytest.mark.parametrize(
    "scheme, activation, expected_std",
    [
        ("normal", "relu", 0.05),
        ("xavier_uniform", "relu", math.sqrt(2 / (FAN_IN + FAN_OUT))),
        ("xavier_normal", "relu", math.sqrt(2 / (FAN_IN + FAN_OUT))),
        ("lecun_normal", "relu", 1 / math.sqrt(FAN_IN)),
        ("kaiming_normal", "relu", math.sqrt(2 / FAN_IN)),
        ("kaiming_uniform", "relu", math.sqrt(2 / FAN_IN)),
        ("kaiming_normal", "tanh", (5 / 3) / math.sqrt(FAN_IN)),
        ("kaiming_normal", "leaky_relu", math.sqrt(2 / (1 + 0.01**2)) / math.sqrt(FAN_IN)),
    ],
)
def test_scheme_draws_the_std_of_its_formula(scheme, activation, expected_std):
    weight = _hidden_weight(scheme, activation, std=0.05)
    assert weight.std().item() == pytest.approx(expected_std, rel=0.03)
    assert weight.mean().abs().item() < expected_std / 20


def test_orthogonal_rows_are_orthogonal_with_the_activation_gain():
    weight = _hidden_weight("orthogonal", "tanh")
    gain = 5 / 3
    assert torch.allclose(weight @ weight.T, gain**2 * torch.eye(FAN_OUT), atol=1e-4)


@pytest.mark.parametrize("scheme", [s for s in INITS if s != "default"])
def test_biases_start_at_zero(scheme):
    model = CNN(1, 8, 3, channels=[4], norm="none", init=scheme)
    biases = [m.bias for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert biases and all(torch.count_nonzero(b) == 0 for b in biases)


def test_default_keeps_pytorchs_own_init():
    torch.manual_seed(0)
    ours = MLP(1, 4, 3, width=8, depth=1, init="default")
    torch.manual_seed(0)
    plain = nn.Linear(16, 8)
    assert torch.equal(ours[1].weight, plain.weight) and torch.equal(ours[1].bias, plain.bias)


def test_constant_init_keeps_hidden_units_identical_after_training():
    """The lecture's symmetry failure: equal weights get equal gradients forever."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 4, 4), torch.randint(0, 3, (64,))

    def train(init: str) -> MLP:
        model = MLP(1, 4, 3, width=8, depth=2, activation="tanh", init=init, init_std=0.1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(20):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return model

    constant = train("constant")
    hidden_layers = [m for m in constant.modules() if isinstance(m, nn.Linear)][:-1]
    first_weight = hidden_layers[0].weight.detach().clone()
    for layer in hidden_layers:
        weight = layer.weight.detach()
        assert torch.allclose(weight, weight[:1].expand_as(weight))  # every row (unit) the same
    assert not torch.allclose(first_weight, torch.full_like(first_weight, 0.1))  # and they did train
    hidden = list(activation_values(constant, x).values())
    assert all(torch.allclose(v.view(64, 8), v.view(64, 8)[:, :1].expand(64, 8)) for v in hidden)

    normal = train("normal")
    weight = normal[1].weight.detach()
    assert not torch.allclose(weight, weight[:1].expand_as(weight))


def _layer_stats(activation: str, init: str, std: float = 0.01) -> list[torch.Tensor]:
    """The lecture's experiment: a 6-layer MLP on Gaussian input; each layer's activations."""
    torch.manual_seed(0)
    model = MLP(1, 16, 10, width=WIDTH, depth=6, activation=activation, init=init, init_std=std)
    values = activation_values(model, torch.randn(512, 1, 16, 16))
    return [v.view(512, WIDTH) for v in values.values()]


# Width 256 instead of the lecture's 4096, with the stds scaled so std·√width is the same.
WIDTH = 256
SMALL_STD = 0.01 * math.sqrt(4096) / math.sqrt(WIDTH)
LARGE_STD = 0.05 * math.sqrt(4096) / math.sqrt(WIDTH)


def test_small_random_init_collapses_deep_tanh_activations():
    stds = [v.std().item() for v in _layer_stats("tanh", "normal", SMALL_STD)]
    assert len(stds) == 6
    ratios = [later / earlier for earlier, later in zip(stds, stds[1:], strict=False)]
    assert all(r < 0.7 for r in ratios), ratios  # std·√width = 0.64 per layer
    assert stds[-1] < 0.1 * stds[0] and stds[-1] < 0.05


def test_larger_random_init_saturates_tanh():
    for values in _layer_stats("tanh", "normal", LARGE_STD):
        assert (values.abs() > 0.9).float().mean().item() > 0.5  # most units at ±1
        assert values.std().item() > 0.8


def test_lecun_scale_keeps_tanh_activation_std_roughly_constant():
    stds = [v.std().item() for v in _layer_stats("tanh", "lecun_normal")]
    # The lecture's "Xavier" plot: tanh' < 1 still shaves a little off each layer
    # (measured 0.63 -> 0.29 over 6 layers), far from the collapse of small random numbers.
    ratios = [later / earlier for earlier, later in zip(stds, stds[1:], strict=False)]
    assert all(r > 0.75 for r in ratios), ratios
    assert stds[-1] > 0.25


def test_relu_with_lecun_halves_the_variance_per_layer_kaiming_holds_it():
    def second_moments(init: str) -> list[float]:
        return [(v**2).mean().item() for v in _layer_stats("relu", init)]

    lecun = second_moments("lecun_normal")
    ratios = [later / earlier for earlier, later in zip(lecun, lecun[1:], strict=False)]
    assert all(0.35 < r < 0.65 for r in ratios), ratios
    assert lecun[-1] < 0.1 * lecun[0]
    kaiming = second_moments("kaiming_normal")
    ratios = [later / earlier for earlier, later in zip(kaiming, kaiming[1:], strict=False)]
    assert all(0.7 < r < 1.4 for r in ratios), ratios
    assert kaiming[-1] > 0.5 * kaiming[0]


def test_unknown_scheme_names_the_key():
    with pytest.raises(ValueError, match="model.init: 'he' is not accepted; choose one of default"):
        initialize(nn.Linear(2, 2), "he")
