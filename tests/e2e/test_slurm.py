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
from pathlib import Path

import pytest

from conftest import child_env

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
    return [{k: v for k, v in m.items() if not k.startswith(("time/", "throughput/"))} for m in lines]


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


def test_a_time_limit_mid_run_checkpoints_requeues_and_finishes_as_if_never_stopped(tmp_path):
    """The job's limit is 1 minute and SIGUSR1 comes 40 s before it: the run (1200 steps of 16 tokens, ~40 s) is
    stopped after ~20 s, requeued by the script, and resumes."""
    run, straight = tmp_path / "run", tmp_path / "straight"
    common = ["debug=cpu", "eval=none", "steps=1200", "checkpoint_every=5000", "group_size=2",
              "prompts_per_step=2", "rollout.max_new_tokens=16"]
    got = subprocess.run(
        ["sbatch", "--wait", "--open-mode=append", "--time=1", "--signal=USR1@40", "--ntasks-per-node=1", "--cpus-per-task=2",
         f"--output={tmp_path}/job-%j.out", str(ROOT / "scripts" / "slurm" / "train.sbatch"), *common],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
        env=child_env(RUN_DIR=str(run), PYTHON=sys.executable, OMP_NUM_THREADS="1"))
    log = "".join(p.read_text() for p in sorted(tmp_path.glob("job-*.out")))
    assert got.returncode == 0, (got.stderr, log[-3000:])
    assert "rlrun: stopped by SIGUSR1 after step" in log, log[-3000:]
    assert "resumed from" in log, log[-3000:]
    once = subprocess.run([sys.executable, "-m", "rlrun", *common, "trainer=zero2", f"hydra.run.dir={straight}"],
                          capture_output=True, text=True, env=child_env(OMP_NUM_THREADS="1"), timeout=900)
    assert once.returncode == 0, once.stderr[-2000:]
    got_lines, want = plain(metrics(run)), plain(metrics(straight))
    assert [m["step"] for m in got_lines] == list(range(1, 1201))
    for a, b in zip(got_lines, want):
        for key in b:
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["step"], key)
