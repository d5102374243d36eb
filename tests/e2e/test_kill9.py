"""``kill -9`` of a real ``rlrun`` process at three points, then the same command with
``resume=auto``: every key of every metrics.jsonl line equals a straight run's (wall-time keys
excepted), bit for bit on this CPU. And W&B: a killed run's offline file keeps the history written
before the kill, and the resumed run's W&B run holds every step (tests/wandb_files.py reads what W&B
itself stored)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import child_env
from wandb_files import history

COMMON = ["debug=cpu", "eval=none", "steps=8", "checkpoint_every=1"]
WALL = ("time/", "throughput/", "memory/")


def command(run_dir, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rlrun", *COMMON, f"hydra.run.dir={run_dir}", *extra]


def lines(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if not k.startswith(WALL)} for line in f]


def checkpoints(run_dir) -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
    except FileNotFoundError:
        return []


def run_to_end(run_dir, *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command(run_dir, *extra), capture_output=True, text=True,
                          env=child_env(OMP_NUM_THREADS="1"), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def kill_when(run_dir, ready, *extra: str) -> list[str]:
    """Start the run, SIGKILL it the moment ``ready(checkpoint names)`` holds (polled every 0.5 ms);
    returns the checkpoint dir's names seen just after the kill."""
    proc = subprocess.Popen(command(run_dir, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=child_env(OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if ready(checkpoints(run_dir)):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.0005)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill point"
    return checkpoints(run_dir)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight") / "run"
    run_to_end(run)
    return lines(run)


def after_first(names):
    return "step_000001" in names


def during_a_write(names):
    return any(name.endswith(".partial") for name in names) and "step_000002" in names


def just_after_one(names):
    return "step_000003" in names and not any(name.endswith(".partial") for name in names)


@pytest.mark.parametrize("ready", [after_first, during_a_write, just_after_one], ids=lambda f: f.__name__)
def test_kill_9_then_resume_auto_equals_the_straight_run(ready, straight, tmp_path):
    for attempt in range(5):  # a save takes ~20 ms here: the poll may miss the window
        run = tmp_path / f"run{attempt}"
        seen = kill_when(run, ready)
        if ready(seen) or ready is not during_a_write:
            break
    if ready is during_a_write:
        assert any(name.endswith(".partial") for name in seen), f"never killed during a write: {seen}"
    done = run_to_end(run, "resume=auto")
    assert "resumed from " in done.stdout
    assert lines(run) == straight  # every key of every line, exactly


def test_wandb_keeps_the_history_of_a_killed_run_and_the_resumed_run_carries_it(tmp_path):
    run = tmp_path / "run"
    extra = ("logger=wandb", "steps=24", "checkpoint_every=4")
    # well after W&B's 1-second flush of the first steps (about 0.25 s a step here)
    kill_when(run, lambda names: "step_000016" in names, *extra)
    logged = [m["step"] for m in lines(run)]
    (killed,) = history(run)
    steps = [row["_step"] for row in killed]
    assert steps and steps == logged[:len(steps)], (steps, logged)  # before: an empty .wandb file
    run_to_end(run, "resume=auto", *extra)
    final = {m["step"]: m for m in lines(run)}
    assert sorted(final) == list(range(1, 25))
    _, resumed = history(run)
    assert [row["_step"] for row in resumed] == list(range(1, 25))  # the resumed W&B run is whole
    for row in resumed:
        want = final[row["_step"]]
        assert {k: row[k] for k in want if k != "step"} == {k: v for k, v in want.items() if k != "step"}
