"""rlrun on a real SLURM cluster (marker ``slurm``): the one-node cluster of scripts/slurm-up.sh, which
`make test` starts when it runs as root (the CI machine). A sweep through ``hydra/launcher=slurm``,
a plain ``sbatch`` of scripts/slurm/train.sbatch whose two tasks train as two ranks, and a job whose
time limit is hit mid-run: signalled, checkpointed, requeued, finished with the metrics of an
uninterrupted run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import child_env, steps_logged

ROOT = Path(__file__).resolve().parents[2]


def cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    got = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    return got.returncode == 0 and any(state in ("idle", "mix", "alloc") for state in got.stdout.split())


pytestmark = [pytest.mark.slurm,
              pytest.mark.skipif(not cluster_up(), reason="no SLURM cluster (scripts/slurm-up.sh as root)")]


def metrics(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def plain(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if not k.startswith(("time/", "throughput/", "memory/"))} for m in lines]


def test_a_sweep_through_the_slurm_launcher(tmp_path):
    out = tmp_path / "sweep"
    got = subprocess.run(
        [sys.executable, "-m", "rlrun", "-m", "debug=cpu", "eval.problems=2", "seed=0,1", "hydra/launcher=slurm",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=20",
         "hydra.launcher.setup=['export OMP_NUM_THREADS=1']", f"hydra.sweep.dir={out}"],
        capture_output=True, text=True, env=child_env(OMP_NUM_THREADS="1"), timeout=900, cwd=tmp_path)
    assert got.returncode == 0, (got.stdout[-2000:], got.stderr[-3000:])
    for job in ("0", "1"):
        assert [m["step"] for m in metrics(out / job) if "acc/train" in m] == [1, 2]
        assert (out / job / "checkpoints" / "step_000002" / "manifest.json").is_file()
    assert os.path.getsize(out / "pareto.png") > 100
    tasks = sorted(p.name.split("_")[1] for p in (out / ".submitit").iterdir() if p.is_dir() and "_" in p.name)
    assert tasks == ["0", "1"]  # one SLURM array task per run (submitit's <job id>_<task> folders)


def test_an_sbatch_job_with_two_tasks_trains_as_two_ranks(tmp_path):
    run = tmp_path / "run"
    got = subprocess.run(
        ["sbatch", "--wait", f"--output={tmp_path}/job-%j.out", str(ROOT / "scripts" / "slurm" / "train.sbatch"),
         "debug=cpu", "eval=none"],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
        env=child_env(RUN_DIR=str(run), PYTHON=sys.executable, OMP_NUM_THREADS="1"))
    log = "".join(p.read_text() for p in tmp_path.glob("job-*.out"))
    assert got.returncode == 0, (got.stderr, log[-3000:])
    lines = metrics(run)
    assert [m["step"] for m in lines] == [1, 2]
    assert all(m["rollout/sampled"] == 8 for m in lines)  # 2 prompts x 4, one prompt per rank
    manifest = json.load(open(run / "checkpoints" / "step_000002" / "manifest.json"))
    assert manifest["ranks"] == 2 and {"rng_rank0.pt", "rng_rank1.pt"} <= set(manifest["files"])


def job_field(job_id: str, field: str) -> str:
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return next((word.split("=", 1)[1] for word in shown.split() if word.startswith(field + "=")), "")


def test_a_time_limit_and_a_preemption_signal_requeue_the_job_and_it_finishes_as_if_never_stopped(tmp_path):
    """A job whose limit is 1 minute, warned 40 s before it (``--signal=USR1@40``), runs scripts/slurm/train.sbatch.

    1. SLURM's warning stops the first attempt (SLURM may send it up to 60 s early, so it comes either during
       start-up, "before training started", or mid-run, "stopped by SIGUSR1 after step N"); rlrun exits 138 and
       the script requeues the job. Once the job is pending again, this test gives it 10 minutes (a second
       1-minute attempt would be warned again; each cycle costs SLURM's requeue wait, ``cred_expire``: 10 s on
       the cluster of scripts/slurm-up.sh, 120 s by default).
    2. The second attempt is sent SIGUSR1 by ``scancel --signal=USR1`` (SLURM's route for a preemption
       warning: slurmctld to every task) 20 steps after it resumed: stopped mid-run for sure.
    3. The third attempt resumes and finishes. Its metrics equal those of the same run never stopped (run
       beside it, one core each), every step once."""
    run, straight = tmp_path / "run", tmp_path / "straight"
    common = ["debug=cpu", "eval=none", "steps=1000", "checkpoint_every=5000", "group_size=2",
              "prompts_per_step=2", "rollout.max_new_tokens=16"]
    env = child_env(OMP_NUM_THREADS="1")
    once = subprocess.Popen([sys.executable, "-m", "rlrun", *common, "trainer=zero2", f"hydra.run.dir={straight}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    name = f"rlrun-limit-{os.getpid()}"
    job = subprocess.Popen(
        ["sbatch", "--wait", f"--job-name={name}", "--open-mode=append", "--time=1", "--signal=USR1@40",
         "--ntasks-per-node=1", "--cpus-per-task=1", f"--output={tmp_path}/job-%j.out",
         str(ROOT / "scripts" / "slurm" / "train.sbatch"), *common],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=child_env(RUN_DIR=str(run), PYTHON=sys.executable, OMP_NUM_THREADS="1"))
    try:
        job_id, extended, warned_at = "", False, None
        deadline = time.monotonic() + 600
        while job.poll() is None and time.monotonic() < deadline:
            job_id = job_id or subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True,
                                              text=True).stdout.strip()
            if job_id and not extended and job_field(job_id, "Restarts") == "1" \
                    and job_field(job_id, "JobState") == "PENDING":
                update = subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=10"],
                                        capture_output=True, text=True)
                assert update.returncode == 0, update.stderr
                extended, resumed_from = True, len(steps_logged(run))
            if extended and warned_at is None and job_field(job_id, "JobState") == "RUNNING" \
                    and len(steps_logged(run)) >= resumed_from + 20:
                warned_at = len(steps_logged(run))
                signal = subprocess.run(["scancel", "--signal=USR1", job_id], capture_output=True, text=True)
                assert signal.returncode == 0, signal.stderr
            time.sleep(0.5)
        _, err = job.communicate(timeout=60)
        _, once_err = once.communicate(timeout=600)
    finally:
        for proc in (job, once):
            if proc.poll() is None:
                proc.kill()
    log = "".join(p.read_text() for p in sorted(tmp_path.glob("job-*.out")))
    assert job.returncode == 0, (err, log[-3000:])
    assert once.returncode == 0, once_err[-2000:]
    assert extended and warned_at is not None, log[-3000:]
    first = log.count("rlrun: SIGUSR1 before training started") + log.count("rlrun: stopped by SIGUSR1 after step")
    assert first == 2 and log.count("rlrun: stopped by SIGUSR1 after step") >= 1, log[-3000:]  # 1. and 2.
    assert log.count("resumed from") >= 1, log[-3000:]
    got_lines, want = plain(metrics(run)), plain(metrics(straight))
    assert [m["step"] for m in got_lines] == list(range(1, 1001))
    for a, b in zip(got_lines, want):
        for key in b:
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["step"], key)
