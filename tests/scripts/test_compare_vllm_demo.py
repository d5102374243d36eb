"""``make compare-vllm-demo``'s noise check (scripts/compare_vllm_demo.py ``agreement``): two pass@1
rates over n questions agree when their difference is at most 3 standard errors,
3 sqrt(2 p (1 - p) / n) at the pooled rate p, kept within [1/n, 1 - 1/n]. Hand-computed."""
from __future__ import annotations

import pytest

from conftest import load_script


def test_the_noise_bound_by_hand():
    agreement = load_script("compare_vllm_demo.py").agreement
    # p = (0.996 + 0.965) / 2 = 0.9805; 3 sqrt(2 * 0.9805 * 0.0195 / 256) = 3 * 0.0122217 = 0.036665
    near = agreement(0.996, 0.965, 256)
    assert near["bound"] == pytest.approx(0.036665, abs=1e-6)
    assert near["difference"] == pytest.approx(0.031, abs=1e-12) and near["within_noise"]
    # both 1.0: p kept at 1 - 1/256 = 0.99609375; 3 sqrt(2 * 0.99609375 * 0.00390625 / 256) = 0.016540
    perfect = agreement(1.0, 1.0, 256)
    assert perfect["bound"] == pytest.approx(0.016540, abs=1e-6) and perfect["within_noise"]
    # p = 0.85: 3 sqrt(2 * 0.85 * 0.15 / 256) = 0.094683; a gap of 0.1 is past it
    far = agreement(0.9, 0.8, 256)
    assert far["bound"] == pytest.approx(0.094683, abs=1e-6) and not far["within_noise"]
