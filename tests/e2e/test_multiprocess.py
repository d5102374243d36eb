"""``rlrun`` as 2 data-parallel processes on CPU with ZeRO-3, under the launchers users type."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

from conftest import child_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_run_dir(run_dir) -> None:
    lines = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    steps = [line for line in lines if "acc/train" in line]
    assert [line["step"] for line in steps] == [1, 2]  # rank 0 logs once per step
    summary = json.load(open(run_dir / "summary.json"))
    shards = os.listdir(run_dir / "checkpoints" / "step_000002" / "trainer")
    assert summary["checkpoint"].endswith("step_000002") and shards
    for rank in (0, 1):
        assert (run_dir / "checkpoints" / "step_000002" / f"rng_rank{rank}.pt").is_file()


def launch(command: list[str], run_dir) -> None:
    env = child_env(OMP_NUM_THREADS="1")
    args = ["trainer=zero3", "debug=cpu", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command + args, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    assert "step 2/2 |" in result.stdout
    assert result.stdout.count("step 2/2 |") == 1  # only rank 0 reports


def test_torchrun_two_processes_zero3(tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    launch([torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "rlrun"], tmp_path / "run")
    check_run_dir(tmp_path / "run")


def test_deepspeed_launcher_two_processes_zero3(tmp_path):
    launcher = shutil.which("deepspeed", path=os.path.dirname(sys.executable))
    launch([launcher, "--num_gpus", "2", "--master_port", str(free_port()), "--module", "rlrun"], tmp_path / "run")
    check_run_dir(tmp_path / "run")
