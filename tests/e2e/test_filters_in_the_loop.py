"""How the loop treats a filter that keeps too little: refill rounds up to ``max_rounds``, then an
error (``when_short="error"``, verl's behaviour) or an update on what was kept; a step where no rank
kept anything makes no optimizer step at all."""
from __future__ import annotations

import pytest
import torch

from rlrun.runtime import dist, loop
from rlrun.wiring.cli import compose
from rlrun.wiring.build import build_run
from rlrun.types import StepBatch


class KeepNothing:
    """A filter that never finds a group worth training on."""

    def __init__(self, max_rounds: int, when_short: str) -> None:
        self.max_rounds, self.when_short, self.calls = max_rounds, when_short, 0

    def __call__(self, inp: StepBatch) -> torch.Tensor:
        self.calls += 1
        return torch.zeros(len(inp.reward_N), dtype=torch.bool)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    dist.init()
    return build_run(compose(["debug=cpu", "eval=none"]), str(tmp_path_factory.mktemp("run")))


def test_short_after_max_rounds_is_an_error_naming_the_rounds(run):
    run.filter = KeepNothing(max_rounds=3, when_short="error")
    with pytest.raises(RuntimeError, match=r"kept 0 of the 2 groups .*max_rounds=3 rounds at step 1 \(the filter's: algo.filter or"):
        loop.train_step(run, 0)
    assert run.filter.calls == 3  # one keep decision per sampling round


def test_nothing_kept_anywhere_means_no_optimizer_step(run):
    run.filter = KeepNothing(max_rounds=2, when_short="train")
    before = run.trainer.weights()
    with pytest.warns(UserWarning, match="training on the kept groups"):
        metrics = loop.train_step(run, 0)
    after = run.trainer.weights()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (metrics["rollout/sampled"], metrics["rollout/kept"], metrics["rollout/rounds"]) == (16.0, 0.0, 2.0)
    assert metrics["rollout/skipped_update"] == 1.0
