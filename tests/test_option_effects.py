"""The effect of every option of every config group, one check per conf/ file.

`EFFECTS[group][option]` is a function of the run's resolved config that asserts what the
option does (the schedule's factor against its formula, the optimizer's state after a step,
the pixels an augmentation changes, a penalty's value, ...), not only that it builds. The
generated tests of tests/test_config.py, which compose each option and take a step of its
run, call it (one composition per option); `test_every_option_has_an_effect_check` reads the
conf/ listing, so a new YAML file without a check here fails, and an option is tested the day
it is added. Everything is tiny (a two-layer model, synthetic tensors, one optimizer step).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from tests.conftest import conf_options
from trainer_cli import build, transfer
from trainer_cli.config import CONF_DIR

# Groups whose options are procedures, hooks or bundles of other options, with their own
# tests: experiment (test_config.py, every recipe), mode, hparams_search and diagnose (their
# own files), callbacks (hooks that act during a run: test_train.py, test_figures.py,
# test_diagnose.py, ...), and Hydra's own.
NOT_HERE = {"experiment", "mode", "hparams_search", "diagnose", "callbacks", "hydra"}
# Data sets that need files this machine may not have.
NEEDS_FILES = {"mnist", "cifar10", "cifar100"}
STEPS_PER_EPOCH = 10  # with the fixtures' epochs=2: a 20-step schedule

Check = Callable[..., None]


def images(n: int = 16, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Synthetic images in [0, 1] with structure (a gradient plus noise), so that every
    geometric and colour operation changes some pixels."""
    generator = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size).view(1, 1, 1, size).expand(n, channels, size, size)
    return (0.5 * ramp + 0.5 * torch.rand(n, channels, size, size, generator=generator)).contiguous()


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))


# --- scheduler: the LR after k steps is base_lr * the option's formula at k -----------------


def lr_factors(cfg: DictConfig, steps: list[int]) -> dict[int, float]:
    """The optimizer's LR / base LR at each of `steps`, stepping the real scheduler."""
    model = tiny_model()
    optimizer = build.optimizer(cfg, model)
    scheduler = build.scheduler(cfg, optimizer, STEPS_PER_EPOCH)
    base, factors = float(cfg.optimizer.lr), {}
    for step in range(max(steps) + 1):
        if step in steps:
            factors[step] = optimizer.param_groups[0]["lr"] / base
        optimizer.step()
        scheduler.step()
    return factors


def expect_schedule(formula: Callable[[int, DictConfig], float], steps=(0, 1, 5, 10, 15, 19)) -> Check:
    def check(cfg: DictConfig) -> None:
        found = lr_factors(cfg, list(steps))
        expected = {s: formula(s, cfg.scheduler) for s in steps}
        assert found == pytest.approx(expected, rel=1e-6, abs=1e-9), (found, expected)
        assert len(set(found.values())) > 1 or cfg.scheduler._target_.endswith(("constant", "Plateau"))

    return check


TOTAL = 20  # 2 epochs x STEPS_PER_EPOCH


def _cosine(t: float, span: float, final: float = 0.0) -> float:
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(t, span) / span))


def _onecycle(s: int, c: DictConfig) -> float:
    peak = round(c.pct_start * TOTAL)
    start, end = 1 / c.div_factor, 1 / (c.div_factor * c.final_div_factor)
    if s < peak:
        return 1.0 + (start - 1.0) * 0.5 * (1 + math.cos(math.pi * s / peak))
    return end + (1.0 - end) * 0.5 * (1 + math.cos(math.pi * (s - peak) / (TOTAL - peak)))


def _sgdr(s: int, c: DictConfig) -> float:
    t, cycle = s, c.t0_epochs * STEPS_PER_EPOCH
    while t >= cycle:
        t, cycle = t - cycle, cycle * c.t_mult
    return _cosine(t, cycle, c.final_lr_fraction)


