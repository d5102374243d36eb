"""Checkpoints: everything a resumed run needs to continue exactly where it stopped.

Layout of ``<run dir>/checkpoints/step_000050/``:
  model/         the policy in Hugging Face format (``from_pretrained``-loadable, tokenizer included)
  trainer/       the trainer's own state (DeepSpeed: weights, optimizer, LR schedule; every rank)
  state.pt       loop position and the state of every piece that declares ``Stateful`` (curriculum,
                 reward, ...: ``Run.pieces()``)
  config.json    the run's config, composed and resolved: a resume continues with it
                 (``rlrun.wiring.resume_config``)
  rng_rank<r>.pt each rank's random number generator states
  manifest.json  every file above with its size and a fingerprint (written last)

A checkpoint is written into ``step_000050.partial/`` and renamed into place only when every rank
has written its files and the manifest is on disk, so a save that is killed half-way never looks
like a checkpoint; ``checkpoints/latest`` then names it (a convenience for people: resuming does not
trust it, it scans the step directories). Before a resume loads a checkpoint it checks the manifest
(:func:`problem`): a file missing, of another size or with another fingerprint makes it skip that
checkpoint with one warning line naming the file and take the one before. A missing RNG file of a
rank is an error like any other missing file: a resume is exact or it does not start.

The fingerprint is SHA-256 over the file's size, its first and its last MiB (:func:`fingerprint`):
it catches truncation, a file cut short then padded, and damage at either end in milliseconds even
for a 7B model's optimizer shards, where hashing every byte would take minutes per checkpoint. It
does not catch a flipped byte in the middle of a large file; small files (under 2 MiB: state, RNG,
configs) are hashed whole.

``keep_last=K`` (``checkpoint.keep_last``) deletes older step directories only after a newer one is
complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys

import numpy as np
import torch

from rlrun.runtime import dist
from rlrun.types import Stateful

MANIFEST = "manifest.json"
CONFIG = "config.json"  # the run's config (rlrun.wiring.resume_config)
PARTIAL = ".partial"
_EDGE = 1 << 20  # bytes hashed at each end of a file


class ResumeError(ValueError):
    """A resume that cannot start: the run stops with this one line before loading anything."""


def seed_all(seed: int) -> None:
    """Seed every random generator a run draws from (sampling, dropout, shuffles)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else keys
    np.random.set_state((kind, keys.astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fingerprint(path: str) -> str:
    """SHA-256 of the size and the first and last MiB of ``path`` (the whole file when small)."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= 2 * _EDGE:
            digest.update(f.read())
        else:
            digest.update(f.read(_EDGE))
            f.seek(size - _EDGE)
            digest.update(f.read(_EDGE))
    return digest.hexdigest()


def _files(directory: str) -> list[str]:
    found = []
    for root, _, names in os.walk(directory):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), directory)
            if rel != MANIFEST:
                found.append(rel)
    return sorted(found)


def write_manifest(directory: str, ranks: int) -> None:
    files = {rel: {"size": os.path.getsize(os.path.join(directory, rel)),
                   "sha256_edges": fingerprint(os.path.join(directory, rel))} for rel in _files(directory)}
    tmp = os.path.join(directory, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"ranks": ranks, "files": files}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(directory, MANIFEST))


def problem(directory: str, ranks: int | None = None) -> str | None:
    """Why the checkpoint in ``directory`` cannot be loaded (one phrase naming the file), or None
    when its manifest holds and it has an RNG file for each of ``ranks`` ranks."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path) and os.path.exists(os.path.join(directory, "state.pt")):
        return _legacy_problem(directory, ranks or 1)
    try:
        with open(path) as f:
            manifest = json.load(f)
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path} is missing or unreadable"
    for rel, want in sorted(files.items()):
        full = os.path.join(directory, rel)
        if not os.path.isfile(full):
            return f"{full} is missing"
        if os.path.getsize(full) != want["size"]:
            return f"{full} has {os.path.getsize(full)} bytes, the manifest says {want['size']}"
        if fingerprint(full) != want["sha256_edges"]:
            return f"{full} does not match its checksum in the manifest"
    for rank in range(ranks if ranks is not None else manifest.get("ranks", 1)):
        if f"rng_rank{rank}.pt" not in files:
            return (f"{os.path.join(directory, f'rng_rank{rank}.pt')} is missing (the checkpoint "
                    f"has {manifest.get('ranks', 1)} rank(s)): an exact resume needs every rank's RNG state")
    return None


def _legacy_problem(directory: str, ranks: int) -> str | None:
    """A checkpoint written before manifests (rlrun before 2026-12): usable when every rank's RNG
    file is there; nothing else can be checked."""
    for rank in range(ranks):
        if not os.path.exists(os.path.join(directory, f"rng_rank{rank}.pt")):
            return f"{os.path.join(directory, f'rng_rank{rank}.pt')} is missing"
    return None


def step_dirs(run_dir: str) -> list[str]:
    """The complete-looking step directories of a run, newest first."""
    root = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    names = [n for n in os.listdir(root) if n.startswith("step_") and n[5:].isdigit()]
    return [os.path.join(root, n) for n in sorted(names, key=lambda n: int(n[5:]), reverse=True)]


def newest_valid(run_dir: str, ranks: int | None = None) -> str | None:
    """The newest checkpoint of ``run_dir`` that passes :func:`problem`, warning (one line each) about
    every newer one that does not; None when there is none."""
    for directory in step_dirs(run_dir):
        why = problem(directory, ranks)
        if why is None:
            return directory
        if dist.is_main():
            print(f"rlrun: warning: skipping checkpoint {directory}: {why}; trying the one before",
                  file=sys.stderr, flush=True)
    return None


class CheckpointError(RuntimeError):
    """A checkpoint that could not be written (a full disk, a read-only dir): its staging dir is
    gone, the checkpoints before it and the metrics are untouched."""


def save(run, step: int, extra: dict | None = None, keep_last: int = 0) -> str:
    """Write the checkpoint after ``step`` completed steps; returns its directory (see the module
    docstring for the staging, manifest and ``keep_last``). A failed write raises
    :class:`CheckpointError` after removing what it staged."""
    root = os.path.join(run.settings.out_dir, "checkpoints")
    final = os.path.join(root, f"step_{step:06d}")
    staging = final + PARTIAL
    try:
        return _write(run, step, extra, keep_last, root, final, staging)
    except Exception as exc:  # OSError; torch.save (RuntimeError) and safetensors report a full disk their own way
        if dist.is_main():
            shutil.rmtree(staging, ignore_errors=True)  # frees what it took; never resumed from
        before = newest_valid(run.settings.out_dir)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        try:  # torch.save's own words for a full disk are cryptic: say how much room there is
            first += f"; {shutil.disk_usage(root).free / 2**20:.1f} MiB free on its disk"
        except OSError:
            pass
        raise CheckpointError(
            f"the checkpoint after step {step} could not be written to {staging} ({first}); "
            f"{'the previous checkpoint ' + before if before else 'no earlier checkpoint exists'} and "
            f"metrics.jsonl are intact; free space or make {root} writable, then continue with resume=auto "
            "in the same run dir") from exc


def _write(run, step: int, extra: dict | None, keep_last: int, root: str, final: str, staging: str) -> str:
    if dist.is_main():
        shutil.rmtree(staging, ignore_errors=True)  # a save killed before: never resumed from
        os.makedirs(staging)
    dist.barrier()
    run.trainer.save(staging)
    torch.save(_rng_state(), os.path.join(staging, f"rng_rank{dist.rank()}.pt"))
    if dist.is_main():
        pieces = {name: piece.state_dict() for name, piece in run.pieces().items() if isinstance(piece, Stateful)}
        torch.save({"step": step, "pieces": pieces, "extra": extra or {}}, os.path.join(staging, "state.pt"))
        with open(os.path.join(staging, CONFIG), "w") as f:  # what a resume continues with
            json.dump({"composed": run.composed, "resolved": run.config}, f, indent=1)
    dist.barrier()
    if dist.is_main():
        write_manifest(staging, dist.world_size())
        if os.path.exists(final):  # the same step again (a resumed run redoing it): replace
            shutil.rmtree(final)
        os.replace(staging, final)
        tmp = os.path.join(root, "latest.tmp")
        with open(tmp, "w") as f:
            f.write(os.path.basename(final))
        os.replace(tmp, os.path.join(root, "latest"))
        if keep_last > 0:
            for old in step_dirs(run.settings.out_dir)[keep_last:]:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def resolve(resume: str, out_dir: str, ranks: int) -> str | None:
    """The checkpoint directory a run with ``resume=`` starts from: ``auto``, the newest valid one
    in its own run dir (None: start fresh); a checkpoint dir, that one (an error when it fails its
    check); a run dir, its newest valid one (an error when there is none)."""
    if resume == "auto":
        return newest_valid(out_dir, ranks)
    if os.path.exists(os.path.join(resume, "state.pt")) or os.path.exists(os.path.join(resume, MANIFEST)):
        why = problem(resume, ranks)
        if why is not None:
            raise ResumeError(f"resume={resume} cannot be loaded: {why}")
        return resume
    found = newest_valid(resume, ranks)
    if found is None:
        raise ResumeError(f"resume={resume} holds no complete checkpoint (no valid "
                          f"{os.path.join(resume, 'checkpoints', 'step_*')}); resume=null starts fresh")
    return found


def steps_done(directory: str) -> int:
    """The number of completed steps the checkpoint in ``directory`` holds."""
    return int(_load_state(directory)["step"])


def check_steps(directory: str, steps: int) -> int:
    """The checkpoint's completed steps; a ResumeError when ``steps`` is below them."""
    done = steps_done(directory)
    if done > steps:
        raise ResumeError(f"steps={steps} is below the {done} steps the checkpoint {directory} has done; "
                          f"give steps >= {done}")
    return done


def _load_state(directory: str) -> dict:
    # Pieces' states are plain containers, tensors and numbers: weights_only loading (no code runs)
    # unless the checkpoint predates the manifests.
    legacy = not os.path.exists(os.path.join(directory, MANIFEST))
    return torch.load(os.path.join(directory, "state.pt"), weights_only=not legacy)


def restore(run, directory: str) -> tuple[int, dict]:
    """Load a checkpoint into ``run``; returns the number of completed steps and the extra dict."""
    run.trainer.load(directory)
    run.rollout.load_weights(run.trainer.named_weights())
    state = _load_state(directory)
    pieces = run.pieces()
    for name, piece_state in state["pieces"].items():
        pieces[name].load_state_dict(piece_state)
    legacy = not os.path.exists(os.path.join(directory, MANIFEST))  # its numpy state is an ndarray
    _set_rng_state(torch.load(os.path.join(directory, f"rng_rank{dist.rank()}.pt"), weights_only=not legacy))
    return int(state["step"]), state["extra"]
