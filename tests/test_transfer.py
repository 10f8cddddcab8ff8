"""Transfer learning: init_from, the finetune group, LoRA, data subsets, snapshot ensembles.

Each test checks an effect (which tensors changed, which learning rates, which outputs),
in-process on digits with a tiny CNN.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import build_run
from trainer_cli.config import UserError

CNN = ["model=cnn", "model.channels=[4,8]", "logger=[]", "trainer.log_every_n_steps=1000"]


def train_one_epoch(pieces, epoch: int = 1) -> None:
    from trainer_cli import loop

    pieces.finetune.start_epoch(pieces.model, epoch)
    loop.train_one_epoch(pieces.step_parts, pieces.data.train, step=0)


def changed_tensors(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    """The state_dict entries (parameters and buffers) that are no longer bit-identical."""
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_blocks_of_every_model_kind_ends_with_the_head():
    import torchvision

    from trainer_cli.models import CNN as Cnn
    from trainer_cli.models import MLP, ResNet
    from trainer_cli.models.stages import blocks_of

    def names(model):
        return [name for name, _ in blocks_of(model)]

    assert names(MLP(1, 8, 10, depth=2)) == ["block0", "block1", "head"]
    assert names(Cnn(1, 8, 10, channels=[4, 8], convs_per_stage=1)) == ["block0", "block1", "head"]
    assert names(ResNet(1, 8, 10, depth=8)) == ["stem", "stages.0", "stages.1", "stages.2", "head"]
    resnet18 = torchvision.models.resnet18(num_classes=3)
    assert names(resnet18) == ["conv1", "layer1", "layer2", "layer3", "layer4", "head"]
    head = blocks_of(resnet18)[-1][1]
    assert list(head.parameters())[0] is resnet18.fc.weight
    # Every parameter is in exactly one block.
    ids = [id(p) for _, block in blocks_of(resnet18) for p in block.parameters()]
    assert sorted(ids) == sorted(id(p) for p in resnet18.parameters())


def test_linear_probe_leaves_every_frozen_tensor_bit_identical(make_cfg):
    pieces = build_run(make_cfg(*CNN, "finetune=linear_probe"))
    before = snapshot(pieces.model)
    train_one_epoch(pieces)
    changed = changed_tensors(pieces.model, before)
    head = str(len(pieces.model) - 1)  # the CNN's last layer, the Linear head
    assert changed == {f"{head}.weight", f"{head}.bias"}  # BN running statistics included: unchanged
    trainable = {n for n, p in pieces.model.named_parameters() if p.requires_grad}
    assert trainable == {f"{head}.weight", f"{head}.bias"}


def test_last_k_trains_exactly_the_last_k_blocks_and_the_head(make_cfg):
    from trainer_cli.models.stages import blocks_of

    pieces = build_run(make_cfg(*CNN, "finetune=last_k", "finetune.last_k=1"))
    before = snapshot(pieces.model)
    train_one_epoch(pieces)
    blocks = blocks_of(pieces.model)
    expected = set()
    for name, module in pieces.model.named_modules():
        if any(module is m for _, block in blocks[-2:] for m in block):
            expected |= {f"{name}.{k}" for k in module.state_dict() if k != "num_batches_tracked"}
    changed = {k for k in changed_tensors(pieces.model, before) if not k.endswith("num_batches_tracked")}
    assert changed == expected
    assert len(expected) == 7  # conv weight, BN weight/bias/mean/var of block3; head weight/bias


# A decoupled decay must not shrink a block that is still frozen (only tensors with a gradient decay).
@pytest.mark.parametrize("decay", [[], ["regularization=[l2]", "regularization.l2.decoupled=true"]], ids=["", "l2"])
def test_unfreeze_at_epoch_changes_what_trains_at_that_epoch(make_cfg, decay):
    overrides = [*CNN, *decay, "finetune=last_k", "finetune.last_k=0", "finetune.unfreeze_at_epoch=2"]
    pieces = build_run(make_cfg(*overrides))
    first_conv = pieces.model[0].weight
    # The optimizer holds every parameter that trains in some epoch, from the start.
    assert any(first_conv is p for g in pieces.optimizer.param_groups for p in g["params"])
    before = first_conv.detach().clone()
    train_one_epoch(pieces, epoch=1)
    assert torch.equal(first_conv, before) and not first_conv.requires_grad
    train_one_epoch(pieces, epoch=2)
    assert first_conv.requires_grad and not torch.equal(first_conv, before)
    # What trains is a function of the epoch alone: a resumed run (which calls start_epoch
    # with its next epoch) needs no extra state.
    assert pieces.finetune.start_epoch(pieces.model, 1) == ["head"]


def test_gradual_unfreezing_adds_one_block_every_n_epochs():
    from trainer_cli.transfer import Finetune

    tuning = Finetune(last_k=0, unfreeze_at_epoch=3, unfreeze_every=2)
    assert [tuning.trained_blocks(5, e) for e in range(1, 10)] == [1, 1, 2, 2, 3, 3, 4, 4, 5]


def test_layer_lr_decay_gives_each_earlier_block_a_smaller_rate(make_cfg):
    from trainer_cli.loop import _group_lrs

    pieces = build_run(
        make_cfg(*CNN, "finetune.layer_lr_decay=0.5", "lr=0.01", "scheduler=constant", "optimizer.weight_decay=1e-4")
    )  # with weight decay: each block's "decay" and "no_decay" groups
    lrs = _group_lrs(pieces.optimizer)
    assert lrs["lr/head.decay"] == pytest.approx(0.01)
    assert lrs["lr/block3.decay"] == pytest.approx(0.005)
    assert lrs["lr/block0.decay"] == pytest.approx(0.01 * 0.5**4)
    assert lrs["lr/block0.no_decay"] == pytest.approx(0.01 * 0.5**4)  # BN scales of block 0
    train_one_epoch(pieces)
    assert _group_lrs(pieces.optimizer)["lr/block2.decay"] == pytest.approx(0.0025)  # the ratios stay


def test_lora_trains_only_adapters_and_head_and_merges_to_an_equal_plain_model(make_cfg):
    from trainer_cli import build
    from trainer_cli.models.summary import summarize

    cfg = make_cfg(*CNN, "finetune=lora", "finetune.rank=2", "lr=0.05")
    pieces = build_run(cfg)
    trainable = {n for n, p in pieces.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or n.startswith("16.") for n in trainable)
    _, totals = summarize(pieces.model, (1, 8, 8))
    assert 0 < totals["trainable"] < totals["frozen"]
    base = pieces.model[0].parametrizations.weight.original.detach().clone()
    before = pieces.model[0].weight.detach().clone()
    train_one_epoch(pieces)
    assert torch.equal(pieces.model[0].parametrizations.weight.original, base)  # W itself frozen
    assert not torch.equal(pieces.model[0].weight, before)  # W + BA moved
    plain = build.model(pieces.cfg)
    plain.load_state_dict(pieces.finetune.finish(pieces.model))  # the saved model is a plain CNN
    pieces.model.eval()
    plain.eval()
    images = next(iter(pieces.data.test))[0]
    with torch.no_grad():
        torch.testing.assert_close(plain(images), pieces.model(images), rtol=0, atol=1e-5)


def test_init_from_loads_matching_layers_and_reinitialises_the_head(make_cfg, tmp_path, caplog):
    from trainer_cli import checkpoint

    source = build_run(make_cfg(*CNN, "data.classes=[0,1,2,3,4]")).model
    checkpoint.save({"model": source.state_dict(), "epoch": 1}, tmp_path / "run" / "checkpoints" / "best.pt")
    with caplog.at_level("INFO", logger="trainer_cli"):
        pieces = build_run(make_cfg(*CNN, f"init_from={tmp_path / 'run'}"))
    assert pieces.cfg.init_from == str(tmp_path / "run" / "checkpoints" / "best.pt")
    assert "re-initialised (new head, or shapes differ): 16" in caplog.text
    for name, tensor in pieces.model.state_dict().items():
        if not name.startswith("16."):
            assert torch.equal(tensor, source.state_dict()[name]), name
    assert pieces.model[16].weight.shape == (10, 8)


def test_init_from_carries_the_source_runs_preprocessing_statistics(make_cfg, tmp_path):
    """Pretrained features expect the inputs they were trained on: the target run uses the
    source's channel mean and std, not statistics refitted on its own (few) images."""
    from trainer_cli import checkpoint

    source = build_run(make_cfg(*CNN, "data.classes=[0,1,2,3,4]"))
    state = {"model": source.model.state_dict(), "preprocess": source.data.preprocess.state_dict(), "epoch": 1}
    checkpoint.save(state, tmp_path / "run" / "checkpoints" / "best.pt")
    fresh = build_run(make_cfg(*CNN, "data.classes=[5,6,7,8,9]", "data.samples_per_class=10")).data.preprocess
    carried = build_run(
        make_cfg(*CNN, "data.classes=[5,6,7,8,9]", "data.samples_per_class=10", f"init_from={tmp_path / 'run'}")
    ).data.preprocess
    assert torch.equal(carried.mean, source.data.preprocess.mean)
    assert torch.equal(carried.std, source.data.preprocess.std)
    assert not torch.equal(fresh.mean, carried.mean)  # refitted on the 10-per-class target: other numbers
    # A preprocessing of another kind is fitted anew (the source's statistics do not apply).
    other = build_run(make_cfg(*CNN, "data.preprocess=channel_mean", f"init_from={tmp_path / 'run'}"))
    assert other.data.preprocess.std is None and other.data.preprocess.mean is not None