def check_plateau(cfg: DictConfig) -> None:
    """Constant until the monitored value stalls for more than `patience` epochs, then x factor."""
    optimizer = build.optimizer(cfg, tiny_model())
    scheduler = build.scheduler(cfg, optimizer, STEPS_PER_EPOCH)
    base, patience = float(cfg.optimizer.lr), int(cfg.scheduler.patience)
    for _epoch in range(patience + 2):  # one improvement, then patience + 1 epochs without one
        assert optimizer.param_groups[0]["lr"] == pytest.approx(base)
        scheduler.end_epoch({cfg.scheduler.monitor: 1.0})
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(base * cfg.scheduler.factor)


SCHEDULER: dict[str, Check] = {
    "constant": expect_schedule(lambda s, c: 1.0),
    "cosine": expect_schedule(lambda s, c: _cosine(s, TOTAL, c.final_lr_fraction)),
    "exponential": expect_schedule(lambda s, c: c.gamma ** (s / STEPS_PER_EPOCH)),
    # warmup_steps=100: a linear ramp (s + 1) / 100 through the whole short run
    "inverse_sqrt": expect_schedule(
        lambda s, c: (s + 1) / c.warmup_steps if s < c.warmup_steps else math.sqrt(c.warmup_steps / s)
    ),
    "inverse_time": expect_schedule(lambda s, c: 1 / math.sqrt(s / STEPS_PER_EPOCH + 1)),
    "linear": expect_schedule(lambda s, c: 1 - s / TOTAL),
    "onecycle": expect_schedule(_onecycle),
    "plateau": check_plateau,
    "sgdr": expect_schedule(_sgdr),
    # milestones [5, 8] (epochs): the steps around 50 and 80
    "step": expect_schedule(
        lambda s, c: c.gamma ** sum(s >= m * STEPS_PER_EPOCH for m in c.milestones), steps=(0, 49, 50, 79, 80, 81)
    ),
}


# --- optimizer: the class, its state after one step, and the first update's formula --------


