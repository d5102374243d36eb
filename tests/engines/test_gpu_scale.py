"""Training at scale on a CUDA device (``make test-gpu``; marker ``gpu``, skipped without CUDA): bf16
under ZeRO-2 and ZeRO-3 against plain-torch mixed precision on the same GPU, gradient checkpointing,
and a 2-step run of every reproduction arm with the tiny model on the GPU.

**Not run yet**: no GPU was lent to the task that wrote these (the CPU versions of the same checks
run in ``make test``: tests/engines/test_trainer_setup.py, tests/e2e/test_repro.py)."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make test-gpu)"),
]

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    from deepspeed_fixtures import build_tiny

    return build_tiny(str(tmp_path_factory.mktemp("tiny")))


@pytest.mark.parametrize("stage", [2, 3])
def test_bf16_zero_on_cuda_moves_the_weights_through_fp32_masters_and_reports_memory(spec, stage):
    from test_trainer_setup import OPTIM, rollouts

    from deepspeed_fixtures import make_batch
    from rlrun.core.losses import ClippedSurrogate
    from rlrun.engines.trainer.deepspeed import DeepSpeedTrainer
    from rlrun.runtime.sampling import timed

    ro = rollouts()
    t = DeepSpeedTrainer(spec, total_steps=4, zero_stage=stage, micro_batch_size=6, optim=OPTIM,
                         precision="bf16", gradient_checkpointing=True)
    assert next(t.engine.module.parameters()).device.type == "cuda"
    before = t.weights()
    times: dict[str, float] = {}
    for _ in range(2):
        batch = make_batch(ro, t.logprobs(ro), None, seed=2)
        batch.old_logp_NT = None
        with timed(times, "update"):
            stats = t.update(batch, ClippedSurrogate())
        assert all(torch.isfinite(torch.tensor(v)) for v in stats.values()), stats
    after = t.weights()
    # lr 4e-5 < half a bf16 step of |w| in [2^-6, 2^-5): only fp32 masters move such weights in 2 steps
    band = {k: (before[k].float().abs() >= 2**-6) & (before[k].float().abs() < 2**-5) for k in before}
    moved = sum(int(((after[k] != before[k]) & band[k]).sum()) for k in before)
    assert moved > 0.9 * sum(int(b.sum()) for b in band.values()), moved
    assert 0 < times["memory/update_peak_gb"] < 4, times


@pytest.mark.parametrize("name,arm", __import__("test_repro").ARMS)
def test_every_reproduction_arm_runs_two_steps_on_cuda(name, arm, tmp_path):
    from test_repro import run_two_debug_steps

    run_two_debug_steps(name, arm, tmp_path)
