"""pass@k, AES, length deviation and the Pareto frontier on hand-computed cases."""
import math

import pytest
import torch

from rlrun.core.evaluation import (aes, aes_deltas, excess_length_reduction, length_deviation, mean_pass_at_k,
                                   pareto_frontier, pass_at_k, relative_length_error)


@pytest.mark.parametrize("n, c, k, want", [
    (5, 2, 1, 0.4),   # 1 - C(3,1)/C(5,1) = 1 - 3/5
    (5, 2, 2, 0.7),   # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (5, 2, 3, 0.9),   # 1 - C(3,3)/C(5,3) = 1 - 1/10
    (5, 2, 4, 1.0),   # n - c = 3 < 4: every 4-subset holds a correct sample
    (5, 0, 3, 0.0),   # nothing correct
    (5, 5, 1, 1.0),   # everything correct
    (1, 1, 1, 1.0),
    (16, 4, 1, 0.25), # pass@1 = c / n
])
def test_pass_at_k_hand_computed(n, c, k, want):
    assert pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)


def test_pass_at_k_matches_binomials_at_large_n():
    # the product form against the exact ratio of binomials, where the binomials are huge
    for n, c, k in [(100, 7, 10), (200, 1, 50), (64, 30, 16)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("n, c, k", [(5, 2, 6), (5, 2, 0), (5, 6, 1), (5, -1, 1), (5, 2, 1.5), (0, 0, 1)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_k():
    rows = [[1, 0, 1, 0, 0], [1, 1, 1, 1, 1]]
    # k=1: (2/5 + 1)/2 = 0.7; k=2: (0.7 + 1)/2 = 0.85
    assert mean_pass_at_k(rows, 1) == pytest.approx(0.7)
    assert mean_pass_at_k(rows, 2) == pytest.approx(0.85)
    assert mean_pass_at_k(torch.tensor(rows, dtype=torch.bool), 2) == pytest.approx(0.85)
    # different sample counts per question: (1/2 + 1/4)/2 = 0.375
    assert mean_pass_at_k([[1, 0], [0, 0, 0, 1]], 1) == pytest.approx(0.375)
    with pytest.raises(ValueError):
        mean_pass_at_k([[1, 0], [0, 0, 0, 1]], 3)  # the first question has only 2 samples
    with pytest.raises(ValueError):
        mean_pass_at_k([], 1)
    with pytest.raises(ValueError):
        mean_pass_at_k([[0.5, 1]], 1)


def test_aes_worked_example_from_algorithms_md():
    # LASER-D vs the original model on AIME24: 28.9 -> 34.2 %, 15956 -> 5750 tokens
    # dLength = (15956 - 5750)/15956 = 10206/15956 = 0.639634; dAcc = 5.3/28.9 = 0.183391
    # AES = 0.639634 + 3 * 0.183391 = 1.189807
    d_length, d_acc = aes_deltas(34.2, 5750, 28.9, 15956)
    assert d_length == pytest.approx(0.639634, abs=1e-6)
    assert d_acc == pytest.approx(0.183391, abs=1e-6)
    assert aes(34.2, 5750, 28.9, 15956) == pytest.approx(1.189807, abs=1e-6)
    # fractions give the same score: both changes are relative
    assert aes(0.342, 5750, 0.289, 15956) == pytest.approx(1.189807, abs=1e-6)


def test_aes_o1_pruner_table_2():
    # Marco-o1-7B average: 73.4 % / 932 tokens -> 76.8 % / 554 tokens
    # 378/932 + 3 * 3.4/73.4 = 0.405579 + 0.138965 = 0.544544 (printed 0.55)
    assert aes(76.8, 554, 73.4, 932) == pytest.approx(0.544544, abs=1e-6)


def test_aes_accuracy_loss_uses_gamma():
    # acc 0.6 -> 0.5, tokens 1000 -> 500: dLength = 0.5, dAcc = -1/6
    # AES = 0.5 - 5 * 1/6 = -0.333333; with beta=5, gamma=10: 0.5 - 10/6 = -1.166667
    assert aes(0.5, 500, 0.6, 1000) == pytest.approx(-0.333333, abs=1e-6)
    assert aes(0.5, 500, 0.6, 1000, beta=5.0, gamma=10.0) == pytest.approx(-1.166667, abs=1e-6)
    # longer and more accurate: dLength = -0.2, dAcc = +0.25 -> -0.2 + 3 * 0.25 = 0.55
    assert aes(0.5, 1200, 0.4, 1000) == pytest.approx(0.55)
    # no change at all scores 0 (dAcc = 0 takes the beta branch)
    assert aes(0.4, 1000, 0.4, 1000) == 0.0
    with pytest.raises(ValueError):
        aes(0.5, 500, 0.0, 1000)
    with pytest.raises(ValueError):
        aes(0.5, 500, 0.5, 0)


def test_length_deviation():
    # |100-200| + |250-200| + |500-200| = 100 + 50 + 300 -> 450/3 = 150
    assert length_deviation([100, 250, 500], 200) == pytest.approx(150.0)
    # one target each: |110-100| + |190-200| + |360-300| = 10 + 10 + 60 -> 80/3 = 26.666667
    got = length_deviation(torch.tensor([110, 190, 360]), [100, 200, 300])
    assert got == pytest.approx(26.666667, abs=1e-6)
    assert length_deviation([512, 512], 512) == 0.0
    with pytest.raises(ValueError):
        length_deviation([1, 2, 3], [1, 2])
    with pytest.raises(ValueError):
        length_deviation([], 100)


def test_relative_length_error():
    # mean 850/3 = 283.333; (283.333 - 200)/200 = 0.416667; shorter than the target is negative
    assert relative_length_error([100, 250, 500], 200) == pytest.approx(0.416667, abs=1e-6)
    assert relative_length_error([150, 250], 400) == pytest.approx(-0.5)
    with pytest.raises(ValueError):
        relative_length_error([100], 0)


def test_pareto_frontier_hand_made():
    points = [
        (0.90, 500),  # 0 A: on the frontier
        (0.80, 300),  # 1 B: on (fewest tokens)
        (0.85, 400),  # 2 C: on
        (0.70, 350),  # 3 D: dominated by B (more accurate and shorter)
        (0.90, 600),  # 4 E: dominated by A (as accurate, shorter)
        (0.95, 900),  # 5 F: on (most accurate)
        (0.80, 450),  # 6 G: dominated by C
    ]
    assert pareto_frontier(points) == [1, 2, 0, 5]  # sorted by tokens


def test_pareto_frontier_ties():
    # equal points do not dominate each other: both copies of (0.6, 200) stay; (0.4, 100) loses to
    # (0.5, 100) at the same tokens; (0.55, 300) loses to (0.6, 200)
    points = [(0.5, 100), (0.6, 200), (0.55, 300), (0.6, 200), (0.4, 100)]
    assert pareto_frontier(points) == [0, 1, 3]
    # same accuracy, more tokens: dominated
    assert pareto_frontier([(0.5, 200), (0.5, 100)]) == [1]
    assert pareto_frontier([(0.7, 10)]) == [0]
    assert pareto_frontier([]) == []
    with pytest.raises(ValueError):
        pareto_frontier([(float("nan"), 1.0)])


def test_pareto_frontier_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    acc = torch.randint(0, 6, (200,), generator=gen) / 5  # many ties on purpose
    tokens = torch.randint(0, 8, (200,), generator=gen) * 100.0
    points = list(zip(acc.tolist(), tokens.tolist()))

    def dominated(i):
        a, t = points[i]
        return any(b >= a and u <= t and (b > a or u < t) for b, u in points)

    assert sorted(pareto_frontier(points)) == [i for i in range(len(points)) if not dominated(i)]


@pytest.mark.parametrize("grpo, sft, method, want", [
    (200.0, 120.0, 150.0, 0.625),  # (200 - 150) / (200 - 120) = 50 / 80
    (200.0, 120.0, 200.0, 0.0),  # GRPO's own length
    (200.0, 120.0, 120.0, 1.0),  # back at the SFT model's length
    (200.0, 120.0, 100.0, 1.25),  # shorter than the SFT model
    (200.0, 120.0, 240.0, -0.5),  # longer than GRPO
    (13.3e3, 10.1e3, 10.6e3, 0.84375),  # GFPO Table 1, AIME 24, token efficiency (rounded lengths; 84.6 % printed)
])
def test_excess_length_reduction_hand_computed(grpo, sft, method, want):
    assert excess_length_reduction(grpo, sft, method) == pytest.approx(want)


@pytest.mark.parametrize("grpo, sft", [(120.0, 120.0), (100.0, 120.0)])
def test_excess_length_reduction_needs_grpo_longer_than_sft(grpo, sft):
    with pytest.raises(ValueError, match=rf"^ELR needs L_GRPO > L_SFT \(the RL baseline longer than its SFT start\), "
                                         rf"got L_GRPO={grpo:g}, L_SFT={sft:g}$"):
        excess_length_reduction(grpo, sft, 110.0)
