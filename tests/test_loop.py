"""The loop's optimization features, by their effect: gradient accumulation equals the big
batch, clipping bounds the gradient, EMA weights follow their formula, and the logged
update-to-weight ratios and per-group learning rates are the real ones."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trainer_cli import build
from trainer_cli.config import resolve
from trainer_cli.loop import (
    UPDATE_SAMPLE,
    StepOptions,
    StepParts,
    UpdateRatios,
    train_full_batch,
    train_one_epoch,
)

CPU = torch.device("cpu")


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))  # no batch norm


def data(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def split(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(zip(x.split(size), y.split(size), strict=True))


def epoch(model, batches, optimizer, ema=None, on_log=None, **options) -> tuple[dict, int]:
    """One epoch with a constant LR; `options` are StepOptions (clipping, accumulation...)."""
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    parts = StepParts(model, optimizer, scheduler, nn.CrossEntropyLoss(), StepOptions(**options), ema=ema)
    return train_one_epoch(parts, batches, step=0, on_log=on_log)


@pytest.mark.parametrize("option", ["sgd", "momentum", "adam"])
def test_accumulating_4_batches_of_32_equals_one_batch_of_128(option, make_cfg):
    cfg = resolve(make_cfg(f"optimizer={option}"))
    x, y = data(2 * 128 + 16)  # two full windows and a short last one
    big, small = mlp(), mlp()
    big_opt, small_opt = build.optimizer(cfg, big), build.optimizer(cfg, small)
    _, big_steps = epoch(big, split(x[:256], y[:256], 128) + [(x[256:], y[256:])], big_opt)
    _, small_steps = epoch(small, split(x, y, 32), small_opt, accumulate_grad_batches=4)
    assert big_steps == small_steps == 3
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(big[0].weight, mlp()[0].weight)  # it trained


def test_grad_clip_norm_bounds_the_update_of_plain_sgd():
    # With SGD at lr 1 the update is minus the (clipped) gradient: its global norm is the bound.
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = data(64)
    epoch(model, [(x * 100, y)], torch.optim.SGD(model.parameters(), lr=1.0), grad_clip_norm=0.5)
    update = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)])
    assert update.norm() == pytest.approx(0.5, rel=1e-5)


def test_grad_clip_value_clamps_each_element():
    model, reference = mlp(), mlp()
    x, y = data(64)
    epoch(model, [(x * 100, y)], torch.optim.SGD(model.parameters(), lr=1.0), grad_clip_value=0.01)
    nn.functional.cross_entropy(reference(x * 100), y).backward()
    for p, r in zip(model.parameters(), reference.parameters(), strict=True):
        update = r.detach() - p.detach()  # = the clipped gradient
        torch.testing.assert_close(update, r.grad.clamp(-0.01, 0.01), rtol=1e-5, atol=1e-7)
    assert max(r.grad.abs().max() for r in reference.parameters()) > 0.01  # clipping was active


def test_ema_weights_equal_the_formula_after_k_steps(make_cfg):
    decay, k = 0.8, 4
    cfg = resolve(make_cfg("optimizer=sgd", "trainer.ema_decay=0.8"))
    model = mlp()
    ema = build.ema(cfg, model)
    optimizer = build.optimizer(cfg, model)
    snapshots = [copy.deepcopy(model.state_dict())]
    x, y = data(32 * k)
    for batch in split(x, y, 32):
        epoch(model, [batch], optimizer, ema=ema)
        snapshots.append(copy.deepcopy(model.state_dict()))
    # ema_k = d^k w_0 + (1 - d) * sum_{t=1..k} d^(k-t) w_t
    for name, value in ema.module.state_dict().items():
        expected = decay**k * snapshots[0][name]
        expected = expected + sum((1 - decay) * decay ** (k - t) * snapshots[t][name] for t in range(1, k + 1))
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ema.module[0].weight, model[0].weight)


def test_logged_update_ratio_and_group_lrs_are_the_real_ones(make_cfg):
    cfg = resolve(make_cfg("optimizer=sgd", "lr=0.05", "optimizer.weight_decay=1e-4"))  # two groups
    model = mlp()
    optimizer = build.optimizer(cfg, model)
    optimizer.param_groups[1]["lr"] = 0.02  # the 1-D group, so the two curves differ
    before = model[0].weight.detach().clone()
    logged = []
    x, y = data(32)
    epoch(model, [(x, y)], optimizer, log_every_n_steps=1, on_log=lambda step, scalars: logged.append(scalars))
    scalars = logged[0]
    expected = float((model[0].weight.detach() - before).norm() / before.norm())
    assert scalars["update_ratio/0.weight"] == pytest.approx(expected, rel=1e-5)
    ratios = {k for k in scalars if k.startswith("update_ratio/")}
    assert ratios == {"update_ratio/0.weight", "update_ratio/2.weight"}  # weight matrices only
    assert scalars["lr/decay"] == pytest.approx(0.05) and scalars["lr/no_decay"] == pytest.approx(0.02)


def test_update_ratio_of_a_large_weight_is_read_on_a_sample_within_a_few_percent():
    # 784x256 entries: read at UPDATE_SAMPLE of them, not copied whole at every log line.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = torch.get_rng_state()
    ratios = UpdateRatios([("1.weight", model[1].weight), ("3.weight", model[3].weight)])
    assert torch.equal(torch.get_rng_state(), state)  # its sample draws none of the run's random numbers
    assert ratios.index[0].numel() == UPDATE_SAMPLE and ratios.index[1] is None  # 2,560 entries: all read
    before, whole = ratios.read(), model[1].weight.detach().clone()
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    exact = float((model[1].weight.detach() - whole).norm() / whole.norm())
    logged = ratios.since(before)
    assert logged["update_ratio/1.weight"] == pytest.approx(exact, rel=0.05)
    assert logged["update_ratio/1.weight"] != exact  # a sample, not the whole weight
    assert exact > 0


@pytest.mark.parametrize("option", ["sgd", "momentum", "adam"])
def test_without_decay_one_group_and_a_checkpoint_with_the_two_groups_continues_bit_for_bit(option, make_cfg):
    # Nothing decays: the 1-D parameters need no group of their own (a second group costs
    # the optimizer a pass of its own every step). A checkpoint written with the two groups
    # "decay" and "no_decay" (as before) loads into the one group and steps identically.
    from trainer_cli.optim.params import parameter_groups

    cfg = resolve(make_cfg(f"optimizer={option}", "lr=0.05"))
    x, y = data(64)
    old, new = mlp(), mlp()
    old_opt = type(build.optimizer(cfg, mlp()))(parameter_groups(old, 0.0, decoupled_l2=1.0), lr=0.05)
    for group in old_opt.param_groups:
        group["decoupled_l2"] = 0.0  # the old layout: two groups with the same options, nothing decays
    new_opt = build.optimizer(cfg, new)
    assert [g["name"] for g in new_opt.param_groups] == ["all"]
    assert len(new_opt.param_groups[0]["params"]) == len(list(new.parameters()))
    assert [
        g["name"]
        for g in build.optimizer(
            resolve(make_cfg(f"optimizer={option}", "optimizer.weight_decay=0.1")), mlp()
        ).param_groups
    ] == ["decay", "no_decay"]
    for batch in split(x, y, 16)[:2]:
        epoch(old, [batch], old_opt)
    new.load_state_dict(old.state_dict())
    new_opt.load_state_dict(copy.deepcopy(old_opt.state_dict()))  # as a checkpoint holds it: not shared
    epoch(old, split(x, y, 16)[2:], old_opt)
    epoch(new, split(x, y, 16)[2:], new_opt)
    for a, b in zip(old.parameters(), new.parameters(), strict=True):
        assert torch.equal(a, b)


def test_resuming_an_optimizer_state_that_does_not_fit_is_one_line_naming_it(make_cfg):
    from trainer_cli import checkpoint
    from trainer_cli.config import UserError

    decayed = build.optimizer(resolve(make_cfg("optimizer=adam", "optimizer.weight_decay=0.1")), mlp())
    plain = build.optimizer(resolve(make_cfg("optimizer=adam")), mlp())
    with pytest.raises(UserError, match=r"^resume: the checkpoint's 'optimizer' state does not fit this run \(.*group"):
        checkpoint.restore({"optimizer": plain}, {"optimizer": decayed.state_dict()})


@pytest.mark.parametrize("accumulate", [1, 2])
def test_epoch_and_logged_loss_and_accuracy_are_the_means_over_the_samples_trained(accumulate):
    # The running sums (Python numbers on the CPU, read once per step) against the same
    # training written out by hand: each batch's loss (at the weights it was trained with)
    # and its correct predictions, weighted by its size; a short last batch included.
    x, y = data(5 * 16 + 6)
    batches = split(x, y, 16)
    model, reference = mlp(), mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    losses, correct = [], []
    for index, (images, labels) in enumerate(batches):
        logits = reference(images)
        loss = nn.functional.cross_entropy(logits, labels)
        losses.append(loss.item() * len(labels))
        correct.append(int((logits.argmax(1) == labels).sum()))
        if index % accumulate == 0:
            ref_optimizer.zero_grad()
            window = min(accumulate, len(batches) - index)  # a short last window: its own mean
        (loss / window).backward()
        if (index + 1) % accumulate == 0 or index + 1 == len(batches):
            ref_optimizer.step()
    logged = []
    metrics, steps = epoch(
        model, batches, optimizer, log_every_n_steps=1, accumulate_grad_batches=accumulate,
        on_log=lambda step, scalars: logged.append(scalars),
    )  # fmt: skip
    assert metrics["loss"] == pytest.approx(sum(losses) / len(y), rel=1e-6)
    assert metrics["acc"] == sum(correct) / len(y)
    windows = [range(i, min(i + accumulate, len(batches))) for i in range(0, len(batches), accumulate)]
    sizes = [sum(len(batches[i][1]) for i in w) for w in windows]
    assert [s["train/loss_step"] for s in logged] == pytest.approx(
        [sum(losses[i] for i in w) / n for w, n in zip(windows, sizes, strict=True)], rel=1e-6
    )
    assert [s["train/acc_step"] for s in logged] == [
        sum(correct[i] for i in w) / n for w, n in zip(windows, sizes, strict=True)
    ]
    assert steps == len(windows) and metrics["acc"] > 0
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b)  # the same training


def test_full_batch_lbfgs_step_lowers_the_loss_with_several_evaluations(make_cfg):
    cfg = resolve(make_cfg("optimizer=lbfgs"))
    model = mlp()
    optimizer = build.optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    x, y = data(256)
    logged = []
    batches, loss_fn = split(x, y, 64), nn.CrossEntropyLoss()
    kwargs = dict(on_log=lambda step, scalars: logged.append(scalars))
    parts = StepParts(model, optimizer, scheduler, loss_fn)
    first, step = train_full_batch(parts, batches, step=0, **kwargs)
    second, step = train_full_batch(parts, batches, step=1, **kwargs)
    assert step == 2
    with torch.no_grad():
        initial = float(nn.functional.cross_entropy(mlp()(x), y))
    assert first["loss"] == pytest.approx(initial, rel=1e-5)  # the loss over the whole set, before the step
    assert second["loss"] < 0.9 * first["loss"]
    assert logged[0]["function_evaluations"] > 1
