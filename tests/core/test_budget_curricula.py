"""Budget curricula (Train Long Think Short, ThinkPrune, per difficulty) and LSPO's filter:
every worked example of ALGORITHMS.md 3.4-3.6, first/last step edges, state round trips."""
import math

import pytest
import torch

from rlrun.core.collectives import Collectives
from rlrun.core.budget_curricula import (ExponentialBudget, LinearBudget, PerDifficultyBudget,
                                         ThinkPruneLimit, geometric_budget, stepwise_budget, to_tokens)
from rlrun.core.budget_rewards import triangular_length_reward
from rlrun.core.dapo import DynamicSampling
from rlrun.core.dler import TruncationReward
from rlrun.core.lspo import ChainedFilter, LengthAwareSampling, LSPOCurriculum, lower_quantile
from rlrun.core.advantages import GroupNormalized
from rlrun.types import StepBatch, Problem, Verdicts
from conftest import with_verdicts

STEPS = [0, 149, 150, 299, 300, 449, 450, 599, 600, 750]


def problems(n=2, **meta):
    return [Problem(uid=str(i), prompt="q", answer="a", meta=dict(meta)) for i in range(n)]


# --- 3.4.7 schedules -------------------------------------------------------------------------
def test_geometric_worked_example():
    # 256 * 0.7^floor(t/150): 0.7 -> 179.2, 0.49 -> 125.44, 0.343 -> 87.808, 0.2401 -> 61.4656,
    # t = 750: 0.7^5 = 0.16807 -> 43.02592 (no stop at the final budget)
    want = [256, 256, 179.2, 179.2, 125.44, 125.44, 87.808, 87.808, 61.4656, 43.02592]
    got = [geometric_budget(t, 256, 0.7, 150) for t in STEPS]
    assert got == pytest.approx(want, abs=1e-6)
    curriculum = ExponentialBudget(256, gamma=0.7, interval=150)
    assert [curriculum.budget(t) for t in STEPS] == pytest.approx(want, abs=1e-6)
    assert geometric_budget(10**6, 256, 0.7, 150) == 1.0  # floors at 1 token


def test_stepwise_exponential_worked_example():
    # d = (87/256)^(1/3) = 0.697846, I = 600/4 = 150: 256 d = 178.648645, 256 d^2 = 124.669291,
    # 256 d^3 = 87 from t = 450, then 87 forever
    want = [256, 256, 178.648645, 178.648645, 124.669291, 124.669291, 87, 87, 87, 87]
    assert (87 / 256) ** (1 / 3) == pytest.approx(0.697846, abs=1e-6)
    curriculum = ExponentialBudget(256, final_tokens=87, decays=3, total_steps=600)
    assert [curriculum.budget(t) for t in STEPS] == pytest.approx(want, abs=1e-6)
    # Fig. 2 legend: 256, 179, 125, 87
    assert curriculum.budgets(150, problems()) == [179, 179]
    assert curriculum.budgets(300, problems(1)) == [125]
    assert curriculum.budgets(599, problems(1)) == [87]


def test_stepwise_decay_parameterisations():
    # Sec. 4.4: n = 1 -> d = 87/256 = 0.339844, I = 300; n = 7 -> d = 0.857, I = 75
    assert stepwise_budget(299, 256, 87, 1, 600) == 256
    assert stepwise_budget(300, 256, 87, 1, 600) == pytest.approx(87, abs=1e-6)
    assert (87 / 256) ** (1 / 7) == pytest.approx(0.857, abs=1e-3)
    assert stepwise_budget(74, 256, 87, 7, 600) == 256
    assert stepwise_budget(75, 256, 87, 7, 600) == pytest.approx(256 * (87 / 256) ** (1 / 7), abs=1e-6)


def test_linear_worked_example():
    # drops of (256 - 87)/3 = 56.333333: 199.666667, 143.333333, 87
    want = [256, 256, 199.666667, 199.666667, 143.333333, 143.333333, 87, 87, 87, 87]
    curriculum = LinearBudget(256, 87, 3, 600)
    assert [curriculum.budget(t) for t in STEPS] == pytest.approx(want, abs=1e-6)
    assert curriculum.budgets(150, problems(1)) == [200]  # 199.67 rounds to 200


