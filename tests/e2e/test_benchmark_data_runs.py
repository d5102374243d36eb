"""Training on a vendored benchmark (MATH train, evaluated on MATH-500) runs through the loop with
the math-verify checker, whose counts reach the step metrics (verify/checked, errors, timeouts)."""
from __future__ import annotations

import json

from rlrun.runtime import dist, loop
from rlrun.wiring.cli import compose
from rlrun.wiring.build import build_run


def test_math_data_runs_two_steps_with_verifier_counts(tmp_path):
    dist.init()
    cfg = compose(["data=math", "debug=cpu", "eval.problems=2", "curriculum.max_new_tokens=48"])
    run = build_run(cfg, str(tmp_path))
    summary = loop.train(run)
    run.verifier.close()
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    steps = [line for line in lines if "acc/train" in line]
    assert [line["step"] for line in steps] == [1, 2]
    for line in steps:  # 2 prompts x 4 completions; only those with a \boxed{} answer are checked
        assert line["verify/errors"] == 0.0 and line["verify/timeouts"] == 0.0
        assert 0.0 <= line["verify/checked"] <= 8.0 and line["acc/train"] == 0.0
    assert summary["end"]["acc"] == 0.0 and summary["start"]["budget_mean_tokens"] == 48.0
