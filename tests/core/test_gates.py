"""``gate: correct|all`` of every length term (docs/rewards-and-curricula.md, "Which answers a length
term applies to"): hand-computed values under both gates, the default of each term (its paper's), and
the one-line error of a bad value. ``correct`` gives a wrong answer 0 from the length part; ``all``
applies the length part to every answer."""
from __future__ import annotations

import pytest
import torch

from rlrun.core.adaptive_rewards import AdaptiveLengthPenalty, HistoryLengthReward
from rlrun.core.budget_rewards import TriangularLengthReward
from rlrun.core.dapo import OverlongSoftPunishment
from rlrun.core.dler import DifficultyAwareTruncationReward, TruncationReward
from rlrun.core.laser import Laser
from rlrun.core.laser_d import LaserD, LaserDE, LaserTargets
from rlrun.core.lcpo import L1Exact, L1Max
from rlrun.core.length_rewards import CosineReward, GrpoLambdaReward, KimiLengthReward, ShorterBetterReward
from rlrun.core.rewards import GATES, check_gate, gated
from rlrun.types import Problem, StepBatch

W, C = [1, 1, 0, 0], [1, 0, 1, 0]  # correctness patterns


def batch(correct, lengths, truncated=None, format_ok=None, budget=100, sizes=None, meta=None) -> StepBatch:
    """Groups of ``sizes`` (default one), response tokens ``lengths`` (sampled = length + EOS unless
    truncated), generation cap ``budget``; ``meta`` per prompt."""
    n = len(correct)
    sizes = sizes or [n]
    meta = meta or [{} for _ in sizes]
    return StepBatch(
        problems=[Problem(uid=f"q{g}", prompt="p", answer="a", meta=meta[g]) for g in range(len(sizes))],
        group_N=torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes)),
        length_tokens_N=torch.tensor(lengths), truncated_N=torch.tensor(truncated or [False] * n),
        budget_tokens_N=torch.full((n,), budget), correct_N=torch.tensor(correct, dtype=torch.float32),
        format_ok_N=torch.tensor(format_ok or [1.0] * n))


def close(got, want):
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32), atol=1e-6, rtol=0)


def test_gated_helper():
    length = torch.tensor([0.5, -0.5, 0.25])
    correct = torch.tensor([1.0, 0.0, 1.0])
    assert gated(length, correct, "all") is length
    close(gated(length, correct, "correct"), [0.5, 0.0, 0.25])
    assert GATES == ("correct", "all") and check_gate("all") == "all"


def test_kimi():
    b = batch(C, [10, 20, 30, 40])
    # lambda = 0.5 - (len - 10)/30 = [0.5, 0.166667, -0.166667, -0.5]; correct [1, 0, 1, 0]
    # all (paper): wrong keep min(0, lambda) -> [0.5, 0, -0.166667, -0.5]; correct: wrong -> 0
    close(KimiLengthReward()(b), [0.5, 0.0, -0.166667, -0.5])
    close(KimiLengthReward(gate="correct")(b), [0.5, 0.0, -0.166667, 0.0])


def test_cosine():
    b = batch([1, 1, 0, 0], [0, 50, 50, 100], truncated=[False, False, False, True])
    # p = L/100 = [0, 0.5, 0.5, 1]; R = rL + (r0 - rL)(1 + cos(pi p))/2:
    # correct (2, 1): p=0 -> 2, p=0.5 -> 1 + 0.5 = 1.5; wrong (-10, 0): p=0.5 -> -5; row 3 exceeded -> -10
    # correct gate: the wrong row 2 gets rL_wrong = 0; the exceed rule still applies (row 3)
    close(CosineReward(max_len_tokens=100)(b), [2.0, 1.5, -5.0, -10.0])
    close(CosineReward(max_len_tokens=100, gate="correct")(b), [2.0, 1.5, 0.0, -10.0])


def test_shorter_better():
    b = batch(W, [100, 150, 120, 300])
    # SOL = 100 (shortest correct); |l - SOL| = [0, 50, 20, 200]; r = 2c - 0.01 |l - SOL|
    # all: [2, 1.5, -0.2, -2]; correct: wrong -> 0
    close(ShorterBetterReward(beta=0.01)(b), [2.0, 1.5, -0.2, -2.0])
    close(ShorterBetterReward(beta=0.01, gate="correct")(b), [2.0, 1.5, 0.0, 0.0])


