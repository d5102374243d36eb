"""Ranks and collectives: the one module (with the trainer, checkpoint and loggers) that knows about
data-parallel processes (DESIGN.md section 6, rule 9).

``init()`` works in four situations with the same code:

- plain ``python -m rlrun ...``: no launcher variables, so it sets a one-process world
  (RANK=0, WORLD_SIZE=1, LOCAL_RANK=0, MASTER_ADDR=127.0.0.1, a free MASTER_PORT);
- ``torchrun --nproc_per_node N -m rlrun ...`` and ``deepspeed --num_gpus N -m rlrun ...``: the
  launcher's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* variables are used as they are;
- a SLURM job with several tasks (``srun``, submitit): each task is a rank, the variables come from
  SLURM's (``rlrun.runtime.slurm_env``).

On a machine without CUDA it sets ``DS_ACCELERATOR=cpu`` (before DeepSpeed is imported) and uses the
gloo backend; with CUDA it uses nccl and pins each process to GPU ``LOCAL_RANK``. Every helper also
works before ``init()`` or without DeepSpeed's process group: it then acts as a world of one.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Any

import torch
import torch.distributed as tdist



def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init() -> None:
    """Set up the process group once (idempotent); see the module docstring."""
    if tdist.is_available() and tdist.is_initialized():
        return
    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from rlrun.runtime.slurm_env import launcher_vars

    os.environ.update(launcher_vars(os.environ) or {})  # each task of a multi-task SLURM job: one rank
    if not all(name in os.environ for name in ("RANK", "WORLD_SIZE")):
        # no launcher (a stray LOCAL_RANK alone does not make one): a world of one process
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ["MASTER_PORT"] = str(_free_port())
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # DeepSpeed's first collective probes its ops; one probe compiles a test program against
    # libaio and logs each gcc command at INFO (setuptools' "compilers" logger): noise in run logs.
    logging.getLogger("compilers").setLevel(logging.WARNING)
    import deepspeed  # lazy: heavy, and must see DS_ACCELERATOR first

    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")


def _ready() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if _ready() else 0


def world_size() -> int:
    return tdist.get_world_size() if _ready() else 1


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device:
    """The device this process computes on: ``cuda:LOCAL_RANK`` with CUDA, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def barrier() -> None:
    if world_size() > 1:
        tdist.barrier()


def _all_reduce(t: torch.Tensor, op: Any) -> torch.Tensor:
    if world_size() == 1:
        return t.clone()
    # nccl needs the tensor on this process's GPU; gloo takes CPU tensors.
    work = t.detach().to(device(), copy=True)
    tdist.all_reduce(work, op=op)
    return work.to(t.device)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``t`` over all ranks (a new tensor on ``t``'s device; ``t`` unchanged)."""
    return _all_reduce(t, tdist.ReduceOp.SUM)


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of ``t`` over all ranks (a new tensor; ``t`` unchanged)."""
    return _all_reduce(t, tdist.ReduceOp.MAX)


def mean_metrics(metrics: dict[str, float], weight: float) -> dict[str, float]:
    """Weighted mean over ranks: ``m = sum_r w_r m_r / sum_r w_r`` for every key.

    All ranks must pass the same keys. With all weights 0 the result is 0.
    """
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] * weight for k in keys] + [weight], dtype=torch.float64)
    total = all_reduce_sum(values)
    denom = total[-1].item()
    return {k: (total[i].item() / denom if denom else 0.0) for i, k in enumerate(keys)}


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (any picklable object)."""
    if world_size() == 1:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def gather_cat(t: torch.Tensor) -> torch.Tensor:
    """The concatenation over ranks (rank order) of each rank's 1-D ``t``; sizes may differ."""
    if world_size() == 1:
        return t.clone()
    parts: list[Any] = [None] * world_size()
    tdist.all_gather_object(parts, t.detach().cpu())
    return torch.cat(parts).to(t.device)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (any picklable object)."""
    if world_size() == 1:
        return [obj]
    parts: list[Any] = [None] * world_size()
    tdist.all_gather_object(parts, obj)
    return parts


def collectives():
    """These collectives as the one object that pieces declaring ``UsesCollectives`` call
    (``rlrun.core.collectives.Collectives``)."""
    from rlrun.core.collectives import Collectives

    return Collectives(reduce_sum=all_reduce_sum, gather_cat=gather_cat,
                       gather_objects=all_gather_object, rank=rank)
