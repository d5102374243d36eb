"""GFPO filters and advantage against ALGORITHMS.md 2.2.7 (F1-F5) and the edge cases of 2.2.6."""
import numpy as np
import pytest
import torch

from rlrun.core.collectives import Collectives
from rlrun.core.gfpo import (
    AdaptiveDifficulty,
    RetainedGroupNormalized,
    ShortestK,
    TokenEfficiencyK,
    metric_key,
    percentile,
    response_length,
)
from rlrun.types import StepBatch

# F1/F2 group: |o| with EOS; index 3 is truncated (8192 tokens, no EOS), the others end with EOS.
LENGTH = torch.tensor([350, 1200, 640, 8192, 980, 2100, 720, 450])
TRUNCATED = torch.tensor([False, False, False, True, False, False, False, False])
CORRECT = torch.tensor([0.0, 1, 1, 0, 1, 1, 0, 1])


def group_input(reward, length=LENGTH, truncated=TRUNCATED, group=None, step=0, correct=None):
    """StepBatch whose |o_i| (EOS included) is ``length``: length_tokens = |o| − 1 when EOS."""
    reward = torch.as_tensor(reward, dtype=torch.float64)
    length, truncated = torch.as_tensor(length), torch.as_tensor(truncated, dtype=torch.bool)
    group = torch.zeros(len(reward), dtype=torch.long) if group is None else torch.as_tensor(group)
    return StepBatch(
        reward_N=reward, group_N=group, correct_N=reward if correct is None else correct,
        length_tokens_N=length - (~truncated).long(), truncated_N=truncated, step=step,
    )


def gfpo(filter_, inp, advantage=None):
    """The step as the loop runs it: keep mask, then the advantage over the kept rows only; returns
    (mask, advantages scattered back to all rows with 0 for dropped rows)."""
    keep = filter_(inp)
    kept = keep.nonzero().squeeze(1)
    out = torch.zeros(len(keep), dtype=torch.float64)
    out[kept] = (advantage or RetainedGroupNormalized())(inp.select(kept))
    return keep, out


def test_length_counts_eos_like_the_response_mask():
    # 349 tokens + EOS -> 350; the truncated one has no EOS -> 8192
    assert response_length(group_input(CORRECT)).tolist() == LENGTH.double().tolist()


def test_f1_shortest_4_of_8_binary():
    # rank by |o|: 0 (350), 7 (450), 2 (640), 6 (720) | 4, 1, 5, 3 -> S = {0, 2, 6, 7}
    # retained R = 0, 1, 0, 1: mu_S = 0.5, sigma_S = sqrt(4·0.25/4) = 0.5 -> A = ±1
    keep, adv = gfpo(ShortestK(keep=4, group_size=8), group_input(CORRECT))
    assert keep.tolist() == [True, False, True, False, False, False, True, True]
    assert adv.tolist() == pytest.approx([-1, 0, 1, 0, 0, 0, -1, 1], abs=1e-6)


def test_f1_other_conventions():
    # all 8 (k = G, i.e. GRPO with the population std): mu = 0.625, sigma = sqrt(0.625·0.375) = 0.484123
    # -> correct 0.375/0.484123 = 0.774597, wrong −0.625/0.484123 = −1.290994
    full = RetainedGroupNormalized().of(CORRECT, torch.zeros(8, dtype=torch.long))
    assert full.tolist() == pytest.approx([-1.290994, *[0.774597] * 2, -1.290994, *[0.774597] * 2,
                                           -1.290994, 0.774597], abs=1e-6)
    # torch.std (k − 1) on S: sigma = sqrt(1/3) = 0.577350 -> ±0.5/0.577350 = ±0.866025
    _, adv = gfpo(ShortestK(keep=4), group_input(CORRECT), RetainedGroupNormalized(std="sample"))
    assert adv.tolist() == pytest.approx([-0.866025, 0, 0.866025, 0, 0, 0, -0.866025, 0.866025], abs=1e-6)


SIGNED = torch.where(CORRECT > 0, 1 - LENGTH.double() / 8192, torch.tensor(-1.0, dtype=torch.float64))