def test_grpo_lambda():
    b = batch(W, [100, 200, 150, 300])
    # lambda = 1: the group is selected. Correct lengths 100, 200: mean 150, population std 50;
    # z = [-1, 1, 0, 3]; sigmoid = [0.268941, 0.731059, 0.5, 0.952574]; alpha 0.6:
    # correct (paper): [1 - 0.161365, 1 - 0.438635, 0, 0]; all: wrong get -0.6 sigmoid(z) = -0.3, -0.571545
    close(GrpoLambdaReward(top_lambda=1.0)(b), [0.838635, 0.561365, 0.0, 0.0])
    close(GrpoLambdaReward(top_lambda=1.0, gate="all")(b), [0.838635, 0.561365, -0.3, -0.571545])


LASER_ROWS = dict(correct=[1, 1, 0, 0, 1], lengths=[50, 150, 50, 150, 50], format_ok=[1, 1, 1, 1, 0])


def test_laser_and_laser_d():
    b = batch(**LASER_ROWS)
    # R = [1, 1, -0.5, -0.5, -1] (row 4 a format error); len with EOS = [51, 151, 51, 151, 51]; target 100
    # correct (paper): +0.5 for R = 1 and len <= 100 -> [1.5, 1, -0.5, -0.5, -1]
    # all: +0.5 for every len <= 100 -> [1.5, 1, 0, -0.5, -0.5]
    close(Laser(target_tokens=100)(b), [1.5, 1.0, -0.5, -0.5, -1.0])
    close(Laser(target_tokens=100, gate="all")(b), [1.5, 1.0, 0.0, -0.5, -0.5])
    # LASER-D without a monitor: every bucket's target is default_tokens = 100, the same numbers
    targets = dict(lower_bound=64, upper_bound=256, interval=64, grid_start=64, default_tokens=100)
    close(LaserD(LaserTargets(**targets), monitor="none")(b), [1.5, 1.0, -0.5, -0.5, -1.0])
    close(LaserD(LaserTargets(**targets), monitor="none", gate="all")(b), [1.5, 1.0, 0.0, -0.5, -0.5])


def test_laser_de():
    b = batch(**LASER_ROWS)
    targets = LaserTargets(lower_bound=64, upper_bound=256, interval=64, grid_start=64, default_tokens=100)
    # all (paper): correct short +0.5 (row 0), wrong well-formed long +0.5 exploration (row 3: -0.5 -> 0)
    # correct: no exploration bonus, LASER-D's [1.5, 1, -0.5, -0.5, -1]
    close(LaserDE(targets, monitor="none", repetition="as_released")(b), [1.5, 1.0, -0.5, 0.0, -1.0])
    targets = LaserTargets(lower_bound=64, upper_bound=256, interval=64, grid_start=64, default_tokens=100)
    close(LaserDE(targets, monitor="none", repetition="as_released", gate="correct")(b),
          [1.5, 1.0, -0.5, -0.5, -1.0])


def test_l1_exact():
    b = batch(W, [100, 150, 80, 200], meta=[{"target_tokens": 100, "target_mode": "exact"}])
    # |N - n| = [0, 50, 20, 100], alpha 0.01: all (Eq. 1) [1, 0.5, -0.2, -1]; correct: wrong -> 0
    close(L1Exact(alpha=0.01)(b), [1.0, 0.5, -0.2, -1.0])
    close(L1Exact(alpha=0.01, gate="correct")(b), [1.0, 0.5, 0.0, 0.0])


def test_l1_max():
    meta = [{"target_tokens": 100, "target_mode": "max"}, {"target_tokens": 100, "target_mode": "exact"}]
    b = batch(W + W, [100, 180, 30, 200, 100, 150, 80, 200], sizes=[4, 4], meta=meta)
    # Max prompt: f = clip(0.01 (100 - n) + 0.5, 0, 1) = [0.5, 0, 1, 0]
    #   gate=correct (Eq. 2, c f): [0.5, 0, 0, 0]; gate=all (c + f - 1): [0.5, 0, 0, -1]
    # Exact prompt: as test_l1_exact: exact_gate=all [1, 0.5, -0.2, -1], correct [1, 0.5, 0, 0]
    term = L1Max(max_alpha=0.01, exact_alpha=0.01)
    close(term(b), [0.5, 0.0, 0.0, 0.0, 1.0, 0.5, -0.2, -1.0])
    term = L1Max(max_alpha=0.01, exact_alpha=0.01, gate="all", exact_gate="correct")
    close(term(b), [0.5, 0.0, 0.0, -1.0, 1.0, 0.5, 0.0, 0.0])


def test_dler_truncation():
    b = batch(W, [10, 20, 10, 20], truncated=[False, True, False, True])
    # s = [1, 0.1, 1, 0.1]: correct (paper, c s) [1, 0.1, 0, 0]; all (c + s - 1): [1, 0.1, 0, -0.9]
    close(TruncationReward(truncated_coef=0.1)(b), [1.0, 0.1, 0.0, 0.0])
    close(TruncationReward(truncated_coef=0.1, gate="all")(b), [1.0, 0.1, 0.0, -0.9])


