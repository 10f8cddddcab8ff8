"""The GPU fast path, tested on the CPU: the NaN check without a per-step sync, the fp16
scaler's skipped steps (decoupled weight decay skips with them), channels-last and compile."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.conftest import build_run
from trainer_cli.loop import NonFiniteLoss, StepOptions, StepParts, train_one_epoch
from trainer_cli.optim.schedules import Scheduler


def batches(count: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (torch.randn(8, 6, generator=generator), torch.randint(0, 3, (8,), generator=generator)) for _ in range(count)
    ]


def model_and_optimizer(decoupled: float = 0.1):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    # Plain SGD without momentum: a skipped step is then exactly no change at all.
    optimizer = torch.optim.SGD([{"params": list(model.parameters()), "decoupled_l2": decoupled}], lr=0.1)
    return model, optimizer, Scheduler(optimizer, lambda step: 1.0)


class NaNAt:
    """Cross-entropy, but NaN on the `bad`-th call."""

    def __init__(self, bad: int) -> None:
        self.calls, self.bad = 0, bad

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = nn.functional.cross_entropy(logits, labels)
        return loss * float("nan") if self.calls == self.bad + 1 else loss


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_deferred_check_raises_at_the_epoch_end_and_no_nan_reaches_the_weights():
    model, optimizer, scheduler = model_and_optimizer()
    options = StepOptions(nan_check="deferred")
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at step 3; noticed at step 4") as error:
        train_one_epoch(StepParts(model, optimizer, scheduler, NaNAt(3), options), batches(4), step=0)
    assert error.value.step == 3
    # The bad step changed nothing (gradient zeroed, decoupled decay skipped): the weights are
    # those after the first three batches.
    reference, ref_optimizer, ref_scheduler = model_and_optimizer()
    train_one_epoch(
        StepParts(reference, ref_optimizer, ref_scheduler, nn.CrossEntropyLoss(), options), batches(3), step=0
    )
    assert all(torch.equal(a, b) for a, b in zip(weights(model), weights(reference), strict=True))


def test_deferred_check_raises_at_the_next_logging_step():
    model, optimizer, scheduler = model_and_optimizer()
    logged = []
    options = StepOptions(nan_check="deferred", log_every_n_steps=2)
    with pytest.raises(NonFiniteLoss, match=r"at step 0; noticed at step 2"):
        train_one_epoch(
            StepParts(model, optimizer, scheduler, NaNAt(0), options),
            batches(6),
            step=0,
            on_log=lambda s, v: logged.append(s),
        )
    assert logged == []  # raised before the window's NaN numbers are logged
    assert all(torch.isfinite(w).all() for w in weights(model))


def test_step_check_raises_before_the_step():
    model, optimizer, scheduler = model_and_optimizer()
    before = weights(model)
    with pytest.raises(NonFiniteLoss, match=r"at step 0; stopped before the optimizer step"):
        train_one_epoch(
            StepParts(model, optimizer, scheduler, NaNAt(0), StepOptions(nan_check="step")), batches(2), step=0
        )
    assert all(torch.equal(a, b) for a, b in zip(weights(model), before, strict=True))


def test_a_step_the_grad_scaler_skips_skips_the_decoupled_weight_decay_too():
    def run(count: int, overflow_at: int | None):
        model, optimizer, scheduler = model_and_optimizer(decoupled=0.5)
        calls = [0]

        def overflow(grad: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            return grad * float("inf") if calls[0] == (overflow_at or 0) + 1 and overflow_at is not None else grad

        model[0].weight.register_hook(overflow)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
        options = StepOptions(scaler=scaler, nan_check="step")
        train_one_epoch(StepParts(model, optimizer, scheduler, nn.CrossEntropyLoss(), options), batches(count), step=0)
        return weights(model), scaler.get_scale()

    skipped, scale = run(2, overflow_at=1)  # the second step overflows: skipped, scale halved
    after_one, first_scale = run(1, overflow_at=None)
    assert scale == first_scale / 2
    assert all(torch.equal(a, b) for a, b in zip(skipped, after_one, strict=True))
    # Without the overflow, the second step (and its decay) does change the weights.
    assert not all(torch.equal(a, b) for a, b in zip(run(2, None)[0], after_one, strict=True))


def test_channels_last_trains_conv_nets_in_that_format_to_the_same_numbers(make_cfg):
    cnn = [
        "data=synthetic",
        "model=cnn",
        "model.channels=[8]",
        "data.source.num_train=256",
        "batch_size=64",
        "data.in_channels=3",
    ]
    runs = {}
    for flag in (False, True):
        torch.manual_seed(0)
        pieces = build_run(make_cfg(*cnn, f"trainer.channels_last={str(flag).lower()}"))
        conv = next(m for m in pieces.model.modules() if isinstance(m, nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == flag
        seen: list[bool] = []
        conv.register_forward_pre_hook(
            lambda module, args, seen=seen: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
        )
        metrics, _ = train_one_epoch(pieces.step_parts, pieces.data.train, step=0)
        assert all(seen) == flag
        runs[flag] = metrics
    assert runs[True]["loss"] == pytest.approx(runs[False]["loss"], rel=1e-4)


@pytest.mark.slow
def test_compile_runs_the_model_through_torch_compile_to_the_same_numbers(make_cfg):
    from torch._dynamo.utils import counters

    results = {}
    for flag in (False, True):
        counters.clear()
        torch.manual_seed(0)
        pieces = build_run(
            make_cfg("data=synthetic", "data.source.num_train=256", f"trainer.compile={str(flag).lower()}")
        )
        results[flag], _ = train_one_epoch(pieces.step_parts, pieces.data.train, step=0)
        assert (counters["stats"]["unique_graphs"] > 0) == flag
        assert set(pieces.model.state_dict()) == set(copy.deepcopy(pieces.model).state_dict())
    assert results[True]["loss"] == pytest.approx(results[False]["loss"], rel=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_deferred_check_keeps_nan_out_of_the_weights():
    model, optimizer, scheduler = model_and_optimizer()
    model.cuda()
    data = [(x.cuda(), y.cuda()) for x, y in batches(4)]
    options = StepOptions(device=torch.device("cuda"))  # nan_check=auto: deferred on CUDA
    assert options.deferred_nan_check
    with pytest.raises(NonFiniteLoss, match=r"at step 1; noticed at step 4"):
        train_one_epoch(StepParts(model, optimizer, scheduler, NaNAt(1), options), data, step=0)
    assert all(torch.isfinite(w).all() for w in weights(model))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_on_cuda_channels_last_compile_and_mixed_precision_train(make_cfg, precision):
    cfg = make_cfg(
        "experiment=synthetic_bench", "data.source.num_train=1024", "trainer.device=cuda", "trainer.channels_last=true",
        "trainer.compile=true", f"trainer.precision={precision}",
    )  # fmt: skip
    pieces = build_run(cfg)
    assert (pieces.options.scaler is not None) == (precision == "16")
    first, _ = train_one_epoch(pieces.step_parts, pieces.data.train, step=0)
    second, _ = train_one_epoch(pieces.step_parts, pieces.data.train, step=0)
    assert second["loss"] < first["loss"]
