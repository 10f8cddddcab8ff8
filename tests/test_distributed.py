"""Several processes (DistributedDataParallel over gloo on the CPU): the sharding of batches,
the launcher's command line, and end-to-end runs against one process (slow)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import run_train, wait_for_epoch
from trainer_cli import checkpoint, cli_devices, distributed
from trainer_cli.config import UserError
from trainer_cli.data.loaders import TensorLoader


def shards(world: int, n: int, batch: int, shuffle: bool) -> list[list[tuple[torch.Tensor, float]]]:
    """Each rank's batches (labels = sample index) and shard weights, from one seed."""
    out = []
    for rank in range(world):
        labels = torch.arange(n)
        loader = TensorLoader(
            labels.float().view(n, 1, 1, 1), labels, batch, shuffle, torch.Generator().manual_seed(0), rank=rank,
            world_size=world,
        )  # fmt: skip
        out.append([(y, loader.shard_weight) for _, y in loader])
    return out


@pytest.mark.parametrize("n", [100, 97, 65])
def test_ranks_together_see_the_single_process_batches(n):
    single = [y for y, _ in shards(1, n, 16, shuffle=True)[0]]
    ranks = shards(2, n, 16, shuffle=True)
    assert len(ranks[0]) == len(ranks[1])  # every rank takes the same number of steps (DDP needs it)
    for i, (first, second) in enumerate(zip(*ranks, strict=True)):
        assert torch.equal(torch.cat([first[0], second[0]]), single[i])  # the same global batch, split
        # The weights make each rank's mean loss count by its share: mean over ranks of w_r * mean_r = global mean.
        sizes = [len(first[0]), len(second[0])]
        assert first[1] * sizes[1] == pytest.approx(second[1] * sizes[0])
        assert (first[1] + second[1]) / 2 == pytest.approx(1.0)
    if n % 16 == 1:  # a last batch smaller than the number of ranks: dropped, no rank trains on nothing
        assert len(ranks[0]) == len(single) - 1
    else:
        assert len(ranks[0]) == len(single)


@pytest.mark.parametrize("n", [100, 97, 1])
def test_evaluation_shards_count_every_sample_once(n):
    seen = torch.cat([y for rank in shards(3, n, 16, shuffle=False) for y, _ in rank])
    assert sorted(seen.tolist()) == list(range(n))


def folder_shards(world: int, n: int, batch: int, shuffle: bool) -> list[list[tuple[list[int], float]]]:
    """Each rank's DataLoader batches (labels = sample index) and shard weights, as an image
    folder's loaders draw them: the same DataLoader calls and shuffle generator on every rank."""
    from trainer_cli.data.loaders import DeviceLoader, ShardedBatchSampler

    dataset = torch.utils.data.TensorDataset(torch.zeros(n, 1), torch.arange(n))
    out = []
    for rank in range(world):
        generator = torch.Generator().manual_seed(0)
        if world == 1:
            loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=shuffle, generator=generator)
        else:
            sampler = torch.utils.data.RandomSampler(dataset, generator=generator) if shuffle else range(n)
            batches = ShardedBatchSampler(sampler, batch, rank, world, drop_small_last=shuffle)
            loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, generator=generator)
        device_loader = DeviceLoader(loader, torch.device("cpu"))
        out.append([(y.tolist(), device_loader.shard_weight) for _, y in device_loader])
    return out


@pytest.mark.parametrize("n", [100, 97, 65])
def test_image_folder_ranks_together_see_the_single_process_batches(n):
    single = [y for y, _ in folder_shards(1, n, 16, shuffle=True)[0]]
    ranks = folder_shards(2, n, 16, shuffle=True)
    assert len(ranks[0]) == len(ranks[1])
    for i, (first, second) in enumerate(zip(*ranks, strict=True)):
        assert first[0] + second[0] == single[i]  # the same global batch (same shuffle draws), split
        assert (first[1] + second[1]) / 2 == pytest.approx(1.0)
        assert first[1] * len(second[0]) == pytest.approx(second[1] * len(first[0]))
    assert len(ranks[0]) == len(single) - (1 if n % 16 == 1 else 0)