def test_init_from_gives_a_new_task_a_fresh_head_unless_told(make_cfg, tmp_path):
    """Five classes to five other classes: the shapes match, but the old classifier is no start."""
    from trainer_cli import checkpoint

    source = build_run(make_cfg(*CNN, "data.classes=[0,1,2,3,4]", "seed=1")).model
    checkpoint.save({"model": source.state_dict()}, tmp_path / "five.pt")
    new_task = [*CNN, "data.classes=[5,6,7,8,9]", f"init_from={tmp_path / 'five.pt'}"]
    fresh = build_run(make_cfg(*new_task)).model
    assert not torch.equal(fresh[16].weight, source[16].weight)
    assert torch.equal(fresh[10].weight, source[10].weight)
    kept = build_run(make_cfg(*new_task, "finetune.reset_head=false")).model
    assert torch.equal(kept[16].weight, source[16].weight)


def test_init_from_of_another_architecture_is_a_one_line_error(make_cfg, tmp_path):
    from trainer_cli import checkpoint

    checkpoint.save(build_run(make_cfg("model=mlp", "logger=[]")).model.state_dict(), tmp_path / "mlp.pt")
    with pytest.raises(UserError, match=r"^init_from: '.*mlp.pt' does not fit CNN \(missing 0.weight.*\)") as error:
        build_run(make_cfg(*CNN, f"init_from={tmp_path / 'mlp.pt'}"))
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="^init_from: 'NoSuch_Weights.X' is not a run folder"):
        build_run(make_cfg(*CNN, "init_from=NoSuch_Weights.X"))


