"""``make compare-embedded`` in miniature: the real Hydra multirun over two of its presets (2 debug
steps each, from the compare variant of the tiny model), then scripts/compare_embedded.py's table, checked
against the runs' own summaries; and LCPO's held-out |length - target| against a hand computation
from the evaluation's own rollouts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import child_env

from rlrun.core.evaluation import aes

ROOT = Path(__file__).resolve().parents[2]
RLRUN = str(Path(sys.executable).with_name("rlrun"))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "sweep"
    env = child_env(OMP_NUM_THREADS="1")
    subprocess.run([RLRUN, "-m", "experiment=compare/grpo_correct,compare/lcpo", "debug=cpu",
                    "model=tiny_compare", "eval.problems=4", "eval.budgets=[48]",
                    f"hydra.sweep.dir={out}"], check=True, cwd=ROOT, env=env, capture_output=True)
    subprocess.run([sys.executable, "scripts/compare_embedded.py", str(out)], check=True, cwd=ROOT,
                   capture_output=True)
    return out


def test_table_rows_are_the_runs_summaries(sweep):
    rows = json.loads((sweep / "compare.json").read_text())
    assert [r["method"] for r in rows] == ["grpo_correct", "lcpo"]
    for r in rows:
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        start, end = summary["start"], summary["end"]
        assert (r["start_acc"], r["acc"]) == (start["acc"], end["acc"])
        assert (r["start_tokens"], r["mean_tokens"]) == (start["mean_tokens"], end["mean_tokens"])
        assert r["reduction_pct"] == pytest.approx(100 * (1 - end["mean_tokens"] / start["mean_tokens"]))
        if start["acc"] > 0:
            assert r["aes"] == pytest.approx(aes(end["acc"], end["mean_tokens"], start["acc"], start["mean_tokens"]))
        assert r["budget_48/mean_tokens"] == end["budget_48/mean_tokens"] <= 48
        assert r["seconds"] == summary["seconds"] > 0
    grpo, lcpo = rows
    assert grpo["length_deviation"] is None  # no target in its prompts
    assert lcpo["length_deviation"] == json.loads((Path(lcpo["run_dir"]) / "summary.json").read_text())[
        "end"]["length_deviation"]
    table = (sweep / "compare.md").read_text().splitlines()
    assert table[0].startswith("| method | acc start → end |") and "cap 48" in table[0]
    assert [line.split(" | ")[0] for line in table[2:]] == ["| GRPO + correct", "| LCPO (L1-Exact)"]


def test_lcpo_deviation_is_the_mean_distance_to_each_prompts_target():
    from rlrun.core.lcpo import LengthInstruction
    from rlrun.runtime.evaluation import measured
    from rlrun.types import Problem

    instruction = LengthInstruction(seed=0)  # its eval_sums read the targets the prompts carry

    problems = [Problem("a", "p", "1", {"target_tokens": 10, "target_mode": "exact"}),
                Problem("b", "p", "1", {"target_tokens": 20, "target_mode": "max"}),
                Problem("c", "p", "1", {"target_tokens": 30, "target_mode": "exact"})]
    lengths = [4, 12, 25, 50, 33, 27]  # 2 samples each; b's (a ceiling) are left out
    rollouts = _rollouts(problems, lengths)
    assert measured([instruction], rollouts) == {"length_deviation": pytest.approx((6 + 2 + 3 + 3) / 4)}
    plain = _rollouts([Problem("d", "p", "1")], [1, 1])
    assert measured([instruction], plain) == {}


def _rollouts(problems, lengths):
    import torch

    from rlrun.types import StepBatch

    n = len(lengths)
    return StepBatch(problems=problems, group_size=n // len(problems), prompt_ids=[[1]] * len(problems),
                    completion_ids=[[5] * k for k in lengths], texts=["x"] * n,
                    length_tokens_N=torch.tensor(lengths), truncated_N=torch.zeros(n, dtype=torch.bool),
                    budget_tokens_N=torch.full((n,), 64))
