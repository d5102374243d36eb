"""``eval.force_budgets`` in a training run's evaluation (2 steps, ``debug=cpu``): ``force_<N>/...``
metrics beside the others, the end's forced points in summary.json, and rlrun-pareto drawing them."""
from __future__ import annotations

import csv
import json

import pytest

from rlrun.analysis import pareto
from rlrun.runtime import dist, loop
from rlrun.wiring.build import build_run
from rlrun.wiring.cli import compose
from rlrun.wiring.config_check import ConfigError

FORCED = ["acc", "mean_tokens", "truncated_frac", "thinking_mean_tokens", "answer_mean_tokens"]


def test_forced_budgets_in_the_runs_evaluation_and_on_its_pareto_plot(tmp_path):
    dist.init()
    # greedy: at 48 every thinking (~96 tokens on the held-out sums) is cut; at 200 none is
    cfg = compose(["debug=cpu", "eval.problems=4", "eval.temperature=0", "eval.force_budgets=[48,200]",
                   "eval.force_answer_tokens=16"])
    summary = loop.train(build_run(cfg, str(tmp_path)))
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [line for line in lines if "eval/heldout/acc" in line]
    assert [line["step"] for line in evals] == [0, 2]
    for line in evals:
        assert {f"eval/heldout/force_{n}/{k}" for n in (48, 200) for k in FORCED} <= set(line)
        assert line["eval/heldout/force_48/thinking_mean_tokens"] == 48.0
        assert 48 + 9 <= line["eval/heldout/force_48/mean_tokens"] <= 48 + 9 + 16  # marker + cue + answer
    start = evals[0]  # the tiny model as shipped: forced at 200 is its plain greedy response
    assert start["eval/heldout/force_200/mean_tokens"] == start["eval/heldout/mean_tokens"]
    assert start["eval/heldout/force_200/acc"] == start["eval/heldout/acc"] == 1.0
    assert set(summary["eval"]["heldout"]) == {"force_48", "force_200"}
    assert sorted(summary["eval"]["heldout"]["force_48"]) == sorted(FORCED)
    assert pareto.main([str(tmp_path), "--out", str(tmp_path)]) == 0
    with open(tmp_path / "pareto.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["kind"], r["budget"]) for r in rows if r["kind"] == "forced") == [("forced", "200"), ("forced", "48")]
    assert {r["kind"] for r in rows} == {"start", "end", "forced"}


@pytest.mark.parametrize("override, message", [
    ("eval.force_budgets=[0,64]", r"^eval\.force_budgets=\[0, 64\] \(thinking budgets\) and eval\.force_answer_tokens=128 "
                                  r"must be >= 1 token each$"),
    ("eval.force_answer_tokens=0", r"^eval\.force_budgets=\[\] \(thinking budgets\) and eval\.force_answer_tokens=0 "
                                   r"must be >= 1 token each$"),
    ("eval.force_budgets=64", r"^eval\.force_budgets=64 is not"),
])
def test_bad_forced_budgets_are_one_line(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        build_run(compose(["debug=cpu", override]), str(tmp_path))
