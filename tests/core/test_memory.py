"""Per-stage peak memory (rlrun.runtime.memory through ``timed``): a stage that holds 400 MB shows
it, the stage after it, which holds nothing, does not (the CPU peak is reset between stages)."""
from __future__ import annotations

import torch

from rlrun.runtime.sampling import timed


def test_each_stage_reports_its_own_peak_and_the_step_keeps_the_largest_call():
    times: dict[str, float] = {}
    with timed(times, "small"):
        pass
    with timed(times, "big"):
        block = torch.ones(100 * 2**20)  # 400 MB of float32, written: resident
        del block
    with timed(times, "after"):
        pass
    big, small, after = times["memory/big_peak_gb"], times["memory/small_peak_gb"], times["memory/after_peak_gb"]
    assert big - small > 0.35 and big - after > 0.35, times
    with timed(times, "big"):  # a second, lighter call of the same stage keeps the first one's peak
        pass
    assert times["memory/big_peak_gb"] == big
    assert times["time/big_s"] > 0
