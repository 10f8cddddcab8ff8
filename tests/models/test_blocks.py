"""Activations, GPN, maxout, norms, dropout and DropConnect: each has the effect it claims."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainer_cli.models import CNN, MLP
from trainer_cli.models.blocks import (
    ACTIVATIONS,
    DropConnectLinear,
    GaussPoincare,
    Maxout,
    activation,
    gpn_constants,
)


class SigmoidGELU(nn.Module):
    """GELU's sigmoid approximation x·σ(1.702x), the form the published GPN table used."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


@pytest.mark.parametrize("name", [n for n in ACTIVATIONS if n != "maxout"])
def test_every_activation_builds_and_is_elementwise(name):
    x = torch.linspace(-3, 3, 61)
    y = activation(name)(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    # A nonlinearity: not a multiple of its input.
    assert not torch.allclose(y, x * (y[-1] / x[-1]))


def test_leaky_relu_slope_and_elu_alpha_are_used():
    x = torch.tensor([-2.0, 3.0])
    assert torch.allclose(activation("leaky_relu", slope=0.2)(x), torch.tensor([-0.4, 3.0]))
    assert torch.allclose(activation("leaky_relu")(x), torch.tensor([-0.02, 3.0]))  # 0.01 by default
    assert torch.allclose(activation("elu", alpha=2.0)(x), torch.tensor([2.0 * (math.exp(-2) - 1), 3.0]))


def test_prelu_slope_gets_a_gradient_and_changes():
    torch.manual_seed(0)
    model = MLP(1, 4, 3, width=8, depth=1, activation="prelu")
    prelu = next(m for m in model.modules() if isinstance(m, nn.PReLU))
    before = prelu.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(32, 1, 4, 4), torch.randint(0, 3, (32,))
    nn.functional.cross_entropy(model(x), y).backward()
    assert prelu.weight.grad is not None and prelu.weight.grad.abs().item() > 0
    optimizer.step()
    assert not torch.equal(prelu.weight.detach(), before)


def test_maxout_takes_the_max_of_k_pieces():
    x = torch.tensor([[1.0, 5.0, -2.0, 3.0, 0.0, -1.0]])  # 2 groups of k=3
    assert torch.equal(Maxout(3)(x), torch.tensor([[5.0, 3.0]]))


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("k", [2, 3])
def test_maxout_multiplies_the_mlp_layer_parameters_by_k(k):
    relu = MLP(1, 4, 5, width=6, depth=1, activation="relu")
    maxout = MLP(1, 4, 5, width=6, depth=1, activation="maxout", maxout_k=k)
    head = 6 * 5 + 5  # the output layer is unchanged: it sees `width` units either way
    assert _count(relu) - head == 16 * 6 + 6
    assert _count(maxout) - head == k * (16 * 6 + 6)
    assert maxout(torch.randn(2, 1, 4, 4)).shape == (2, 5)


def test_maxout_multiplies_the_cnn_conv_parameters_by_k():
    k = 3
    relu = CNN(1, 8, 4, channels=[4], convs_per_stage=1, norm="none", activation="relu")
    maxout = CNN(1, 8, 4, channels=[4], convs_per_stage=1, norm="none", activation="maxout", maxout_k=k)
    head = 4 * 4 + 4
    assert _count(relu) - head == 1 * 4 * 9 + 4
    assert _count(maxout) - head == k * (1 * 4 * 9 + 4)
    assert maxout(torch.randn(2, 1, 8, 8)).shape == (2, 4)


# The published table of Gaussian-Poincaré normalization constants (a, b).
GPN_TABLE = [
    ("tanh", nn.Tanh(), 1.4674, 0.3885),
    ("relu", nn.ReLU(), 1.4142, 0.0),
    ("leaky_relu", nn.LeakyReLU(0.01), 1.4141, 0.0),
    ("elu", nn.ELU(), 1.2234, 0.0742),
    ("selu", nn.SELU(), 0.9660, 0.2585),
    ("gelu (sigmoid approximation)", SigmoidGELU(), 1.4915, -0.9097),
]


@pytest.mark.parametrize("name, phi, a_table, b_table", GPN_TABLE, ids=[row[0] for row in GPN_TABLE])
def test_gpn_constants_match_the_published_table(name, phi, a_table, b_table):
    a, roots = gpn_constants(phi)
    assert a == pytest.approx(a_table, abs=6e-5)  # the table has 4 decimals
    # b solves a quadratic: the table's value is one of its two roots.
    assert min(abs(root - b_table) for root in roots) < 6e-5


def test_gpn_of_exact_gelu_differs_from_the_table_row():
    a, _ = gpn_constants(nn.GELU())
    assert a == pytest.approx(1.4811, abs=6e-5)


def test_the_tables_gelu_row_alone_takes_the_smaller_root():
    """Why the code keeps the larger root: every other row of the table does."""
    for name, phi, _, b_table in GPN_TABLE:
        larger, smaller = gpn_constants(phi)[1]
        assert (smaller if name.startswith("gelu") else larger) == pytest.approx(b_table, abs=6e-5)
    assert gpn_constants(SigmoidGELU())[1][0] == pytest.approx(0.0675, abs=6e-5)
    assert gpn_constants(nn.GELU())[1][0] == pytest.approx(0.0739, abs=6e-5)


@pytest.mark.parametrize("name", ["tanh", "relu", "elu", "selu", "gelu", "silu", "sigmoid", "prelu"])
def test_gpn_gives_unit_second_moments_for_gaussian_input(name):
    """The definition, checked by sampling: E[ψ(h)²] = E[ψ'(h)²] = 1 for h ~ N(0,1)."""
    module = activation(name, gpn=True)
    assert isinstance(module, GaussPoincare)
    h = torch.randn(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64).requires_grad_()
    module = module.double()
    out = module(h)
    (derivative,) = torch.autograd.grad(out.sum(), h)
    assert (out.detach() ** 2).mean().item() == pytest.approx(1.0, abs=0.01)
    assert (derivative**2).mean().item() == pytest.approx(1.0, abs=0.01)


def test_gpn_is_wired_into_the_models():
    model = MLP(1, 4, 3, width=8, depth=2, activation="tanh", activation_gpn=True)
    gpns = [m for m in model.modules() if isinstance(m, GaussPoincare)]
    assert len(gpns) == 2 and gpns[0].a == pytest.approx(1.4674, abs=1e-4)
    x = torch.randn(5)
    assert torch.allclose(gpns[0](x), gpns[0].a * torch.tanh(x) + gpns[0].b)


def test_inverted_dropout_zeroes_p_and_scales_the_rest_eval_is_the_expectation():
    torch.manual_seed(0)
    p = 0.3
    model = MLP(1, 4, 3, width=2000, depth=1, activation="relu", dropout=p)
    dropout = next(m for m in model.modules() if isinstance(m, nn.Dropout))
    ones = torch.ones(8, 2000)
    dropout.train()
    out = dropout(ones)
    assert (out == 0).float().mean().item() == pytest.approx(p, abs=0.02)
    assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 1 / (1 - p)))

    # The head is linear after the dropout, so the mean training-time output is the
    # eval-time output; eval itself is deterministic.
    x = torch.randn(4, 1, 4, 4)
    model.eval()
    expected = model(x)
    assert torch.equal(expected, model(x))
    model.train()
    mean = torch.stack([model(x) for _ in range(3000)]).mean(0)
    assert torch.allclose(mean, expected, atol=0.02)
    assert not torch.allclose(model(x), expected, atol=1e-3)  # one training pass is noisy


