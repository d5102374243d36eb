"""Checkpoints: everything a resumed run needs to continue exactly where it stopped.

Layout of ``<run dir>/checkpoints/step_000050/``:
  model/         the policy in Hugging Face format (``from_pretrained``-loadable, tokenizer included)
  trainer/       the trainer's own state (DeepSpeed: weights, optimizer, LR schedule; every rank)
  state.pt       loop position and the state of every piece that declares ``Stateful`` (curriculum,
                 reward, ...: ``Run.pieces()``)
  rng_rank<r>.pt each rank's random number generator states
``<run dir>/checkpoints/latest`` names the newest complete checkpoint; it is written last, so an
interrupted save never becomes the one a resume picks.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from rlrun.runtime import dist
from rlrun.types import Stateful

def seed_all(seed: int) -> None:
    """Seed every random generator a run draws from (sampling, dropout, shuffles)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run, step: int, extra: dict | None = None) -> str:
    """Write the checkpoint after ``step`` completed steps; returns its directory."""
    root = os.path.join(run.settings.out_dir, "checkpoints")
    directory = os.path.join(root, f"step_{step:06d}")
    os.makedirs(directory, exist_ok=True)
    run.trainer.save(directory)
    torch.save(_rng_state(), os.path.join(directory, f"rng_rank{dist.rank()}.pt"))
    if dist.is_main():
        pieces = {name: piece.state_dict() for name, piece in run.pieces().items() if isinstance(piece, Stateful)}
        torch.save({"step": step, "pieces": pieces, "extra": extra or {}}, os.path.join(directory, "state.pt"))
    dist.barrier()
    if dist.is_main():
        tmp = os.path.join(root, "latest.tmp")
        with open(tmp, "w") as f:
            f.write(os.path.basename(directory))
        os.replace(tmp, os.path.join(root, "latest"))
    dist.barrier()
    return directory


def latest(run_dir: str) -> str:
    """The checkpoint to resume from: ``run_dir`` itself when it is a checkpoint directory, else
    the newest complete checkpoint of a run directory; a clear error when there is none."""
    if os.path.exists(os.path.join(run_dir, "state.pt")):
        return run_dir
    pointer = os.path.join(run_dir, "checkpoints", "latest")
    if not os.path.exists(pointer):
        raise FileNotFoundError(f"resume={run_dir!r} holds no checkpoint (no {pointer})")
    return os.path.join(run_dir, "checkpoints", open(pointer).read().strip())


def restore(run, directory: str) -> tuple[int, dict]:
    """Load a checkpoint into ``run``; returns the number of completed steps and the extra dict."""
    run.trainer.load(directory)
    run.rollout.load_weights(run.trainer.weights())
    state = torch.load(os.path.join(directory, "state.pt"), weights_only=False)
    pieces = run.pieces()
    for name, piece_state in state["pieces"].items():
        pieces[name].load_state_dict(piece_state)
    rng_file = os.path.join(directory, f"rng_rank{dist.rank()}.pt")
    if os.path.exists(rng_file):
        _set_rng_state(torch.load(rng_file, weights_only=False))
    return int(state["step"]), state["extra"]
