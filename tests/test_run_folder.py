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


# ---------------------------------------------------------------- data loss (issue 19, class 4)


def test_a_new_run_refuses_a_folder_that_holds_a_run_unless_told(tmp_path):
    from trainer_cli import faults

    run_dir = tmp_path / "run"
    run_folder.checkpoint_dir(run_dir).mkdir(parents=True)  # a run, finished or not
    with pytest.raises(UserError, match=r"^hydra.run.dir: .* holds a run already; continue it with resume=.*, "
                       r"or replace it with overwrite=true$"):  # fmt: skip
        faults.claim_run_folder(run_dir, ["epochs=1"])
    faults.claim_run_folder(run_dir, ["overwrite=true"])  # the switch the error names
    faults._held.pop(str(run_dir.resolve())).close()
    faults.claim_run_folder(tmp_path / "new", [])  # a new folder: claimed (locked), nothing refused
    faults._held.pop(str((tmp_path / "new").resolve())).close()


def test_clean_up_removes_only_the_files_the_run_made(tmp_path):
    import os
    import time

    from trainer_cli import faults

    mine = tmp_path / "mine"
    (mine / "nested" / "deeper").mkdir(parents=True)
    (mine / "nested" / "deeper" / "notes.txt").write_text("the user's")
    (mine / "old.txt").write_text("the user's too")
    before = time.time() - 3600
    for path in (mine / "nested" / "deeper" / "notes.txt", mine / "old.txt"):
        os.utime(path, (before, before))  # older than this process
    (mine / ".hydra").mkdir()
    (mine / ".hydra" / "config.yaml").write_text("written by this run")
    (mine / "train.log").write_text("")
    faults.discard_empty_run_folder(mine)
    assert (mine / "nested" / "deeper" / "notes.txt").read_text() == "the user's" and (mine / "old.txt").is_file()
    assert not (mine / ".hydra").exists() and not (mine / "train.log").exists()  # the run's own files went
    fresh = tmp_path / "fresh"
    (fresh / ".hydra").mkdir(parents=True)
    (fresh / ".hydra" / "overrides.yaml").write_text("[]")
    faults.discard_empty_run_folder(fresh)
    assert not fresh.exists()  # a folder the failed run made alone: gone
    kept = tmp_path / "kept"
    (kept / ".hydra").mkdir(parents=True)
    (kept / "resolved_config.yaml").write_text("seed: 0")
    faults.discard_empty_run_folder(kept)
    assert (kept / "resolved_config.yaml").is_file()  # a run that wrote its record: a failed run, kept


@pytest.mark.slow
def test_a_second_run_in_a_running_runs_folder_touches_nothing(tmp_path):
    """The lock comes before Hydra's first write: .hydra/config.yaml of the running run stays."""
    from tests.conftest import run_train
    from trainer_cli import faults

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("the running run's config\n")
    held = faults.lock_run_folder(run_dir)  # as the running train holds it
    try:
        result = run_train(["epochs=1", f"hydra.run.dir={run_dir}"], cwd=tmp_path, check=False)
    finally:
        held.close()
        faults._held.clear()
    assert result.returncode == 2 and "is in use by a running train" in result.stderr
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "the running run's config\n"
    assert not (run_dir / "train.log").exists()