def test_dropconnect_masks_the_weight_matrix_and_eval_uses_full_weights():
    torch.manual_seed(0)
    p = 0.4
    layer = DropConnectLinear(50, 40, p=p)
    x = torch.randn(7, 50)

    # Training: the output is the linear map of one masked, rescaled weight matrix.
    layer.train()
    torch.manual_seed(1)
    out = layer(x)
    torch.manual_seed(1)
    used = layer.weight_in_use()
    assert torch.allclose(out, x @ used.T + layer.bias, atol=1e-6)
    dropped = used == 0
    assert dropped.float().mean().item() == pytest.approx(p, abs=0.05)
    assert torch.allclose(used[~dropped], layer.weight[~dropped] / (1 - p))
    # The mask is on weights, not units: no output unit is zeroed as a whole.
    assert (out != 0).all()
    # A dropped weight gets no gradient.
    torch.manual_seed(1)
    layer(x).sum().backward()
    assert (layer.weight.grad[dropped] == 0).all() and (layer.weight.grad[~dropped] != 0).all()

    layer.eval()
    assert torch.allclose(layer(x), x @ layer.weight.T + layer.bias, atol=1e-6)
    layer.train()
    mean = torch.stack([layer(x) for _ in range(3000)]).mean(0)
    layer.eval()
    assert torch.allclose(mean, layer(x), atol=0.05)


