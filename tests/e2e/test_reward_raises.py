"""A reward term that raises in a real ``rlrun`` run: one line naming the term and the completion
(``rlrun: error: reward term ...``), exit 1, no traceback, and what was written before (the run's
config, the first step's metrics and checkpoint) intact."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import child_env

TESTS = str(Path(__file__).resolve().parents[1])  # reward_terms.py, importable by the child


def test_a_raising_reward_term_stops_the_run_with_one_line(tmp_path):
    run = tmp_path / "run"
    path = os.pathsep.join(filter(None, [TESTS, os.environ.get("PYTHONPATH")]))
    env = child_env(OMP_NUM_THREADS="1", PYTHONPATH=path)
    done = subprocess.run(
        [sys.executable, "-m", "rlrun", "debug=cpu", "eval=none", "steps=3", "checkpoint_every=1",
         f"hydra.run.dir={run}", "+reward.terms.boom={weight:0.0,fn:{_target_:reward_terms.RaisesFromStep,step:1}}"],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("rlrun: error: reward term "), done.stderr[-3000:]
    assert re.fullmatch(r"rlrun: error: reward term 'boom' raised ValueError: boom on completion 0 of the step's "
                        r"batch \(prompt 0, uid '[^']+'\) at step 2; fix the term or leave it out of the reward",
                        last), last
    # what the run wrote before step 2 stays: its config, step 1's metrics line and checkpoint
    assert (run / ".hydra" / "config.yaml").is_file()
    with open(run / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [1]
    assert (run / "checkpoints" / "step_000001" / "manifest.json").is_file()
    assert not (run / "checkpoints" / "step_000002").exists()
