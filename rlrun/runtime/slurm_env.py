"""torch.distributed's variables from a SLURM job's environment, so that each SLURM task is one rank
(``srun python -m rlrun ...`` in an ``sbatch`` script, or a submitit job with ``tasks_per_node`` > 1).

A launcher's own RANK / WORLD_SIZE (torchrun, deepspeed) win: these are used only when they are
absent. RANK = SLURM_PROCID, WORLD_SIZE = SLURM_NTASKS, LOCAL_RANK = SLURM_LOCALID, MASTER_ADDR = the
first host of SLURM_JOB_NODELIST (SLURM's compressed host list, ``gpu[003-004,9],cpu1`` -> ``gpu003``),
MASTER_PORT = 15000 + SLURM_JOB_ID mod 20000 (every task of a job derives the same port; jobs that
share a node differ unless their ids are 20000 apart). A one-task job is a world of one, as without
SLURM.
"""
from __future__ import annotations

from collections.abc import Mapping

PORT_BASE, PORT_SPAN = 15000, 20000


def first_host(nodelist: str) -> str:
    """The first host name of a SLURM host list."""
    depth, end = 0, len(nodelist)
    for i, char in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            end = i
            break
    head = nodelist[:end].strip()
    if "[" not in head:
        return head
    prefix, _, ranges = head.partition("[")
    first = ranges.rstrip("]").split(",")[0].split("-")[0]
    return prefix + first


def launcher_vars(env: Mapping[str, str]) -> dict[str, str] | None:
    """The variables to set for a multi-task SLURM job, or None (no SLURM, one task, or a launcher's
    RANK / WORLD_SIZE already there)."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return None
    needed = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_NODELIST", "SLURM_JOB_ID")
    if any(name not in env for name in needed) or int(env["SLURM_NTASKS"]) < 2:
        return None
    return {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": env["SLURM_NTASKS"],
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": env.get("MASTER_ADDR") or first_host(env["SLURM_JOB_NODELIST"]),
        "MASTER_PORT": env.get("MASTER_PORT") or str(PORT_BASE + int(env["SLURM_JOB_ID"]) % PORT_SPAN),
    }