def one_step(cfg: DictConfig) -> tuple[torch.optim.Optimizer, nn.Module, dict[str, torch.Tensor], dict]:
    """One optimizer step on a fixed quadratic loss; returns the optimizer, the model, the
    gradients and the weights before the step."""
    torch.manual_seed(0)
    model = tiny_model()
    optimizer = build.optimizer(cfg, model)
    x = torch.randn(8, 4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    closure()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    optimizer.step(closure)
    return optimizer, model, grads, before


def expect_optimizer(cls: str, state_keys: set[str], first_update=None, **group: object) -> Check:
    """`first_update(grad, lr)`: the first step's change of a weight, by the method's formula."""

    def check(cfg: DictConfig) -> None:
        optimizer, model, grads, before = one_step(cfg)
        assert type(optimizer).__name__ == cls
        for key, value in group.items():
            assert all(g[key] == value for g in optimizer.param_groups), key
        states = (
            [optimizer.state[p] for p in model.parameters()] if cls != "LBFGS" else [optimizer.state_dict()["state"][0]]
        )
        for state in states:
            present = {k for k, v in state.items() if v is not None}
            assert state_keys <= present, f"{cls}: state {sorted(present)} lacks {sorted(state_keys - present)}"
        if first_update is not None:
            lr = float(cfg.optimizer.lr)
            for name, p in model.named_parameters():
                moved = p.detach() - before[name]
                assert torch.allclose(moved, first_update(grads[name], lr), rtol=1e-4, atol=1e-7), name

    return check


def _adam_first(grad: torch.Tensor, lr: float) -> torch.Tensor:
    # m / (sqrt(v) + eps) with bias correction is g / (|g| + eps) at step 1
    return -lr * grad / (grad.abs() + 1e-8)


def check_adam_nobias(cfg: DictConfig) -> None:
    """Adam without bias correction: the first step is lr (1-b1) g / (sqrt(1-b2) |g| + eps)."""
    beta1, beta2 = cfg.optimizer.betas
    first = lambda g, lr: -lr * (1 - beta1) * g / ((1 - beta2) ** 0.5 * g.abs() + cfg.optimizer.eps)  # noqa: E731
    expect_optimizer("AdamNoBias", {"exp_avg", "exp_avg_sq"}, first)(cfg)


OPTIMIZER: dict[str, Check] = {
    "sgd": expect_optimizer("SGD", set(), lambda g, lr: -lr * g, momentum=0),
    "momentum": expect_optimizer("SGD", {"momentum_buffer"}, lambda g, lr: -lr * g, momentum=0.9, nesterov=False),
    # Nesterov's first step: buffer = g, update g + mu * buffer
    "nesterov": expect_optimizer("SGD", {"momentum_buffer"}, lambda g, lr: -lr * 1.9 * g, nesterov=True),
    "adam": expect_optimizer("Adam", {"step", "exp_avg", "exp_avg_sq"}, _adam_first),
    "adamw": expect_optimizer("AdamW", {"step", "exp_avg", "exp_avg_sq"}, _adam_first),
    "adam_nobias": check_adam_nobias,
    # sum = g^2 (initial accumulator 0): the first step is lr g / (|g| + eps), eps 1e-10
    "adagrad": expect_optimizer("Adagrad", {"sum", "step"}, lambda g, lr: -lr * g / (g.abs() + 1e-10)),
    # square_avg = (1 - alpha) g^2: the first step is lr g / (sqrt(1 - alpha) |g| + eps)
    "rmsprop": expect_optimizer(
        "RMSprop", {"square_avg"}, lambda g, lr: -lr * g / (math.sqrt(1 - 0.99) * g.abs() + 1e-8)
    ),
    "lbfgs": expect_optimizer("LBFGS", {"d", "t", "old_dirs", "old_stps", "n_iter"}, history_size=10),
}


# --- augmentation: pixels change in training batches only ------------------------------------


def expect_augmentation(exact: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> Check:
    def check(cfg: DictConfig) -> None:
        augment = build.augmentation(cfg)
        assert augment is not None
        batch = images()
        augment.fit(batch)
        torch.manual_seed(0)
        out = augment(batch.clone())
        assert out.shape == batch.shape and out.dtype == batch.dtype
        changed = (out - batch).abs().amax(dim=(1, 2, 3)) > 1e-3
        assert changed.any(), "no image changed"
        if exact is not None:
            exact(batch, out)

    return check


def _flip_exact(batch: torch.Tensor, out: torch.Tensor) -> None:
    """Each image is itself or its mirror; with p=0.5 over 16 images, both happen."""
    same = (out == batch).flatten(1).all(1)
    mirrored = (out == batch.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()


def _crop_exact(batch: torch.Tensor, out: torch.Tensor) -> None:
    """Each image is a window of the zero-padded original (padding 2): a shift of at most 2."""
    padded = F.pad(batch, (2, 2, 2, 2))
    size = batch.shape[-1]
    for original, cropped in zip(padded, out, strict=True):
        windows = [original[:, i : i + size, j : j + size] for i in range(5) for j in range(5)]
        assert any(torch.equal(w, cropped) for w in windows)


def check_no_augmentation(cfg: DictConfig) -> None:
    assert build.augmentation(cfg) is None


AUGMENTATION: dict[str, Check] = {
    name: expect_augmentation()
    for name in (
        "affine", "augmix", "autoaugment", "color_jitter", "elastic", "pca_lighting", "perspective",
        "randaugment", "resized_crop", "trivialaugment",
    )
}  # fmt: skip
AUGMENTATION |= {"flip": expect_augmentation(_flip_exact), "crop": expect_augmentation(_crop_exact)}
AUGMENTATION["none"] = check_no_augmentation


# --- loss: the value against a hand computation ----------------------------------------------

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 1.2]])
TARGETS = torch.tensor([0, 2, 1])


def _multi_margin(node: DictConfig) -> torch.Tensor:
    """sum over j != y of max(0, margin - x_y + x_j)^p (/ C with divide_by_classes, as
    torch's MultiMarginLoss), averaged over the samples."""
    total, classes = 0.0, 3 if node.get("divide_by_classes", True) else 1
    for row, y in zip(LOGITS.tolist(), TARGETS.tolist(), strict=True):
        total += sum(max(0.0, node.margin - row[y] + row[j]) ** node.p for j in range(3) if j != y) / classes
    return torch.tensor(total / len(TARGETS))


