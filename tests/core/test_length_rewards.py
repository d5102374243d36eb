"""Length rewards against ALGORITHMS.md 1.6.7 (Kimi), 1.7.7 (cosine), 1.8.7 (GRPO-λ), 4.2.7
(ShorterBetter) and the edge cases of 1.6.6, 1.7.6, 1.8.6, 4.2.6."""
import math

import pytest
import torch

from rlrun.core.collectives import Collectives
from rlrun.core.advantages import GroupNormalized
from rlrun.core.length_rewards import (
    CosineReward,
    GrpoLambdaReward,
    KimiLengthReward,
    RepetitionPenalty,
    ShorterBetterReward,
    repetition_penalty_T,
)
from rlrun.core.rewards import Composite, CorrectReward
from rlrun.types import Problem, StepBatch, Verdicts
from conftest import with_verdicts


def make_step(correct, length, truncated=None, sizes=None, cap=10_000, step=0):
    """A StepBatch whose completion i has ``length[i]`` response tokens (plus EOS unless truncated);
    groups of the sizes ``sizes`` (default: one group), in order."""
    n = len(correct)
    truncated = truncated or [0] * n
    sizes = sizes or [n]
    group_N = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    rollouts = StepBatch(
        problems=[Problem(uid=f"p{g}", prompt="q", answer="a") for g in range(len(sizes))],
        group_size=max(sizes), prompt_ids=[[1]] * len(sizes),
        completion_ids=[[7] * (k + (0 if t else 1)) for k, t in zip(length, truncated)], texts=[""] * n,
        length_tokens_N=torch.tensor(length), truncated_N=torch.tensor(truncated, dtype=torch.bool),
        budget_tokens_N=torch.full((n,), cap), group_N=group_N,
    )
    verdicts = Verdicts(torch.tensor(correct, dtype=torch.float32), torch.ones(n), [None] * n)
    return with_verdicts(rollouts, verdicts, step)


def grpo(reward_N, step):
    return GroupNormalized(1e-6).of(reward_N, step.group_N)


# ---------------------------------------------------------------- Kimi (1.6.7)

# groups a (4), b (2), c (1)
KIMI = dict(correct=[1, 1, 0, 0, 1, 1, 1], length=[100, 300, 200, 500, 400, 400, 250], sizes=[4, 2, 1])


def kimi_reward(weight, warmup_steps=0, step=0):
    return Composite({"correct": {"weight": 1.0, "fn": CorrectReward()},
                      "kimi": {"weight": weight, "fn": KimiLengthReward(warmup_steps)}})(make_step(**KIMI, step=step))


def test_kimi_ex1_term():
    # a: min 100, max 500: λ = 0.5 − [0, 200, 100, 400]/400 = [0.5, 0, 0.25, −0.5];
    # wrong rows keep min(0, λ): [0.5, 0, 0, −0.5]; b (equal lengths) and c (one row): 0
    term = KimiLengthReward()(make_step(**KIMI))
    assert term.dtype == torch.float32
    assert term.tolist() == pytest.approx([0.5, 0.0, 0.0, -0.5, 0.0, 0.0, 0.0], abs=1e-6)


@pytest.mark.parametrize("weight, total_a, adv_a", [
    # w 1: r = [1.5, 1, 0, −0.5], mean 0.5, sample std sqrt(2.5/3) = 0.912871 → ±1/0.912872, ±0.5/…
    (1.0, [1.5, 1.0, 0.0, -0.5], [1.095444, 0.547722, -0.547722, -1.095444]),
    # w 0.4: r = [1.2, 1, 0, −0.2], mean 0.5, sample std sqrt(1.48/3) = 0.702377 → 0.7/…, 0.5/…
    (0.4, [1.2, 1.0, 0.0, -0.2], [0.996614, 0.711867, -0.711867, -0.996614]),
])
def test_kimi_ex1_total_and_grpo_advantage(weight, total_a, adv_a):
    scored = kimi_reward(weight)
    assert scored.reward_N.tolist() == pytest.approx(total_a + [1.0, 1.0, 1.0], abs=1e-6)
    # b: equal rewards → 0; c: singleton → mean 0, std 1: 1/(1 + 1e-6) = 0.999999
    with pytest.warns(UserWarning, match="single completion"):
        adv = grpo(scored.reward_N, make_step(**KIMI))
    assert adv.tolist() == pytest.approx(adv_a + [0.0, 0.0, 0.999999], abs=1e-6)


