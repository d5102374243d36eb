"""LASER / -D / -DE and the Laser length controller against ALGORITHMS.md 3.2.7 (Ex. 1-4), 3.3.4 and
the edge cases of 3.2.6 / 3.3.5."""
import pytest
import torch

from rlrun.core.advantages import GroupNormalized
from rlrun.core.laser import Laser, base_score
from rlrun.core.laser_controller import LaserLengthController
from rlrun.core.laser_d import (
    LaserD,
    LaserDE,
    LaserTargets,
    candidate_lengths,
    monitor_buckets,
    repetition_start,
    training_buckets,
)
from rlrun.types import Problem, StepBatch, Verdicts
from conftest import with_verdicts


def make_step(correct, format_ok, ids, group_size, step=0):
    """A StepBatch whose completion i has token ids ``ids[i]`` (len = sampled tokens, EOS included)."""
    n = len(ids)
    problems = [Problem(uid=f"p{b}", prompt="q", answer="a") for b in range(n // group_size)]
    rollouts = StepBatch(
        problems=problems, group_size=group_size, prompt_ids=[[1]] * len(problems), completion_ids=ids,
        texts=[""] * n, length_tokens_N=torch.tensor([len(x) for x in ids]),
        truncated_N=torch.zeros(n, dtype=torch.bool), budget_tokens_N=torch.full((n,), 16384),
    )
    verdicts = Verdicts(torch.tensor(correct, dtype=torch.float32), torch.tensor(format_ok, dtype=torch.float32),
                        [None] * n)
    return with_verdicts(rollouts, verdicts, step)


def ids_of(lengths):
    return [list(range(k)) for k in lengths]


def advantages(reward, group_size):
    return GroupNormalized().of(reward, torch.arange(len(reward)) // group_size)


# Ex. 1: one group of 8, L_T = 4096, alpha 0.5
EX1 = make_step(correct=[1, 1, 1, 1, 0, 0, 1, 0], format_ok=[1, 1, 1, 1, 1, 1, 0, 0],
                ids=ids_of([2100, 4096, 4097, 9000, 3000, 12000, 16384, 16384]), group_size=8)


def test_ex1_laser():
    # score [1,1,1,1,-.5,-.5,-1,-1]; bonus for correct & len <= 4096: rows 1, 2 (4096 exactly; 4097 none)
    # mean 0.25, sample std 1.101946: (1.5-.25)/1.101946 = 1.134355, (1-.25)/... = 0.680613
    r = Laser(target_tokens=4096, alpha=0.5)(EX1)
    assert r.tolist() == pytest.approx([1.5, 1.5, 1.0, 1.0, -0.5, -0.5, -1.0, -1.0], abs=1e-6)
    assert advantages(r, 8).tolist() == pytest.approx(
        [1.134355, 1.134355, 0.680613, 0.680613, -0.680613, -0.680613, -1.134355, -1.134355], abs=1e-6)


def test_base_score_format_error_beats_correct():
    # correct but format error -> -1 (row 7 of Ex. 1); wrong well-formed -> -0.5
    s = base_score(torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert s.tolist() == [1.0, -0.5, -1.0, -1.0]


# Ex. 2: monitor of 3 questions x 8; candidates get_length_threshold(1024, 4096, 1024)
MON_LEN = [700, 800, 900, 1000, 1100, 1500, 2500, 3500,
           1500, 1800, 2000, 2600, 3000, 3900, 4500, 6000,
           2000, 3000, 4000, 5000, 6000, 7000, 8000, 16384]
MON_CORRECT = [1] * 8 + [1] * 4 + [0] * 4 + [1] + [0] * 7


def monitored(round_method):
    t = LaserTargets(lower_bound=1024, upper_bound=4096, interval=1024, round_method=round_method)
    t.update(torch.tensor(MON_CORRECT, dtype=torch.float32), torch.tensor(MON_LEN), torch.arange(24) // 8, step=0)
    return t


def test_ex2_candidates_and_coverage():
    assert candidate_lengths(1024, 4096, 1024) == [1024, 2048, 3072, 4096]
    t = monitored("floor")
    # high: 4/8, 6/8, 7/8, 8/8; medium: 0, 3/8, 5/8, 6/8; low: 0, 1/8, 2/8, 3/8
    assert t.coverage("high") == pytest.approx([0.5, 0.75, 0.875, 1.0], abs=1e-6)
    assert t.coverage("medium") == pytest.approx([0.0, 0.375, 0.625, 0.75], abs=1e-6)
    assert t.coverage("low") == pytest.approx([0.0, 0.125, 0.25, 0.375], abs=1e-6)
    assert t.questions == {"low": 1, "medium": 1, "high": 1}


def test_ex2_targets_floor_and_ceil():
    # floor |C| = (5,2,1): high int(.5*5)=2 at 1024; medium int(.375*2)=0, int(.625*2)=1 at 3072; low 0 -> 9000
    assert monitored("floor").targets(9000) == {"high": 1024, "medium": 3072, "low": 9000}
    # ceil |C| = (6,3,1): high 3.0 at 1024; medium .375*3 = 1.125 at 2048; low -> 9000
    assert monitored("ceil").targets(9000) == {"high": 1024, "medium": 2048, "low": 9000}


# Ex. 2/3 training group: 3 of 8 with score 1 -> acc 0.375 -> medium; row 7 is a format error (cut, 9000)
EX2_SCORE_CORRECT = [1, 1, 1, 0, 0, 0, 0, 0]
EX2_FORMAT = [1, 1, 1, 1, 1, 1, 0, 1]
EX2_LEN = [1800, 2500, 5000, 2000, 4000, 7000, 9000, 1200]


def term_with(cls, round_method, **kw):
    term = cls(targets=monitored(round_method), monitor="data", **kw)
    return term


def test_ex2_laser_d_floor_and_ceil():
    step = make_step(EX2_SCORE_CORRECT, EX2_FORMAT, ids_of(EX2_LEN), group_size=8)
    r = term_with(LaserD, "floor")(step)  # L_A = 3072: rows 1, 2 get the bonus
    assert r.tolist() == pytest.approx([1.5, 1.5, 1.0, -0.5, -0.5, -0.5, -1.0, -0.5], abs=1e-6)
    # mean 0.125, std 1.026436: (1.5-.125)/1.026436 = 1.339585
    assert advantages(r, 8).tolist() == pytest.approx(
        [1.339585, 1.339585, 0.852463, -0.608902, -0.608902, -0.608902, -1.096024, -0.608902], abs=1e-6)
    r = term_with(LaserD, "ceil")(step)  # L_A = 2048: only row 1
    assert r.tolist() == pytest.approx([1.5, 1.0, 1.0, -0.5, -0.5, -0.5, -1.0, -0.5], abs=1e-6)
    # mean 0.0625, std 0.942546: (1.5-.0625)/0.942546 = 1.525123
    assert advantages(r, 8).tolist() == pytest.approx(
        [1.525123, 0.994645, 0.994645, -0.596787, -0.596787, -0.596787, -1.127265, -0.596787], abs=1e-6)


def test_ex3_laser_de_detector_and_as_released():
    ids = ids_of(EX2_LEN)
    ids[4] = list(range(4000))
    ids[5] = list(range(6000)) + [7, 8, 9, 10, 11] * 200
    assert repetition_start(ids[4]) == 4000 and repetition_start(ids[5]) == 6986
    step = make_step(EX2_SCORE_CORRECT, EX2_FORMAT, ids, group_size=8)
    r = term_with(LaserDE, "floor")(step)  # row 5 (4000 > 3072, not repetitive) -> 0; row 6 repetitive
    assert r.tolist() == pytest.approx([1.5, 1.5, 1.0, -0.5, 0.0, -0.5, -1.0, -0.5], abs=1e-6)
    # mean 0.1875, std 0.997765
    assert advantages(r, 8).tolist() == pytest.approx(
        [1.315438, 1.315438, 0.814319, -0.689039, -0.187920, -0.689039, -1.190158, -0.689039], abs=1e-6)
    r = term_with(LaserDE, "floor", repetition="as_released")(step)
    assert r.tolist() == pytest.approx([1.5, 1.5, 1.0, -0.5, 0.0, 0.0, -1.0, -0.5], abs=1e-6)
    # mean 0.25, std 0.963624
    assert advantages(r, 8).tolist() == pytest.approx(
        [1.297185, 1.297185, 0.778311, -0.778311, -0.259437, -0.259437, -1.297185, -0.778311], abs=1e-6)


def low_3000_targets():
    # candidates [3000]; one monitor question, 0 of 8 correct (low), all <= 3000 -> P = 1, int(1*1) = 1
    t = LaserTargets(lower_bound=3000, upper_bound=3000, interval=1024)
    t.update(torch.zeros(8), torch.full((8,), 3000), torch.zeros(8, dtype=torch.long), step=0)
    return t


def test_ex4_all_wrong_group():
    step = make_step([0] * 5, [1, 1, 1, 1, 0], ids_of([1000, 3500, 5000, 2000, 16384]), group_size=5)
    r = LaserD(targets=low_3000_targets(), monitor="data")(step)
    assert r.tolist() == pytest.approx([-0.5, -0.5, -0.5, -0.5, -1.0], abs=1e-6)
    assert advantages(r, 5).tolist() == pytest.approx([0.447212] * 4 + [-1.788846], abs=1e-6)
    r = LaserDE(targets=low_3000_targets(), monitor="data")(step)
    assert r.tolist() == pytest.approx([-0.5, 0.0, 0.0, -0.5, -1.0], abs=1e-6)
    assert advantages(r, 5).tolist() == pytest.approx(
        [-0.239045, 0.956181, 0.956181, -0.239045, -1.434271], abs=1e-6)


def test_all_correct_group_and_group_of_one():
    # acc 1 -> high; no monitor yet with monitor=none -> default 8192: 8192 gets the bonus, 8193 not; A = ...
    step = make_step([1, 1], [1, 1], ids_of([8192, 8193]), group_size=2)
    assert LaserD(monitor="none")(step).tolist() == [1.5, 1.0]
    same = make_step([1, 1], [1, 1], ids_of([10, 20]), group_size=2)
    r = LaserD(monitor="none")(same)
    assert advantages(r, 2).tolist() == [0.0, 0.0]  # identical rewards -> A = 0
    one = make_step([1], [1], ids_of([10]), group_size=1)
    assert advantages(Laser()(one), 1).tolist() == pytest.approx([1.5 / (1 + 1e-6)], abs=1e-6)


def test_bucket_boundaries_differ_for_g6():
    # G = 6: 2/6 -> training medium, monitor low; 4/6 -> training high, monitor medium
    score = torch.tensor([1.0] * 2 + [-0.5] * 4 + [1.0] * 4 + [-0.5] * 2)
    group = torch.arange(12) // 6
    assert training_buckets(score, group).tolist() == [1] * 6 + [2] * 6
    assert monitor_buckets((score == 1.0).float(), group).tolist() == [0] * 6 + [1] * 6


def test_empty_bucket_and_fallback_below_candidates():
    # monitor has only a high question; medium/low empty -> fallback; fallback below 1024 wins for high too
    t = LaserTargets(lower_bound=1024, upper_bound=4096, interval=1024)
    t.update(torch.ones(8), torch.full((8,), 500), torch.zeros(8, dtype=torch.long), step=0)
    assert t.coverage("medium") == [0.0] * 4
    assert t.targets(9000) == {"low": 9000, "medium": 9000, "high": 1024}
    assert t.targets(800) == {"low": 800, "medium": 800, "high": 800}
    assert candidate_lengths(1000, 2500, 1024) == [1000, 1024, 2048, 3072]
    assert candidate_lengths(96, 160, 16, grid_start=96) == [96, 112, 128, 144, 160]
    assert candidate_lengths(16, 256, 16) == [16]  # the code's grid starts at 1024: nothing below it


def test_batch_monitor_refreshes_every_k_steps_and_round_trips():
    term = LaserD(targets=LaserTargets(lower_bound=1024, upper_bound=4096, interval=1024), monitor="batch",
                  monitor_every=2)
    a = make_step(MON_CORRECT, [1] * 24, ids_of(MON_LEN), group_size=8, step=0)
    term(a)  # step 0 is due: the batch is its own monitor (Ex. 2's table), fallback 16384
    assert term.targets.measured_at == 0 and term.last_targets == {"high": 1024, "medium": 3072, "low": 16384}
    b = make_step([1] * 8, [1] * 8, ids_of([100] * 8), group_size=8, step=1)
    term(b)  # step 1 not due: same table, fallback 100
    assert term.targets.measured_at == 0 and term.last_targets == {"high": 100, "medium": 100, "low": 100}
    assert term.metrics()["laser/coverage_high/length_1024"] == 0.5
    fresh = LaserD(targets=LaserTargets(lower_bound=1024, upper_bound=4096, interval=1024), monitor="batch",
                  monitor_every=2)
    fresh.load_state_dict(term.state_dict())
    assert fresh.targets.coverage("medium") == term.targets.coverage("medium")
    assert fresh.targets.measured_at == 0
    term(make_step([1] * 8, [1] * 8, ids_of([100] * 8), group_size=8, step=2))
    assert term.targets.measured_at == 2 and term.targets.questions["high"] == 1
    with pytest.raises(ValueError, match="candidate lengths"):
        LaserD(targets=LaserTargets(lower_bound=2048)).load_state_dict(term.state_dict())


def test_monitor_eval_without_loop_fails_loudly_and_options_validate():
    step = make_step([1], [1], ids_of([10]), group_size=1)
    with pytest.raises(RuntimeError, match="monitor set"):
        LaserD(monitor="eval")(step)
    with pytest.raises(ValueError, match="monitor="):
        LaserD(monitor="batches")
    with pytest.raises(ValueError, match="round_method="):
        LaserTargets(round_method="round")
    with pytest.raises(ValueError, match="repetition="):
        LaserDE(repetition="on")


def test_repetition_detector_short_and_periodic():
    assert repetition_start([5] * 8) == 8  # len <= 8: never repetitive
    # len 12 -> g 2, k 2; from i = 10: (1,2)@10, (2,1)@9, (1,2)@8 -> starts [8, 10], 10-8 < 12//3 -> 8
    assert repetition_start([1, 2] * 6) == 8
    assert repetition_start(list(range(500))) == 500


# 3.3.4 — the length controller
def test_interval_reduction_caps():
    c = LaserLengthController(8192, mode="interval_reduction", min_new_tokens=4096)
    caps = [c.budgets(s - 1, [None])[0] for s in (1, 2, 10, 11, 20, 21, 31, 41)]
    assert caps == [7168, 7168, 7168, 6144, 6144, 5120, 4096, 4096]


def test_monitor_clip_ratio_sequence():
    c = LaserLengthController(8192, mode="monitor_clip_ratio", min_new_tokens=2048, target_acc_times=3)
    got = []
    for s, ratio in enumerate([-1, 0.30, 0.05, 0.08, 0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, -1], start=1):
        c.advance(s, None if ratio == -1 else ratio)
        got.append((c.current, c.good_steps))
    assert got == [(8192, 0), (8192, 0), (8192, 1), (8192, 2), (7168, 0), (7168, 1), (7168, 2), (6144, 0),
                   (6144, 1), (6144, 2), (6144, 0), (6144, 0)]


def test_monitor_clip_ratio_through_observe_and_round_trip():
    # observe after step s applies the rule of s + 1; three good steps -> cut before step 4 (0-based 3)
    c = LaserLengthController(8192, mode="monitor_clip_ratio", min_new_tokens=2048, target_acc_times=3)
    for step in range(3):
        assert c.budgets(step, [None, None]) == [8192, 8192]
        c.observe(step, {"length/truncated_frac": 0.0})
    assert c.budgets(3, [None]) == [7168]
    d = LaserLengthController(8192, mode="monitor_clip_ratio", min_new_tokens=2048, target_acc_times=3)
    d.load_state_dict(c.state_dict())
    assert d.budgets(3, [None]) == [7168] and d.state_dict() == c.state_dict()
    # as released: below max_new_tokens the measured clip ratio is 0 whatever truncated_frac says
    e = LaserLengthController(8192, mode="monitor_clip_ratio", min_new_tokens=2048, target_acc_times=1,
                              clip_ratio="as_released")
    e.observe(0, {"length/truncated_frac": 0.0})
    e.observe(1, {"length/truncated_frac": 0.9})
    assert e.current == 6144


def test_monitor_passk_sequence():
    c = LaserLengthController(8192, mode="monitor_passk", min_new_tokens=2048)
    caps = []
    for s, m in enumerate([None, -0.25, -0.05, None, 0.02], start=1):
        c.advance(s, m)
        caps.append(c.current)
    assert caps == [8192, 8192, 7168, 6144, 5120]  # step 4 reuses -0.05


def test_controller_defaults_never_move_and_mode_validates():
    c = LaserLengthController(8192, mode="interval_reduction")  # min = max: the code default
    assert c.budgets(0, [None]) == [8192] and c.budgets(100, [None]) == [8192]
    k = LaserLengthController(256)  # constant: first and last step alike
    k.observe(0, {"length/truncated_frac": 0.0})
    assert k.budgets(0, [None]) == [256] and k.budgets(10 ** 6, [None]) == [256]
    with pytest.raises(ValueError, match="mode="):
        LaserLengthController(256, mode="linear")
