"""``make compare-bf16-demo`` for real (slow tier): the demo trained with ``trainer.precision=bf16``
and with fp32 (50 of the demo's 100 steps, to halve the time), their end accuracies within the
3-standard-error noise bound of scripts/compare_vllm_demo.py (tested by hand there)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import child_env, threads_alone

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.xdist_group("beside_the_rebuild")  # make test-slow: with the offload run, beside the rebuild
def test_bf16_trains_the_demo_to_the_accuracy_of_fp32_within_noise(tmp_path):
    out = tmp_path / "bf16_demo.json"
    done = subprocess.run([sys.executable, "scripts/compare_precision_demo.py", "--out", str(out), "steps=50"],
                          cwd=ROOT, capture_output=True, text=True, env=child_env(OMP_NUM_THREADS=str(threads_alone())), timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    runs = result["runs"]
    assert set(runs) == {"bf16", "fp32"} and result["within_noise"]
    for run in runs.values():  # both trained: the end is at least as good as the warm start's 0.9
        assert run["end"]["acc"] >= 0.9, runs
