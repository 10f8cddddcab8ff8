"""The run folder has one owner (trainer_cli/run_folder.py): its layout, the one rule for
"run folder -> trained weights", and the one rebuild that evaluate, predict, export and
ensembles share, fine-tuning structure included."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer_cli import build, run_folder
from trainer_cli.config import UserError, resolve
from trainer_cli.train import run

CNN = ["model=cnn", "model.channels=[4,8]", "logger=[none]", "epochs=1", "trainer.limit_train_batches=4"]


def test_the_trained_weights_rule_is_best_then_last_then_an_error(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(UserError, match=r"^checkpoint: '.*run' is neither a run folder nor a checkpoint file$"):
        run_folder.trained_weights(run_dir)
    run_folder.checkpoint_dir(run_dir).mkdir(parents=True)
    with pytest.raises(UserError, match=r"^init_from: '.*' has no checkpoints/best.pt or checkpoints/last.pt$"):
        run_folder.trained_weights(run_dir, key="init_from")
    run_folder.last_checkpoint(run_dir).write_bytes(b"")
    assert run_folder.trained_weights(run_dir) == run_dir / "checkpoints" / "last.pt"
    run_folder.best_checkpoint(run_dir).write_bytes(b"")
    assert run_folder.trained_weights(run_dir) == run_dir / "checkpoints" / "best.pt"
    assert run_folder.trained_weights(run_dir / "checkpoints" / "last.pt").name == "last.pt"  # a file: as given


def test_snapshots_are_in_cycle_order(tmp_path):
    for cycle in (10, 2, 1):
        path = run_folder.snapshot_checkpoint(tmp_path, cycle)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"")
    assert [p.name for p in run_folder.snapshots(tmp_path)] == ["snapshot_1.pt", "snapshot_2.pt", "snapshot_10.pt"]


@pytest.mark.parametrize("finetune", ["probe_stage", "lora"])
def test_finetuned_runs_can_be_evaluated_and_ensembled(make_cfg, tmp_path, finetune):
    """A probe_stage run saves a StageProbe, a LoRA run a merged plain model: the rebuild
    puts each back in its structure, so evaluate and ensembles reproduce the run's test set."""
    run_dir = tmp_path / "run"
    summary = run(make_cfg(*CNN, f"finetune={finetune}"), run_dir)
    cfg = make_cfg(*CNN, "mode=evaluate", f"checkpoint={run_dir}")
    evaluated = build.procedure(resolve(cfg))(cfg, tmp_path / "evaluate")
    assert evaluated["test/acc"] == pytest.approx(summary["test/acc"])
    cfg = make_cfg(*CNN, "mode=ensemble", f"ensemble=[{run_dir}]")
    ensembled = build.procedure(resolve(cfg))(cfg, tmp_path / "ensemble")
    assert ensembled["members"][0]["test/acc"] == pytest.approx(summary["test/acc"])


def test_no_module_but_run_folder_spells_the_checkpoint_paths():
    source = Path(build.__file__).parent
    texts = {path.name: path.read_text() for path in source.rglob("*.py") if path.name != "run_folder.py"}
    spelled = sorted(name for name, text in texts.items() if any(s in text for s in ('"best.pt"', '"last.pt"')))
    assert spelled == []
    # "checkpoints" elsewhere is torch hub's own cache folder only
    hub = sorted(name for name, text in texts.items() if '/ "checkpoints"' in text)
    assert hub == ["torchvision_models.py", "transfer.py"]