@pytest.mark.slow
def test_a_new_run_does_not_replace_a_finished_run_and_a_failing_one_keeps_nested_files(tmp_path):
    import os
    import time

    from tests.conftest import run_train

    args = ["epochs=1", "trainer.limit_train_batches=2", "logger=[none]", "trainer.device=cpu"]
    run_train([*args, "hydra.run.dir=done"], cwd=tmp_path)
    summary = (tmp_path / "done" / "metrics.json").read_text()
    refused = run_train([*args, "hydra.run.dir=done", "seed=1"], cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "overwrite=true" in refused.stderr
    assert (tmp_path / "done" / "metrics.json").read_text() == summary  # untouched
    run_train([*args, "hydra.run.dir=done", "seed=1", "overwrite=true"], cwd=tmp_path)
    assert (tmp_path / "done" / "metrics.json").read_text() != summary  # replaced, as asked
    user = tmp_path / "user" / "a" / "b"
    user.mkdir(parents=True)
    (user / "data.txt").write_text("keep me")
    os.utime(user / "data.txt", (time.time() - 60, time.time() - 60))  # the user's, from before the run
    failed = run_train([*args, "hydra.run.dir=user", "model.width=-3"], cwd=tmp_path, check=False)
    assert failed.returncode == 2 and (user / "data.txt").read_text() == "keep me"
    assert not (tmp_path / "user" / ".hydra").exists()  # the failed run's own files went


def test_a_new_run_starts_only_in_a_new_or_empty_folder(tmp_path):
    from trainer_cli import faults

    user = tmp_path / "user"
    user.mkdir()
    (user / "metrics.csv").write_text("the user's spreadsheet\n")  # not a run, but not the run's
    with pytest.raises(UserError, match=r"^hydra.run.dir: .* is not empty; a new run starts in a new or empty folder"):
        faults.claim_run_folder(user, ["epochs=1"])
    assert (user / "metrics.csv").read_text() == "the user's spreadsheet\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    faults.claim_run_folder(empty, [])
    faults._held.pop(str(empty.resolve())).close()


def test_a_failed_start_removes_only_its_own_files_whatever_their_times(tmp_path):
    """Clean-up goes by what the claim saw, not by file times (a user's fresh train.log stays)."""
    from trainer_cli import faults

    new = tmp_path / "new"
    faults.claim_run_folder(new, [])
    (new / ".hydra").mkdir()
    (new / ".hydra" / "config.yaml").write_text("written by this run")
    faults.discard_empty_run_folder(new)
    faults._held.pop(str(new.resolve())).close()
    assert not new.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train.log").write_text("the user's own log, written a moment ago\n")
    faults.claim_run_folder(mine, ["overwrite=true"])  # told to write into it: its files are not the run's
    faults.discard_empty_run_folder(mine)
    faults._held.pop(str(mine.resolve())).close()
    assert (mine / "train.log").read_text() == "the user's own log, written a moment ago\n"


def test_a_run_folder_with_a_link_is_refused_and_the_lock_follows_none(tmp_path):
    from trainer_cli import faults

    victim = tmp_path / "victim.txt"
    victim.write_text("v\n")
    run_dir = tmp_path / "shared_run"
    run_folder.checkpoint_dir(run_dir).mkdir(parents=True)
    (run_dir / ".lock").symlink_to(victim)
    with pytest.raises(UserError, match=r"^resume: .*\.lock is a symbolic link \(to .*victim.txt\); a run writes only"):
        faults.lock_run_folder(run_dir)
    (run_dir / ".lock").unlink()
    (run_dir / "checkpoints" / "best.pt").symlink_to(victim)
    with pytest.raises(UserError, match=r"best.pt is a symbolic link"):
        faults.lock_run_folder(run_dir)
    assert victim.read_text() == "v\n"


def test_a_default_run_folder_through_a_link_of_the_current_folder_is_refused(tmp_path, monkeypatch):
    from trainer_cli import faults

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    here = tmp_path / "repo"
    here.mkdir()
    (here / "outputs").symlink_to(elsewhere)
    monkeypatch.chdir(here)
    (elsewhere / "2026" / "run").mkdir(parents=True)  # as Hydra makes the run folder before the check
    with pytest.raises(
        UserError, match=r"^hydra.run.dir: .*outputs is a symbolic link .* name it on your command line"
    ):
        faults.refuse_link_on_the_way(Path("outputs/2026/run"), "hydra.run.dir")
    assert not any(elsewhere.iterdir())  # nothing left behind through the link
    faults.refuse_link_on_the_way(Path("real/run"), "hydra.run.dir")  # no link on the way
    faults.refuse_link_on_the_way(elsewhere / "run", "hydra.run.dir")  # outside: named by the user


def test_a_figure_replaces_a_link_instead_of_writing_through_it(tmp_path):
    from matplotlib.figure import Figure

    from trainer_cli.figures import save

    victim = tmp_path / "bashrc"
    victim.write_text("# rc\n")
    (tmp_path / "compare.png").symlink_to(victim)
    save(Figure(figsize=(1, 1)), tmp_path / "compare.png")
    assert victim.read_text() == "# rc\n" and not (tmp_path / "compare.png").is_symlink()
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_a_hard_link_in_a_run_folder_is_refused(tmp_path):
    import os

    from trainer_cli import faults

    victim = tmp_path / "victim.txt"
    victim.write_text("v\n")
    run_dir = tmp_path / "shared_run"
    run_dir.mkdir()
    os.link(victim, run_dir / "train.log")
    with pytest.raises(UserError, match=r"^resume: .*train.log is a hard link"):
        faults.lock_run_folder(run_dir)
    assert victim.read_text() == "v\n"


def test_a_folder_holding_another_jobs_run_is_refused_the_same_jobs_continued(tmp_path):
    """A sweep job (or a requeued run with preempted.json) continues only its own run."""
    from trainer_cli import faults

    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (job / "preempted.json").write_text('{"step": 3, "signal": "SIGTERM"}\n')
    with pytest.raises(UserError, match=r"^hydra.run.dir: .* is not empty"):
        faults.claim_run_folder(job, ["seed=1"])  # another job's (or another config's) folder
    faults.claim_run_folder(job, ["seed=0"])  # the same job: continued
    faults._held.pop(str(job.resolve())).close()


def test_nothing_is_downloaded_or_logged_through_a_link_of_the_current_folder(tmp_path, monkeypatch):
    """A downloaded repo's `data -> ~/x` or `mlruns -> ~/x`: the shipped relative defaults are
    not written through it (reading data already there through a link still works)."""
    from trainer_cli.data.sources import load_mnist

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    here = tmp_path / "repo"
    here.mkdir()
    (here / "data").symlink_to(elsewhere)
    (here / "mlruns").symlink_to(elsewhere)
    monkeypatch.chdir(here)
    with pytest.raises(UserError, match=r"^data.source.root: MNIST files not found in 'data/mnist', and a download"):
        load_mnist("data/mnist", download=True)
    pytest.importorskip("mlflow")
    from trainer_cli.sinks import MLflow

    with pytest.raises(UserError, match=r"^logger.mlflow.tracking_uri: 'mlruns' goes through .*mlruns, a link"):
        MLflow(here / "run", tracking_uri="mlruns")
    assert not any(elsewhere.iterdir())


def test_a_refused_claim_leaves_the_folders_lock_as_it_was(tmp_path):
    from trainer_cli import faults

    run_dir = tmp_path / "someones_run"
    run_folder.checkpoint_dir(run_dir).mkdir(parents=True)
    (run_dir / ".lock").write_text("pid 123 (the owner's note)")
    with pytest.raises(UserError, match=r"holds a run already"):
        faults.claim_run_folder(run_dir, ["seed=1"])
    assert (run_dir / ".lock").read_text() == "pid 123 (the owner's note)"
    other = tmp_path / "user_folder"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"is not empty"):
        faults.claim_run_folder(other, [])
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]  # the lock this claim made: gone


def test_a_sweep_starts_in_a_new_or_empty_folder_or_continues_its_own(tmp_path):
    from trainer_cli.sweep import refuse_a_foreign_folder
    from trainer_cli.sweeper import RECORD

    refuse_a_foreign_folder(tmp_path / "new")
    someones = tmp_path / "someones_sweep"
    (someones / "0").mkdir(parents=True)
    with pytest.raises(UserError, match=r"^hydra.sweep.dir: .* holds no sweep record \(search.yaml\)"):
        refuse_a_foreign_folder(someones)
    (someones / RECORD).write_text("params: {}\nfixed: {}\n")  # a sweep of ours: its sweeper compares
    refuse_a_foreign_folder(someones)
