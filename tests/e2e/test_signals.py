"""A real ``rlrun`` process signalled mid-run (rlrun.runtime.stopping): it finishes the step,
checkpoints, says so in one line and exits 128 + the signal; re-running the same command with
``resume=auto`` ends with the metrics of a run that was never stopped."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import child_env, steps_logged

COMMON = ["debug=cpu", "eval=none", "steps=8", "checkpoint_every=100"]


def command(run_dir, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rlrun", *COMMON, f"hydra.run.dir={run_dir}", *extra]


def lines(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        found = [json.loads(line) for line in f]
    return [{k: v for k, v in m.items() if not k.startswith(("time/", "throughput/", "memory/"))} for m in found]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight") / "run"
    once = subprocess.run(command(run), capture_output=True, text=True, env=child_env(OMP_NUM_THREADS="1"),
                          timeout=300)
    assert once.returncode == 0, once.stderr[-2000:]
    return lines(run)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1], ids=lambda s: s.name)
def test_a_signal_checkpoints_and_resume_auto_finishes_the_run(signum, straight, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(command(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + 300
    while not steps_logged(run) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    done = steps_logged(run)
    assert 1 <= len(done) < 8 and done == list(range(1, len(done) + 1)), done
    stopped = f"rlrun: stopped by {signum.name} after step {len(done)}/8; checkpoint {run}/checkpoints/step_{len(done):06d}"
    assert stopped in err, err[-2000:]
    assert (run / "checkpoints" / f"step_{len(done):06d}" / "manifest.json").is_file()

    again = subprocess.run(command(run, "resume=auto"), capture_output=True, text=True,
                           env=child_env(OMP_NUM_THREADS="1"), timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    got, want = lines(run), straight
    assert [m["step"] for m in got] == list(range(1, 9))
    for a, b in zip(got, want):
        for key in b:
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["step"], key)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=lambda s: s.name)
def test_a_signal_before_training_starts_exits_with_its_code_and_one_line(signum, tmp_path):
    """SLURM's warning may reach a requeued job while it is still starting (imports, the model): the
    process exits 128 + the signal with one line (scripts/slurm/train.sbatch requeues on 138), no
    traceback, and trains nothing."""
    run = tmp_path / "run"
    proc = subprocess.Popen(command(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + 120
    while not (run / ".hydra" / "config.yaml").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # Hydra wrote the run's config: rlrun's start-up, seconds before the first step
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-2000:]
    assert err.strip().splitlines()[-1] == (f"rlrun: {signum.name} before training started: exiting; nothing to "
                                            "save (the last checkpoint, if any, is intact)"), err[-2000:]
    assert "Traceback" not in err and steps_logged(run) == [] and not (run / "checkpoints").exists()
