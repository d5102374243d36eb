"""DLER against ALGORITHMS.md 1.5.7 (Ex. 1-4) and the edge cases of 1.5.6."""
import warnings

import pytest
import torch

from rlrun.core.collectives import LOCAL, Collectives
from rlrun.core.advantages import GroupNormalized
from rlrun.core.dapo import DynamicSampling
from rlrun.core.dler import (
    BatchNormalized,
    DifficultyAwareTruncationReward,
    TokenWhitened,
    TruncationReward,
    selective_merge,
    tier_limits,
)
from conftest import step_input
from rlrun.types import StepBatch


def advantage_input(step, reward_N):
    r = step
    return StepBatch(reward_N=reward_N, group_N=r.group_N, correct_N=step.correct_N,
                          length_tokens_N=r.length_tokens_N, truncated_N=r.truncated_N, mask_NT=r.mask_NT)


# Ex. 1: 3 groups × 4, toy limit 8 tokens
EX1 = step_input(
    correct=[1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0],
    sampled_tokens=[5, 7, 8, 6, 8, 8, 3, 8, 2, 8, 4, 8],
    truncated=[0, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], cap=8, group_size=4,
)


def ex1_kept():
    reward = TruncationReward()(EX1)
    keep = DynamicSampling("reward")(advantage_input(EX1, reward))
    return reward, keep, advantage_input(EX1, reward).select(keep.nonzero().squeeze(1))


def test_ex1_rewards_and_filter():
    # R' = correct and not truncated: a [1,1,0,1], b [0,0,0,0], c [1,0,0,0]; b (all 0) is dropped
    reward, keep, _ = ex1_kept()
    assert reward.tolist() == [1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0]
    assert keep.tolist() == [True] * 4 + [False] * 4 + [True] * 4


def test_ex1_paper_eq3_sample_and_population_std():
    # centred A: a [0.25,0.25,−0.75,0.25], c [0.75,−0.25,−0.25,−0.25]; batch mean 0, Σ A² = 1.5
    # sample std sqrt(1.5/7) = 0.462910: 0.25/0.462910 = 0.540062, 0.75/… = 1.620185
    # population std sqrt(1.5/8) = 0.433013: 0.25/0.433013 = 0.577350, 0.75/… = 1.732051
    _, _, inp = ex1_kept()
    s, p = 0.540062, 0.577350
    assert BatchNormalized("sample")(inp).tolist() == pytest.approx(
        [s, s, -3 * s, s, 3 * s, -s, -s, -s], abs=1e-6)
    assert BatchNormalized("population")(inp).tolist() == pytest.approx(
        [p, p, -1.732051, p, 1.732051, -p, -p, -p], abs=1e-6)


def test_ex1_released_code_token_weighted_and_boost():
    # weights |o| a [5,7,8,6], c [2,8,4,8]: S = 48; Σ w A = 0.25·18 − 0.75·8 + 0.75·2 − 0.25·20 = −5
    # μ = −5/48 = −0.104167; Σ w (A−μ)² = 18·0.354167² + 8·0.645833² + 2·0.854167² + 20·0.145833² = 7.479167
    # var = 7.479167/48 · 48/47 = 0.159131, sqrt 0.398913
    # a: 0.354167/0.398913 = 0.887830, −0.645833/… = −1.618985; c: 0.854167/… = 2.141238, −0.145833/… = −0.365577
    _, _, inp = ex1_kept()
    want = [0.887830, 0.887830, -1.618985, 0.887830, 2.141238, -0.365577, -0.365577, -0.365577]
    assert TokenWhitened()(inp).tolist() == pytest.approx(want, abs=1e-6)
    # boost 0.1 where R' >= 1 − 1e-5 (a1, a2, a4, c1)
    boosted = [0.987830, 0.987830, -1.618985, 0.987830, 2.241238, -0.365577, -0.365577, -0.365577]
    assert TokenWhitened(boost=0.1)(inp).tolist() == pytest.approx(boosted, abs=1e-6)


