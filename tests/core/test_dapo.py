"""DAPO against ALGORITHMS.md 1.4.7 (Ex. 1-5) and the edge cases of 1.4.6."""
import math
from pathlib import Path

import pytest
import torch
import yaml

from rlrun.core.advantages import GroupNormalized
from rlrun.core.dapo import (
    DynamicSampling,
    NotTruncated,
    OverlongSoftPunishment,
    SignedCorrectReward,
    soft_overlong_penalty,
    varied_groups,
)
from rlrun.core.losses import aggregate, clipped_surrogate
from rlrun.core.rewards import Composite
from conftest import step_input
from rlrun.types import StepBatch

CONF = Path(__file__).resolve().parents[2] / "conf"


def advantage_input(reward, correct, group, truncated=None):
    n = len(reward)
    return StepBatch(
        reward_N=torch.tensor(reward, dtype=torch.float32), group_N=torch.tensor(group),
        correct_N=torch.tensor(correct, dtype=torch.float32), length_tokens_N=torch.ones(n, dtype=torch.long),
        truncated_N=torch.tensor(truncated or [False] * n, dtype=torch.bool),
    )


def test_ex1_soft_overlong_penalty():
    # L_max 20480, L_cache 4096, expected max L_max − L_cache = 16384:
    # 10000, 16384 → 0; 16385 → (16384−16385)/4096 = −0.000244; 18432 → −2048/4096 = −0.5;
    # 20480 → −4096/4096 = −1; 20481 → −1.000244 floored at −1 (paper Eq. 13)
    length = torch.tensor([10000, 16384, 16385, 18432, 20480, 20481])
    got = soft_overlong_penalty(length, torch.full((6,), 20480), 4096)
    assert got.tolist() == pytest.approx([0, 0, -0.000244, -0.5, -1, -1], abs=1e-6)
    # the same through the reward term (|y| = sampled ids, cap = the rollout budget)
    step = step_input([1] * 6, length.tolist(), [False] * 4 + [True, True], 20480, 6)
    assert OverlongSoftPunishment(4096)(step).tolist() == pytest.approx(got.tolist(), abs=1e-6)


def test_ex2_shaped_reward_and_grpo_advantage():
    # L_max 16, L_cache 4 (expected max 12); correct [1,1,0,0], |y| [10,14,16 (truncated),8]
    step = step_input([1, 1, 0, 0], [10, 14, 16, 8], [False, False, True, False], 16, 4)
    reward = Composite({"correct": {"weight": 1.0, "fn": SignedCorrectReward()},
                        "overlong_soft": {"weight": 1.0, "fn": OverlongSoftPunishment(4)}})
    scored = reward(step)
    # R_length: 10 → 0; 14 → (12−14)/4 = −0.5; 16 → −1; 8 → 0; r = ±1 + R_length
    assert scored.terms["overlong_soft"].tolist() == pytest.approx([0, -0.5, -1, 0], abs=1e-6)
    assert scored.reward_N.tolist() == pytest.approx([1.0, 0.5, -2.0, -1.0], abs=1e-6)
    # the ±1 term is correctness: only the length term is a preference
    assert scored.preference_N.tolist() == pytest.approx([0, -0.5, -1, 0], abs=1e-6)
    # mean −0.375; deviations 1.375, 0.875, −1.625, −0.625; Σ² = 5.6875; sample std sqrt(5.6875/3) = 1.376893
    # A = dev / (1.376893 + 1e-6)
    adv = GroupNormalized(1e-6).of(scored.reward_N, step.group_N)
    assert adv.tolist() == pytest.approx([0.998625, 0.635488, -1.180193, -0.453920], abs=1e-6)
    # without shaping r = [1,1,−1,−1]: mean 0, sample std sqrt(4/3) = 1.154701 → ±1/1.154701 = ±0.866025
    plain = SignedCorrectReward()(step)
    assert GroupNormalized(1e-6).of(plain, step.group_N).tolist() == pytest.approx(
        [0.866025, 0.866025, -0.866025, -0.866025], abs=1e-6)
    # overlong filtering instead → row mask [1,1,0,1]; the group statistics still hold the truncated row
    inp = advantage_input(plain.tolist(), [1, 1, 0, 0], [0] * 4, [False, False, True, False])
    assert NotTruncated()(inp).tolist() == [True, True, False, True]


