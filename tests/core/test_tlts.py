"""Train Long, Think Short's format reward and advantage (arXiv 2508.08940 Sec. 3.1, 3.3;
ALGORITHMS.md 3.4.3, 3.4.6, 3.4.7) on hand-made texts and rewards. The worked example of 3.4.7 through
the configured pieces is tests/e2e/test_tlts_configured.py."""
from __future__ import annotations

import pytest
import torch

from rlrun.core.advantages import GroupNormalized, GroupNormalizedPopulation
from rlrun.core.budget_rewards import TagFormatReward, tag_spans
from rlrun.types import StepBatch

TEXTS = {
    "<think>a</think> <answer>1</answer>": (1, 1),
    "<think>a</think> <answer>1": (1, 0),  # cut before </answer>
    "<think>a<answer>1</answer></think>": (1, 0),  # the answer inside the thinking overlaps it
    "<think>a</think><think>b</think><answer>1</answer>": (0, 1),  # two think spans: not one
    "<answer>1</answer>": (0, 1),
    "a</think> <answer>1</answer>": (0, 1),  # the thinking was never opened
    "no tags at all": (0, 0),
    "<think>\nline\n</think>\n<answer>\n7\n</answer>": (1, 1),  # spans cross newlines
}


def test_tag_spans():
    assert tag_spans("<t>a</t>b<t>c</t>", "<t>", "</t>") == [(0, 8), (9, 17)]
    assert tag_spans("<t>a<t>b</t></t>", "<t>", "</t>") == [(0, 12)]  # shortest match, not nested


@pytest.mark.parametrize("text", list(TEXTS))
def test_indicators(text):
    assert TagFormatReward().indicators(text) == TEXTS[text]


def test_partial_credit():
    texts = list(TEXTS)
    # R_fmt = 0.5 I_think + 0.5 I_answer: (1,1) -> 1, (1,0) -> 0.5, (0,1) -> 0.5, (0,0) -> 0
    want = [0.5 * t + 0.5 * a for t, a in TEXTS.values()]
    assert TagFormatReward()(StepBatch(texts=texts)).tolist() == want
    # unequal alphas: 0.3 I_think + 0.7 I_answer on the first two texts -> 1.0, 0.3
    got = TagFormatReward(alpha_think=0.3, alpha_answer=0.7)(StepBatch(texts=texts[:2]))
    torch.testing.assert_close(got, torch.tensor([1.0, 0.3]))


def test_configurable_tags():
    boxed = TagFormatReward(answer_open="\\boxed{", answer_close="}")
    # the built-in task's answer: <think>...</think> then \boxed{1055} -> 0.5 + 0.5 = 1
    assert boxed(StepBatch(texts=["<think>\nso 1055\n</think>\n\\boxed{1055}"])).tolist() == [1.0]
    with pytest.raises(ValueError, match="answer_close must be a non-empty tag"):
        TagFormatReward(answer_close="")
    with pytest.raises(ValueError, match="must be >= 0"):
        TagFormatReward(alpha_think=-0.5)


def test_population_std_worked_example():
    r = torch.tensor([0.975862, 0.886207, 0.4, 0.05], dtype=torch.float64)
    # mu = 2.312069 / 4 = 0.578017; (1/4) sum (r - mu)^2 = 0.140939; sigma = sqrt(0.140939 + 1e-6) = 0.375419
    # A = (r - mu) / sigma = [1.059735, 0.820922, -0.474183, -1.406474] (ALGORITHMS.md 3.4.7)
    got = GroupNormalizedPopulation(1e-6).of(r, torch.zeros(4, dtype=torch.long))
    want = torch.tensor([1.059735, 0.820922, -0.474183, -1.406474], dtype=torch.float64)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_population_std_edges_and_groups():
    adv = GroupNormalizedPopulation(1e-6)
    # equal rewards: sigma = sqrt(1e-6) = 0.001 > 0, A = 0 (3.4.6); a group of one: A = 0 too
    assert adv.of(torch.tensor([0.7, 0.7, 0.7]), torch.tensor([0, 0, 0])).tolist() == [0.0, 0.0, 0.0]
    assert adv.of(torch.tensor([0.3]), torch.tensor([5])).tolist() == [0.0]
    # two groups, ids 9 and 2: [1, 0] -> mu 0.5, population var 0.25, sigma sqrt(0.250001) = 0.500001
    # -> +-0.999998; [0, 0, 3] -> mu 1, var (1 + 1 + 4)/3 = 2, sigma 1.414214 -> [-0.707107, -0.707107, 1.414213]
    got = adv.of(torch.tensor([1.0, 0.0, 0.0, 0.0, 3.0]), torch.tensor([9, 9, 2, 2, 2]))
    torch.testing.assert_close(got, torch.tensor([0.999998, -0.999998, -0.707107, -0.707107, 1.414213]),
                               atol=1e-6, rtol=0)
    # unlike GRPO's sample std + eps: [1, 0] there gives 0.5 / (0.707107 + 1e-6) = +-0.707106
    torch.testing.assert_close(GroupNormalized().of(torch.tensor([1.0, 0.0]), torch.tensor([0, 0])),
                               torch.tensor([0.707106, -0.707106]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="eps must be > 0"):
        GroupNormalizedPopulation(0.0)
