"""``make compare-embedded`` in miniature: the real Hydra multirun over two of its presets and two
seeds (2 debug steps each, from the compare variant of the tiny model), then scripts/compare_embedded.py's
table (mean ± std over the seeds) and plot, checked against the runs' own summaries; the mean ± std
by hand; and LCPO's held-out |length - target| against a hand computation from the evaluation's own
rollouts."""
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
    subprocess.run([RLRUN, "-m", "experiment=compare/grpo_correct,compare/lcpo", "seed=0,1", "debug=cpu",
                    "model=tiny_compare", "eval.problems=4", "eval.budgets=[48]",
                    f"hydra.sweep.dir={out}"], check=True, cwd=ROOT, env=env, capture_output=True)
    forced = {"eval": {"arith": {"budget_256": {"acc": 0.9, "mean_tokens": 120.0},
                                 "force_96": {"acc": 0.5, "mean_tokens": 99.0},
                                 "force_64": {"acc": 0.25, "mean_tokens": 67.5}}}}
    (out / "forced.json").write_text(json.dumps(forced))
    subprocess.run([sys.executable, "scripts/compare_embedded.py", str(out)], check=True, cwd=ROOT,
                   capture_output=True)
    return out


def test_table_rows_are_the_runs_summaries(sweep):
    data = json.loads((sweep / "compare.json").read_text())
    runs, methods = data["runs"], data["methods"]
    assert [(r["method"], r["seed"]) for r in runs] == [("grpo_correct", 0), ("grpo_correct", 1), ("lcpo", 0), ("lcpo", 1)]
    for method in methods:  # mean and sample std over the two seeds
        pair = [r for r in runs if r["method"] == method["method"]]
        assert method["seeds"] == [0, 1]
        assert method["acc"] == pytest.approx((pair[0]["acc"] + pair[1]["acc"]) / 2)
        assert method["mean_tokens_std"] == pytest.approx(abs(pair[0]["mean_tokens"] - pair[1]["mean_tokens"]) / 2 ** 0.5)
    assert data["forced"] == [{"budget": 64, "acc": 0.25, "mean_tokens": 67.5},
                              {"budget": 96, "acc": 0.5, "mean_tokens": 99.0}]
    assert (sweep / "compare.png").stat().st_size > 10_000
    for r in runs:
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        start, end = summary["start"], summary["end"]
        assert (r["start_acc"], r["acc"]) == (start["acc"], end["acc"])
        assert (r["start_tokens"], r["mean_tokens"]) == (start["mean_tokens"], end["mean_tokens"])
        assert r["reduction_pct"] == pytest.approx(100 * (1 - end["mean_tokens"] / start["mean_tokens"]))
        if start["acc"] > 0:
            assert r["aes"] == pytest.approx(aes(end["acc"], end["mean_tokens"], start["acc"], start["mean_tokens"]))
        assert r["budget_48/mean_tokens"] == end["budget_48/mean_tokens"] <= 48
        assert r["seconds"] == summary["seconds"] > 0
    grpo, lcpo = runs[0], runs[2]
    assert grpo["length_deviation"] is None  # no target in its prompts
    assert lcpo["length_deviation"] == json.loads((Path(lcpo["run_dir"]) / "summary.json").read_text())[
        "end"]["length_deviation"]
    table = (sweep / "compare.md").read_text().splitlines()
    assert table[0].startswith("| method | seeds | acc start → end |") and "cap 48" in table[0]
    assert [line.split(" | ")[0] for line in table[2:]] == [
        "| GRPO + correct", "| LCPO (L1-Exact)", "| warm start, thinking forced to 64 tokens",
        "| warm start, thinking forced to 96 tokens"]
    assert " ± " in table[2] and table[2].split(" | ")[1] == "2"


def test_mean_and_sample_std_by_hand():
    sys.path.insert(0, str(ROOT / "scripts"))
    from compare_embedded import aggregate, mean_std

    assert mean_std([0.9, 0.95, 1.0]) == (pytest.approx(0.95), pytest.approx(0.05))  # sqrt((.0025+0+.0025)/2)
    assert mean_std([3.0]) == (3.0, None)
    runs = [{"method": "m", "seed": s, "acc": a, "mean_tokens": t, "start_acc": 0.5, "start_tokens": 100.0,
             "length_deviation": None} for s, a, t in ((1, 0.8, 90.0), (0, 0.6, 110.0))]
    (row,) = aggregate(runs)
    assert row["seeds"] == [0, 1] and row["acc"] == pytest.approx(0.7) and row["acc_std"] == pytest.approx(0.141421, abs=1e-6)
    assert row["mean_tokens"] == 100.0 and row["mean_tokens_std"] == pytest.approx(14.142136, abs=1e-6)


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