@pytest.mark.parametrize("advantage,ratio,symmetric,higher", [
    # loss = max(−Aρ, −A clip(ρ, 1−0.2, 1+ε_high)); clipped = the clipped term is strictly larger
    (1.0, 1.25, (-1.2, True), (-1.25, False)),   # sym: clip 1.2; higher: 1.25 inside [0.8, 1.28]
    (1.0, 1.35, (-1.2, True), (-1.28, True)),    # higher: clip 1.28
    (-1.0, 0.75, (0.8, True), (0.8, True)),      # max(0.75, 0.8) = 0.8
    (-1.0, 1.35, (1.35, False), (1.35, False)),  # max(1.35, 1.2 or 1.28) = 1.35
])
def test_ex3_clip_higher(advantage, ratio, symmetric, higher):
    logp = torch.tensor([[math.log(ratio)]], dtype=torch.float64)
    old = torch.zeros(1, 1, dtype=torch.float64)
    a = torch.tensor([advantage], dtype=torch.float64)
    for clip_high, (loss, clipped) in ((0.2, symmetric), (0.28, higher)):
        got, flags = clipped_surrogate(logp, old, a, 0.2, clip_high)
        assert got.item() == pytest.approx(loss, abs=1e-6)
        assert bool(flags.item()) is clipped


def test_ex4_dynamic_sampling_keep_decisions():
    # train_batch_size 3 prompts, G 4, metric acc; the refill itself (rounds, first 3 kept groups,
    # error with max_rounds 1) is the loop's (rlrun.runtime.sampling.sample)
    flt = DynamicSampling("acc", max_rounds=10)
    group = torch.arange(4).repeat_interleave(4).tolist()
    round1 = [1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1]
    round2 = [0, 0, 0, 0, 1, 1, 0, 1, 0, 1, 1, 1, 1, 1, 1, 1]
    kept = [sorted({g + 1 for g, k in zip(group, flt(advantage_input(c, c, group)).tolist()) if k})
            for c in (round1, round2)]
    # round 1: [1,1,1,1] drop, [0,1,0,0] keep, [0,0,0,0] drop, [1,0,1,1] keep (2 kept < 3: refill)
    # round 2: [0,0,0,0] drop, [1,1,0,1] keep, [0,1,1,1] keep, [1,1,1,1] drop (4 in all)
    assert kept == [[2, 4], [2, 3]]
    # batch = the first 3 kept: (round 1, group 2), (round 1, group 4), (round 2, group 2)
    batch = [(r + 1, g) for r, groups in enumerate(kept) for g in groups][:3]
    assert batch == [(1, 2), (1, 4), (2, 2)]
    assert flt.max_rounds == 10


def test_ex5_token_level_loss():
    # rows [0.5, 0.5], [−0.2 ×4], [0.1]: token-mean = (1.0 − 0.8 + 0.1)/7 = 0.3/7 = 0.042857
    values = torch.tensor([[0.5, 0.5, 0, 0], [-0.2] * 4, [0.1, 0, 0, 0]])
    mask = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert aggregate(values, mask, "token_mean").item() == pytest.approx(0.042857, abs=1e-6)
    # paper literal, groups [a, a, b]: token-mean per question then mean = mean(0.2/6, 0.1/1) = 0.066667
    per_question = [aggregate(values[rows], mask[rows], "token_mean") for rows in ([0, 1], [2])]
    assert (sum(per_question) / 2).item() == pytest.approx(0.066667, abs=1e-6)


def test_all_correct_all_wrong_dropped_single_sample_kept():
    # groups: all correct, all wrong, mixed, a single completion
    correct = [1, 1, 1, 0, 0, 0, 1, 0, 1, 1]
    group = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    got = DynamicSampling("acc")(advantage_input(correct, correct, group))
    assert got.tolist() == [False] * 6 + [True] * 4


