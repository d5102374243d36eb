"""A run dir of its own for every run. Hydra's default ``outputs/<date>/<time>`` is the same for two
runs started in the same second from the same directory: they would interleave one metrics.jsonl
and overwrite each other's config and checkpoints. The root config's ``hydra.run.dir`` is
``${rlrun_fresh:outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}}``: the first resolution in a process claims
that path by creating it (``os.mkdir`` is atomic: of two runs, one gets the path, the other
``<path>-1``, then ``-2``, ...) and every later resolution in the process returns the same path.

Under a launcher (torchrun, deepspeed, a multi-task SLURM job) only rank 0 claims a run dir; the
other ranks' Hydra writes its own records into a private temporary dir, removed once rank 0's run
dir is known (every rank writes to rank 0's, ``rlrun.wiring.cli.app``). A ``hydra.run.dir=`` given on
the command line is used as given (re-running a command in the same run dir continues it).
"""
from __future__ import annotations

import os
import tempfile

from omegaconf import OmegaConf

_claimed: list[str] = []  # the path this process claimed (at most one)
dry = False  # True for commands that run nothing (--cfg, --help, --info): the path is not created


def launcher_rank() -> int:
    """This process's rank as its launcher set it (before torch.distributed starts)."""
    from rlrun.runtime.slurm_env import launcher_vars

    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    found = launcher_vars(os.environ)
    return int(found["RANK"]) if found else 0


def fresh(base: str) -> str:
    """``base``, or ``base-1``, ``base-2``, ... whichever this process creates first (module docstring)."""
    if _claimed:
        return _claimed[0]
    if dry:
        return base
    rank = launcher_rank()
    if rank != 0:
        _claimed.append(tempfile.mkdtemp(prefix=f"rlrun-rank{rank}-"))
        return _claimed[0]
    parent = os.path.dirname(base)
    if parent:
        os.makedirs(parent, exist_ok=True)
    for n in range(10000):
        path = base if n == 0 else f"{base}-{n}"
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        _claimed.append(path)
        return path
    raise RuntimeError(f"no free run dir next to {base}")


def claimed() -> str | None:
    """The run dir this process claimed, if any."""
    return _claimed[0] if _claimed else None


if not OmegaConf.has_resolver("rlrun_fresh"):
    OmegaConf.register_new_resolver("rlrun_fresh", fresh)