def test_kimi_warmup_is_correctness_only():
    # step 2 < warmup 3: r = correct = [1, 1, 0, 0 | 1, 1 | 1]; step 3: the length term is on
    assert kimi_reward(1.0, warmup_steps=3, step=2).reward_N.tolist() == [1, 1, 0, 0, 1, 1, 1]
    assert kimi_reward(1.0, warmup_steps=3, step=3).reward_N.tolist() == pytest.approx(
        [1.5, 1.0, 0.0, -0.5, 1.0, 1.0, 1.0], abs=1e-6)


def test_kimi_edges_all_wrong_all_correct_truncated():
    # all wrong, len [100, 200, 300]: λ = [0.5, 0, −0.5] → [0, 0, −0.5] (shortest wrong 0, longest −0.5)
    assert KimiLengthReward()(make_step([0, 0, 0], [100, 200, 300])).tolist() == pytest.approx([0, 0, -0.5], abs=1e-6)
    # all correct: the full spread [0.5, 0, −0.5]; a truncated wrong completion is just the longest
    assert KimiLengthReward()(make_step([1, 1, 1], [100, 200, 300])).tolist() == pytest.approx([0.5, 0, -0.5], abs=1e-6)
    got = KimiLengthReward()(make_step([1, 0], [10, 256], truncated=[0, 1]))
    assert got.tolist() == pytest.approx([0.5, -0.5], abs=1e-6)


def test_kimi_rejects_bad_warmup_and_is_stateless():
    with pytest.raises(ValueError):
        KimiLengthReward(-1)
    reward = Composite({"kimi": {"weight": 1.0, "fn": KimiLengthReward()}})
    assert reward.state_dict() == {}


# ---------------------------------------------------------------- cosine (1.7.7)

# Ex. 1: paper defaults (2, 1, −10, 0, exceed −10), L_max = cap = 1000
COS = dict(correct=[1, 1, 1, 1, 1, 0, 0, 0, 0], length=[0, 250, 500, 999, 1000, 0, 250, 750, 1000],
           truncated=[0, 0, 0, 0, 1, 0, 0, 0, 1], cap=1000)


def test_cosine_ex1_truncated_rule():
    # correct: 1 + ½·1·(1 + cos(πL/1000)): L 0 → 2; 250 → 1 + ½(1 + 0.707107) = 1.853553; 500 → 1.5;
    # 999 → 1 + ½(1 − 0.999995) = 1.000002; truncated → −10
    # wrong: 0 + ½·(−10)(1 + cos): L 0 → −10; 250 → −5·1.707107 = −8.535534; 750 → −5·0.292893 = −1.464466
    got = CosineReward()(make_step(**COS))
    want = [2.0, 1.853553, 1.5, 1.000002, -10.0, -10.0, -8.535534, -1.464466, -10.0]
    assert got.tolist() == pytest.approx(want, abs=1e-6)


def test_cosine_ex1_repo_rule_and_unset_exceed():
    # repo: L + 16 >= 1000 is exceeded: 999 → −10 (also without truncation)
    got = CosineReward(exceed_rule="repo")(make_step(**COS))
    want = [2.0, 1.853553, 1.5, -10.0, -10.0, -10.0, -8.535534, -1.464466, -10.0]
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    # repo with exceed_length unset (→ 0.0): L 990 + 16 >= 1000 → 0
    assert CosineReward(exceed_rule="repo", r_exceed=0.0)(make_step([1], [990], cap=1000)).tolist() == [0.0]
    # a fixed L_max equals the cap-derived one
    fixed = CosineReward(max_len_tokens=1000)(make_step(**{**COS, "cap": 4000}))
    assert fixed.tolist() == pytest.approx([2.0, 1.853553, 1.5, 1.000002, -10.0, -10.0, -8.535534, -1.464466, -10.0], abs=1e-6)