def _cross_entropy(smoothing: float = 0.0) -> torch.Tensor:
    target = torch.full((3, 3), smoothing / 3)
    target[torch.arange(3), TARGETS] += 1 - smoothing
    return -(target * LOGITS.log_softmax(1)).sum(1).mean()


def expect_loss(hand: Callable[[DictConfig], torch.Tensor]) -> Check:
    def check(cfg: DictConfig) -> None:
        assert torch.allclose(build.loss(cfg)(LOGITS, TARGETS), hand(cfg.loss), atol=1e-6)

    return check


LOSS: dict[str, Check] = {
    "cross_entropy": expect_loss(lambda c: _cross_entropy(c.label_smoothing)),
    "hinge": expect_loss(_multi_margin),
    "squared_hinge": expect_loss(_multi_margin),
}


# --- model: structure, activation, initialization ---------------------------------------------


def _forward_shape(model: nn.Module, cfg: DictConfig) -> None:
    x = torch.randn(4, cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
    model.eval()
    assert model(x).shape == (4, cfg.data.num_classes)


def check_mlp(cfg: DictConfig) -> None:
    model = build.model(cfg)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [cfg.model.width] * cfg.model.depth + [cfg.data.num_classes]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == cfg.model.depth
    # init=default is torch's: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std 1/sqrt(3 fan_in)
    first = linears[0].weight
    assert first.std().item() == pytest.approx(1 / math.sqrt(3 * first.shape[1]), rel=0.05)
    _forward_shape(model, cfg)


def check_cnn(cfg: DictConfig) -> None:
    model = build.model(cfg)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    expected = [c for c in cfg.model.channels for _ in range(cfg.model.convs_per_stage)]
    assert [m.out_channels for m in convs] == expected
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == len(convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == len(cfg.model.channels)
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) >= len(convs)
    _forward_shape(model, cfg)


def check_resnet(cfg: DictConfig) -> None:
    model = build.model(cfg)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == cfg.model.depth - 1  # 6n+2 layers: 6n 3x3 convs in blocks, the stem, the head
    assert sorted({m.out_channels for m in convs}) == sorted(cfg.model.channels)
    # init=kaiming_normal (He et al.): std sqrt(2 / fan), fan = 9 * channels
    deep = convs[-1].weight
    fan = deep.shape[1] * 9
    assert deep.std().item() == pytest.approx(math.sqrt(2 / fan), rel=0.1)
    _forward_shape(model, cfg)


def check_torchvision(cfg: DictConfig) -> None:
    model = build.model(cfg)
    assert type(model).__name__ == "ResNet" and model.fc.out_features == cfg.data.num_classes
    assert model.conv1.in_channels == cfg.data.in_channels
    assert sum(1 for m in model.modules() if isinstance(m, nn.Conv2d)) == 20  # resnet18: 17 + 3 shortcuts
    _forward_shape(model, cfg)


MODEL: dict[str, Check] = {"mlp": check_mlp, "cnn": check_cnn, "resnet": check_resnet, "torchvision": check_torchvision}


# --- regularization: penalties, model and loss switches, batch mixing --------------------------


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.ndim > 1]


def expect_penalty(formula: Callable[[list[torch.Tensor], DictConfig], torch.Tensor]) -> Check:
    def check(cfg: DictConfig) -> None:
        model = tiny_model()
        terms = build.penalties(cfg, model)
        ((name, node),) = cfg.regularization.items()
        value = terms()[name]
        assert torch.allclose(value, formula(_weights(model), node)), name
        assert build.regularization(cfg).batch_transform is None

    return check


