"""Reward terms for tests that run the real ``rlrun`` command: the test puts tests/ on the child's
PYTHONPATH and names a term here, e.g. ``+reward.terms.boom={weight:0.0,fn:{_target_:reward_terms.
RaisesFromStep}}``."""
from __future__ import annotations


class RaisesFromStep:
    """Correctness until loop step ``step`` (0-based), then ``ValueError("boom")`` on every batch."""

    def __init__(self, step: int = 1) -> None:
        self.step = int(step)

    def __call__(self, batch):
        if batch.step >= self.step:
            raise ValueError("boom")
        return batch.correct_N.float()


class NaNFromStep:
    """Correctness until loop step ``step`` (0-based), then NaN for every completion: the
    advantages, the loss and the gradients of those steps are NaN."""

    def __init__(self, step: int = 1) -> None:
        self.step = int(step)

    def __call__(self, batch):
        reward = batch.correct_N.float()
        return reward * float("nan") if batch.step >= self.step else reward