@pytest.mark.slow
def test_init_from_a_torchvision_weights_name_reads_torchs_cache(make_cfg, tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    imagenet = torchvision.models.resnet18()  # stands in for the downloaded file (no network here)
    cached = tmp_path / "hub" / "checkpoints" / Path(weights.url).name
    cached.parent.mkdir(parents=True)
    torch.save(imagenet.state_dict(), cached)
    cfg = make_cfg("model=torchvision", "model.name=resnet18", "logger=[]", "init_from=ResNet18_Weights.IMAGENET1K_V1")
    model = build_run(cfg).model
    assert torch.equal(model.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    # A grey first conv is the sum of the RGB kernels.
    assert torch.allclose(model.conv1.weight, imagenet.conv1.weight.sum(1, keepdim=True))


def test_class_subset_few_shot_and_resize(make_cfg):
    cfg = make_cfg("data.classes=[7,2]", "data.samples_per_class=10", "data.image_size=28", "data.val_fraction=0.2")
    pieces = build_run(cfg)
    train_y = torch.cat([y for _, y in pieces.data.train])
    val_y = torch.cat([y for _, y in pieces.data.val])
    assert pieces.data.classes == ["7", "2"] and pieces.cfg.model.num_classes == 2
    assert torch.bincount(torch.cat([train_y, val_y])).tolist() == [10, 10]
    images, labels = next(iter(pieces.data.test))
    assert images.shape[1:] == (1, 28, 28)
    assert set(labels.tolist()) == {0, 1}
    # Seeded: the same split_seed draws the same images.
    again = build_run(cfg)
    assert torch.equal(pieces.data.train.images, again.data.train.images)


def test_bad_class_subset_is_a_one_line_error(make_cfg):
    with pytest.raises(UserError, match=r"^data.classes: '12' is not a class; choose indices 0..9 or names$"):
        build_run(make_cfg("data.classes=[1,12]"))


def snapshot_probabilities(path: Path):
    """One checkpoint's test-set probabilities, computed here from it and its own config."""
    from trainer_cli import build, checkpoint

    state = checkpoint.load(path)
    cfg = OmegaConf.create(state["config"])
    data = build.data(cfg, torch.device("cpu"))
    data.preprocess.load_state_dict(state["preprocess"])
    model = build.model(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    with torch.no_grad():
        return torch.cat([torch.softmax(model(x), dim=1) for x, _ in data.test]).numpy()


@pytest.mark.slow
def test_snapshot_ensemble_is_the_mean_of_the_snapshots(make_cfg, tmp_path):
    import numpy as np

    from trainer_cli import ensemble, train

    run_dir = tmp_path / "run"
    cfg = make_cfg(*CNN, "epochs=3", "scheduler=sgdr", "scheduler.t0_epochs=1", "scheduler.t_mult=1")
    train.run(cfg, run_dir)
    snapshots = sorted((run_dir / "checkpoints").glob("snapshot_*.pt"))
    assert [p.name for p in snapshots] == ["snapshot_0.pt", "snapshot_1.pt", "snapshot_2.pt"]
    ens_cfg = make_cfg(f"ensemble={run_dir}", "mode=ensemble", "mode.snapshots=true")
    summary = ensemble.run_ensemble(ens_cfg, tmp_path / "ens", runs=str(run_dir), snapshots=True)
    assert len(summary["members"]) == 3
    saved = np.load(tmp_path / "ens" / "predictions.npz")
    members = [snapshot_probabilities(p) for p in snapshots]
    np.testing.assert_allclose(saved["ensemble"], np.mean(members, axis=0), rtol=1e-6, atol=1e-7)
    assert not np.allclose(members[0], members[2])  # the snapshots differ


@pytest.mark.slow
def test_lora_run_saves_a_plain_model(make_cfg, tmp_path):
    from trainer_cli import build, checkpoint, train

    cfg = make_cfg(*CNN, "epochs=1", "finetune=lora")
    train.run(cfg, tmp_path / "run")
    state = checkpoint.load(tmp_path / "run" / "checkpoints" / "best.pt")
    saved_cfg = OmegaConf.create(state["config"])
    build.model(saved_cfg).load_state_dict(state["model"])  # strict: no adapter left
    assert not any("lora" in k for k in state["model"])


@pytest.mark.parametrize("option", ["full", "linear_probe", "last_k", "probe_stage", "lora"])
@pytest.mark.parametrize(
    "model", [["model=mlp"], pytest.param(["model=resnet", "model.depth=8"], marks=pytest.mark.slow)]
)
def test_every_finetune_option_builds_on_every_model(make_cfg, option, model):
    pieces = build_run(make_cfg(*model, f"finetune={option}", "logger=[]"))
    trainable = sum(p.numel() for p in pieces.model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in pieces.model.parameters() if not p.requires_grad)
    assert trainable > 0 and (frozen == 0) == (option == "full")


def test_probe_stage_trains_a_linear_head_on_frozen_early_features(make_cfg):
    pieces = build_run(make_cfg(*CNN, "finetune=probe_stage", "finetune.stage=0"))
    model = pieces.model
    assert model.head.in_features == 4  # the first block's channels, globally average-pooled
    before = snapshot(model)
    train_one_epoch(pieces)
    assert changed_tensors(model, before) == {"head.weight", "head.bias"}
    with pytest.raises(UserError, match=r"^finetune.stage: 4 is not a block before the head; choose 0 \(block0\)"):
        build_run(make_cfg(*CNN, "finetune=probe_stage", "finetune.stage=4"))


def test_a_resumed_run_does_not_read_init_from(make_cfg, tmp_path):
    """A resumed run's checkpoint has the weights: its init_from source may be gone."""
    from trainer_cli import build
    from trainer_cli.config import resolve

    cfg = resolve(make_cfg(*CNN, f"init_from={tmp_path / 'gone'}"))
    with pytest.raises(UserError, match="^init_from: no file or folder at"):
        build.pieces(cfg)
    assert build.pieces(cfg, init_weights=False).cfg.init_from == str(tmp_path / "gone")


@pytest.mark.slow
def test_a_finished_lora_run_extends_exactly(make_cfg, tmp_path):
    """`train resume=<lora run> epochs=N`: the run continues from its adapters (last.pt keeps
    them beside the merged model) and ends where an uninterrupted run ends."""
    from trainer_cli import checkpoint, cli_hydra, train

    overrides = [*CNN, "finetune=lora", "scheduler=constant"]
    train.run(make_cfg(*overrides, "epochs=2"), tmp_path / "full")
    train.run(make_cfg(*overrides, "epochs=1"), tmp_path / "short")
    cli_hydra.execute(make_cfg(f"resume={tmp_path / 'short'}", "+resume_with.epochs=2"), tmp_path / "short")
    full, short = (checkpoint.load(tmp_path / run / "checkpoints" / "last.pt") for run in ("full", "short"))
    assert short["loop"]["epoch"] == 2
    assert not any("lora" in k for k in short["model"])  # merged again at the end
    for name, weight in full["model"].items():
        assert torch.equal(weight, short["model"][name]), name