def test_ex1_grpo_for_comparison():
    # per-group sample std: a 0.5, c 0.5 → 0.25/0.500001 = 0.499999, 0.75/0.500001 = 1.499997
    _, _, inp = ex1_kept()
    want = [0.499999, 0.499999, -1.499997, 0.499999, 1.499997, -0.499999, -0.499999, -0.499999]
    assert GroupNormalized(1e-6)(inp).tolist() == pytest.approx(want, abs=1e-6)


def test_ex2_truncated_but_correct():
    # scores [1,1,0], finish [stop, length, stop]: code coef 0.1 → [1, 0.1, 0]; paper → [1, 0, 0]
    step = step_input([1, 1, 0], [5, 8, 5], [0, 1, 0], cap=8, group_size=3)
    assert TruncationReward(0.1)(step).tolist() == pytest.approx([1.0, 0.1, 0.0], abs=1e-6)
    assert TruncationReward()(step).tolist() == [1.0, 0.0, 0.0]


def test_ex3_difficulty_aware_limits():
    # threshold 0.5: p < 0.5 → 4000, p >= 0.5 → 2000
    p = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    assert tier_limits(p, [0.5], [4000, 2000]).tolist() == [4000, 4000, 2000, 2000, 2000]


def test_difficulty_aware_reward_uses_the_groups_ratio():
    # group 0: p = 2/4 → limit 2000: the correct 2001-token completion gets 0, the 1500-token one 1
    # group 1: p = 1/4 → limit 4000: the correct 3000-token completion gets 1; a truncated one 0
    step = step_input([1, 1, 0, 0, 1, 1, 0, 0], [1500, 2001, 10, 10, 3000, 4000, 10, 10],
                      [0, 0, 0, 0, 0, 1, 0, 0], cap=4000, group_size=4)
    step.correct_N = torch.tensor([1.0, 1, 0, 0, 1, 0, 0, 0])
    got = DifficultyAwareTruncationReward()(step)
    assert got.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_ex4_update_selective_merge():
    base = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.zeros(4)}
    tuned = {"w": torch.tensor([[1.04, 2.0], [2.9, 4.05]]), "b": torch.tensor([0.2, -0.5, 0.01, 0.0])}
    # global: d = 8, keep ceil(2) = 2 → |Δ| >= 0.2 (0.2 and −0.5) → b = 0.7·[0.2, −0.5, 0, 0]
    merged = selective_merge(base, tuned, 0.25, 0.7, "global")
    torch.testing.assert_close(merged["w"], torch.tensor([[1.0, 2.0], [3.0, 4.0]]), atol=1e-6, rtol=0)
    assert merged["b"].tolist() == pytest.approx([0.14, -0.35, 0, 0], abs=1e-6)
    # per tensor: keep 1 each → w: Δ −0.1 → 3 − 0.07 = 2.93; b: Δ −0.5 → −0.35
    merged = selective_merge(base, tuned, 0.25, 0.7, "per_tensor")
    torch.testing.assert_close(merged["w"], torch.tensor([[1.0, 2.0], [2.93, 4.0]]), atol=1e-6, rtol=0)
    assert merged["b"].tolist() == pytest.approx([0, -0.35, 0, 0], abs=1e-6)


def test_merge_keeps_ties_and_non_float_tensors():
    base = {"x": torch.zeros(4), "steps": torch.tensor([3])}
    tuned = {"x": torch.tensor([1.0, -1.0, 1.0, 0.5]), "steps": torch.tensor([9])}
    merged = selective_merge(base, tuned, 0.25, 1.0)  # keep 1, but three entries tie at |Δ| = 1
    assert merged["x"].tolist() == [1.0, -1.0, 1.0, 0.0]
    assert merged["steps"].tolist() == [3]


def test_all_truncated_and_all_correct_groups_are_dropped():
    # group 0 all truncated (R' 0), group 1 all correct (R' 1), group 2 mixed
    step = step_input([1, 1, 1, 1, 1, 0], [8, 8, 3, 4, 3, 3], [1, 1, 0, 0, 0, 0], cap=8, group_size=2)
    reward = TruncationReward()(step)
    assert DynamicSampling("reward")(advantage_input(step, reward)).tolist() == [False] * 4 + [True] * 2


