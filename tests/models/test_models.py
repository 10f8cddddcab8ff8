"""The models: CNN pooling, CIFAR ResNet with stochastic depth, torchvision models (weights
from a local file, torch's cache, or a one-line offline error), shapes from the data config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from trainer_cli import build
from trainer_cli.config import UserError, resolve
from trainer_cli.models import CNN, FractionalMaxPool, ResNet, torchvision_model
from trainer_cli.models.resnet import BasicBlock


@pytest.mark.parametrize("pool, size", [("max", 4), ("avg", 4), ("fractional", 11)])
def test_cnn_pooling_sizes(pool, size):
    model = CNN(3, 16, 5, channels=[4, 8], convs_per_stage=1, pool=pool, pool_ratio=0.7071)
    shapes = []
    for layer in model:
        if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d, FractionalMaxPool)):
            layer.register_forward_hook(lambda _m, _i, out: shapes.append(out.shape[-1]))
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    assert shapes[0] == (11 if pool == "fractional" else 8) and shapes[-1] == (7 if pool == "fractional" else size)


def test_fractional_max_pooling_is_random_in_training_and_fixed_in_eval():
    pool = FractionalMaxPool(0.7071)
    x = torch.randn(1, 1, 16, 16)
    pool.train()
    outputs = {tuple(pool(x).flatten().tolist()) for _ in range(10)}
    assert len(outputs) > 1  # pseudo-random pooling regions
    pool.eval()
    assert torch.equal(pool(x), pool(x))
    # Every output is a max over some input region: a value of the input.
    assert torch.isin(pool(x), x).all()


@pytest.mark.parametrize("depth, blocks", [(20, 9), (56, 27)])
def test_resnet_depth_gives_6n_plus_2_layers(depth, blocks):
    model = ResNet(3, 8, 10, depth=depth)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == blocks
    assert len(convs) + 1 == depth  # 3x3 convs plus the linear head
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_resnet_explicit_stages_and_preact():
    model = ResNet(1, 8, 4, stages=[1, 2], channels=[8, 16], preact=True)
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 3
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 4)
    # Pre-activation: the stem is a bare conv, the net ends with norm + activation.
    assert len(model.stem) == 1 and isinstance(model.final[0], nn.BatchNorm2d)


def test_stochastic_depth_rises_linearly_to_drop_path():
    model = ResNet(1, 8, 4, stages=[2, 2], channels=[4, 8], drop_path=0.4)
    probs = [m.drop_prob for m in model.modules() if isinstance(m, BasicBlock)]
    assert probs == pytest.approx([0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize("preact", [True, False])
def test_dropped_block_is_the_identity_in_training_and_eval_scales_the_branch(preact):
    torch.manual_seed(0)
    p = 0.5
    block = BasicBlock(4, 4, 1, nn.ReLU, norm="none", preact=preact, drop_prob=p)
    x = torch.rand(2, 4, 6, 6)  # non-negative, like the output of the ReLU before the block
    inner = torch.relu(x) if preact else x
    branch = block.branch(inner).detach()
    kept = x + branch if preact else torch.relu(x + branch)

    block.train()
    dropped = 0
    for _ in range(100):
        out = block(x)
        if torch.equal(out, x):
            dropped += 1
        else:
            assert torch.allclose(out, kept, atol=1e-6)
    assert 0.3 < dropped / 100 < 0.7

    block.eval()
    scaled = x + (1 - p) * branch if preact else torch.relu(x + (1 - p) * branch)
    assert torch.allclose(block(x), scaled, atol=1e-6)
    assert torch.equal(block(x), block(x))


def test_dropped_downsampling_block_is_its_shortcut():
    torch.manual_seed(0)
    block = BasicBlock(4, 8, 2, nn.ReLU, norm="none", preact=True, drop_prob=0.99)
    x = torch.randn(2, 4, 6, 6)
    block.train()
    outputs = [block(x) for _ in range(20)]
    shortcut = block.shortcut(torch.relu(x))
    assert sum(torch.allclose(out, shortcut) for out in outputs) >= 15


def test_torchvision_model_adapts_classes_and_input_channels():
    model = torchvision_model("resnet18", in_channels=1, image_size=8, num_classes=7)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 7
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 7)


def _save_torchvision_resnet18(path: Path) -> dict:
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()  # torchvision's own layout: 1000 classes, RGB
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_torchvision_weights_from_a_local_file(tmp_path):
    state = _save_torchvision_resnet18(tmp_path / "resnet18.pth")
    model = torchvision_model("resnet18", 1, 28, 10, weights=str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    # A grey image is R = G = B: the first conv gets the sum of the RGB kernels.
    assert torch.allclose(model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert model.fc.out_features == 10  # a fresh head for the data's classes
    grey = torch.randn(2, 1, 28, 28)
    rgb_model = torchvision.models.resnet18()
    rgb_model.load_state_dict(state)
    rgb_model.eval(), model.eval()
    assert torch.allclose(model.conv1(grey), rgb_model.conv1(grey.expand(-1, 3, -1, -1)), atol=1e-5)

    # A state_dict of the adapted model itself (e.g. saved from a run) loads as it is.
    torch.save(model.state_dict(), tmp_path / "adapted.pt")
    again = torchvision_model("resnet18", 1, 28, 10, weights=str(tmp_path / "adapted.pt"))
    assert torch.equal(again.fc.weight, model.fc.weight)


def test_torchvision_named_weights_come_from_torchs_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    state = _save_torchvision_resnet18(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    model = torchvision_model("resnet18", 3, 32, 10, weights="IMAGENET1K_V1", download=False)
    assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert model.fc.out_features == 10


def _no_network(*args, **kwargs):
    raise AssertionError("a test tried to download")


def test_torchvision_named_weights_offline_is_a_one_line_error(tmp_path, monkeypatch, make_cfg):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    cfg = resolve(make_cfg("model=torchvision", "model.weights=IMAGENET1K_V1", "model.download=false"))
    with pytest.raises(UserError) as error:
        build.model(cfg)
    message = str(error.value)
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert message.startswith("model.weights:") and str(expected) in message and "\n" not in message

    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")  # what urllib raises offline (URLError is an OSError)

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(UserError, match="model.weights: cannot download .* to .*resnet18-f37072fd.pth"):
        build.model(resolve(make_cfg("model=torchvision", "model.weights=IMAGENET1K_V1")))


@pytest.mark.parametrize(
    "data, model",
    [
        (["data=digits"], "model=cnn"),
        (["data=synthetic", "data.in_channels=1", "data.image_size=28"], "model=resnet"),  # Fashion-MNIST's shape
        (["data=cifar10"], "model=torchvision"),
        (["data=synthetic", "data.in_channels=3", "data.image_size=32", "data.num_classes=100"], "model=cnn"),
    ],
)
def test_models_take_their_shapes_from_the_data_config(data, model, make_cfg):
    cfg = resolve(make_cfg(*data, model))
    network = build.model(cfg)
    images = torch.randn(2, cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
    assert network(images).shape == (2, cfg.data.num_classes)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.activation=foo"], "model.activation: 'foo' is not accepted; choose one of sigmoid, tanh"),
        (["model.init=he"], "model.init: 'he' is not accepted"),
        (["model.norm=instance"], "model.norm: 'instance' is not accepted for this model"),
        (["model=cnn", "model.pool=min"], "model.pool: 'min' is not accepted; choose one of max, avg, fractional"),
        (["model=cnn", "model.pool=fractional", "model.pool_ratio=1.5"], "model.pool_ratio"),
        (["model=resnet", "model.depth=21"], "model.depth: expected 6n+2"),
        (["model=resnet", "model.activation=maxout"], "model.activation: maxout is not available for resnet"),
        (["model=resnet", "model.drop_path=1.0"], "model.drop_path"),
        (["model=torchvision", "model.name=resnet7"], "model.name: 'resnet7' is not a torchvision classifier"),
        (["model=torchvision", "model.weights=IMAGENET9K"], "model.weights: 'IMAGENET9K' is not a weights name"),
        (["model=torchvision", "model.weights=/no/such.pth"], "model.weights: no file at '/no/such.pth'"),
        (["model=torchvision", "regularization=[dropout]"], "model.dropout, model.dropconnect: not available"),
        (["regularization=[stochastic_depth]"], "model.drop_path: not an argument of trainer_cli.models.MLP"),
        (["regularization=[dropconnect]", "model.dropconnect=1.0"], "model.dropconnect"),
    ],
)
def test_bad_model_values_are_one_line_errors(overrides, message, make_cfg):
    with pytest.raises(UserError) as error:
        build.model(resolve(make_cfg(*overrides)))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_regularization_sets_the_model_keys(make_cfg):
    cfg = resolve(make_cfg("model=resnet", "regularization=[stochastic_depth,dropconnect,dropout]"))
    assert (cfg.model.drop_path, cfg.model.dropconnect, cfg.model.dropout) == (0.2, 0.5, 0.5)
    model = build.model(cfg)
    assert max(m.drop_prob for m in model.modules() if isinstance(m, BasicBlock)) == pytest.approx(0.2)


@pytest.mark.slow  # a subprocess: ~4 s of imports alone (the same messages are tested in-process above)
def test_cli_bad_activation_is_one_line(tmp_path):
    from tests.conftest import run_train

    result = run_train(["model.activation=swish", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: model.activation: 'swish' is not accepted; choose one of "
        "sigmoid, tanh, relu, leaky_relu, prelu, elu, selu, gelu, silu, maxout"
    ]


def _tiny(model: str, **choices) -> nn.Module:
    if model == "mlp":
        from trainer_cli.models import MLP

        return MLP(1, 8, 3, width=16, depth=2, **choices)
    if model == "cnn":
        return CNN(1, 8, 3, channels=[8, 16], convs_per_stage=1, **choices)
    # No stochastic depth here: every block must get a gradient.
    return ResNet(1, 8, 3, stages=[1, 1], channels=[8, 16], **choices)


def _trains(model: nn.Module) -> None:
    """One SGD step changes the loss: gradients reach the parameters through the choice."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    model.eval()
    before = nn.functional.cross_entropy(model(x), y).item()
    model.train()
    nn.functional.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None for p in model.parameters())
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.eval()
    assert nn.functional.cross_entropy(model(x), y).item() != before


@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet"])
def test_every_activation_init_and_norm_works_on_every_model(model):
    from trainer_cli.models.blocks import ACTIVATIONS, NORMS_1D, NORMS_2D
    from trainer_cli.models.init import INITS

    for name in ACTIVATIONS:
        if not (model == "resnet" and name == "maxout"):
            _trains(_tiny(model, activation=name, activation_gpn=name != "maxout"))
    for init in INITS:
        _trains(_tiny(model, init=init))
    for norm in NORMS_1D if model == "mlp" else NORMS_2D:
        _trains(_tiny(model, norm=norm, norm_groups=4))
