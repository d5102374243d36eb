"""Composite reward: weighted sum of named, unweighted terms; the correct and format terms; the
reward yaml files merged as Hydra merges ``reward=[correct,format]``."""
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