def test_f2_token_efficiency_signed_reward():
    # R = 1 − L/8192 if correct else −1 = [−1, 0.853516, 0.921875, −1, 0.880371, 0.743652, −1, 0.945068]
    assert SIGNED.tolist() == pytest.approx(
        [-1, 0.853516, 0.921875, -1, 0.880371, 0.743652, -1, 0.945068], abs=1e-6)
    inp = group_input(SIGNED, correct=CORRECT)
    # R/|o|: −1/350, 0.853516/1200, 0.921875/640, −1/8192, 0.880371/980, 0.743652/2100, −1/720, 0.945068/450
    efficiency = (-metric_key(inp, "token_efficiency")).tolist()
    want = [-2.857143e-03, 7.112630e-04, 1.440430e-03, -1.220703e-04, 8.983379e-04, 3.541202e-04,
            -1.388889e-03, 2.100152e-03]
    assert efficiency == pytest.approx(want, abs=1e-9)
    # ranked descending: 7, 2, 4, 1 -> S = {1, 2, 4, 7}; mu_S = 3.600830/4 = 0.900208,
    # sigma_S = 0.035551 -> A_1 = (0.853516 − 0.900208)/0.035551 = −1.313365, ...
    keep, adv = gfpo(TokenEfficiencyK(keep=4, group_size=8), inp)
    assert keep.tolist() == [False, True, True, False, True, False, False, True]
    kept = SIGNED[keep]
    assert kept.mean().item() == pytest.approx(0.900208, abs=1e-6)
    assert kept.std(unbiased=False).item() == pytest.approx(0.035551, abs=1e-6)
    assert adv.tolist() == pytest.approx([0, -1.313365, 0.609470, 0, -0.557966, 0, 0, 1.261861], abs=1e-6)


def test_f2_binary_reward_degenerates_and_truncated_wrong_outranks_short_wrong():
    # binary R: S = {1, 2, 4, 7} again (1/|o| largest for the shortest correct), all R = 1 -> A = 0
    keep, adv = gfpo(TokenEfficiencyK(keep=4), group_input(CORRECT))
    assert keep.tolist() == [False, True, True, False, True, False, False, True]
    assert adv.abs().max().item() == 0.0
    # with R = −1 for a wrong answer, −R/L = 1/L: the longest wrong answer ranks first, so with one
    # correct answer (7) and k = 3 the truncated one (3, 1/8192) is retained, then 5 (1/2100);
    # the short wrong answers 6 (1/720) and 0 (1/350) are not
    wrong = torch.tensor([-1.0, -1, -1, -1, -1, -1, -1, 0.945068])
    keep, _ = gfpo(TokenEfficiencyK(keep=3), group_input(wrong))
    assert keep.tolist() == [False, False, False, True, False, True, False, True]


@pytest.mark.parametrize("reward", [[1.0] * 8, [0.0] * 8])
def test_f3_all_correct_or_all_wrong_group_is_zero(reward):
    # sigma_S = 0 -> every advantage 0 (no epsilon, no division)
    keep, adv = gfpo(ShortestK(keep=4), group_input(reward))
    assert int(keep.sum()) == 4 and adv.abs().max().item() == 0.0


def test_sigma_zero_is_exact_for_equal_non_binary_rewards():
    # 0.1 + 0.1 + 0.1 = 0.30000000000000004: a computed sigma would be ~1e-17, not 0; still A = 0
    adv = RetainedGroupNormalized().of(torch.tensor([0.1, 0.1, 0.1]), torch.tensor([0, 0, 0]))
    assert adv.tolist() == [0.0, 0.0, 0.0]


def test_f5_ties_keep_the_lower_index():
    # R = [0,1,1,0,1,0], L = [500,500,500,900,300,700], k = 2: 4 (300), then 0 of the tie {0,1,2}
    # S = {0, 4}: R 0 and 1, mu 0.5, sigma 0.5 -> A = [−1, 0, 0, 0, +1, 0]
    inp = group_input([0, 1, 1, 0, 1, 0], length=[500, 500, 500, 900, 300, 700], truncated=[False] * 6)
    keep, adv = gfpo(ShortestK(keep=2, group_size=6), inp)
    assert keep.tolist() == [True, False, False, False, True, False]
    assert adv.tolist() == pytest.approx([-1, 0, 0, 0, 1, 0], abs=1e-6)


