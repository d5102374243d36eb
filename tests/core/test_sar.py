"""SAR (ALGORITHMS.md 4.5.7): the worked example through the reward ``reward=[correct,sar]`` and
Dr. GRPO's advantages, from the policy's log-probs as the trainer hands them over (``policy_NT``)."""
from __future__ import annotations

import math

import pytest
import torch

from rlrun.core.advantages import GroupCentered
from rlrun.core.rewards import Composite, CorrectReward
from rlrun.core.sar import SelfAlignedReward
from rlrun.types import Problem, StepBatch

COND = [[-0.1, -0.2, -0.05, -0.3], [-0.3, -0.4, -0.2, -0.5, -0.6, -0.3], [-1.0, -0.8, -1.2], [-2.0, -1.5]]
UNCOND = [[-2.0, -1.5, -0.5, -1.0], [-0.6, -0.5, -0.4, -0.7, -0.6, -0.5], [-1.1, -0.9, -1.0], [-0.5, -0.4]]


def padded(rows: list[list[float]]) -> torch.Tensor:
    out = torch.zeros(len(rows), max(map(len, rows)))
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out


def example(term: SelfAlignedReward, cond=COND, uncond=UNCOND, correct=(1.0, 1.0, 0.0, 0.0)) -> StepBatch:
    ids = [[5] * len(r) for r in cond]  # T tokens each (EOS among them: SAR counts every response token)
    return StepBatch(problems=[Problem("q", "p", "1")], group_size=len(cond), prompt_ids=[[1]], completion_ids=ids,
                     length_tokens_N=torch.tensor([len(r) - 1 for r in cond]),
                     truncated_N=torch.zeros(len(cond), dtype=torch.bool), correct_N=torch.tensor(correct),
                     policy_NT={term.conditioned.key: padded(cond), term.unconditioned.key: padded(uncond)})


def test_worked_example_rewards_and_dr_grpo_advantages():
    term = SelfAlignedReward()
    reward = Composite({"correct": {"weight": 1.0, "fn": CorrectReward()}, "sar": {"weight": 0.2, "fn": term}})
    batch = example(term)
    scored = reward(batch)
    # j=1: mean cond −0.1625, uncond −1.25: ppl(a|q) = 1.176448, ppl(a) = 3.490343 -> (3.490343−1.176448)/3.490343
    # j=2: 1.467167 vs 1.733253 -> 0.153518; j=3: equal -> 0; j=4: 5.754603 vs 1.568312 -> raw −2.669297, floor −1
    assert scored.terms["sar"].tolist() == pytest.approx([0.662942, 0.153518, 0.0, -1.0], abs=1e-6)
    assert scored.reward_N.tolist() == pytest.approx([1.132588, 1.030704, 0.0, -0.2], abs=1e-6)
    # Dr. GRPO: A = R − mean, mean = (1.132588 + 1.030704 + 0 − 0.2)/4 = 0.490823
    advantages = GroupCentered()(batch.with_columns(reward_N=scored.reward_N))
    assert advantages.tolist() == pytest.approx([0.641765, 0.539881, -0.490823, -0.690823], abs=1e-6)


def test_use_log_paper_clip_and_empty_response():
    term = SelfAlignedReward(use_log=True)
    assert float(term(example(term))[0]) == pytest.approx(0.87, abs=1e-6)  # (1.25 − 0.1625)/1.25
    # paper clip: (ppl − ppl_q)/ppl clipped to [−1, 1]; the 4th sample −2.669297 -> −1, the 1st unchanged
    paper = SelfAlignedReward(clip="paper")
    values = paper(example(paper)).tolist()
    assert values[0] == pytest.approx(1 - math.exp(0.1625) / math.exp(1.25), abs=1e-6) and values[3] == -1.0
    empty = example(term, cond=[[]], uncond=[[]], correct=(1.0,))
    assert term(empty).tolist() == [0.0]  # T = 0: defined as 0, not NaN
    with pytest.raises(ValueError, match="clip='both'"):
        SelfAlignedReward(clip="both")


def test_requests_the_answer_with_and_without_its_question():
    term = SelfAlignedReward(system_prompt="S")
    assert [(r.kind, r.turn, r.system) for r in term.policy_requests] == [("logp", None, None), ("logp", "", "S")]
