"""A budget curriculum states its budget per prompt (meta and an optional prompt line, Train Long
Think Short / ThinkPrune) and the triangular term reads it (ALGORITHMS.md 3.4.3, 3.5.3)."""
import dataclasses

import pytest
import torch

from rlrun.core.budget_curricula import ExponentialBudget, ThinkPruneLimit
from rlrun.core.prompt_text import append_line
from rlrun.core.budget_rewards import TriangularLengthReward
from rlrun.types import Problem
from tests.conftest import step_input

LINE = "IMPORTANT: You should use exactly {budget} tokens in your response."


def test_prompts_state_the_budget_of_the_step():
    cur = ExponentialBudget(256, 87, 3, 600, prompt_line=LINE)
    problems = [Problem("p0", "Add 1+2.\n", "3")]
    first, = cur.prompts(problems, 0)
    assert first.prompt == "Add 1+2. IMPORTANT: You should use exactly 256 tokens in your response.\n"
    assert first.meta == {"budget_tokens": 256}
    later, = cur.prompts(problems, 150)  # 178.648645 -> 179
    assert later.meta["budget_tokens"] == 179 and "exactly 179 tokens" in later.prompt
    assert problems[0].prompt == "Add 1+2.\n" and problems[0].meta == {}  # inputs untouched
    assert cur.budgets(150, problems) == [179]  # no cap_tokens: the cap is the budget


def test_fixed_cap_keeps_the_budget_stated_only():
    cur = ExponentialBudget(256, 87, 3, 600, cap_tokens=512)
    problems = [Problem("p0", "Add 1+2.\n", "3")]
    assert cur.budgets(450, problems) == [512]
    stated, = cur.prompts(problems, 450)
    assert stated.meta["budget_tokens"] == 87 and stated.prompt == "Add 1+2.\n"  # no line


def test_thinkprune_line_and_bad_lines():
    cur = ThinkPruneLimit(4000, prompt_line="The output of the assistant should be within {budget} tokens.")
    p, = cur.prompts([Problem("p0", "Q", "1")], 0)
    assert p.prompt == "Q The output of the assistant should be within 4000 tokens."
    with pytest.raises(ValueError, match="must be a string containing \\{budget\\}"):
        ThinkPruneLimit(4000, prompt_line="within N tokens")
    with pytest.raises(ValueError, match="placeholder other than"):
        ThinkPruneLimit(4000, prompt_line="{budget} of {cap}")
    with pytest.raises(ValueError, match="cap_tokens must be an int >= 1"):
        ThinkPruneLimit(4000, cap_tokens=0)
    assert append_line("", "x") == "x"


def test_triangular_term_reads_the_stated_budget_per_group():
    # two groups of 2: budgets 87 and 100; lengths without EOS 80, 120 | 100, 250
    step = step_input([1, 1, 0, 1], [81, 121, 101, 250], [False, False, False, True], 512, 2)
    problems = [dataclasses.replace(p, meta={"budget_tokens": b})
                for p, b in zip(step.problems, (87, 100))]
    step = step.with_columns(problems=problems)
    r = TriangularLengthReward()(step)
    torch.testing.assert_close(r, torch.tensor([0.919540, 0.620690, 1.0, 0.0]), atol=1e-6, rtol=0)
    assert TriangularLengthReward(r_max=2.0, band=True)(step)[0].item() == 2.0


def test_triangular_term_without_a_stated_budget_names_the_fix():
    step = step_input([1, 1], [10, 12], [False, False], 64, 2)
    with pytest.raises(ValueError, match="needs a budget curriculum, e.g. curriculum=budget_exponential"):
        TriangularLengthReward()(step)
    with pytest.raises(ValueError, match="r_max=0"):
        TriangularLengthReward(r_max=0)