def test_singleton_group_is_not_centred():
    # group 0 [1, 0] → centred [0.5, −0.5]; singleton group 1 [1] → mean 0 → A = 1
    # batch mean 1/3; deviations [1/6, −5/6, 2/3]; sample var (1/36 + 25/36 + 16/36)/2 = 7/12
    inp = StepBatch(reward_N=torch.tensor([1.0, 0.0, 1.0]), group_N=torch.tensor([0, 0, 1]),
                         correct_N=torch.tensor([1.0, 0.0, 1.0]), length_tokens_N=torch.ones(3),
                         truncated_N=torch.zeros(3, dtype=torch.bool), mask_NT=torch.ones(3, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = BatchNormalized("sample")(inp)
        tokens = TokenWhitened()(inp)  # one token per row: token weights equal, S = 3, same numbers
    assert got.tolist() == pytest.approx([0.218218, -1.091089, 0.872872], abs=1e-6)
    assert tokens.tolist() == pytest.approx([0.218218, -1.091089, 0.872872], abs=1e-6)


def test_zero_batch_std_gives_zero_not_nan():
    # every group constant → every centred A = 0 → 0 / sqrt(0 + 1e-8) = 0
    inp = StepBatch(reward_N=torch.tensor([1.0, 1.0, 0.0, 0.0]), group_N=torch.tensor([0, 0, 1, 1]),
                         correct_N=torch.ones(4), length_tokens_N=torch.ones(4),
                         truncated_N=torch.zeros(4, dtype=torch.bool), mask_NT=torch.ones(4, 3))
    assert BatchNormalized()(inp).tolist() == [0.0] * 4
    assert TokenWhitened()(inp).tolist() == [0.0] * 4


def test_empty_batch():
    inp = StepBatch(reward_N=torch.zeros(0), group_N=torch.zeros(0, dtype=torch.long),
                         correct_N=torch.zeros(0), length_tokens_N=torch.zeros(0),
                         truncated_N=torch.zeros(0, dtype=torch.bool), mask_NT=torch.zeros(0, 0))
    assert BatchNormalized()(inp).shape == (0,) and TokenWhitened()(inp).shape == (0,)


@pytest.mark.parametrize("advantage", [BatchNormalized(), TokenWhitened()])
def test_cross_rank_sum_matches_one_rank_holding_all_rows(advantage):
    # two ranks holding the same rows (collectives.reduce_sum doubles the sums) = one rank holding both copies
    _, _, inp = ex1_kept()
    both = StepBatch(
        reward_N=torch.cat([inp.reward_N, inp.reward_N]), group_N=torch.cat([inp.group_N, inp.group_N + 10]),
        correct_N=torch.cat([inp.correct_N] * 2), length_tokens_N=torch.cat([inp.length_tokens_N] * 2),
        truncated_N=torch.cat([inp.truncated_N] * 2), mask_NT=torch.cat([inp.mask_NT] * 2))
    advantage.collectives = Collectives(reduce_sum=lambda t: 2 * t)
    try:
        got = advantage(inp)
    finally:
        advantage.collectives = LOCAL
    torch.testing.assert_close(got, advantage(both)[: len(got)])


def test_token_whitened_needs_the_mask():
    _, _, inp = ex1_kept()
    inp.mask_NT = None
    with pytest.raises(ValueError, match="mask_NT"):
        TokenWhitened()(inp)


def test_configuration_errors():
    with pytest.raises(ValueError, match="sample, population"):
        BatchNormalized("unbiased")
    with pytest.raises(ValueError, match="truncated_coef"):
        TruncationReward(1.5)
    with pytest.raises(ValueError, match="limits_tokens"):
        DifficultyAwareTruncationReward([0.5], [4000])
    with pytest.raises(ValueError, match="ratio_bounds"):
        DifficultyAwareTruncationReward([0.7, 0.5], [1, 2, 3])
    with pytest.raises(ValueError, match="global, per_tensor"):
        selective_merge({}, {}, scope="layer")
