"""The loop's monitor set for LASER-D (ALGORITHMS.md 3.2.3), evaluation at the curriculum's current
budget, and a budget stated in the prompt (Train Long, Think Short), each through a real run."""
from __future__ import annotations

import json

import pytest

from rlrun.runtime import dist, loop
from rlrun.wiring.cli import compose
from rlrun.wiring.config_check import ConfigError
from rlrun.wiring.build import build_run

DEBUG = ["debug=cpu", "eval=none"]


def lines_of(out_dir) -> list[dict]:
    return [json.loads(line) for line in open(out_dir / "metrics.jsonl")]


@pytest.mark.parametrize("source", ["data", "eval"])
def test_laser_d_monitor_set_is_sampled_when_due_and_sets_the_targets(source, tmp_path):
    dist.init()
    fn = "reward.terms.laser_d.fn"
    cfg = compose(["reward=laser_d", *DEBUG, "steps=3", f"{fn}.monitor={source}", f"{fn}.monitor_every=2",
                   f"{fn}.monitor_problems=3", f"{fn}.targets.n_rollout=4", f"{fn}.targets.lower_bound=16",
                   f"{fn}.targets.upper_bound=256", f"{fn}.targets.interval=16"])
    loop.train(build_run(cfg, str(tmp_path)))
    lines = lines_of(tmp_path)
    # due before steps 0 and 2 (0-based): logged with steps 1 and 3; the targets say when they were measured
    assert [line.get("monitor/laser_d/questions") for line in lines] == [3.0, None, 3.0]
    assert [line["reward/laser_d/laser/monitor_step"] for line in lines] == [0.0, 0.0, 2.0]
    assert 0.0 <= lines[0]["monitor/laser_d/acc"] <= 1.0 and lines[0]["monitor/laser_d/mean_tokens"] > 16
    # 3 questions x 4 responses: the bucket question counts add up to 3
    assert sum(lines[0][f"reward/laser_d/laser/monitor_{d}_questions"] for d in ("high", "medium", "low")) == 3


def test_monitor_on_a_source_without_one_fails_at_start(tmp_path):
    from rlrun.wiring.build import check_monitor_source
    from rlrun.core.laser_d import LaserD
    from rlrun.core.rewards import Composite

    reward = Composite({"laser_d": {"weight": 1.0, "fn": LaserD(monitor="data")}})
    with pytest.raises(ConfigError, match="LaserD monitor=data needs data.source.monitor\\(n\\), which list lacks"):
        check_monitor_source([], reward)


def test_eval_at_the_current_budget_of_a_shrinking_curriculum(tmp_path):
    dist.init()
    cfg = compose(["curriculum=budget_exponential", "debug=cpu", "eval.problems=4", "eval.budget=current"])
    summary = loop.train(build_run(cfg, str(tmp_path)))
    # 2 steps, 3 decays: k(2) = min(3, 2*4 // 2) = 3 -> the final 87 tokens at the end
    assert summary["start"]["budget_mean_tokens"] == 256.0 and summary["end"]["budget_mean_tokens"] == 87.0
    assert summary["end"]["mean_tokens"] <= 87


def test_eval_budget_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="eval.budget=later is not valid; choose one of start, current"):
        build_run(compose(["debug=cpu", "eval.budget=later"]), str(tmp_path))


def test_budget_stated_in_the_prompt_and_rewarded_by_the_triangular_term(tmp_path):
    dist.init()
    cfg = compose(["curriculum=budget_exponential", "reward=[correct,triangular]", *DEBUG,
                   "curriculum.prompt_line='Use {budget} tokens.'", "curriculum.cap_tokens=300"])
    run = build_run(cfg, str(tmp_path))
    stated = run.prompts(run.problems.batch(0, 2), 0)
    assert stated[0].prompt.endswith(". Use 256 tokens.\n") and stated[0].meta["budget_tokens"] == 256
    assert run.curriculum.budgets(1, stated) == [300, 300]
    loop.train(run)
    lines = lines_of(tmp_path)
    assert [line["curriculum/stated_budget_mean_tokens"] for line in lines] == [256.0, 125.0]  # k(1) = 1*4 // 2 = 2 drops
    assert [line["curriculum/budget_mean_tokens"] for line in lines] == [300.0, 300.0]
    assert all(0.0 <= line["reward/triangular"] <= 1.0 for line in lines)


def test_hapo_history_is_reused_with_a_question_pool(tmp_path):
    dist.init()
    # 2 prompts per step from a pool of 3: by step 4 some question has come back, and the history
    # holds at most the 3 pooled questions (without a pool it would grow by 2 every step)
    cfg = compose(["reward=hapo", *DEBUG, "steps=4", "data.source.pool=3"])
    loop.train(build_run(cfg, str(tmp_path)))
    sizes = [line["reward/hapo/history_size"] for line in lines_of(tmp_path)]
    assert max(sizes) <= 3 and sizes[-1] >= 2


def test_eval_at_several_budgets_with_samples_feeds_rlrun_pareto(tmp_path):
    from rlrun.analysis.pareto import main as pareto_main

    dist.init()
    run_dir = tmp_path / "run"
    cfg = compose(["debug=cpu", "eval.problems=4", "eval.samples=2", "eval.budgets=[64,256]"])
    summary = loop.train(build_run(cfg, str(run_dir)))
    end = summary["end"]
    assert end["budget_64/acc"] == 0.0 and end["budget_64/truncated_frac"] == 1.0  # answers need ~120
    assert end["budget_256/truncated_frac"] == 0.0 and 0.0 <= end["pass@2"] <= 1.0
    assert end["pass@2"] >= end["acc"]
    assert summary["eval"]["heldout"]["budget_64"]["mean_tokens"] == 64.0
    lines = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert lines[0]["step"] == 0 and "eval/heldout/budget_256/acc" in lines[0]
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("- eval.samples=2\n")
    (run_dir / "summary.json").write_text(json.dumps(summary))
    pareto_main([str(run_dir), "--out", str(tmp_path / "pareto")])
    rows = (tmp_path / "pareto" / "pareto.csv").read_text().splitlines()
    assert any(",heldout,64," in row for row in rows) and any(",heldout,256," in row for row in rows)
