"""Data-parallel training on PyTorch's own engine: torchrun's launcher and DDP.

The train stage stays ``python stages/train.py``. With ``train.distributed: true`` it
re-launches itself through torchrun's launcher (``torch.distributed.launcher``, the
code behind the ``torchrun`` command) as ``train.processes`` workers on this machine;
a worker sees torchrun's environment (``RANK``, ``WORLD_SIZE``, ...) and joins the
process group instead. Started by ``torchrun`` by hand (several nodes), the stage
joins the group it was given. Every collective the training loop needs goes
through :class:`Cluster`, whose single-process form does nothing, so the loop has
one code path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import timedelta

import torch

from .errors import ParamsError, TrainingError

log = logging.getLogger(__name__)

# A rank that waits longer than this for the others has lost them (a crashed or
# killed peer): fail instead of hanging forever.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Cluster:
    """This process's place in the group: rank 0 of 1 when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"

    @property
    def is_main(self) -> bool:
        """Only the main rank writes outputs and logs epochs."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def sum_(self, *tensors: torch.Tensor) -> None:
        """Sum each tensor over all ranks, in place."""
        if self.active:
            for tensor in tensors:
                torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)

    def share_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank: each rank's
        statistics saw only its own share of the batches, so they drift apart."""
        if self.active:
            for buffer in module.buffers():
                torch.distributed.broadcast(buffer.data, src=0)

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """All ranks' ``rows`` (first dims may differ) concatenated in rank order."""
        if not self.active:
            return rows
        home = rows.device
        if self.backend == "nccl":  # NCCL gathers GPU tensors only
            rows = rows.cuda()
        counts = [None] * self.world_size
        torch.distributed.all_gather_object(counts, int(rows.shape[0]))
        padded = rows.new_zeros((max(counts), *rows.shape[1:]))
        padded[: rows.shape[0]] = rows
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, padded)
        return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)]).to(home)

    def gather_objects(self, obj: object) -> list:
        if not self.active:
            return [obj]
        out: list = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out


SINGLE = Cluster()


def under_torchrun() -> bool:
    """True in a worker started by torchrun (or its launcher): it must join a group."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ and "MASTER_ADDR" in os.environ


def resolve_processes(setting: int | str, device_name: str) -> int:
    """``train.processes``: a number, or ``auto`` = one per visible GPU (2 on a CPU)."""
    if setting != "auto":
        return int(setting)
    uses_cuda = device_name != "cpu" and torch.cuda.is_available()
    return torch.cuda.device_count() if uses_cuda else 2


def join(device_name: str) -> tuple[Cluster, torch.device]:
    """Join the process group torchrun described; NCCL for GPUs, gloo on CPUs."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise ParamsError(f"train.device is {device_name!r} but CUDA is not available here")
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ParamsError(
                f"train: local rank {local_rank} has no GPU ({torch.cuda.device_count()} "
                "visible); lower train.processes"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    torch.distributed.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    if rank != 0:  # one voice: rank 0 reports progress, the others only warnings
        logging.getLogger().setLevel(logging.WARNING)
    return Cluster(rank, world, local_rank, backend), device


def leave(cluster: Cluster) -> None:
    if cluster.active and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def launch(processes: int, argv: list[str]) -> None:
    """Run ``python -m anomaly.stages.train ARGV`` as ``processes`` workers through
    torchrun's launcher on this machine (rendezvous on a free local port); return when
    all succeed. A failed worker stops the others and raises one error line (its own
    ``error:`` line was already printed)."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    cores = os.cpu_count() or 1
    # torch starts one thread per core in every process: N workers would oversubscribe.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // processes)))
    # The launcher keeps per-worker log folders in a new /tmp/torchelastic_* on every
    # run and never removes them; the workers print to this process's stderr anyway, so
    # their folder lives only as long as the run.
    logs = tempfile.TemporaryDirectory(prefix="anomaly-train-workers-")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.2,
        logs_specs=DefaultLogsSpecs(log_dir=logs.name),
    )
    log.info("train: launching %d worker processes (torchrun)", processes)
    # The launcher logs each failed worker with its pid; the worker's own line says why.
    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, sys.executable)("-m", "anomaly.stages.train", *argv)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        raise TrainingError(
            f"train: worker rank {rank} of {processes} failed with exit code "
            f"{failure.exitcode}; its message is above"
        ) from None
    finally:
        logs.cleanup()


def state_digest(module: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer, in order: equal digests = equal weights."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def check_in_sync(module: torch.nn.Module, cluster: Cluster) -> str:
    """The weights' digest, after checking every rank holds the same weights."""
    digest = state_digest(module)
    digests = cluster.gather_objects(digest)
    if len(set(digests)) != 1:
        raise TrainingError(
            f"train: ranks ended with different weights ({len(set(digests))} distinct of "
            f"{cluster.world_size}); a model with rank-local state cannot train distributed"
        )
    return digest
