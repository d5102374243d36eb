"""FixedBudget: one cap for every prompt, no state."""
import pytest

from rlrun.core.curricula import FixedBudget
from rlrun.types import Problem


def test_fixed_budget():
    curriculum = FixedBudget(max_new_tokens=256)
    problems = [Problem(uid=str(i), prompt="q", answer="a") for i in range(3)]
    assert curriculum.budgets(0, problems) == [256, 256, 256]
    curriculum.observe(0, {"acc/train": 1.0})
    assert curriculum.budgets(7, problems[:1]) == [256]
    assert curriculum.state_dict() == {}
    curriculum.load_state_dict({})
    with pytest.raises(ValueError):
        curriculum.load_state_dict({"budget": 3})


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_bad_budget(bad):
    with pytest.raises(ValueError):
        FixedBudget(max_new_tokens=bad)
