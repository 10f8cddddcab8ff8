"""Data-parallel training over several processes: PyTorch's own torch.distributed and torchrun.

One process per device (GPU, or CPU process with gloo), launched by `torchrun` (which sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT for each process) or by `train
trainer.devices=N`, which starts the same thing through torchrun's own API (`launch`). On
SLURM, the submitit launcher starts one process per task; `init` reads the rank and world
from SLURM's variables (conf/hydra/launcher/slurm_ddp.yaml).

What differs between ranks is small and lives here: the process group (`init`, `teardown`),
who writes (`is_main`: rank 0 alone writes the console, logs, TensorBoard and checkpoints),
the model wrapper (`wrap`: DistributedDataParallel, SyncBatchNorm), and the sums behind
every metric (`all_reduce_sum`). The data loader shards each global batch across ranks
(data/loaders.py), so `batch_size` is the global batch: N processes with the same config
train on the same batches as one process does.

torch is imported inside the functions, so the command line answers without loading it.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

# What torchrun calls RANK / WORLD_SIZE / LOCAL_RANK, as the submitit launcher's tasks see
# them (one task per device): SLURM's variables, or submitit's local executor's. Read only in
# a task that submitit started (SUBMITIT_EXECUTOR), never in a plain `train` inside an
# allocation (where SLURM_NTASKS may be set too).
TASK_VARIABLES = {
    "slurm": {"RANK": "SLURM_PROCID", "WORLD_SIZE": "SLURM_NTASKS", "LOCAL_RANK": "SLURM_LOCALID"},
    "local": {
        "RANK": "SUBMITIT_LOCAL_GLOBALID",
        "WORLD_SIZE": "SUBMITIT_LOCAL_NTASKS",
        "LOCAL_RANK": "SUBMITIT_LOCAL_LOCALID",
    },
}


def _task_variables() -> dict[str, str]:
    names = TASK_VARIABLES.get(os.environ.get("SUBMITIT_EXECUTOR", ""), {})
    return names if names and all(name in os.environ for name in names.values()) else {}


def environment_rank() -> tuple[int, int]:
    """(rank, world size) as the launcher set them in the environment: torchrun's variables,
    else those of a submitit task (SLURM or local), else (0, 1)."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ.get("RANK", 0)), int(os.environ["WORLD_SIZE"])
    names = _task_variables()
    if names:
        return int(os.environ[names["RANK"]]), int(os.environ[names["WORLD_SIZE"]])
    return 0, 1