def test_dropconnect_goes_on_the_mlp_hidden_layers_and_the_cnn_head():
    mlp = MLP(1, 4, 3, width=8, depth=2, dropconnect=0.5)
    assert sum(isinstance(m, DropConnectLinear) for m in mlp.modules()) == 2
    assert not isinstance(mlp[-1], DropConnectLinear)
    cnn = CNN(1, 8, 3, channels=[4], dropconnect=0.5)
    assert isinstance(cnn[-1], DropConnectLinear)


def _capture(module: nn.Module, store: list) -> None:
    module.register_forward_hook(lambda _m, inputs, output: store.append((inputs[0].detach(), output.detach())))


def test_batchnorm_uses_batch_statistics_in_training_and_running_statistics_in_eval():
    torch.manual_seed(0)
    model = MLP(1, 4, 3, width=16, depth=1, norm="batch")
    norm = next(m for m in model.modules() if isinstance(m, nn.BatchNorm1d))
    seen: list = []
    _capture(norm, seen)
    x = 3.0 + 2.0 * torch.randn(256, 1, 4, 4)

    model.train()
    model(x)
    z, out = seen[-1]
    assert out.mean(0).abs().max().item() < 1e-5  # normalized by this batch's own mean
    assert out.std(0, unbiased=False).sub(1).abs().max().item() < 1e-3
    # The running estimates moved by momentum 0.1 towards the batch statistics.
    assert torch.allclose(norm.running_mean, 0.1 * z.mean(0), atol=1e-5)

    model.eval()
    model(x[:4])
    z, out = seen[-1]
    by_running = (z - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    assert torch.allclose(out, by_running, atol=1e-5)
    assert not torch.allclose(out, (z - z.mean(0)) / z.std(0), atol=0.1)
    # In eval one sample's output does not depend on the rest of the batch.
    model(x[:1])
    assert torch.allclose(seen[-1][1], out[:1], atol=1e-6)


def test_layer_and_group_norm_normalize_each_sample():
    torch.manual_seed(0)
    x = 5.0 + 3.0 * torch.randn(6, 1, 4, 4)
    for norm, groups in (("layer", 1), ("group", 4)):
        model = MLP(1, 4, 3, width=16, depth=1, norm=norm, norm_groups=groups)
        seen: list = []
        _capture(model[2], seen)
        model(x)
        out = seen[-1][1].reshape(6, groups, -1)
        assert out.mean(2).abs().max().item() < 1e-5, norm
        assert out.std(2, unbiased=False).sub(1).abs().max().item() < 1e-2, norm


def test_instance_norm_normalizes_each_channel_of_each_sample():
    torch.manual_seed(0)
    model = CNN(1, 8, 3, channels=[4], convs_per_stage=1, norm="instance")
    seen: list = []
    _capture(model[1], seen)
    model(5.0 + torch.randn(3, 1, 8, 8))
    out = seen[-1][1].flatten(2)
    assert out.mean(2).abs().max().item() < 1e-5
    assert out.std(2, unbiased=False).sub(1).abs().max().item() < 1e-2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: activation("foo"), "model.activation: 'foo' is not accepted; choose one of sigmoid"),
        (lambda: activation("maxout", gpn=True), "model.activation_gpn"),
        (lambda: activation("maxout", maxout_k=0), "model.maxout_k"),
        (lambda: MLP(1, 4, 3, norm="instance"), "model.norm: 'instance' is not accepted for this model"),
        (lambda: MLP(1, 4, 3, width=12, norm="group", norm_groups=5), "model.norm_groups: 5 groups do not divide"),
        (lambda: DropConnectLinear(2, 2, p=1.0), "model.dropconnect"),
    ],
)
def test_bad_block_arguments_name_the_key(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value) and "\n" not in str(error.value)
