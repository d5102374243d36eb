"""The speed levers on a CUDA device (``make test-gpu``; marker ``gpu``, skipped without CUDA).

The same checks as the CPU tests, on the GPU: the lean decode samples the tokens the plain Hugging
Face forward samples (tests/engines/test_lean_decode.py); chunked log-probs give the plain path's
log-probs and optimizer step (tests/engines/test_chunked_logprobs.py); and a 2-step run of the
embedded default trains on the GPU end to end (rollout and trainer on CUDA, nccl) and keeps the tiny
model's held-out accuracy within the bound measured on CPU (END_ACC_MIN).
"""
from __future__ import annotations

import json

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make test-gpu)"),
]

# The held-out accuracy (8 problems) after the 2-step `debug=cpu` run of the embedded default, measured
# on CPU (no GPU was lent to this task) on 2026-12-06 at commit be1a630, seeds 0-9 each alone: the body
# of test_the_embedded_default_trains_two_steps_on_cuda without the device asserts, as
# `build_run(compose(["debug=cpu", f"seed={s}"]), d)` then `loop.train(run)["end"]["acc"]`:
#   seed   0     1     2     3     4     5     6     7     8     9
#   end    1.0   1.0   0.875 0.875 1.0   1.0   1.0   0.875 0.875 1.0    (min 0.875, max 1.0)
#   start  1.0   1.0   0.875 1.0   1.0   1.0   1.0   1.0   1.0   1.0    (step 0, before training)
# CUDA samples other random numbers than the CPU (and may differ in float rounding), so the GPU run is
# one more seed: the bound is 4 of 8, three problems below the lowest measured; a model broken on the
# GPU (wrong weights, decode or update) scores near 0. The measured maximum is the ceiling, 1.0.
END_ACC_MIN = 0.5


def test_lean_decode_on_cuda_samples_what_the_plain_path_samples():
    from test_lean_decode import assert_same, pair, sample_both

    from rlrun.tasks.arith import ArithProblems
    from rlrun.tasks.tiny_model import tiny_model_spec

    plain, lean = pair(tiny_model_spec())
    assert plain.device.type == lean.device.type == "cuda" and lean.lean is not None
    assert next(lean.model.parameters()).is_cuda
    a, b = sample_both(plain, lean, ArithProblems(0).batch(0, 4), 4, [160, 100, 60, 160], seed=3)
    assert a.truncated_N.any() and not a.truncated_N.all()  # rows leave the batch at different steps
    assert_same(a, b)


@pytest.mark.parametrize("stage", [0, 3])
def test_chunked_logprobs_and_update_on_cuda_equal_the_plain_path(tmp_path, stage):
    from deepspeed_fixtures import assert_same_update, build_tiny, make_batch, make_rollouts
    from test_chunked_logprobs import trainer

    from rlrun.core.losses import ClippedSurrogate

    spec = build_tiny(str(tmp_path))
    ro = make_rollouts([3, 5, 2], [8, 1, 7, 0, 1, 6], group_size=2, seed=1)
    plain, chunked = trainer(spec, stage, 0), trainer(spec, stage, 3)
    assert next(chunked.engine.module.parameters()).is_cuda
    want, got = plain.logprobs(ro), chunked.logprobs(ro)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    loss = ClippedSurrogate(kl_coef=0.1)
    results = []
    for t in (plain, chunked):
        # a reference unlike the policy (0.9x), so that the KL term has a gradient
        batch = make_batch(ro, t.logprobs(ro), 0.9 * t.logprobs(ro, reference=True), seed=2)
        results.append((t.update(batch, loss), t.weights()))
    assert_same_update(results[1], results[0], atol=1e-5)


def test_the_embedded_default_trains_two_steps_on_cuda(tmp_path):
    """Two steps of `rlrun debug=cpu` with rollout and trainer on CUDA; the held-out accuracy at the
    end must be at least END_ACC_MIN = 0.5 (4 of 8 problems). The bound was measured on CPU, not on a
    GPU (no GPU was lent to this task): the same run on CPU for seeds 0-9 ended at 0.875-1.0
    (2026-12-06, values and command above END_ACC_MIN)."""
    from rlrun.runtime import dist, loop
    from rlrun.wiring.cli import compose
    from rlrun.wiring.build import build_run

    dist.init()
    run = build_run(compose(["debug=cpu"]), str(tmp_path))
    assert next(run.rollout.model.parameters()).is_cuda
    assert next(run.trainer.engine.module.parameters()).is_cuda
    summary = loop.train(run)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "time/step_s" in line] == [1, 2]
    assert END_ACC_MIN <= summary["end"]["acc"] <= 1.0, summary  # measured on CPU: 0.875-1.0 (above)
    assert summary["end"]["mean_tokens"] > 0