def test_first_and_last_step_and_short_runs():
    curriculum = ExponentialBudget(256, final_tokens=87, decays=3, total_steps=600)
    assert curriculum.budgets(0, problems(1)) == [256]  # first step: the full start budget
    assert curriculum.budgets(599, problems(1)) == [87]  # last step: the final budget
    # debug=cpu: 2 steps, k(t) = floor(4 t / 2): t = 0 -> 256, t = 1 -> k = 2 -> 124.669291 -> 125
    short = ExponentialBudget(256, final_tokens=87, decays=3, total_steps=2)
    assert [short.budgets(t, problems(1))[0] for t in (0, 1)] == [256, 125]
    one = LinearBudget(256, 87, 3, 1)  # one step: only t = 0, the start budget
    assert one.budgets(0, problems(1)) == [256]
    with pytest.raises(ValueError):
        one.budget(-1)


def test_rounding():
    assert [to_tokens(x) for x in (178.648645, 124.5, 0.2, 87.0000001)] == [179, 125, 1, 87]


@pytest.mark.parametrize("kwargs", [
    dict(final_tokens=300, decays=3, total_steps=10),  # final above the start
    dict(final_tokens=87, decays=0, total_steps=10),
    dict(final_tokens=87, decays=3),  # no total_steps
    dict(final_tokens=87, decays=3, total_steps=10, gamma=0.7, interval=5),  # a mix
    dict(gamma=1.0, interval=5),
])
def test_exponential_rejects(kwargs):
    with pytest.raises(ValueError):
        ExponentialBudget(256, **kwargs)


def test_schedule_state_round_trip():
    curriculum = LinearBudget(256, 87, 3, 600)
    curriculum.observe(41, {"acc/train": 0.5})
    state = curriculum.state_dict()
    assert state == {"params": {"shape": "linear", "start": 256, "final": 87, "decays": 3,
                                "total_steps": 600, "prompt_line": None,
                                "cap_tokens": None}, "last_step": 41}
    fresh = LinearBudget(256, 87, 3, 600)
    fresh.load_state_dict(state)
    assert fresh.last_step == 41 and fresh.budgets(300, problems(1)) == curriculum.budgets(300, problems(1))
    with pytest.raises(ValueError):  # resuming with another schedule is an error, not a silent change
        LinearBudget(256, 87, 3, 700).load_state_dict(state)
    geometric = ExponentialBudget(256, gamma=0.7, interval=150)
    geometric.load_state_dict(geometric.state_dict())  # empty history round trip


# --- per difficulty --------------------------------------------------------------------------
def test_per_difficulty():
    curriculum = PerDifficultyBudget(256, {1: 64, "3": 128}, decays=3, total_steps=600)
    mixed = problems(1, digits=1) + problems(1, digits=3)
    assert curriculum.budgets(0, mixed) == [256, 256]  # same start
    # t = 150, k = 1: 256 (64/256)^(1/3) = 161.269894; 256 (128/256)^(1/3) = 203.187335
    assert curriculum.budget(150, mixed[0]) == pytest.approx(161.269894, abs=1e-6)
    assert curriculum.budget(150, mixed[1]) == pytest.approx(203.187335, abs=1e-6)
    assert curriculum.budgets(599, mixed) == [64, 128]  # last step: each difficulty's final
    with pytest.raises(ValueError, match="digits=2"):
        curriculum.budgets(0, problems(1, digits=2))
    with pytest.raises(ValueError, match="meta"):
        curriculum.budgets(0, problems(1))
    linear = PerDifficultyBudget(256, {"1": 64}, 3, 600, shape="linear")
    assert linear.budget(150, mixed[0]) == pytest.approx(192, abs=1e-6)  # 256 - (256 - 64)/3
    restored = PerDifficultyBudget(256, {"1": 64, "3": 128}, 3, 600)
    restored.load_state_dict(curriculum.state_dict())


