"""HAPO, A-DLP and Format-Length against ALGORITHMS.md 4.1.7 (H1-H3), 4.3.7 (D1-D3), 4.4.7 (F1-F3)
and the edge cases of 4.1.6, 4.3.6, 4.4.6."""
import io
import math

import pytest
import torch

from rlrun.core.collectives import Collectives
from rlrun.core.adaptive_rewards import (
    AdaptiveLengthPenalty,
    FormatLengthReward,
    HistoryLengthReward,
    format_length_shape,
    hapo_length_reward,
)
from rlrun.core.advantages import GroupNormalized
from rlrun.core.rewards import Composite
from rlrun.types import Problem, StepBatch, Verdicts
from conftest import with_verdicts


def make_step(lengths, correct, group_size, uids=None, step=0, truncated=None, format_ok=None, cap=32768):
    """StepBatch whose completion i has ``lengths[i]`` response tokens (no EOS) and, unless
    truncated, one EOS id; groups of ``group_size`` with problem uids ``uids`` (default q0, q1, ...)."""
    n = len(lengths)
    uids = uids or [f"q{b}" for b in range(n // group_size)]
    truncated = truncated or [0] * n
    problems = [Problem(uid=u, prompt="q", answer="42") for u in uids]
    rollouts = StepBatch(
        problems=problems, group_size=group_size, prompt_ids=[[1]] * len(problems),
        completion_ids=[[7] * (k + (0 if t else 1)) for k, t in zip(lengths, truncated)],
        texts=[""] * n, length_tokens_N=torch.tensor(lengths),
        truncated_N=torch.tensor(truncated, dtype=torch.bool), budget_tokens_N=torch.full((n,), cap),
    )
    verdicts = Verdicts(correct_N=torch.tensor(correct, dtype=torch.float32),
                        format_ok_N=torch.tensor(format_ok if format_ok is not None else [1] * n,
                                                 dtype=torch.float32),
                        predicted=[None] * n)
    return with_verdicts(rollouts=rollouts, verdicts=verdicts, step=step)


def advantages(reward_N, group_size, eps):
    group_N = torch.arange(len(reward_N) // group_size).repeat_interleave(group_size)
    from rlrun.types import StepBatch
    inp = StepBatch(reward_N=reward_N, group_N=group_N, correct_N=torch.zeros_like(reward_N),
                         length_tokens_N=torch.zeros_like(reward_N), truncated_N=torch.zeros_like(reward_N))
    return GroupNormalized(eps=eps)(inp)


def close(actual, expected, tol=1e-6):
    torch.testing.assert_close(actual.to(torch.float64), torch.tensor(expected, dtype=torch.float64),
                               atol=tol, rtol=0)


def roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ------------------------------------------------------------------------------------------ HAPO


def test_hapo_h1_cosine():
    # h = 1000: f = cos(pi/2 * L/1000) = [cos .2pi, cos .45pi, cos .5pi, cos .75pi, cos .35pi, cos pi]
    #   = [0.809017, 0.156434, ~6e-17, -0.707107, 0.453990, -1]; correct -> max(f, -0.7) ->
    #   1500: -0.7; wrong -> min(f, 0): 700 -> 0, 2600 (>= 2h) -> -1.
    term = HistoryLengthReward()
    term.load_state_dict({"mode": "min", "history": {"q0": 1000}, "counts": {}})
    r = term(make_step([400, 900, 1000, 1500, 700, 2600], [1, 1, 1, 1, 0, 0], 6))
    close(r, [1.809017, 1.156434, 1.0, 0.3, 0.0, -1.0])
    # mean 0.544242, sample std 0.992239, TRL eps 1e-4
    close(advantages(r, 6, 1e-4), [1.274540, 0.616919, 0.459277, -0.246128, -0.548444, -1.556164])
    assert term.history == {"q0": 400.0}  # min(1000, 400)


def test_hapo_h1_linear():
    # correct: 1 - L/h for L < h -> 0.6, 0.1; 1000 in [h, 1.1h) -> 0; 1500: -(1500-1100)/1000 = -0.4
    # wrong: 700 < 1.1h -> 0; 2600: max(-1, -1.5) = -1
    term = HistoryLengthReward(shape="linear")
    term.load_state_dict({"mode": "min", "history": {"q0": 1000.0}, "counts": {}})
    r = term(make_step([400, 900, 1000, 1500, 700, 2600], [1, 1, 1, 1, 0, 0], 6))
    close(r, [1.6, 1.1, 1.0, 0.6, 0.0, -1.0])
    close(advantages(r, 6, 1e-4), [1.130153, 0.591985, 0.484351, 0.053817, -0.591985, -1.668321])


def test_hapo_h2_null_history_then_second_visit():
    term = HistoryLengthReward()
    # step 1, h Null: r_len = 0, r = correctness; mean 0.5, std 0.577350
    r1 = term(make_step([1200, 800, 3000, 500], [1, 0, 1, 0], 4, step=0))
    close(r1, [1.0, 0.0, 1.0, 0.0])
    close(advantages(r1, 4, 1e-4), [0.865875, -0.865875, 0.865875, -0.865875])
    assert term.history == {"q0": 1200.0}  # min of the correct lengths 1200, 3000
    # step 2, h = 1200: f = cos(pi/2 * [0.5, 1.083333, 1.666667, 0.583333])
    #   = [0.707107, -0.130526, -0.866025, 0.608761]; wrong 700 -> min(f, 0) = 0
    r2 = term(make_step([600, 1300, 2000, 700], [1, 1, 0, 0], 4, step=1))
    close(r2, [1.707107, 0.869474, -0.866025, 0.0])
    close(advantages(r2, 4, 1e-4), [1.153757, 0.398424, -1.166558, -0.385622])
    assert term.history == {"q0": 600.0}


def test_hapo_h3_all_wrong_group_keeps_history():
    # h = 1000, all wrong: 500 -> min(0.707107, 0) = 0; 2100 >= 2h -> -1; 1600 -> cos(.8pi) = -0.809017;
    # 1000 -> min(6e-17, 0) = 0 (exactly)
    term = HistoryLengthReward()
    term.load_state_dict({"mode": "min", "history": {"q0": 1000.0}, "counts": {}})
    r = term(make_step([500, 2100, 1600, 1000], [0, 0, 0, 0], 4))
    close(r, [0.0, -1.0, -0.809017, 0.0])
    assert r[3].item() == 0.0
    close(advantages(r, 4, 1e-4), [0.856369, -1.037188, -0.675551, 0.856369])
    assert term.history == {"q0": 1000.0}


def test_hapo_h3_mean_mode_update():
    # h = 1000 (count 2): r_len = cos(pi/2 * [0.6, 0.9]) = [0.587785, 0.156434] (correct);
    # wrong: cos(.7pi) = -0.587785, 3000 >= 2h -> -1.
    # update: mean(600, 900) = 750, m = 2, n = 2 -> 2/4*750 + 2/4*1000 = 875, count 4
    term = HistoryLengthReward(mode="mean")
    term.load_state_dict({"mode": "mean", "history": {"q0": 1000.0}, "counts": {"q0": 2}})
    r = term(make_step([600, 900, 1400, 3000], [1, 1, 0, 0], 4))
    close(r, [1.587785, 1.156434, -0.587785, -1.0])
    close(advantages(r, 4, 1e-4), [1.019255, 0.680713, -0.688222, -1.011745])
    assert term.history == {"q0": pytest.approx(875.0, abs=1e-9)}
    assert term.counts == {"q0": 4}


def test_hapo_mean_mode_first_visit_is_the_mean():
    term = HistoryLengthReward(mode="mean")
    term(make_step([600, 900, 1400, 3000], [1, 1, 0, 1], 4))
    assert term.history == {"q0": pytest.approx(1500.0)}  # (600 + 900 + 3000) / 3
    assert term.counts == {"q0": 3}


def test_hapo_null_history_all_wrong_gives_zero_and_no_history():
    term = HistoryLengthReward()
    r = term(make_step([10, 5000, 300, 32768], [0, 0, 0, 0], 4, truncated=[0, 0, 0, 1]))
    close(r, [0.0, 0.0, 0.0, 0.0])
    assert term.history == {}


def test_hapo_all_correct_group_prefers_shortest_and_takes_min():
    # h = 100: cos(pi/2 * [0.5, 0.8, 1.2]) = [0.707107, 0.309017, -0.309017]
    term = HistoryLengthReward()
    term.load_state_dict({"mode": "min", "history": {"q0": 100.0}, "counts": {}})
    r = term(make_step([50, 80, 120], [1, 1, 1], 3))
    close(r, [1.707107, 1.309017, 0.690983])
    assert term.history == {"q0": 50.0}


def test_hapo_truncated_wrong_is_not_special():
    # truncated at 300 >= 2h (h = 100) and wrong -> -1; truncated but correct at 150: cos(.75pi) -> -0.7
    term = HistoryLengthReward()
    term.load_state_dict({"mode": "min", "history": {"q0": 100.0}, "counts": {}})
    r = term(make_step([300, 150], [0, 1], 2, truncated=[1, 1]))
    close(r, [-1.0, 0.3])


def test_hapo_uses_pre_step_history_and_keys_by_uid():
    # two groups of the same question in one call: both compare with h = 1000, the update takes
    # the min over both (400); another question with no correct answer gets no history
    term = HistoryLengthReward()
    term.load_state_dict({"mode": "min", "history": {"a": 1000.0}, "counts": {}})
    r = term(make_step([1000, 400, 400, 1000, 50, 60], [1, 0, 1, 0, 0, 0], 2, uids=["a", "a", "b"]))
    close(r, [1.0, 0.0, 1.809017, 0.0, 0.0, 0.0])
    assert term.history == {"a": 400.0}


def test_hapo_zero_history_is_null_forever():
    # a correct zero-length response sets h = 0, which the code reads as Null (ALGORITHMS.md 4.1.6)
    term = HistoryLengthReward()
    term(make_step([0, 10], [1, 0], 2))
    assert term.history == {"q0": 0.0}
    r = term(make_step([5, 10], [1, 0], 2, step=1))
    close(r, [1.0, 0.0])
    assert term.history == {"q0": 0.0}


def test_hapo_length_weight_scales_only_the_length_part():
    # w = 0.5: 1 + 0.5 * 0.809017 = 1.404508; wrong 2600: 0.5 * -1
    term = HistoryLengthReward(length_weight=0.5)
    term.load_state_dict({"mode": "min", "history": {"q0": 1000.0}, "counts": {}})
    close(term(make_step([400, 2600], [1, 0], 2)), [1.404508, -0.5])


def test_hapo_gather_objects_applies_every_ranks_update():
    # the other rank saw q0 correct at 300 and q9 correct at 500 (rows of [min, sum, m])
    term = HistoryLengthReward()
    term.collectives = Collectives(gather_objects=lambda local: [local, {"q0": [300.0, 300.0, 1], "q9": [500.0, 500.0, 1]}])
    term(make_step([400, 900], [1, 1], 2))
    assert term.history == {"q0": 300.0, "q9": 500.0}


def test_hapo_state_round_trip_and_composite():
    a = Composite({"hapo": {"weight": 1.0, "fn": HistoryLengthReward(mode="mean")}})
    a(make_step([600, 900, 1400, 3000], [1, 1, 0, 0], 4))
    b = Composite({"hapo": {"weight": 1.0, "fn": HistoryLengthReward(mode="mean")}})
    b.load_state_dict(roundtrip(a.state_dict()))
    nxt = make_step([500, 700, 2000, 100], [1, 0, 1, 0], 4, step=1)
    torch.testing.assert_close(b(nxt).reward_N, a(nxt).reward_N)
    assert b.fns["hapo"].history == a.fns["hapo"].history and b.fns["hapo"].counts == a.fns["hapo"].counts
    with pytest.raises(ValueError, match="mode"):
        HistoryLengthReward(mode="min").load_state_dict(a.state_dict()["hapo"])


def test_hapo_metrics_and_validation():
    term = HistoryLengthReward()
    assert term.metrics() == {"history_size": 0.0, "history_mean_tokens": 0.0}
    term(make_step([100, 300], [1, 1], 1))
    assert term.metrics() == {"history_size": 2.0, "history_mean_tokens": 200.0}
    for bad in ({"shape": "sine"}, {"mode": "max"}, {"length_weight": 2.0}, {"correct_floor": 0.5}):
        with pytest.raises(ValueError):
            HistoryLengthReward(**bad)


def test_hapo_length_reward_function_null_is_zero():
    r = hapo_length_reward(torch.tensor([10.0, 10.0]), torch.tensor([1.0, 0.0]),
                           torch.tensor([math.nan, -3.0]))
    close(r, [0.0, 0.0])


# ----------------------------------------------------------------------------------------- A-DLP


def test_adlp_d1_one_step_then_lambda_update():
    term = AdaptiveLengthPenalty(lambda_init=1e-3, lr=1e-3, acc_ref=0.62)
    step0 = make_step([1500, 3000, 8192, 900, 4000, 8192, 5000, 2500], [1, 1, 0, 1, 0, 0, 0, 1], 4,
                      truncated=[0, 0, 1, 0, 0, 1, 0, 0])
    r = term(step0)
    # R_a = [1-1.5, 1-3.0, 0-8.192, 1-0.9], R_b = [-4.0, -8.192, -5.0, 1-2.5]
    close(r, [-0.5, -2.0, -8.192, 0.1, -4.0, -8.192, -5.0, -1.5])
    close(advantages(r, 4, 1e-6), [0.565255, 0.170524, -1.458926, 0.723147,
                                   0.243000, -1.270605, -0.118070, 1.145675])
    assert term.metrics() == pytest.approx({"lambda": 1e-3, "acc": 0.5, "gap": -0.12}, abs=1e-12)
    # next step: lambda_1 = max(0, 0.001 + 0.001 * (0.5 - 0.62)) = 0.00088; R = 1 - 0.88
    r1 = term(make_step([1000], [1], 1, step=1))
    close(r1, [0.12])
    assert term.lam == pytest.approx(0.00088, abs=1e-12)


def batch_with_accuracy(correct, total, step):
    return make_step([100] * total, [1] * correct + [0] * (total - correct), 1, step=step)


def test_adlp_d2_schedule_and_clamp():
    term = AdaptiveLengthPenalty(lambda_init=1e-3, lr=1e-3, acc_ref=0.62)
    # acc 0.70, 0.75, 0.80, 0.55, 0.40: 0.001 +0.08e-3 +0.13e-3 +0.18e-3 -0.07e-3 -0.22e-3
    lambdas = []
    for t, (c, n) in enumerate([(7, 10), (3, 4), (4, 5), (11, 20), (2, 5)]):
        term(batch_with_accuracy(c, n, t))
        lambdas.append(term.lam)
    term(batch_with_accuracy(0, 1, 5))
    lambdas.append(term.lam)
    assert lambdas == pytest.approx([0.001, 0.00108, 0.00121, 0.00139, 0.00132, 0.0011], abs=1e-12)
    # clamp: 5e-5 + 1e-3 * (0.10 - 0.62) < 0 -> 0; then reward = correctness only
    low = AdaptiveLengthPenalty(lambda_init=5e-5, lr=1e-3, acc_ref=0.62)
    low(batch_with_accuracy(1, 10, 0))
    close(low(make_step([500, 800], [1, 0], 2, step=1)), [1.0, 0.0])
    assert low.lam == 0.0


def test_adlp_d3_zero_std_all_correct_group():
    term = AdaptiveLengthPenalty(lambda_init=2e-3, lr=1e-3, acc_ref=0.62)
    r = term(make_step([1000] * 4, [1] * 4, 4))
    close(r, [-1.0] * 4)
    close(advantages(r, 4, 1e-6), [0.0] * 4)
    term(make_step([1], [0], 1, step=1))
    assert term.lam == pytest.approx(0.002 + 0.00038, abs=1e-12)  # 0.002 + 0.001 * (1 - 0.62)


def test_adlp_rounds_of_one_step_share_lambda_and_accuracy():
    # two sampling rounds of step 0 (3/4 and 1/4 correct): acc 0.5 over both, one update
    term = AdaptiveLengthPenalty(lambda_init=1e-3, lr=1e-3, acc_ref=0.62)
    term(make_step([100] * 4, [1, 1, 1, 0], 4))
    close(term(make_step([100] * 4, [1, 0, 0, 0], 4)), [0.9, -0.1, -0.1, -0.1])
    term(make_step([1], [0], 1, step=1))
    assert term.lam == pytest.approx(0.00088, abs=1e-12)


def test_adlp_empty_batch_skips_update_and_sslp_is_fixed():
    term = AdaptiveLengthPenalty(lambda_init=1e-3, lr=1e-3, acc_ref=0.62)
    assert term(make_step([], [], 4, uids=[])).shape == (0,)
    term(make_step([10], [1], 1, step=1))
    assert term.lam == 1e-3
    fixed = AdaptiveLengthPenalty(lambda_init=0.01, lr=0.0)
    for t in range(3):
        close(fixed(make_step([20, 30], [1, 1], 2, step=t)), [0.8, 0.7])
    assert fixed.lam == 0.01


def test_adlp_reduce_sum_uses_all_ranks_accuracy_and_count_eos():
    # this rank 1/2 correct, the other rank (simulated) 4/4: acc 5/6, lambda 0.001 + 0.001*(5/6-0.62)
    term = AdaptiveLengthPenalty(lambda_init=1e-3, lr=1e-3, acc_ref=0.62, count_eos=True)
    term.collectives = Collectives(reduce_sum=lambda sums: sums + torch.tensor([4.0, 4.0], dtype=torch.float64))
    # count_eos: 99 tokens + EOS = 100 -> 1 - 0.1; truncated 100 tokens, no EOS -> 0 - 0.1
    close(term(make_step([99, 100], [1, 0], 2, truncated=[0, 1])), [0.9, -0.1])
    term(make_step([1], [0], 1, step=1))
    assert term.lam == pytest.approx(0.001 + 0.001 * (5 / 6 - 0.62), abs=1e-12)


def test_adlp_state_round_trip_with_pending_update():
    a = AdaptiveLengthPenalty(lambda_init=1e-3, lr=1e-3, acc_ref=0.62)
    a(make_step([1500, 3000, 8192, 900], [1, 1, 0, 1], 4))
    b = AdaptiveLengthPenalty(lambda_init=0.5, lr=1e-3, acc_ref=0.62)
    b.load_state_dict(roundtrip(a.state_dict()))
    nxt = make_step([1000, 2000], [1, 0], 2, step=1)
    torch.testing.assert_close(b(nxt), a(nxt))
    assert b.state_dict() == a.state_dict()
    with pytest.raises(ValueError):
        AdaptiveLengthPenalty(acc_ref=1.5)


# ---------------------------------------------------------------------------------- Format-Length

F1_LENGTHS = [300, 1536, 2500, 900, 3072, 1200]
F1_FORMAT = [1, 1, 1, 0, 0, 1]
F1_RL = [0.352478, 1.0, 0.212226, 0.828552, -1.0, 0.952148]


def f1_step(correct=None):
    return make_step(F1_LENGTHS, correct or [0] * 6, 6, truncated=[0, 0, 0, 0, 1, 0],
                     format_ok=F1_FORMAT, cap=3072)


def test_format_length_f1_shape():
    # x = L/3072 = [0.097656, 0.5, 0.813802, 0.292969, 1.0, 0.390625]
    # x <= 0.5: 1 - (1 - 2x)^2; x > 0.5: 1 - 2 (2x - 1)^2, e.g. 2500: 1 - 2 * 0.627604^2 = 0.212226
    x = torch.tensor(F1_LENGTHS, dtype=torch.float64) / 3072
    close(format_length_shape(x), F1_RL)


def test_format_length_f1_code_and_paper():
    # code: 0.5 + R_l if format ok else min(0, R_l); mean 0.586142, std 0.951981
    code = FormatLengthReward(format_weight=0.5)(f1_step())
    close(code, [0.852478, 1.5, 0.712226, 0.0, -1.0, 1.452148])
    close(advantages(code, 6, 1e-6), [0.279770, 0.959952, 0.132444, -0.615707, -1.666146, 0.909687])
    # paper Eq. 5: 1 + R_l; mean 0.919475, std 1.186336
    paper = FormatLengthReward(format_weight=1.0, max_tokens=3072)(f1_step())
    close(paper, [1.352478, 2.0, 1.212226, 0.0, -1.0, 1.952148])
    close(advantages(paper, 6, 1e-6), [0.364991, 0.910808, 0.246769, -0.775054, -1.617985, 0.870472])


def test_format_length_f2_all_format_wrong():
    # R_l = [0.125970, 1.0, -1.0] -> min(0, R_l) = [0, 0, -1]
    step = make_step([100, 1536, 3072], [1, 1, 1], 3, truncated=[0, 0, 1], format_ok=[0, 0, 0], cap=3072)
    r = FormatLengthReward(format_weight=0.5)(step)
    close(r, [0.0, 0.0, -1.0])
    close(advantages(r, 3, 1e-6), [0.577349, 0.577349, -1.154699])
    close(format_length_shape(torch.tensor([100 / 3072])), [0.125970])


def test_format_length_f3_single_values():
    close(format_length_shape(torch.tensor([0.0])), [0.0])
    close(format_length_shape(torch.tensor([0.8]), turning_point=0.8), [1.0])  # 3072*0.8 / 3072
    # 4000/3072 = 1.302083: 1 - 2 * (1.604167)^2 = -4.146701 (no clamp)
    step = make_step([4000], [0], 1, format_ok=[0], cap=4096)
    close(FormatLengthReward(max_tokens=3072, clip_unformatted=False)(step), [-4.146701])
    x = torch.tensor([300, 1536, 2500, 3072], dtype=torch.float64) / 3072
    close(format_length_shape(x, shape="polyline"), [0.195312, 1.0, -0.255208, -1.0])  # 2x, 3 - 4x


def test_format_length_never_reads_correctness_or_answer():
    base = FormatLengthReward()(f1_step(correct=[0] * 6))
    step = f1_step(correct=[1] * 6)
    step.problems[0] = Problem(uid="q0", prompt="q", answer="something else")
    torch.testing.assert_close(FormatLengthReward()(step), base)


def test_format_length_edges_truncated_empty_and_budget():
    # truncated at the cap: R_l = -1 -> format ok 1 - 1 = 0 (paper), wrong -1; empty response: 0
    step = make_step([64, 64, 0], [0, 0, 0], 3, truncated=[1, 1, 0], format_ok=[1, 0, 0], cap=64)
    close(FormatLengthReward()(step), [0.0, -1.0, 0.0])
    # L_max = each completion's budget: 32 of 64 -> peak, 32 of 128 -> 1 - (1 - 0.5)^2 = 0.75
    step = make_step([32, 32], [0, 0], 1, format_ok=[1, 1])
    step.budget_tokens_N = torch.tensor([64, 128])
    close(FormatLengthReward()(step), [2.0, 1.75])
    # count_eos: 31 tokens + EOS = 32 of 64 -> peak
    close(FormatLengthReward(count_eos=True)(make_step([31], [0], 1, cap=64)), [2.0])
    # clipping disabled: a format-wrong completion at the peak gets R_l = 1
    close(FormatLengthReward(clip_unformatted=False)(make_step([32], [0], 1, format_ok=[0], cap=64)), [1.0])
    for bad in ({"turning_point": 1.0}, {"shape": "cubic"}, {"max_tokens": 0}):
        with pytest.raises(ValueError):
            FormatLengthReward(**bad)