def test_cosine_ex2_trl_defaults():
    # correct: 0.5 + 0.25(1 + cos(πp)): p 0 → 1; 0.25 → 0.5 + 0.25·1.707107 = 0.926777; 1.5 clamps to 1 → 0.5
    # wrong: −0.5 − 0.25(1 + cos(πp)): → −1, −0.926777, −0.5
    trl = CosineReward(1.0, 0.5, -1.0, -0.5, exceed_rule="none", max_len_tokens=1000)
    got = trl(make_step([1, 1, 1, 0, 0, 0], [0, 250, 1500, 0, 250, 1500], cap=2000))
    assert got.tolist() == pytest.approx([1.0, 0.926777, 0.5, -1.0, -0.926777, -0.5], abs=1e-6)


def test_cosine_ex3_group_advantage():
    # R: 1 + ½(1 + cos(0.2π)) = 1.904508; 1 + ½(1 + cos(0.6π)) = 1.345492;
    # −5(1 + cos(0.3π)) = −7.938926; −5(1 + cos(0.9π)) = −0.244717; mean −1.233411, sample std 4.661037
    # A = (R − mean)/std: [0.687821, 0.565286, −1.469825, 0.216718] (the long wrong answer is positive)
    step = make_step([1, 1, 0, 0], [200, 600, 300, 900], cap=1000)
    reward = CosineReward()(step)
    assert reward.tolist() == pytest.approx([1.904508, 1.345492, -7.938926, -0.244717], abs=1e-6)
    assert grpo(reward, step).tolist() == pytest.approx([0.687821, 0.565286, -1.469825, 0.216718], abs=1e-6)


def test_cosine_edges():
    # all correct: shorter is better, so GRPO advantages are non-zero:
    # R = 1 + ½(1 + cos(0.1π)) = 1.975528, 1 + ½(1 + cos(0.3π)) = 1.793893; d = 0.181636,
    # sample std d/√2 = 0.128436 → A = ±(d/2)/(0.128436 + 1e-6) = ±0.707101
    step = make_step([1, 1], [100, 300], cap=1000)
    assert CosineReward()(step).tolist() == pytest.approx([1.975528, 1.793893], abs=1e-6)
    assert grpo(CosineReward()(step), step).tolist() == pytest.approx([0.707101, -0.707101], abs=1e-6)
    # length 0: correct r0_correct, wrong r0_wrong (not exceeded)
    assert CosineReward()(make_step([1, 0], [0, 0], cap=1000)).tolist() == [2.0, -10.0]
    with pytest.raises(ValueError):
        CosineReward(exceed_rule="margin")


def test_repetition_ex4_dense_and_sum():
    # 3-grams starting at 0-based 3, 4, 5 ((1,2,3), (2,3,1), (3,1,2)) were seen before: tokens 3..7 get −0.05
    got = repetition_penalty_T([1, 2, 3, 1, 2, 3, 1, 2, 4], ngram_tokens=3, penalty=-0.05)
    assert got.tolist() == pytest.approx([0, 0, 0, -0.05, -0.05, -0.05, -0.05, -0.05, 0], abs=1e-6)
    step = make_step([1, 1], [9, 2])
    step.completion_ids = [[1, 2, 3, 1, 2, 3, 1, 2, 4, 2], [5, 5, 2]]  # EOS (2) last, not counted
    # sums: 5 · −0.05 = −0.25; a 2-token response has no 3-gram: 0
    assert RepetitionPenalty(3, -0.05)(step).tolist() == pytest.approx([-0.25, 0.0], abs=1e-6)


# ---------------------------------------------------------------- ShorterBetter (4.2.7)