# --- 3.5 ThinkPrune --------------------------------------------------------------------------
def test_thinkprune_rounds():
    one_round = ThinkPruneLimit(3000)  # the paper's way: one round per run
    assert one_round.budgets(0, problems(1)) == [3000] and one_round.budgets(10**5, problems(1)) == [3000]
    split = ThinkPruneLimit(4000, [3000, 2000], total_steps=9)  # 3 rounds of 3 steps
    assert [split.budgets(t, problems(1))[0] for t in range(10)] == [4000] * 3 + [3000] * 3 + [2000] * 4
    fixed = ThinkPruneLimit(4000, [3000, 2000], round_steps=180)  # round 2 from step 180
    assert [fixed.round_of(t) for t in (0, 179, 180, 359, 360, 10**4)] == [0, 0, 1, 1, 2, 2]
    for bad in (dict(later_limits=[4000]), dict(later_limits=[3000, 3500]), dict(later_limits=[0])):
        with pytest.raises(ValueError):
            ThinkPruneLimit(4000, **bad, round_steps=10)
    with pytest.raises(ValueError):  # later limits need round_steps or total_steps
        ThinkPruneLimit(4000, [3000])
    restored = ThinkPruneLimit(4000, [3000, 2000], round_steps=180)
    restored.load_state_dict(fixed.state_dict())
    with pytest.raises(ValueError):
        ThinkPruneLimit(4000, [2000], round_steps=180).load_state_dict(fixed.state_dict())


def test_thinkprune_worked_example_rewards():
    # 3.5.7, L = 3000: paper reward 1[correct and finished] = reward=dler_truncation
    correct = torch.tensor([1.0, 0.0, 1.0, 0.0])  # row 3's \boxed{42} is inside a cut response
    truncated = torch.tensor([False, True, True, False])
    lengths = torch.tensor([1200, 3000, 3000, 2500])
    rollouts = StepBatch(problems=problems(1), group_size=4, prompt_ids=[[]], completion_ids=[[1]] * 4,
                         texts=["t"] * 4, length_tokens_N=lengths, truncated_N=truncated,
                         budget_tokens_N=torch.full((4,), 3000))
    paper = TruncationReward()(with_verdicts(rollouts, Verdicts(correct, torch.ones(4), [None] * 4), 0))
    assert paper.tolist() == [1.0, 0.0, 0.0, 0.0]
    group = torch.zeros(4, dtype=torch.long)
    # mean 0.25, sample std 0.5: (1 - 0.25)/(0.5 + 1e-6) = 1.499997, -0.25/0.500001 = -0.499999
    torch.testing.assert_close(GroupNormalized(1e-6)(_inp(paper, group)).float(),
                               torch.tensor([1.499997, -0.499999, -0.499999, -0.499999]), atol=1e-6, rtol=0)
    # released code (no truncation test): rewards 1, 0, 1, 0, mean 0.5, std 0.577350 -> +-0.866024
    torch.testing.assert_close(GroupNormalized(1e-6)(_inp(correct, group)).float(),
                               torch.tensor([0.866024, -0.866024, 0.866024, -0.866024]), atol=1e-6, rtol=0)


def test_thinkprune_all_cut_gives_no_signal():
    rewards = torch.zeros(4)  # every response cut -> 0 -> A = 0
    assert GroupNormalized(1e-6)(_inp(rewards, torch.zeros(4, dtype=torch.long))).abs().max() == 0