def test_metric_reward_keeps_all_correct_groups_of_different_lengths():
    # all correct, soft punishment makes rewards [1, 0.5, 1]: acc drops the group, reward keeps it
    inp = advantage_input([1.0, 0.5, 1.0], [1, 1, 1], [5, 5, 5])
    assert DynamicSampling("acc")(inp).tolist() == [False] * 3
    assert DynamicSampling("reward")(inp).tolist() == [True] * 3


def test_equal_floats_are_constant_even_where_np_std_is_not_zero():
    # np.std([0.1]*3) = 1.4e-17 > 0 (verl would keep the group); max == min drops it
    assert varied_groups(torch.tensor([0.1, 0.1, 0.1], dtype=torch.float64), torch.zeros(3, dtype=torch.long)).tolist() == [False] * 3


def test_groups_in_any_order_and_empty_input():
    got = varied_groups(torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([9, 4, 4, 9]))
    assert got.tolist() == [False, True, True, False]
    assert varied_groups(torch.zeros(0), torch.zeros(0, dtype=torch.long)).tolist() == []


def test_truncated_completion_gets_minus_two():
    # wrong (−1) and truncated at |y| = L_max (R_length −1) → −2
    step = step_input([0], [16], [True], 16, 1)
    assert SignedCorrectReward()(step).item() + OverlongSoftPunishment(4)(step).item() == pytest.approx(-2.0)


def test_length_at_the_buffer_edge():
    # |y| = L_max − L_cache → 0; one more token → −1/L_cache = −1/4096 = −0.000244
    got = soft_overlong_penalty(torch.tensor([16384, 16385]), torch.tensor([20480, 20480]), 4096)
    assert got.tolist() == pytest.approx([0.0, -1 / 4096], abs=1e-9)


def test_penalty_follows_each_rows_cap():
    # caps 16 and 32, L_cache 4: |y| 14 → (12−14)/4 = −0.5 under cap 16, 0 under cap 32
    step = step_input([1, 1], [14, 14], [False, False], 16, 2)
    step.budget_tokens_N = torch.tensor([16, 32])
    assert OverlongSoftPunishment(4)(step).tolist() == pytest.approx([-0.5, 0.0])


def test_configuration_errors():
    with pytest.raises(ValueError, match="acc, reward"):
        DynamicSampling("seq_final_reward")
    with pytest.raises(ValueError, match="max_rounds"):
        DynamicSampling("acc", max_rounds=0)
    with pytest.raises(ValueError, match="cache_tokens"):
        OverlongSoftPunishment(0)
    with pytest.raises(ValueError, match="generation cap"):
        OverlongSoftPunishment(4096)(step_input([1], [10], [False], 256, 1))


def test_yaml_files_build_what_they_name():
    dapo = yaml.safe_load((CONF / "algo" / "dapo.yaml").read_text())
    assert dapo["filter"] == {"_target_": "rlrun.core.dapo.DynamicSampling", "metric": "acc",
                              "max_rounds": 10, "when_short": "train"}
    assert dapo["train_rows"] == {"_target_": "rlrun.core.dapo.NotTruncated"}  # overlong filtering
    # the loss: the option it names (conf/algo/loss/clip_higher.yaml), then its own keys
    assert {"loss": "clip_higher"} in dapo["defaults"]
    loss = {**yaml.safe_load((CONF / "algo" / "loss" / "clip_higher.yaml").read_text()), **dapo["loss"]}
    assert (loss["clip_low"], loss["clip_high"], loss["kl_coef"], loss["aggregation"]) == (0.2, 0.28, 0.0, "token_mean")
    soft = yaml.safe_load((CONF / "reward" / "overlong_soft.yaml").read_text())
    assert soft["terms"]["overlong_soft"]["fn"]["_target_"] == "rlrun.core.dapo.OverlongSoftPunishment"