def launched() -> bool:
    """True in a process that a multi-process launcher started (world size > 1)."""
    return environment_rank()[1] > 1


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    if not _initialized():
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def world_size() -> int:
    if not _initialized():
        return 1
    import torch.distributed as dist

    return dist.get_world_size()


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes."""
    return rank() == 0


def init(device_name: str) -> None:
    """Join the process group: NCCL when this run trains on CUDA, gloo on CPUs.

    In a submitit task the rank variables come from SLURM or submitit (TASK_VARIABLES) and
    the rendezvous address is the job's first node (MASTER_ADDR; MASTER_PORT defaults to
    29500, set it in the launcher's `setup` to run two jobs on one node). Ranks other than
    0 log warnings only: rank 0 speaks for the run.
    """
    import torch
    import torch.distributed as dist

    if _initialized():
        return
    for torch_name, task_name in _task_variables().items():
        os.environ.setdefault(torch_name, os.environ[task_name])
    if "MASTER_ADDR" not in os.environ and "SLURM_JOB_NODELIST" in os.environ:
        os.environ["MASTER_ADDR"] = _first_slurm_node(os.environ["SLURM_JOB_NODELIST"])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(_local_gpu())
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    global _stop_group
    _stop_group = dist.new_group(backend="gloo") if cuda else None  # StopVote's flags live on the CPU
    if dist.get_rank() != 0:
        logging.getLogger("trainer_cli").setLevel(logging.WARNING)


_stop_group: Any = None  # the gloo group of StopVote when the run's own group is NCCL


class StopVote:
    """Whether any rank was asked to stop (SIGTERM/SIGUSR1 reach one rank, or every rank at
    slightly different moments): the same answer on every rank at the same step, so that all
    stop together and rank 0's checkpoint holds every rank's state.

    `step(requested)`, after every optimizer step, starts an all-reduce of this rank's request
    (a CPU flag, gloo: no GPU sync) and returns the previous step's result, which is done by
    then: the ranks stop one step after the request, without a wait per step. `now(requested)`
    is a blocking vote (the end of an epoch). One process: the request itself, at once.
    """

    def __init__(self) -> None:
        self.pending: Any = None
        self.flag: Any = None

    def step(self, requested: Any) -> bool:
        if world_size() == 1:
            return bool(requested)
        import torch
        import torch.distributed as dist

        if self.pending is not None:
            self.pending.wait()
            self.pending = None
            if self.flag.item() > 0:
                return True  # no new vote: every rank stops here, none left in flight
        self.flag = torch.tensor([1.0 if requested else 0.0])
        self.pending = dist.all_reduce(self.flag, group=_stop_group, async_op=True)
        return False

    def now(self, requested: Any) -> bool:
        if world_size() == 1:
            return bool(requested)
        import torch
        import torch.distributed as dist

        earlier = False
        if self.pending is not None:  # every rank has the same vote in flight (they step together)
            self.pending.wait()
            self.pending, earlier = None, self.flag.item() > 0
        flag = torch.tensor([1.0 if requested or earlier else 0.0])
        dist.all_reduce(flag, group=_stop_group)
        return flag.item() > 0


def _first_slurm_node(nodelist: str) -> str:
    """The first host of a SLURM node list such as `gpu[003-005,009],cpu1` -> `gpu003`."""
    head = nodelist.split(",")[0]
    if "[" not in head:
        return head
    prefix, _, ranges = head.partition("[")
    return prefix + ranges.split("-")[0].split(",")[0].rstrip("]")


def teardown() -> None:
    """Leave the process group (a no-op in a single process)."""
    if _initialized():
        import torch.distributed as dist

        dist.destroy_process_group()


def device(where: torch.device) -> torch.device:
    """This rank's device: `cuda` becomes `cuda:LOCAL_RANK` (one GPU per process)."""
    import torch

    if where.type == "cuda" and world_size() > 1 and where.index is None:
        return torch.device("cuda", _local_gpu())
    return where


def _local_gpu() -> int:
    """This rank's GPU: its local rank, among the GPUs it sees (a SLURM task with
    gpus_per_task=1 sees one, whatever its local rank)."""
    import torch

    return int(os.environ.get("LOCAL_RANK", 0)) % max(1, torch.cuda.device_count())


def sync_batchnorm(model: nn.Module, enabled: bool, where: torch.device) -> nn.Module:
    """`trainer.sync_batchnorm=true`: batch norm layers normalize with the statistics of the
    global batch (all ranks), not each rank's shard. Without several processes: unchanged.
    PyTorch's DistributedDataParallel accepts SyncBatchNorm on GPU modules only."""
    if not enabled or world_size() == 1:
        return model
    import torch

    from trainer_cli.config import UserError

    if where.type != "cuda":
        raise UserError("trainer.sync_batchnorm: PyTorch's SyncBatchNorm runs on GPUs only; set it to false on CPUs")

    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap(model: nn.Module, where: torch.device) -> nn.Module:
    """The module the training step calls: DistributedDataParallel over the ranks (which
    averages the gradients in backward), or the model itself in a single process.

    Evaluation, EMA/SWA and checkpoints keep using the plain model (`model.module`): its
    parameters are the same tensors.
    """
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[where.index] if where.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel wrapper."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of a tensor of metric sums (returned as is in one process)."""
    if world_size() == 1:
        return values
    import torch.distributed as dist

    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier() -> None:
    """Wait for every rank (after rank 0 writes a file the others read)."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank (a picklable object such as the run folder)."""
    if world_size() == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def worker_overrides(argv: list[str]) -> list[str]:
    """The Hydra overrides of a rank other than 0: no run folder of its own (it writes into
    rank 0's, broadcast after `init`), no `.hydra/` record and no log file."""
    rank, world = environment_rank()
    if world == 1 or rank == 0:
        return argv
    scratch = tempfile.mkdtemp(prefix=f"trainer_cli_rank{rank}_")
    atexit.register(shutil.rmtree, scratch, True)
    kept = [a for a in argv if not a.startswith(("hydra.run.dir=", "hydra.output_subdir="))]
    return [*kept, f"hydra.run.dir={scratch}", "hydra.output_subdir=null", "hydra/job_logging=disabled"]