@pytest.mark.parametrize("n", [100, 97, 1])
def test_image_folder_evaluation_shards_count_every_sample_once(n):
    seen = [i for rank in folder_shards(3, n, 16, shuffle=False) for y, _ in rank for i in y]
    assert sorted(seen) == list(range(n))


def test_devices_on_the_command_line():
    assert cli_devices.typed(["data=digits"]) == 1
    assert cli_devices.typed(["trainer.devices=4"]) == 4
    for bad in ("0", "two", "1.5"):
        with pytest.raises(UserError, match=f"trainer.devices: expected a whole number >= 1, got '{bad}'"):
            cli_devices.typed([f"trainer.devices={bad}"])


def test_printing_the_config_starts_no_processes(tmp_path):
    result = run_train(["trainer.devices=2", "--cfg", "job"], cwd=tmp_path)
    assert result.stdout.count("devices: 2") == 1  # printed once, by this process


def test_other_ranks_write_no_run_folder_of_their_own(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    argv = distributed.worker_overrides(["epochs=1", "hydra.run.dir=/somewhere"])
    assert "hydra.run.dir=/somewhere" not in argv
    assert "hydra.output_subdir=null" in argv and "hydra/job_logging=disabled" in argv
    monkeypatch.setenv("RANK", "0")
    assert distributed.worker_overrides(["hydra.run.dir=/somewhere"]) == ["hydra.run.dir=/somewhere"]


def test_slurm_variables_give_rank_and_first_node(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    for name, value in {"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}.items():
        monkeypatch.setenv(name, value)
    assert distributed.environment_rank() == (0, 1)  # a plain `train` inside an allocation: one process
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")  # a task the submitit launcher started
    assert distributed.environment_rank() == (5, 8)
    assert distributed._first_slurm_node("gpu[003-005,009],cpu1") == "gpu003"
    assert distributed._first_slurm_node("node7") == "node7"


# End to end: 2 processes against 1 ---------------------------------------------------------------

ARGS = ["data=digits", "epochs=3", "batch_size=64", "trainer.device=cpu", "seed=5"]


def rows(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if k.startswith(("train/", "val/"))} for row in csv.DictReader(f)]


def assert_same_curves(a: Path, b: Path) -> None:
    """Losses agree to 1e-5 relative (float32 sums taken in another order on two shards and
    over DDP's gradient all-reduce); accuracies are counts of samples: equal."""
    for row_a, row_b in zip(rows(a), rows(b), strict=True):
        for key in row_a:
            if key.endswith("acc"):
                assert row_a[key] == row_b[key], key
            else:
                assert row_a[key] == pytest.approx(row_b[key], rel=1e-5), key


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    # 1293 training images in batches of 64: the last batch (13) splits 7/6, weighted.
    run_train([*ARGS, f"hydra.run.dir={tmp_path}/one"], cwd=tmp_path)
    run_train([*ARGS, "trainer.devices=2", f"hydra.run.dir={tmp_path}/two"], cwd=tmp_path)
    assert_same_curves(tmp_path / "one", tmp_path / "two")
    # Rank 0 alone wrote: one TensorBoard event file, one log file.
    assert len(list((tmp_path / "two" / "tensorboard").glob("events.*"))) == 1
    assert [p.name for p in (tmp_path / "two").glob("*.log")] == ["train.log"]


@pytest.mark.slow
def test_image_folder_two_processes_match_one_with_the_same_global_batch(tmp_path):
    # 3 classes x 25 PNGs: 60 to train and validate on, 15 held out; in batches of 16 the
    # last training batch divides unevenly between the ranks (weighted).
    from tests.conftest import write_image_folder

    folder = write_image_folder(tmp_path / "images", classes=3, per_class=25, size=8)
    args = ["data=imagefolder", f"data.path={folder}", "data.image_size=8", "data.num_workers=0", "epochs=3",
            "batch_size=16", "trainer.device=cpu", "seed=5"]  # fmt: skip
    run_train([*args, f"hydra.run.dir={tmp_path}/one"], cwd=tmp_path)
    run_train([*args, "trainer.devices=2", f"hydra.run.dir={tmp_path}/two"], cwd=tmp_path)
    assert_same_curves(tmp_path / "one", tmp_path / "two")
    tests = [json.loads((tmp_path / run / "metrics.json").read_text())["test/acc"] for run in ("one", "two")]
    assert tests[0] == tests[1]  # the test split, sharded and summed over ranks: every image once


@pytest.mark.slow
def test_sweep_runs_each_job_as_one_multi_process_run(tmp_path):
    args = ["data=digits", "epochs=1", "batch_size=64", "trainer.device=cpu"]
    sweep = run_train(["-m", *args, "trainer.devices=2", "seed=0,1", f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path)
    assert "Sweep" in sweep.stdout  # the sweep's summary table
    with open(tmp_path / "sweep" / "summary.csv") as f:
        assert [(row["seed"], row["status"]) for row in csv.DictReader(f)] == [("0", "ok"), ("1", "ok")]
    assert "job 1: 2 processes (torchrun)" in (tmp_path / "sweep" / "1" / "train.log").read_text()
    # Job 1 is the run its overrides name (seed=1), trained by 2 ranks: as one process trains it.
    run_train([*args, "seed=1", f"hydra.run.dir={tmp_path}/one"], cwd=tmp_path)
    assert_same_curves(tmp_path / "one", tmp_path / "sweep" / "1")


@pytest.mark.slow
def test_a_failed_multi_process_sweep_job_records_the_ranks_error(tmp_path):
    args = ["-m", "data=digits", "epochs=1", "trainer.device=cpu", "trainer.devices=2", "lr=-1"]
    run_train([*args, f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path, check=False)
    with open(tmp_path / "sweep" / "summary.csv") as f:
        (row,) = csv.DictReader(f)
    assert row["status"] == "failed" and "lr: expected a number > 0, got '-1.0'" in row["error"]


def test_rank_error_is_the_lowest_ranks_last_error_line(tmp_path):
    for rank, text in ((0, "starting\nerror: lr: expected a number > 0\n"), (1, "error: other\n"), (10, "")):
        folder = tmp_path / "run_id" / "attempt_0" / str(rank)
        folder.mkdir(parents=True)
        (folder / "stderr.log").write_text(text)
    assert distributed.rank_error(str(tmp_path)) == "lr: expected a number > 0"
    assert distributed.rank_error(str(tmp_path / "nothing")) is None


def test_sync_batchnorm_converts_only_with_several_processes_on_gpus(monkeypatch):
    from trainer_cli.models import CNN

    def batch_norms(model):
        return {type(m).__name__ for m in model.modules() if "BatchNorm" in type(m).__name__}

    model = CNN(in_channels=1, image_size=8, num_classes=3, channels=[4], norm="batch")
    assert batch_norms(distributed.sync_batchnorm(model, True, torch.device("cpu"))) == {"BatchNorm2d"}  # 1 process
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert batch_norms(distributed.sync_batchnorm(model, True, torch.device("cuda"))) == {"SyncBatchNorm"}
    with pytest.raises(UserError, match="trainer.sync_batchnorm: PyTorch's SyncBatchNorm runs on GPUs only"):
        distributed.sync_batchnorm(model, True, torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_sync_batchnorm_normalizes_over_the_global_batch(tmp_path):
    cnn = [
        "data=digits",
        "epochs=2",
        "batch_size=64",
        "seed=5",
        "model=cnn",
        "model.channels=[8]",
        "trainer.device=cuda",
    ]
    run_train([*cnn, f"hydra.run.dir={tmp_path}/one"], cwd=tmp_path)
    run_train(
        [*cnn, "trainer.devices=2", "trainer.sync_batchnorm=true", f"hydra.run.dir={tmp_path}/sync"], cwd=tmp_path
    )
    run_train([*cnn, "trainer.devices=2", f"hydra.run.dir={tmp_path}/local"], cwd=tmp_path)
    assert_same_curves(tmp_path / "one", tmp_path / "sync")
    # Per-rank statistics (half the batch each) train a different network.
    assert rows(tmp_path / "one")[-1]["train/loss"] != pytest.approx(
        rows(tmp_path / "local")[-1]["train/loss"], rel=1e-5
    )


@pytest.mark.slow
def test_two_processes_killed_and_resumed_end_with_the_same_weights(tmp_path):
    args = ["data=synthetic", "data.source.num_train=6000", "model.width=256", "epochs=4", "trainer.device=cpu"]
    run_train([*args, "trainer.devices=2", f"hydra.run.dir={tmp_path}/full"], cwd=tmp_path)
    # The documented torchrun entry, in its own process group so that the kill takes every rank.
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "trainer_cli",
    ]
    victim = subprocess.Popen(
        [*torchrun, *args, f"hydra.run.dir={tmp_path}/killed"], cwd=tmp_path, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    last = wait_for_epoch(victim, tmp_path / "killed", 2)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed" / "metrics.json").exists()

    run_train([f"resume={tmp_path}/killed", "trainer.devices=2"], cwd=tmp_path)
    assert_same_curves(tmp_path / "full", tmp_path / "killed")
    full = checkpoint.load(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    resumed = checkpoint.load(last)["model"]
    assert all(torch.equal(full[k], resumed[k]) for k in full)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """An uninterrupted 2-process run of STOPPED_RUN."""
    folder = tmp_path_factory.mktemp("two_processes")
    run_train([*STOPPED_RUN, "trainer.devices=2", f"hydra.run.dir={folder}/full"], cwd=folder)
    return folder / "full"


STOPPED_RUN = ["data=synthetic", "data.source.num_train=6000", "model.width=256", "epochs=4", "trainer.device=cpu",
               "logger=[]"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("target", "name"), [("launcher", "SIGTERM"), ("rank 1", "SIGTERM"), ("launcher", "SIGUSR1")])
def test_a_stop_signal_stops_every_rank_at_one_step_and_resumes_exactly(target, name, two_process_run, tmp_path):
    """SIGTERM (or SIGUSR1) to `train trainer.devices=2` (torchrun's agent passes it to both
    ranks), or to rank 1 alone (the ranks agree on the stop): rank 0 writes one checkpoint, the
    launcher exits 75 with the resume line, and the resumed run ends with the uninterrupted weights."""
    run_dir = tmp_path / "stopped"
    train = str(Path(sys.executable).with_name("train"))
    victim = subprocess.Popen([train, *STOPPED_RUN, "trainer.devices=2", f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for_epoch(victim, run_dir, 1)
    rank0 = int((run_dir / ".lock").read_text().split()[1])
    ranks = [int(pid) for pid in Path(f"/proc/{victim.pid}/task/{victim.pid}/children").read_text().split()]
    assert rank0 in ranks and len(ranks) == 2
    os.kill(victim.pid if target == "launcher" else next(pid for pid in ranks if pid != rank0), getattr(signal, name))
    _, stderr = victim.communicate(timeout=120)
    assert victim.returncode == 75, stderr[-2000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("stopped by") and line.endswith(f"continue with: train resume={run_dir.resolve()}")
    assert stderr.count("checkpoint written") == 1  # rank 0's line, once
    stopped = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert 0 < stopped["step"] < 4 * 94 and stopped["step"] == int(line.split("step ")[1].split()[0])
    run_train([f"resume={run_dir}", "trainer.devices=2"], cwd=tmp_path)
    assert_same_curves(two_process_run, run_dir)
    full = checkpoint.load(two_process_run / "checkpoints" / "last.pt")["model"]
    resumed = checkpoint.load(run_dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(full[k], resumed[k]) for k in full)


# Multi-node: the submitit launcher ------------------------------------------------------------------


def test_slurm_launcher_config_composes_to_one_ddp_job_across_nodes():
    from hydra import compose, initialize_config_dir

    from trainer_cli.config import CONF_DIR, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["hydra/launcher=slurm_ddp", "hydra.launcher.nodes=3", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_task) == (3, 4, 1)
    assert launcher.partition == "gpu" and "export MASTER_PORT=29500" in launcher.setup


@pytest.mark.slow
def test_submitit_local_executor_runs_one_ddp_job_like_one_process(tmp_path):
    # SLURM is absent here: the same launcher, submitit's local executor, 2 tasks = 2 ranks.
    args = ["data=digits", "epochs=2", "batch_size=64", "trainer.device=cpu", "seed=5"]
    run_train(["-m", "hydra/launcher=local_ddp", *args, f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path)
    run_train([*args, f"hydra.run.dir={tmp_path}/one"], cwd=tmp_path)
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_1_result.pkl"))) == 1  # a second task ran
    assert_same_curves(tmp_path / "one", tmp_path / "sweep" / "0")