def test_shorter_better_s1():
    # SOL = min correct length = 800; r = 2·c − 0.001·|L − 800|; mean −0.893750, sample std 3.072742
    step = make_step([1, 1, 0, 0, 1, 0, 0, 1], [1200, 800, 2000, 6000, 950, 3100, 6000, 1500],
                     truncated=[0, 0, 0, 1, 0, 0, 1, 0], cap=6000)
    reward = ShorterBetterReward()(step)
    assert reward.tolist() == pytest.approx([1.6, 2.0, -1.2, -5.2, 1.85, -2.3, -5.2, 1.3], abs=1e-6)
    want = [0.811571, 0.941748, -0.099667, -1.401435, 0.892932, -0.457653, -1.401435, 0.713939]
    assert grpo(reward, step).tolist() == pytest.approx(want, abs=1e-6)


def test_shorter_better_s2_all_wrong():
    # SOL = mean 3000; r = −0.001·[2000, 1000, 0, 3000]; mean −1.5, std 1.290994
    step = make_step([0, 0, 0, 0], [1000, 2000, 3000, 6000])
    reward = ShorterBetterReward()(step)
    assert reward.tolist() == pytest.approx([-2.0, -1.0, 0.0, -3.0], abs=1e-6)
    assert grpo(reward, step).tolist() == pytest.approx([-0.387298, 0.387298, 1.161894, -1.161894], abs=1e-6)


def test_shorter_better_s3_all_correct_and_zero_std():
    # SOL = 700: r = [2, 2, 2 − 0.2, 2 − 0.6]; mean 1.8, std 0.282843
    step = make_step([1, 1, 1, 1], [700, 700, 900, 1300])
    reward = ShorterBetterReward()(step)
    assert reward.tolist() == pytest.approx([2.0, 2.0, 1.8, 1.4], abs=1e-6)
    assert grpo(reward, step).tolist() == pytest.approx([0.707104, 0.707104, 0.0, -1.414209], abs=1e-6)
    same = make_step([1, 1, 1, 1], [700] * 4)
    assert grpo(ShorterBetterReward()(same), same).tolist() == [0.0] * 4


def test_shorter_better_single_correct_two_sided_groups_and_eos():
    # group 1: single correct (L 500) → SOL 500; the shorter wrong one is penalised too: −0.001·400
    # group 2: one row → SOL = own length, r = α·c = 2
    step = make_step([0, 1, 0, 1], [100, 500, 900, 40], sizes=[3, 1])
    assert ShorterBetterReward()(step).tolist() == pytest.approx([-0.4, 2.0, -0.4, 2.0], abs=1e-6)
    # count_eos: the finished row counts 801, the truncated 1000 tokens: SOL 801 → −0.001·199
    eos = make_step([1, 0], [800, 1000], truncated=[0, 1])
    assert ShorterBetterReward(count_eos=True)(eos).tolist() == pytest.approx([2.0, -0.199], abs=1e-6)
    assert ShorterBetterReward()(eos).tolist() == pytest.approx([2.0, -0.2], abs=1e-6)


# ---------------------------------------------------------------- GRPO-λ (1.8.7)