def test_dler_difficulty():
    b = batch(W, [40, 60, 40, 60])
    # p = 2/4 = 0.5 -> the upper tier, limit 50; |o| with EOS = [41, 61, 41, 61]; fits = [1, 0, 1, 0]
    # correct (paper, c fits): [1, 0, 0, 0]; all (c + fits - 1): [1, 0, 0, -1]
    close(DifficultyAwareTruncationReward([0.5], [100, 50])(b), [1.0, 0.0, 0.0, 0.0])
    close(DifficultyAwareTruncationReward([0.5], [100, 50], gate="all")(b), [1.0, 0.0, 0.0, -1.0])


def hapo(**kwargs) -> HistoryLengthReward:
    term = HistoryLengthReward(**kwargs)
    term.load_state_dict({"mode": "min", "history": {"q0": 100.0}, "counts": {}})
    return term


def test_hapo():
    b = batch(W, [50, 100, 50, 200])
    # h = 100: L/h = [0.5, 1, 0.5, 2] -> cos(min(pi/2 L/h, pi)) = [0.707107, 0, 0.707107, -1]
    # correct rows max(f, -0.7) = [0.707107, 0]; wrong rows min(f, 0) = [0, -1]
    # all (paper): c + r_len = [1.707107, 1, 0, -1]; correct: wrong -> 0
    close(hapo()(b), [1.707107, 1.0, 0.0, -1.0])
    close(hapo(gate="correct")(b), [1.707107, 1.0, 0.0, 0.0])


def test_adaptive_penalty():
    b = batch(W, [10, 50, 10, 50])
    # r = c - 0.01 L: all (paper) [0.9, 0.5, -0.1, -0.5]; correct: wrong -> 0
    close(AdaptiveLengthPenalty(lambda_init=0.01, lr=0.0)(b), [0.9, 0.5, -0.1, -0.5])
    close(AdaptiveLengthPenalty(lambda_init=0.01, lr=0.0, gate="correct")(b), [0.9, 0.5, 0.0, 0.0])


def test_overlong_soft():
    b = batch(W, [50, 94, 94, 100], truncated=[False, False, False, True])
    # |y| with EOS = [51, 95, 95, 100]; L_max - L_cache = 90: clamp((90 - |y|)/10, -1, 0) = [0, -0.5, -0.5, -1]
    # all (paper): that; correct: wrong -> 0
    close(OverlongSoftPunishment(cache_tokens=10)(b), [0.0, -0.5, -0.5, -1.0])
    close(OverlongSoftPunishment(cache_tokens=10, gate="correct")(b), [0.0, -0.5, 0.0, 0.0])


def test_triangular():
    b = batch(W, [80, 120, 87, 200], meta=[{"budget_tokens": 87}])
    # L = 87 (ALGORITHMS.md 3.4.7): 80/87 = 0.919540, 1 - 33/87 = 0.620690, 87 -> 1, 200 > 2L -> 0
    # all (paper: row 3, wrong at the budget, earns 1): [0.919540, 0.620690, 1, 0]; correct: wrong -> 0
    close(TriangularLengthReward()(b), [0.919540, 0.620690, 1.0, 0.0])
    close(TriangularLengthReward(gate="correct")(b), [0.919540, 0.620690, 0.0, 0.0])


TERMS = {  # every gated term, built with gate=<value>, and its paper's default
    KimiLengthReward: ({}, "all"), CosineReward: ({}, "all"), ShorterBetterReward: ({}, "all"),
    GrpoLambdaReward: ({}, "correct"), Laser: ({}, "correct"), LaserD: ({}, "correct"), LaserDE: ({}, "all"),
    L1Exact: ({}, "all"), L1Max: ({}, "correct"), TruncationReward: ({}, "correct"),
    DifficultyAwareTruncationReward: ({}, "correct"), HistoryLengthReward: ({}, "all"),
    AdaptiveLengthPenalty: ({}, "all"), OverlongSoftPunishment: ({"cache_tokens": 4}, "all"),
    TriangularLengthReward: ({}, "all"),
}


@pytest.mark.parametrize("cls", list(TERMS), ids=lambda c: c.__name__)
def test_defaults_and_a_bad_gate(cls):
    kwargs, default = TERMS[cls]
    assert cls(**kwargs).gate == default
    with pytest.raises(ValueError, match=r"^gate='some' is not a gate; valid: correct, all$"):
        cls(**kwargs, gate="some")


def test_l1_max_exact_gate_is_checked_too():
    assert L1Max().exact_gate == "all"
    with pytest.raises(ValueError, match=r"^exact_gate='x' is not a gate; valid: correct, all$"):
        L1Max(exact_gate="x")
