"""The arithmetic task: deterministic problem streams, rank sharding, the warm-start trace mix."""
from __future__ import annotations

import re

import numpy as np
import pytest

from rlrun.tasks.arith import (
    ArithProblems,
    TraceMix,
    is_held_out_pair,
    sample_trace,
    short_trace,
    terse_trace,
    worked_trace,
)
from rlrun.tasks.verify import extract_boxed


def test_batch_is_deterministic_in_seed_and_step():
    first = ArithProblems(seed=7).batch(step=3, size=8)
    again = ArithProblems(seed=7).batch(step=3, size=8)
    assert first == again
    assert [p.prompt for p in ArithProblems(seed=7).batch(4, 8)] != [p.prompt for p in first]
    assert [p.prompt for p in ArithProblems(seed=8).batch(3, 8)] != [p.prompt for p in first]


def test_problem_fields():
    problem = ArithProblems(seed=0, digits=3).batch(0, 1)[0]
    a, b = problem.meta["a"], problem.meta["b"]
    assert problem.prompt == f"Add {a}+{b}.\n"
    assert problem.answer == str(a + b)
    assert problem.meta["digits"] == 3
    assert 100 <= a <= 999 and 100 <= b <= 999


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_take_contiguous_shares_of_the_same_batch(world_size):
    source = ArithProblems(seed=1)
    whole = source.batch(step=5, size=8)
    shares = [source.batch(5, 8, rank=r, world_size=world_size) for r in range(world_size)]
    assert [len(s) for s in shares] == [8 // world_size] * world_size
    assert [p for share in shares for p in share] == whole
    assert len({p.uid for p in whole}) == 8


def test_size_not_divisible_by_world_size_is_an_error():
    with pytest.raises(ValueError, match="divisible"):
        ArithProblems(seed=0).batch(0, 6, rank=0, world_size=4)
    with pytest.raises(ValueError, match="rank"):
        ArithProblems(seed=0).batch(0, 8, rank=2, world_size=2)


def test_held_out_is_deterministic_and_disjoint_from_training():
    source = ArithProblems(seed=0)
    held = source.held_out(64)
    assert held == ArithProblems(seed=0).held_out(64)
    assert all(is_held_out_pair(p.meta["a"], p.meta["b"]) for p in held)
    train = [p for step in range(20) for p in source.batch(step, 64)]
    assert not any(is_held_out_pair(p.meta["a"], p.meta["b"]) for p in train)
    # the partition keeps about 1/16 of the pairs out of training
    pairs = [(a, b) for a in range(100, 400) for b in range(100, 400, 7)]
    share = np.mean([is_held_out_pair(a, b) for a, b in pairs])
    assert share == pytest.approx(1 / 16, abs=0.01)


def test_digits_knob():
    problem = ArithProblems(seed=0, digits=5).batch(0, 1)[0]
    assert 10_000 <= problem.meta["a"] <= 99_999
    with pytest.raises(ValueError):
        ArithProblems(seed=0, digits=0)


def test_worked_trace_text():
    # 347 + 708: units 7+8+0=15 (write 5, carry 1), tens 4+0+1=5, hundreds 3+7+0=10 -> 1055
    expected = (
        "<think>\n"
        "7+8+0=15, write 5, carry 1\n"
        "4+0+1=05, write 5, carry 0\n"
        "3+7+0=10, write 0, carry 1\n"
        "so 1055\n"
        "wait, 4+0+1=05? yes\n"
        "</think>\n"
        "\\boxed{1055}"
    )
    assert worked_trace(347, 708, 3, rechecks=(1,)) == expected
    assert short_trace(347, 708) == "<think></think>\n\\boxed{1055}"


def _column_lines_are_right(trace: str, a: int, b: int) -> bool:
    carry = 0
    lines = re.findall(r"^(\d)\+(\d)\+(\d)=(\d\d), write (\d), carry (\d)$", trace, flags=re.M)
    for k, (x, y, c, total, write, out) in enumerate(lines):
        digit_a, digit_b = a // 10**k % 10, b // 10**k % 10
        s = digit_a + digit_b + carry
        if (int(x), int(y), int(c), int(total), int(write), int(out)) != (
            digit_a, digit_b, carry, s, s % 10, s // 10
        ):
            return False
        carry = s // 10
    return len(lines) == 3


def test_trace_mix_lengths_and_correctness():
    source, rng = ArithProblems(seed=0), np.random.default_rng(0)
    problems = [p for step in range(40) for p in source.batch(step, 100)]
    traces = [sample_trace(p, rng) for p in problems]
    short = [t.startswith("<think></think>") for t in traces]
    checks = [t.count("\nwait, ") for t in traces]
    assert 0.02 <= np.mean(short) <= 0.04  # short_frac 0.03 of 4000 traces (sd 0.0027)
    assert np.mean([c > 0 for c in checks]) == pytest.approx(0.4, abs=0.025)
    assert set(checks) == {0, 1, 2, 3}
    for problem, trace, is_short in zip(problems, traces, short):
        assert extract_boxed(trace) == problem.answer
        if not is_short:
            assert _column_lines_are_right(trace, problem.meta["a"], problem.meta["b"])
            stated = trace.index(f"\nso {problem.answer}\n")
            assert stated < trace.find("wait,") or "wait," not in trace  # answer before re-checks
    lengths = [len(t) for t in traces]
    assert 120 <= np.mean(lengths) <= 140  # MEASURED.md: ~128 mean, max ~216 < 256-token cap
    assert max(lengths) <= 216


def test_terse_trace_states_the_column_totals_only():
    assert terse_trace(347, 708, 3) == "<think>\n7+8=15\n4+0=04\n3+7=10\nso 1055\n</think>\n\\boxed{1055}"
    assert terse_trace(5, 4, 1) == "<think>\n5+4=09\nso 9\n</think>\n\\boxed{9}"
    assert len(terse_trace(347, 708, 3)) == 58 < len(worked_trace(347, 708, 3)) == 118


def test_trace_mix_with_terse_share():
    source, rng = ArithProblems(seed=0), np.random.default_rng(0)
    problems = [p for step in range(20) for p in source.batch(step, 100)]
    mix = TraceMix(terse_frac=0.2)
    traces = [sample_trace(p, rng, mix) for p in problems]
    terse = [t.startswith("<think>\n") and "," not in t.split("\n")[1] for t in traces]
    assert np.mean(terse) == pytest.approx(0.2, abs=0.03)  # 2000 traces, sd 0.009
    assert all(extract_boxed(t) == p.answer for p, t in zip(problems, traces))
    with pytest.raises(ValueError, match="terse"):
        TraceMix(recheck_frac=0.9, terse_frac=0.2)


def test_trace_mix_rejects_too_many_short_answers():
    with pytest.raises(ValueError, match="short_frac"):
        TraceMix(short_frac=0.1)


def test_pool_makes_questions_come_back():
    source = ArithProblems(seed=0, pool=6)
    pool_uids = {p.uid for p in source.pool_problems()}
    assert len(pool_uids) == 6
    seen = [p.uid for step in range(6) for p in source.batch(step, 4)]
    assert set(seen) <= pool_uids and len(set(seen)) < len(seen)  # repeats across steps
    assert all(len({p.uid for p in source.batch(s, 4)}) == 4 for s in range(6))  # none within a step
    assert [p.uid for p in source.batch(3, 4, rank=1, world_size=2)] == [p.uid for p in source.batch(3, 4)][2:]
    assert [p.prompt for p in ArithProblems(seed=0, pool=6).batch(2, 4)] == [p.prompt for p in source.batch(2, 4)]
    with pytest.raises(ValueError, match="exceed data.source.pool=6"):
        source.batch(0, 8)
    with pytest.raises(ValueError, match="data.source.pool=0 must be >= 1"):
        ArithProblems(seed=0, pool=0)


def test_monitor_set_is_fixed_training_problems():
    source = ArithProblems(seed=0)
    first, again = source.monitor(5), source.monitor(5)
    assert [p.prompt for p in first] == [p.prompt for p in again]
    assert [p.uid for p in first] == [f"arith-d3-s0-monitor-{i}" for i in range(5)]
    assert not any(is_held_out_pair(p.meta["a"], p.meta["b"]) for p in first)
