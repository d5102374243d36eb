"""``rlrun`` end to end through a real process on the tiny model: a 2-step ``debug=cpu`` run writes
everything a run dir promises, changes the parameters, and a resumed run continues exactly."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import child_env
import torch
from safetensors.torch import load_file

STEP_METRICS = {
    "acc/train", "length/mean_tokens", "length/p50_tokens", "length/p90_tokens",
    "length/correct_mean_tokens", "length/incorrect_mean_tokens", "length/truncated_frac",
    "reward/total", "reward/correct", "loss/policy", "loss/kl", "ppo/clip_frac",
    "curriculum/budget_mean_tokens", "throughput/tokens_per_s", "optim/lr", "optim/grad_norm",
    "time/rollout_s", "time/reward_s", "time/update_s", "time/sync_s",
    "time/step_s", "rollout/sampled", "rollout/kept", "rollout/rounds",
    "throughput/update_tokens_per_s", "memory/peak_gb", "memory/rollout_peak_gb", "memory/update_peak_gb",
}


def rlrun(run_dir, *args: str) -> subprocess.CompletedProcess:
    env = child_env()
    result = subprocess.run(
        [sys.executable, "-m", "rlrun", "debug=cpu", f"hydra.run.dir={run_dir}", *args],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def metrics(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_debug_run_writes_the_run_dir_and_trains(tmp_path):
    from rlrun.tasks.tiny_model import tiny_model_spec

    run_dir = tmp_path / "run"
    result = rlrun(run_dir, "logger=wandb", "algo.loss.kl_coef=0.04")
    assert "step 2/2 |" in result.stdout and f"run dir: {run_dir}" in result.stdout
    lines = metrics(run_dir)
    steps = [line for line in lines if "acc/train" in line]
    assert [line["step"] for line in steps] == [1, 2]
    for line in steps:
        assert STEP_METRICS | {"time/ref_logprobs_s"} <= set(line), STEP_METRICS - set(line)
    evals = [line for line in lines if "eval/heldout/acc" in line]
    assert [line["step"] for line in evals] == [0, 2]
    summary = json.load(open(run_dir / "summary.json"))
    assert set(summary) >= {"start", "end", "run_dir", "checkpoint"}
    assert summary["end"]["acc"] == evals[-1]["eval/heldout/acc"]
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    env = json.load(open(run_dir / "environment.json"))
    assert env["versions"]["torch"] == torch.__version__.split("+")[0] or env["versions"]["torch"] == torch.__version__
    # W&B offline run with the metric history
    wandb_files = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(wandb_files) == 1 and os.path.getsize(wandb_files[0]) > 0
    # the final checkpoint is a Hugging Face model whose weights moved away from the start
    start = load_file(os.path.join(tiny_model_spec().path, "model.safetensors"))
    end = load_file(str(run_dir / "checkpoints" / "step_000002" / "model" / "model.safetensors"))
    assert set(start) <= set(end)  # a tied lm_head may be written out as well
    moved = [name for name in start if not torch.equal(start[name], end[name])]
    assert len(moved) == len(start), sorted(set(start) - set(moved))


def test_resume_continues_identically(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = ("steps=4", "checkpoint_every=2", "eval=none")
    rlrun(straight, *common)
    rlrun(resumed, *common, f"resume={straight / 'checkpoints' / 'step_000002'}")
    a = [m for m in metrics(straight) if m["step"] > 2]
    b = metrics(resumed)
    assert [m["step"] for m in a] == [m["step"] for m in b] == [3, 4]
    for x, y in zip(a, b):
        for key in x:
            if not key.startswith(("time/", "throughput/", "memory/")):
                assert x[key] == pytest.approx(y[key], abs=1e-6), key


def test_a_sweep_writes_one_run_dir_per_job(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rlrun", "-m", "seed=0,1", "debug=cpu", "eval=none",
         f"hydra.sweep.dir={tmp_path}"],
        capture_output=True, text=True, env=child_env(), timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job, seed in (("0", 0), ("1", 1)):
        assert [m["step"] for m in metrics(tmp_path / job)] == [1, 2]
        assert f"seed: {seed}" in (tmp_path / job / ".hydra" / "config.yaml").read_text()