# B = 5 groups × 4: A acc 1, B 0.75, C 0.5, D 0.25, E 0
LAMBDA = dict(
    correct=[1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
    length=[100, 200, 300, 400, 150, 250, 350, 500, 120, 220, 320, 420, 130, 230, 330, 430, 140, 240, 340, 440],
    sizes=[4] * 5,
)


def test_grpo_lambda_ex1():
    # ⌈0.2·5⌉ = 1 → S = {A}; A: mean 250, pop. std 111.803399, z = ±1.341641, ±0.447214
    # r = 1 − 0.2σ(z) = [0.958552, 0.921995, 0.878005, 0.841448]; others 0/1
    step = make_step(**LAMBDA)
    reward = GrpoLambdaReward(top_lambda=0.2, alpha=0.2)(step)
    assert reward[:4].tolist() == pytest.approx([0.958552, 0.921995, 0.878005, 0.841448], abs=1e-6)
    assert reward[4:].tolist() == LAMBDA["correct"][4:]
    adv = grpo(reward, step)
    assert adv[:4].tolist() == pytest.approx([1.146495, 0.430686, -0.430686, -1.146495], abs=1e-6)
    # B (0/1 reward [1,1,1,0]): mean 0.75, std 0.5 → 0.25/0.500001, −0.75/0.500001; E all wrong: 0
    assert adv[4:8].tolist() == pytest.approx([0.499999, 0.499999, 0.499999, -1.499997], abs=1e-6)
    assert adv[16:].tolist() == [0.0] * 4


def test_grpo_lambda_ex2():
    # ⌈0.4·5⌉ = 2 → S = {A, B}; B correct lengths [150, 250, 350]: mean 250, pop. std 81.649658,
    # z = [−1.224745, 0, 1.224745] → r = [0.954579, 0.9, 0.845421], wrong 0
    step = make_step(**LAMBDA)
    reward = GrpoLambdaReward(top_lambda=0.4, alpha=0.2)(step)
    assert reward[4:8].tolist() == pytest.approx([0.954579, 0.9, 0.845421, 0.0], abs=1e-6)
    assert grpo(reward, step)[4:8].tolist() == pytest.approx([0.618262, 0.497565, 0.376868, -1.492695], abs=1e-6)
    assert reward[8:].tolist() == LAMBDA["correct"][8:]


def test_grpo_lambda_ex3_single_correct():
    # one group, ⌈0.2⌉ = 1 selected; one correct (std 0 → z 0): r = 1 − 0.2·0.5 = 0.9, wrong 0
    reward = GrpoLambdaReward(0.2, 0.2)(make_step([1, 0, 0, 0], [90, 40, 300, 500]))
    assert reward.tolist() == pytest.approx([0.9, 0.0, 0.0, 0.0], abs=1e-6)


def test_grpo_lambda_edges():
    step = make_step(**LAMBDA)
    # λ = 0: plain 0/1; λ = 1: every group penalised (E all wrong stays 0)
    assert GrpoLambdaReward(0.0, 0.2)(step).tolist() == LAMBDA["correct"]
    every = GrpoLambdaReward(1.0, 0.2)(step)
    assert every[:4].tolist() == pytest.approx([0.958552, 0.921995, 0.878005, 0.841448], abs=1e-6)
    assert every[16:].tolist() == [0.0] * 4
    # 0.6·5 = 3.0000000000000004 selects 3 groups (A, B, C), not 4: D's single correct keeps 1
    three = GrpoLambdaReward(0.6, 0.2)(step)
    # C: correct lengths [120, 220], mean 170, pop. std 50, z = −1 → 1 − 0.2·σ(−1) = 1 − 0.2·0.268941
    assert three[8].item() == pytest.approx(1.0 - 0.2 / (1 + math.exp(1.0)), abs=1e-6)
    assert three[8].item() == pytest.approx(0.946212, abs=1e-6)
    assert three[12].item() == 1.0
    # ties at the boundary: batch order (first group wins); equal correct lengths → z 0 → 0.9
    tie = make_step([1, 1, 1, 1], [100, 100, 100, 100], sizes=[2, 2])
    assert GrpoLambdaReward(0.5, 0.2)(tie).tolist() == pytest.approx([0.9, 0.9, 1.0, 1.0], abs=1e-6)


def test_grpo_lambda_across_ranks():
    # rank 1 of 2; rank 0 holds two groups with acc [1.0, 0.75]; this rank holds A..E.
    # 7 groups, ⌈0.4·7⌉ = 3: rank 0's two, then this rank's A (acc 1 tie: rank order) → only A penalised
    other = {torch.long: torch.tensor([2]), torch.float64: torch.tensor([1.0, 0.75], dtype=torch.float64)}
    term = GrpoLambdaReward(0.4, 0.2)
    term.collectives = Collectives(gather_cat=lambda t: torch.cat([other[t.dtype], t]), rank=lambda: 1)
    reward = term(make_step(**LAMBDA))
    assert reward[:4].tolist() == pytest.approx([0.958552, 0.921995, 0.878005, 0.841448], abs=1e-6)
    assert reward[4:].tolist() == LAMBDA["correct"][4:]


def test_grpo_lambda_rejects_bad_lambda():
    with pytest.raises(ValueError):
        GrpoLambdaReward(1.5)