def _dropout_fractions(cfg: DictConfig, expected_p: float) -> None:
    """A Dropout after each hidden activation zeroes ~p of its units in training, none in eval."""
    model = build.model(cfg)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(m.p == expected_p for m in drops)
    outputs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for m in drops]
    x = torch.randn(256, cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
    model.train()
    model(x)
    zeros_train = torch.cat([(o == 0).float().flatten() for o in outputs]).mean().item()
    outputs.clear()
    model.eval()
    model(x)
    zeros_eval = torch.cat([(o == 0).float().flatten() for o in outputs]).mean().item()
    for hook in hooks:
        hook.remove()
    # ReLU zeroes about half before dropout: train zeros ~ 1 - (1 - relu_zeros) (1 - p)
    assert zeros_train == pytest.approx(1 - (1 - zeros_eval) * (1 - expected_p), abs=0.03)


def check_dropout(cfg: DictConfig) -> None:
    _dropout_fractions(cfg, float(cfg.model.dropout))
    assert cfg.model.dropout == 0.5


def check_dropconnect(cfg: DictConfig) -> None:
    """The weights a hidden Linear layer's forward pass uses (read back through an identity
    input): ~p zeroed and the rest scaled by 1/(1-p) in training, the weights in eval."""
    from trainer_cli.models.blocks import DropConnectLinear

    model = build.model(cfg)
    layers = [m for m in model.modules() if isinstance(m, DropConnectLinear)]
    assert layers
    p = float(cfg.model.dropconnect)
    for layer in layers:
        identity = torch.eye(layer.in_features)
        layer.train()
        with torch.no_grad():
            in_use = (layer(identity) - layer.bias).T
        zeroed = in_use.abs() < 1e-7
        assert zeroed.float().mean().item() == pytest.approx(p, abs=0.05)
        assert torch.allclose(in_use[~zeroed], layer.weight[~zeroed] / (1 - p), atol=1e-6)
        layer.eval()
        with torch.no_grad():
            assert torch.allclose((layer(identity) - layer.bias).T, layer.weight, atol=1e-6)


def check_stochastic_depth(cfg: DictConfig) -> None:
    """Residual blocks are skipped at random in training (two forwards differ; they do not
    with drop_path=0), never in evaluation."""
    assert cfg.model.drop_path == 0.2

    def two_forwards(drop_path: float, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        node = OmegaConf.merge(cfg.model, {"drop_path": drop_path, "depth": 8, "channels": [4, 4, 4]})
        model = build.model(OmegaConf.merge(cfg, {"model": node}))
        model.train(train)
        x = torch.randn(32, cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
        torch.manual_seed(0)
        return model(x), model(x)

    first, second = two_forwards(cfg.model.drop_path, train=True)
    assert not torch.allclose(first, second)
    assert torch.allclose(*two_forwards(0.0, train=True))
    assert torch.allclose(*two_forwards(cfg.model.drop_path, train=False))


def check_label_smoothing(cfg: DictConfig) -> None:
    epsilon = cfg.loss.label_smoothing
    assert epsilon == 0.1
    assert torch.allclose(build.loss(cfg)(LOGITS, TARGETS), _cross_entropy(epsilon), atol=1e-6)


def _mix_batch(cfg: DictConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    chosen = build.regularization(cfg)
    assert chosen.batch_transform is not None and not chosen.penalties
    batch = images(n=32, channels=1, size=8)
    labels = torch.arange(32) % cfg.data.num_classes
    torch.manual_seed(0)
    mixed, targets = chosen.batch_transform(batch.clone(), labels)
    return batch, labels, mixed, targets


def check_mixup(cfg: DictConfig) -> None:
    """x_i' = lam x_i + (1 - lam) x_{i-1}, the same lam in the soft target (read back from it)."""
    batch, labels, mixed, targets = _mix_batch(cfg)
    lam = targets[torch.arange(32), labels]  # labels differ from their neighbours': lam is readable
    expected = lam.view(-1, 1, 1, 1) * batch + (1 - lam.view(-1, 1, 1, 1)) * batch.roll(1, 0)
    assert torch.allclose(mixed, expected, atol=1e-5)
    assert torch.allclose(targets.sum(1), torch.ones(32)) and (lam < 0.99).any()


def check_cutmix(cfg: DictConfig) -> None:
    """Each pixel comes from the image or its partner; the partner's target weight is its area."""
    batch, labels, mixed, targets = _mix_batch(cfg)
    mine, partners = mixed == batch, mixed == batch.roll(1, 0)
    assert (mine | partners).all()
    pasted = (partners & ~mine).float().mean(dim=(1, 2, 3))
    partner_weight = targets[torch.arange(32), labels.roll(1)]
    assert torch.allclose(partner_weight, pasted, atol=1e-6) and pasted.sum() > 0


def check_cutout(cfg: DictConfig) -> None:
    """Some pixels set to 0, at most holes * size^2 per image; labels unchanged."""
    batch, labels, erased, targets = _mix_batch(cfg)
    zeroed = ((erased == 0) & (batch != 0)).float().sum(dim=(1, 2, 3))
    assert torch.equal(targets, labels) and zeroed.sum() > 0
    assert (zeroed <= cfg.mix.cutout.holes * cfg.mix.cutout.size**2).all()
    assert torch.equal(erased[erased != 0], batch[erased != 0])


def check_no_regularization(cfg: DictConfig) -> None:
    chosen = build.regularization(cfg)
    assert not chosen.penalties and chosen.batch_transform is None
    assert cfg.model.dropout == 0 and cfg.model.dropconnect == 0 and cfg.loss.label_smoothing == 0


REGULARIZATION: dict[str, Check] = {
    "l1": expect_penalty(lambda ws, c: c.strength * sum(w.abs().sum() for w in ws)),
    # coupled (the default): lambda * sum(W^2) in the loss
    "l2": expect_penalty(lambda ws, c: c.weight_decay * sum(w.pow(2).sum() for w in ws)),
    "elastic_net": expect_penalty(
        lambda ws, c: c.strength * sum(c.l2_ratio * w.pow(2).sum() + w.abs().sum() for w in ws)
    ),
    "dropout": check_dropout,
    "dropconnect": check_dropconnect,
    "stochastic_depth": check_stochastic_depth,
    "label_smoothing": check_label_smoothing,
    "mixup": check_mixup,
    "cutmix": check_cutmix,
    "cutout": check_cutout,
    "none": check_no_regularization,
}


# --- data: the shapes and the preprocessing's statistics ---------------------------------------


def check_data(cfg: DictConfig) -> None:
    """Training images after preprocessing (channel_mean_std): per-channel mean 0, std 1."""
    name = cfg.data.name
    if name in NEEDS_FILES or name == "fashion_mnist":
        # Files this machine may not have, or 60,000 images (built in test_config.py): the
        # same preprocessing on tensors of the option's shape.
        from trainer_cli.data.preprocess import Preprocess

        shape = (64, cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
        raw = images(*shape[:3]) * 0.3 + 0.2
        batch = Preprocess(str(cfg.data.preprocess)).fit(raw)(raw)
    else:
        data = build.data(cfg, torch.device("cpu"))
        assert data.num_classes == cfg.data.num_classes
        batch = torch.cat([x for x, _ in data.train])
        assert batch.shape[1:] == (cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
    assert cfg.data.preprocess == "channel_mean_std"
    per_channel = batch.transpose(0, 1).flatten(1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(len(per_channel)), atol=1e-3)
    assert torch.allclose(per_channel.std(1), torch.ones(len(per_channel)), atol=2e-2)


DATA: dict[str, Check] = {
    name: check_data for name in ("cifar10", "cifar100", "digits", "fashion_mnist", "mnist", "synthetic")
}
DATA["imagefolder"] = check_data  # composed with the fixture's folder (see the test below)


# --- finetune: what trains ----------------------------------------------------------------------


def expect_trained(predicate: Callable[[list[str], list[str]], bool]) -> Check:
    """`predicate(trainable names, all names)` of the CNN after `finetune=` at epoch 1."""

    def check(cfg: DictConfig) -> None:
        shapes = {k: cfg.data[k] for k in ("in_channels", "image_size", "num_classes")}
        node = OmegaConf.merge(OmegaConf.load(Path(CONF_DIR, "model", "cnn.yaml")), shapes, {"channels": [4, 8]})
        cnn = OmegaConf.merge(OmegaConf.to_container(cfg), {"model": None})
        cnn.model = node
        tuning = build.finetune(cnn)
        model, _ = transfer.adapt(cnn, build.model(cnn), tuning, init_weights=False)
        tuning.start_epoch(model, 1)
        names = [n for n, _ in model.named_parameters()]
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert predicate(trainable, names), trainable

    return check


FINETUNE: dict[str, Check] = {
    "full": expect_trained(lambda t, a: t == a),
    "linear_probe": expect_trained(lambda t, a: t == a[-2:]),  # the head's weight and bias
    "last_k": expect_trained(lambda t, a: t == a[-5:]),  # the last conv block (conv, norm) and the head
    "lora": expect_trained(
        lambda t, a: all("lora_" in n for n in t[:-2]) and len(t) > 2 and not any(n.endswith("original") for n in t)
    ),
    "probe_stage": expect_trained(lambda t, a: t == ["head.weight", "head.bias"]),
}


# --- logger: where a scalar lands ----------------------------------------------------------------


def expect_logged(found: Callable[[Path], bool]) -> Check:
    """Each sink of the option records a scalar where its reader looks (the run folder's
    files; MLflow's store under the current folder)."""

    def check(cfg: DictConfig) -> None:
        tmp_path = Path.cwd() / "run"
        tmp_path.mkdir()
        sinks = build.loggers(cfg, tmp_path)
        for sink in sinks:
            sink.log_scalars(1, {"train/loss_step": 0.25})
            sink.close()
        assert found(tmp_path)

    return check


def _in_files(tmp_path: Path, glob: str, text: bytes) -> bool:
    return any(text in p.read_bytes() for p in tmp_path.rglob(glob) if p.is_file())


LOGGER: dict[str, Check] = {
    "csv": expect_logged(lambda d: _in_files(d, "*.csv", b"train/loss_step") and _in_files(d, "*.csv", b"0.25")),
    "tensorboard": expect_logged(lambda d: _in_files(d, "events.out.tfevents.*", b"train/loss_step")),
    # tracking_uri: mlruns, in the current folder (the test's)
    "mlflow": expect_logged(lambda d: any("loss_step" in str(p) for p in Path("mlruns").rglob("*"))),
    "none": expect_logged(lambda d: not any(p.is_file() for p in d.rglob("*"))),
}


# --- trainer: the step options follow the file ----------------------------------------------------


def check_trainer_default(cfg: DictConfig) -> None:
    options = build.step_options(cfg, torch.device("cpu"))
    assert options.accumulate_grad_batches == cfg.trainer.accumulate_grad_batches == 1
    assert options.grad_clip_norm is None and options.grad_clip_value is None
    assert build.ema(cfg, tiny_model()) is None and build.swa(cfg, tiny_model()) is None


TRAINER: dict[str, Check] = {"default": check_trainer_default}

EFFECTS: dict[str, dict[str, Check]] = {
    "augmentation": AUGMENTATION,
    "data": DATA,
    "finetune": FINETUNE,
    "logger": LOGGER,
    "loss": LOSS,
    "model": MODEL,
    "optimizer": OPTIMIZER,
    "regularization": REGULARIZATION,
    "scheduler": SCHEDULER,
    "trainer": TRAINER,
}


def _groups() -> list[str]:
    return sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name not in NOT_HERE)


def _cases() -> list[tuple[str, str]]:
    return [(group, option) for group in _groups() for option in conf_options(group)]


def test_every_option_has_an_effect_check():
    """A conf/ file without an entry in EFFECTS (or an entry without a file) fails here."""
    missing = [f"{g}={o}" for g, o in _cases() if o not in EFFECTS.get(g, {})]
    stale = [f"{g}={o}" for g, options in EFFECTS.items() for o in options if (g, o) not in _cases()]
    assert not missing, f"options without an effect check in tests/test_option_effects.py: {missing}"
    assert not stale, f"effect checks without a conf/ file: {stale}"