def test_groups_in_any_order_and_labels():
    # F1's group (label 9) interleaved with F5's group padded to 8 rows (label 2): same per-group result
    f5 = group_input([0, 1, 1, 0, 1, 0, 0, 0], length=[500, 500, 500, 900, 300, 700, 990, 999],
                     truncated=[False] * 8)
    f1 = group_input(CORRECT)
    order = torch.arange(16).reshape(2, 8).t().reshape(-1)  # rows 0, 8, 1, 9, ...
    inp = StepBatch(
        reward_N=torch.cat([f1.reward_N, f5.reward_N])[order],
        group_N=torch.tensor([9] * 8 + [2] * 8)[order], correct_N=torch.cat([f1.correct_N, f5.correct_N])[order],
        length_tokens_N=torch.cat([f1.length_tokens_N, f5.length_tokens_N])[order],
        truncated_N=torch.cat([f1.truncated_N, f5.truncated_N])[order],
    )
    keep = torch.zeros(16, dtype=torch.bool)
    keep[order] = ShortestK(keep=4)(inp)
    # F1: {0, 2, 6, 7}; padded F5 with k = 4: 4 (300), 0, 1, 2 (500 ties)
    assert keep[:8].tolist() == [True, False, True, False, False, False, True, True]
    assert keep[8:].tolist() == [True, True, True, False, True, False, False, False]


def test_k_must_be_below_group_size_at_construction():
    with pytest.raises(ValueError, match=r"keep=8 with group_size=8: GFPO needs k < G'"):
        ShortestK(keep=8, group_size=8)
    with pytest.raises(ValueError, match=r"keep=1 must be an int >= 2"):
        TokenEfficiencyK(keep=1)
    with pytest.raises(ValueError, match=r"keep.medium=4 with group_size=4: GFPO needs k < G'"):
        AdaptiveDifficulty(keep={"very_hard": 3, "hard": 3, "medium": 4, "easy": 2}, group_size=4)
    with pytest.raises(ValueError, match=r"very_hard, hard, medium, easy"):
        AdaptiveDifficulty(keep={"very_hard": 3, "hard": 3, "easy": 2})


def test_k_at_least_group_size_fails_on_the_first_call_without_group_size():
    # k = G would be plain GRPO; the paper requires k < G (ALGORITHMS.md 2.2.6)
    with pytest.raises(ValueError, match=r"keep=8 with group_size=8: GFPO needs k < G'"):
        ShortestK(keep=8)(group_input(CORRECT))
    with pytest.raises(ValueError, match=r"keep=8 with group_size=8: GFPO needs k < G'"):
        AdaptiveDifficulty()(group_input(CORRECT))  # step 0 is warm-up: k = keep.very_hard = 8


# F4: G' = 16, k = 8/8/6/4, warm-up 2 steps. Mean rewards per step (numbers of correct of 16).
F4_STEPS = [[3, 9, 14], [0, 7, 16], [1, 8, 13, 16]]  # /16: .1875 .5625 .875 | 0 .4375 1 | .0625 .5 .8125 1


def f4_input(corrects, step):
    reward = torch.cat([torch.tensor([1.0] * c + [0.0] * (16 - c)) for c in corrects])
    group = torch.arange(len(corrects)).repeat_interleave(16)
    length = torch.arange(len(reward)) % 16 + 100  # distinct lengths inside each group
    return group_input(reward, length=length, truncated=torch.zeros(len(reward), dtype=torch.bool),
                       group=group, step=step)


def kept_per_prompt(keep, prompts):
    return keep.reshape(prompts, 16).sum(1).tolist()


