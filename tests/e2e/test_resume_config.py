"""A resume continues with the run's own config (rlrun.wiring.resume_config): real ``rlrun``
processes on the tiny model. The run being resumed used non-default group size, prompts per step,
logger and evaluation; ``rlrun resume=<run> steps=3`` must continue with those, exactly as a
straight 3-step run of the same command, and a change that alters the experiment is refused in one
line unless forced (and then recorded)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import child_env

ORIGINAL = ["debug=cpu", "eval=none", "group_size=2", "prompts_per_step=4", "checkpoint_every=2"]


def rlrun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlrun", *args], capture_output=True, text=True,
                          env=child_env(OMP_NUM_THREADS="1"), timeout=300)


def metrics(run_dir) -> list[dict]:
    with open(run_dir / "metrics.jsonl") as f:
        found = [json.loads(line) for line in f]
    return [{k: v for k, v in m.items() if not k.startswith(("time/", "throughput/", "memory/"))} for m in found]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_config")
    for name, steps in (("straight", 3), ("first", 2)):
        done = rlrun(*ORIGINAL, f"steps={steps}", f"hydra.run.dir={root / name}")
        assert done.returncode == 0, done.stderr[-2000:]
    return root


def test_a_resume_with_only_steps_continues_with_the_runs_own_config(runs):
    out = runs / "continued"
    done = rlrun(f"resume={runs / 'first'}", "steps=3", f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "continuing with the run's own config" in done.stdout
    assert metrics(out) == metrics(runs / "straight")[2:]  # step 3, every key but wall times
    assert metrics(out)[0]["rollout/sampled"] == 8.0  # 4 prompts x 2, not the defaults' 8 x 8
    assert not (out / "wandb").exists()  # the run's logger (jsonl), not the default W&B
    entry = json.loads((out / "resumes.jsonl").read_text())
    assert entry["after_step"] == 2 and entry["forced"] == []
    assert {"group_size", "prompts_per_step", "logger._target_", "eval.at_steps"} <= set(entry["restored"])
    assert entry["changed"]["steps"] == [2, 3]
    hydra_config = (out / ".hydra" / "config.yaml").read_text()
    assert "group_size: 2\n" in hydra_config and "prompts_per_step: 4\n" in hydra_config
    assert f"run dir: {out}" in done.stdout


def test_a_change_to_the_experiment_is_refused_in_one_line_and_leaves_nothing(runs):
    out = runs / "refused"
    before = sorted(p.name for p in (runs / "first").rglob("*"))
    done = rlrun(f"resume={runs / 'first'}", "steps=3", "group_size=8", "algo=drpo", f"hydra.run.dir={out}")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("rlrun: error: resume from ")
    assert "group_size (2 in the run, 8 given)" in lines[0]
    assert "algo=drpo changes " in lines[0] and "resume.allow_changes=true" in lines[0]
    assert not out.exists()  # no empty run dir left behind
    assert sorted(p.name for p in (runs / "first").rglob("*")) == before


def test_allow_changes_forces_the_change_and_records_it(runs):
    out = runs / "forced"
    done = rlrun(f"resume={runs / 'first'}", "steps=3", "group_size=4", "resume.allow_changes=true",
                 f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resume.allow_changes=true: the experiment changes at this step: group_size 2 -> 4" in done.stderr
    assert metrics(out)[0]["rollout/sampled"] == 16.0  # 4 prompts x 4
    entry = json.loads((out / "resumes.jsonl").read_text())
    assert entry["forced"] == ["group_size"] and entry["changed"]["group_size"] == [2, 4]
