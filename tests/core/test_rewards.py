"""Composite reward: weighted sum of named, unweighted terms; the correct and format terms; the
reward yaml files merged as Hydra merges ``reward=[correct,format]``."""
import re
from pathlib import Path

import pytest
import torch

from rlrun.core.rewards import Composite, CorrectReward, FormatReward
from rlrun.types import Problem, StepBatch, Verdicts
from conftest import with_verdicts

CONF = Path(__file__).resolve().parents[2] / "conf" / "reward"


def _step() -> StepBatch:
    problems = [Problem(uid="p0", prompt="1+1=", answer="2"), Problem(uid="p1", prompt="2+2=", answer="4")]
    rollouts = StepBatch(
        problems=problems, group_size=2, prompt_ids=[[1]] * 2, completion_ids=[[5, 2]] * 4,
        texts=["a", "b", "c", "d"], length_tokens_N=torch.tensor([1, 1, 1, 1]),
        truncated_N=torch.zeros(4, dtype=torch.bool), budget_tokens_N=torch.full((4,), 8),
    )
    verdicts = Verdicts(correct_N=torch.tensor([1.0, 0.0, 1.0, 0.0]),
                        format_ok_N=torch.tensor([1.0, 1.0, 0.0, 0.0]), predicted=["2", "3", None, None])
    return with_verdicts(rollouts=rollouts, verdicts=verdicts, step=0)


def test_single_terms():
    step = _step()
    assert CorrectReward()(step).tolist() == [1.0, 0.0, 1.0, 0.0]
    assert FormatReward()(step).tolist() == [1.0, 1.0, 0.0, 0.0]


def test_weighted_sum_keeps_unweighted_terms():
    reward = Composite({"correct": {"weight": 1.0, "fn": CorrectReward()},
                        "format": {"weight": 0.5, "fn": FormatReward()}})
    scored = reward(_step())
    # r = 1.0·[1,0,1,0] + 0.5·[1,1,0,0] = [1.5, 0.5, 1.0, 0.0]
    assert scored.reward_N.tolist() == pytest.approx([1.5, 0.5, 1.0, 0.0], abs=1e-6)
    assert scored.terms["correct"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert scored.terms["format"].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_composite_errors():
    with pytest.raises(ValueError):
        Composite({})
    with pytest.raises(ValueError, match="weight"):
        Composite({"correct": {"fn": CorrectReward()}})
    with pytest.raises(ValueError, match="callable"):
        Composite({"correct": {"weight": 1.0, "fn": 3}})
    with pytest.raises(ValueError, match="total"):
        Composite({"total": {"weight": 1.0, "fn": CorrectReward()}})


def test_yaml_files_merge_into_weighted_sum():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(OmegaConf.load(CONF / "correct.yaml"), OmegaConf.load(CONF / "format.yaml"))
    cfg.terms.format.weight = 0.5  # reward.terms.format.weight=0.5
    scored = instantiate(cfg)(_step())
    assert scored.reward_N.tolist() == pytest.approx([1.5, 0.5, 1.0, 0.0], abs=1e-6)
    assert sorted(scored.terms) == ["correct", "format"]


class CountingTerm:
    """A stateful term: how many completions it has scored so far."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, step):
        self.seen += len(step.correct_N)
        return step.correct_N.float()

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]


def test_composite_saves_and_restores_the_state_of_its_stateful_terms():
    from rlrun.core.rewards import Composite, CorrectReward

    reward = Composite({"correct": {"weight": 1.0, "fn": CorrectReward()},
                        "count": {"weight": 0.0, "fn": CountingTerm()}})
    reward.fns["count"].seen = 7
    assert reward.state_dict() == {"count": {"seen": 7}}  # stateless terms save nothing
    fresh = Composite({"correct": {"weight": 1.0, "fn": CorrectReward()},
                       "count": {"weight": 0.0, "fn": CountingTerm()}})
    fresh.load_state_dict(reward.state_dict())
    assert fresh.fns["count"].seen == 7
    with pytest.raises(ValueError, match="reward term 'kimi'"):
        fresh.load_state_dict({"kimi": {}})


def boom_on_c(step):
    """A plain (vectorised) term that raises for the completion whose text is "c" (index 2)."""
    if "c" in step.texts:
        raise ValueError("boom")
    return step.correct_N.float()


def test_a_raising_term_is_one_line_naming_the_term_and_the_completion():
    from rlrun.core.rewards import RewardError

    reward = Composite({"correct": {"weight": 1.0, "fn": CorrectReward()},
                        "boom": {"weight": 0.5, "fn": boom_on_c}})
    with pytest.raises(RewardError) as caught:
        reward(_step())
    assert str(caught.value) == ("reward term 'boom' raised ValueError: boom on completion 2 of the step's batch "
                                 "(prompt 1, uid 'p1') at step 1; fix the term or leave it out of the reward")
    assert (caught.value.term, caught.value.index) == ("boom", 2)
    assert isinstance(caught.value.__cause__, ValueError) and isinstance(caught.value, RuntimeError)


class StatefulBoom(CountingTerm):
    """A stateful term that raises: it is not re-run on single completions (its state would change)."""

    def __call__(self, step):
        self.seen += len(step.correct_N)
        raise KeyError("no such\nkey")


def test_a_raising_term_that_cannot_be_re_run_is_named_on_the_batch():
    from rlrun.core.rewards import RewardError

    term = StatefulBoom()
    with pytest.raises(RewardError) as caught:
        Composite({"boom": {"weight": 1.0, "fn": term}})(_step())
    assert str(caught.value) == (
        "reward term 'boom' raised KeyError: 'no such\\nkey' on the step's batch of 4 completions (which completion "
        "is unknown: a term with state, metrics or collectives is not re-run alone) at step 1; fix the term or "
        "leave it out of the reward")
    assert caught.value.index is None and term.seen == 4  # called once, on the batch


def test_a_term_that_raises_only_on_the_whole_batch_is_named_on_the_batch():
    from rlrun.core.rewards import RewardError

    def needs_three_correct(step):
        if len(step) > 1 and step.correct_N.sum() < 3:
            raise RuntimeError("too few correct\n  answers")
        return step.correct_N

    with pytest.raises(RewardError, match=r"^reward term 'group' raised RuntimeError: too few correct answers on "
                                          r"the step's batch of 4 completions \(which completion is unknown: none "
                                          r"raises it alone\) at step 1; ") as caught:
        Composite({"group": {"weight": 1.0, "fn": needs_three_correct}})(_step())
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("returned, says", [
    (torch.zeros(4, 2), "returned shape (4, 2) for a batch of 4 completions, need a tensor of shape (4,)"),
    (torch.zeros(1), "returned shape (1,) for a batch of 4 completions, need a tensor of shape (4,)"),
    ([0.0] * 4, "returned list for a batch of 4 completions, need a tensor of shape (4,)"),
], ids=["2d", "broadcast", "list"])
def test_a_term_returning_the_wrong_shape_is_one_line(returned, says):
    from rlrun.core.rewards import RewardError

    with pytest.raises(RewardError, match=r"^reward term 'bad' " + re.escape(says) + "; fix the term"):
        Composite({"bad": {"weight": 1.0, "fn": lambda step: returned}})(_step())