# --- 3.4.7 reward group (triangular length reward) ------------------------------------------
def test_triangular_worked_example():
    length = torch.tensor([80, 120, 87, 200, 0, 174])
    budget = torch.full((6,), 87)
    # 80/87 = 0.919540; 1 - 33/87 = 0.620690; l = L -> 1; l > 2L -> 0; l = 0 -> 0; l = 2L -> 0
    torch.testing.assert_close(triangular_length_reward(length, budget),
                               torch.tensor([0.919540, 0.620690, 1.0, 0.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    band = triangular_length_reward(length, budget, band=True)
    assert band[0].item() == 1.0 and band[1].item() == pytest.approx(0.620690, abs=1e-6)
    # r = 0.6 c + 0.3 R_len + 0.1 R_fmt, R_fmt = 0.5 think + 0.5 answer
    c = torch.tensor([1.0, 1.0, 0.0, 0.0])
    fmt = torch.tensor([1.0, 1.0, 1.0, 0.5])
    r = (0.6 * c + 0.3 * triangular_length_reward(length[:4], budget[:4]) + 0.1 * fmt).double()
    torch.testing.assert_close(r, torch.tensor([0.975862, 0.886207, 0.4, 0.05], dtype=torch.float64),
                               atol=1e-6, rtol=0)
    # paper's GRPO: population variance, eps inside the root: mu 0.578017, sigma 0.375419
    mu, sigma = r.mean(), torch.sqrt(((r - r.mean()) ** 2).mean() + 1e-6)
    assert (mu.item(), sigma.item()) == pytest.approx((0.578017, 0.375419), abs=1e-6)
    torch.testing.assert_close((r - mu) / sigma, torch.tensor([1.059735, 0.820922, -0.474183, -1.406474],
                                                              dtype=torch.float64), atol=1e-6, rtol=0)
    r_band = 0.6 + 0.3 * band[0] + 0.1  # r_1 with the band shape = 1.0
    assert r_band.item() == pytest.approx(1.0, abs=1e-6)


# --- 3.6 LSPO --------------------------------------------------------------------------------
def _inp(reward, group, correct=None, length=None, step=0):
    n = len(reward)
    return StepBatch(reward_N=reward, group_N=group, correct_N=reward if correct is None else correct,
                          length_tokens_N=torch.zeros(n) if length is None else length,
                          truncated_N=torch.zeros(n, dtype=torch.bool), step=step)


BATCH1 = [([1, 0, 1, 0], [300, 500, 400, 600]), ([1, 1, 1, 1], [200, 220, 240, 260]),
          ([0, 0, 1, 0], [1500, 1800, 1200, 2048]), ([1, 0, 0, 0], [900, 1100, 1000, 1000]),
          ([0, 0, 0, 0], [2048] * 4), ([1, 1, 0, 1], [700, 650, 800, 750]),
          ([0, 1, 1, 1], [1600, 1700, 1500, 1400]), ([1, 0, 1, 1], [450, 350, 380, 420])]
BATCH2 = [([1, 0, 0, 0], [3000] * 4), ([1, 1, 0, 1], [130] * 4), ([1, 0, 1, 0], [1000] * 4),
          ([0, 1, 0, 1], [2150] * 4)]


def _batch(rows, step=0):
    correct = torch.tensor([float(c) for cs, _ in rows for c in cs])
    length = torch.tensor([float(x) for _, xs in rows for x in xs])
    group = torch.arange(len(rows)).repeat_interleave(4)
    return _inp(correct, group, correct, length, step)


def kept_prompts(keep_N):
    return sorted(set((torch.arange(len(keep_N)) // 4)[keep_N].tolist()))


def test_lower_quantile():
    pool = [400, 450, 725, 1000, 1550, 1637]
    assert [lower_quantile(pool, a) for a in (0.25, 0.3, 0.7, 0.75, 0.9, 1.0)] == [450, 450, 1550, 1550,
                                                                                    1637, 1637]
    assert lower_quantile(list(range(1, 11)), 0.7) == 7  # 0.7 * 10 = 7.000000000000001 -> k = 7
    assert lower_quantile([5, 5, 9], 0.5) == 5  # ties: smallest value with share >= a


def test_lspo_worked_example():
    # pool (sorted) 400, 450, 725, 1000, 1550, 1637 (M = 6); Q(0.25) = 450, Q(0.75) = 1550
    # (L(q3) = 6548/4 = 1637); keep q1, q3, q7, q8 (0-based 0, 2, 6, 7)
    lspo = LengthAwareSampling(l_low=0.25, l_high=0.75, max_rounds=1)
    assert kept_prompts(lspo(_batch(BATCH1))) == [0, 2, 6, 7]
    assert (lspo.last.short, lspo.last.long, lspo.last.cap) == (450, 1550, math.inf)
    # L_low 0.3, L_high 0.7, L_max = Q(0.9) = 1637: same set; absolute cap 1600: q1, q7, q8
    assert kept_prompts(LengthAwareSampling(0.3, 0.7, l_max=0.9)(_batch(BATCH1))) == [0, 2, 6, 7]
    assert kept_prompts(LengthAwareSampling(0.25, 0.75, l_max_tokens=1600)(_batch(BATCH1))) == [0, 6, 7]
    # round 2: Q(0.25) = 130, Q(0.75) = 2150 over p1..p4 (this round only): keep p1, p2, p4
    assert kept_prompts(lspo(_batch(BATCH2))) == [0, 1, 3]
    assert lspo.stats == {"rounds": 2, "prompts": 12, "survived": 10, "kept_short": 3, "kept_long": 4}


def test_lspo_refill_in_loop_order():
    # the loop concatenates rounds and trains on the first B = 6 kept groups: q1, q3, q7, q8, p1, p2
    lspo = LengthAwareSampling(0.25, 0.75)
    keep = torch.cat([lspo(_batch(BATCH1)), lspo(_batch(BATCH2))])
    group = torch.arange(12).repeat_interleave(4)
    first = torch.unique(group[keep])[:6]
    assert first.tolist() == [0, 2, 6, 7, 8, 9]


def test_lspo_edges():
    lspo = LengthAwareSampling(0.25, 0.75)
    none = lspo(_batch([BATCH1[1], BATCH1[4]]))  # all-correct and all-wrong: nothing survives
    assert not none.any() and lspo.last is None
    one = lspo(_batch([BATCH1[0], BATCH1[1]]))  # one survivor: Q = its L, kept by the short side
    assert kept_prompts(one) == [0] and lspo.stats["kept_short"] == 1
    no_acc = LengthAwareSampling(0.25, 0.75, accuracy_filter=False)  # all 8 in the pool
    # pool 230 400 450 725 1000 1550 1637 2048: Q(0.25) = 400 (k=2), Q(0.75) = 1550 (k=6):
    # short q2 230, q8 400; long q7 1550, q3 1637, q5 2048
    assert kept_prompts(no_acc(_batch(BATCH1))) == [1, 2, 4, 6, 7]
    for bad in (dict(l_low=0.5, l_high=0.5), dict(l_low=0.0, l_high=0.5), dict(l_low=0.2, l_high=0.6,
                                                                               l_max=0.5)):
        with pytest.raises(ValueError):
            LengthAwareSampling(**bad)


def test_lspo_gather_pools_every_rank():
    # two ranks of 4 prompts; rank 1's thresholds come from all 6 survivors (as one batch of 8)
    rank0, rank1 = _batch(BATCH1[:4]), _batch(BATCH1[4:])
    lspo0 = LengthAwareSampling(0.25, 0.75)
    lspo0(rank0)
    # rank 1 of 2: every rank's pooled means in rank order, this rank's block starting at 1 * 4
    lspo1 = LengthAwareSampling(0.25, 0.75, collectives=Collectives(
        gather_cat=lambda v: torch.cat([_pooled(lspo0, rank0), v]), rank=lambda: 1))
    assert kept_prompts(lspo1(rank1)) == [2, 3]  # q7, q8 (global 6, 7)
    assert (lspo1.last.short, lspo1.last.long) == (450, 1550)


def _pooled(_, inp):
    # rank 0's survivor means: q1 450, q2 dropped (NaN), q3 1637, q4 1000
    return torch.tensor([450.0, math.nan, 1637.0, 1000.0], dtype=torch.float64)


def test_lspo_state_round_trip_and_curriculum():
    curriculum = LSPOCurriculum(256, LengthAwareSampling(0.25, 0.75))
    assert curriculum.budgets(3, problems(2)) == [256, 256]
    with pytest.raises(RuntimeError, match="not applied"):
        curriculum.observe(0, {})  # the loop did not apply the filter
    curriculum.filter(_batch(BATCH1, step=0))
    curriculum.observe(0, {})
    state = curriculum.state_dict()
    fresh = LSPOCurriculum(256, LengthAwareSampling(0.25, 0.75))
    fresh.load_state_dict(state)
    assert fresh.filter.stats == curriculum.filter.stats
    metrics = curriculum.filter.metrics()
    assert metrics["lspo/kept_short"] == 2 and metrics["lspo/threshold_long_tokens"] == 1550


def test_chained_after_dapo():
    # DAPO's accuracy filter, then LSPO on its survivors (no second accuracy filter)
    chain = ChainedFilter([DynamicSampling(metric="acc", max_rounds=3, when_short="train"),
                           LengthAwareSampling(0.25, 0.75, max_rounds=5, accuracy_filter=False)])
    assert chain.max_rounds == 5 and chain.when_short == "train"
    assert kept_prompts(chain(_batch(BATCH1))) == [0, 2, 6, 7]
    chain.load_state_dict(chain.state_dict())