def test_f4_sequential_warm_up_then_quartiles():
    f = AdaptiveDifficulty(group_size=16, warmup_steps=2, mode="sequential")  # paper k 8/8/6/4
    assert kept_per_prompt(f(f4_input(F4_STEPS[0], 0)), 3) == [8, 8, 8]  # warm-up: k_very_hard
    assert kept_per_prompt(f(f4_input(F4_STEPS[1], 1)), 3) == [8, 8, 8]
    assert len(f.history) == 6
    # step 2, prompt by prompt: add mu_R, then classify against (q25, q50, q75) of the history
    # a 0.0625: sorted [0,.0625,.1875,.4375,.5625,.875,1]: q25 at 1.5 -> .125, q50 .4375, q75 at 4.5 -> .71875
    # b 0.5: (0.15625, 0.46875, 0.640625) -> medium; c 0.8125: (0.1875, 0.5, 0.8125) -> easy (not <)
    # d 1.0: (0.25, 0.53125, 0.859375) -> easy
    want_quartiles = [(0.125, 0.4375, 0.71875), (0.15625, 0.46875, 0.640625), (0.1875, 0.5, 0.8125),
                      (0.25, 0.53125, 0.859375)]
    probe = AdaptiveDifficulty(group_size=16)
    probe.load_state_dict(f.state_dict())
    for mean, quartiles in zip([0.0625, 0.5, 0.8125, 1.0], want_quartiles):
        probe.assign([mean], step=0)  # warm-up k, but the value enters the history
        assert probe.quartiles() == pytest.approx(quartiles, abs=1e-6)
    assert kept_per_prompt(f(f4_input(F4_STEPS[2], 2)), 4) == [8, 6, 4, 4]
    assert f.history == probe.history


def test_f4_batch_mode_adds_the_whole_step_first():
    # all four added first: quartiles (0.25, 0.53125, 0.859375) -> very hard 8, hard 8, medium 6, easy 4
    f = AdaptiveDifficulty(group_size=16, warmup_steps=2, mode="batch")
    for step, corrects in enumerate(F4_STEPS[:2]):
        f(f4_input(corrects, step))
    assert kept_per_prompt(f(f4_input(F4_STEPS[2], 2)), 4) == [8, 8, 6, 4]
    assert f.quartiles() == pytest.approx((0.25, 0.53125, 0.859375), abs=1e-6)


def test_adaptive_keeps_the_shortest_of_each_prompt():
    # lengths 100..115 in row order: the k kept rows of every prompt are its first k
    keep = AdaptiveDifficulty(group_size=16, warmup_steps=0)(f4_input([1, 8, 13, 16], 0)).reshape(4, 16)
    for row in keep:
        k = int(row.sum())
        assert row[:k].all() and not row[k:].any()


def test_quartile_ties_push_to_the_easier_bucket_without_warm_up():
    # ALGORITHMS.md 2.2.6: the first prompt of a run is its own three quartiles -> "easy"
    f = AdaptiveDifficulty(group_size=16, warmup_steps=0)
    assert kept_per_prompt(f(f4_input([0], 0)), 1) == [4]


def test_percentile_is_numpy_linear():
    values = sorted([0.3, -1.0, 0.7, 0.7, 2.5, 0.0])
    for p in (0, 10, 25, 50, 75, 90, 100):
        assert percentile(values, p) == pytest.approx(float(np.percentile(values, p)), abs=1e-12)


def test_adaptive_state_round_trip_continues_identically():
    a = AdaptiveDifficulty(group_size=16, warmup_steps=1)
    a(f4_input(F4_STEPS[0], 0))
    a(f4_input(F4_STEPS[1], 1))
    state = a.state_dict()
    b = AdaptiveDifficulty(group_size=16, warmup_steps=1)
    b.load_state_dict(state)
    assert b.state_dict() == state
    nxt = f4_input(F4_STEPS[2], 2)
    assert torch.equal(a(nxt), b(nxt)) and a.history == b.history
    with pytest.raises(ValueError, match="sorted"):
        b.load_state_dict({"history": [1.0, 0.0]})


def test_gather_gives_every_rank_the_whole_history():
    # two ranks with two prompts each; the gather hands both the four means in rank order
    means = {0: torch.tensor([1 / 16, 8 / 16]), 1: torch.tensor([13 / 16, 1.0])}

    def gather_for(rank):  # this rank's block starts at rank * 2
        return Collectives(gather_cat=lambda local: torch.cat([means[0], means[1]]), rank=lambda: rank)

    single = AdaptiveDifficulty(group_size=16, warmup_steps=0)
    whole = kept_per_prompt(single(f4_input([1, 8, 13, 16], 0)), 4)
    parts = []
    for rank, corrects in ((0, [1, 8]), (1, [13, 16])):
        f = AdaptiveDifficulty(group_size=16, warmup_steps=0)
        f.collectives = gather_for(rank)
        parts += kept_per_prompt(f(f4_input(corrects, 0)), 2)
        assert f.history == single.history
    assert parts == whole