# Where rank 0 of `train trainer.devices=N` leaves its stop line for the launcher to print last.
STOP_FILE_ENV = "TRAINER_CLI_STOP_FILE"


def report_stop(line: str) -> None:
    """Rank 0's line of a run stopped by a signal (checkpoint written, how to continue): for the
    launcher of `train trainer.devices=N` to print as the last line, else printed here."""
    import sys

    if os.environ.get(STOP_FILE_ENV):
        with open(os.environ[STOP_FILE_ENV], "w") as f:
            f.write(line)
    else:
        print(line, file=sys.stderr)


def rank_error(log_dir: str) -> str | None:
    """The last `error: ...` line a rank printed, lowest rank first, from `launch`'s log_dir."""
    from pathlib import Path

    for path in sorted(Path(log_dir).glob("**/stderr.log"), key=lambda p: (len(str(p)), str(p))):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.startswith("error: ")]
        if lines:
            return lines[-1][len("error: ") :]
    return None


# The only flags a child's command line may hold (each with its value): where its config is.
CHILD_FLAGS = ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd")


def check_child_argv(argv: list[str]) -> None:
    """A child's command line is the parent's: Hydra overrides and where the config is, nothing
    that could widen trust or change how the child starts (`--trust` goes by the environment)."""
    from trainer_cli.errors import UserError

    expect_value = False
    for arg in argv:
        if expect_value:
            expect_value = False
            continue
        if arg in CHILD_FLAGS:
            expect_value = True
        elif "=" in arg and arg.split("=", 1)[0] in CHILD_FLAGS:
            continue
        elif arg.startswith("-") or not isinstance(arg, str):
            raise UserError(f"trainer.devices: cannot start processes with '{str(arg)[:60]}' on their command line")


def launch(argv: list[str], processes: int, log_dir: str | None = None) -> int:
    """`train trainer.devices=N`: start N processes of `python -m trainer_cli <argv>` on this
    machine through torchrun's own launcher (`torch.distributed.run`, standalone rendezvous),
    and return the exit status (the first failing rank's error lines are already printed).

    SIGTERM or SIGUSR1 to this process: torchrun's agent passes it to every rank (they stop
    at the same step, rank 0 writes the checkpoint) and waits for them (30 s, then SIGKILL);
    then rank 0's stop line is printed and the status is 75, as for one process. `log_dir`:
    each rank's stderr also goes to files there (torchrun's --log-dir and --tee), where
    `rank_error` finds the error line a rank printed."""
    import signal
    import sys

    check_child_argv(argv)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from trainer_cli.errors import PREEMPTED_EXIT

    # The signals torchrun's agent passes on to the ranks: its defaults, and SLURM's warning.
    signals = "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
    logs = ["--log-dir", log_dir, "--tee", "2"] if log_dir else []  # stderr: where errors go
    args = parse_args(["--standalone", f"--nproc-per-node={processes}", signals, *logs, "-m", "trainer_cli", *argv])
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default, without its warning
    stop_file = tempfile.NamedTemporaryFile(prefix="trainer_cli_stop_", delete=False)  # noqa: SIM115
    stop_file.close()
    os.environ[STOP_FILE_ENV] = stop_file.name
    try:
        run(args)
        status = 0
    except ChildFailedError as error:
        codes = [failure.exitcode for failure in error.failures.values()]
        status = next((code for code in codes if code > 0), 1)
    except SignalException as error:
        status = 128 + int(error.sigval)
        if error.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
    finally:
        os.environ.pop(STOP_FILE_ENV, None)
        with open(stop_file.name) as f:
            line = f.read().strip()
        os.unlink(stop_file.name)
    if line:  # rank 0 wrote its checkpoint and stopped: the resume line, last
        print(line, file=sys.stderr)
        return PREEMPTED_EXIT
    return status
