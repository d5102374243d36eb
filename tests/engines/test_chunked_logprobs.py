"""Chunked log-probs (``DeepSpeedTrainer(logprob_chunk=...)``): the output head and the log-softmax
run on a few completion positions at a time (checkpointed under grad). The log-probs, the loss
statistics and the optimizer step must be those of the plain path (``logprob_chunk=0``).

With ``micro_batch_size=2`` the rollouts below make micro-batches of completion width 8, 6 and 1:
at ``logprob_chunk=3`` the head sees chunks of 3, 3, 2 and 3, 3 positions, and the width-1 batch
(2 logit positions <= 3) takes the plain path.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest
import torch

import deepspeed_worker as worker
from deepspeed_fixtures import (
    assert_same_update,
    assert_state_close,
    build_tiny,
    make_batch,
    make_rollouts,
    plain_logprobs,
    plain_step,
)
from rlrun.core.losses import ClippedSurrogate
from rlrun.engines.model import ModelSpec, load_model
from rlrun.engines.trainer import deepspeed as ds
from rlrun.engines.trainer.deepspeed import DeepSpeedTrainer
from rlrun.engines.trainer.optim import OptimSettings, lr_factor

OPTIM = OptimSettings(lr=1e-2, weight_decay=0.1, eps=1.0, grad_clip=2.0)
SHARD = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}  # ZeRO-3 shards every tensor
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "deepspeed_worker.py")
CHUNK_WIDTHS = [3, 3, 2, 3, 3, 2]  # positions per head call at logprob_chunk=3 (module docstring)


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> ModelSpec:
    torch.set_num_threads(1)
    return build_tiny(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def tied(tmp_path_factory) -> ModelSpec:
    return build_tiny(str(tmp_path_factory.mktemp("tied")), tie_word_embeddings=True)


def rollouts():
    # 3 prompts x 2 completions; row 3 is empty.
    return make_rollouts([3, 5, 2], [8, 1, 7, 0, 1, 6], group_size=2, seed=1)


def trainer(spec: ModelSpec, stage: int, chunk: int) -> DeepSpeedTrainer:
    return DeepSpeedTrainer(
        spec, total_steps=4, zero_stage=stage, micro_batch_size=2, optim=OPTIM, deepspeed_config=SHARD,
        logprob_chunk=chunk,
    )


@contextlib.contextmanager
def head_widths(engine):
    """The number of positions of each call of the output head (lm_head) inside the block."""
    module = getattr(engine, "module", engine)
    widths: list[int] = []
    hook = module.get_output_embeddings().register_forward_hook(
        lambda _m, args, _out: widths.append(args[0].shape[1])
    )
    try:
        yield widths
    finally:
        hook.remove()


@pytest.mark.parametrize("stage", [0, 3])
def test_chunked_logprobs_equal_the_plain_ones(spec, stage):
    ro = rollouts()
    plain, chunked = trainer(spec, stage, 0), trainer(spec, stage, 3)
    with torch.no_grad():
        exact = plain_logprobs(load_model(spec).eval(), ro)
    for reference in (False, True):
        want = plain.logprobs(ro, reference=reference)
        engine = chunked._reference_engine() if reference else chunked.engine
        with head_widths(engine) as widths:
            got = chunked.logprobs(ro, reference=reference)
        assert widths == CHUNK_WIDTHS, reference  # the chunked path really ran, ragged last chunks
        assert got.shape == (6, 8)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        torch.testing.assert_close(got, exact, rtol=0, atol=2e-6)
        assert got[3].abs().sum() == 0  # the empty row stays 0


@pytest.mark.parametrize("stage,model", [(0, "spec"), (3, "spec"), (0, "tied"), (3, "tied")])
def test_chunked_update_equals_the_plain_update(request, stage, model):
    # KL on (kl_coef > 0): the reference's chunked log-probs enter the loss too, scaled by 0.9 so
    # that the KL term and its gradient are not 0 (the reference is the policy before the step).
    spec = request.getfixturevalue(model)
    ro = rollouts()
    loss = ClippedSurrogate(kl_coef=0.1)
    results = {}
    for chunk in (0, 3):
        t = trainer(spec, stage, chunk)
        batch = make_batch(ro, t.logprobs(ro), 0.9 * t.logprobs(ro, reference=True), seed=2)
        with head_widths(t.engine) as widths:
            stats = t.update(batch, loss)
        results[chunk] = stats, t.weights(), widths
    (want, want_w, plain_widths), (got, got_w, widths) = results[0], results[3]
    assert plain_widths == [9, 7, 2]  # width + 1 positions, one call per micro-batch
    # forward chunks, then each chunk's recomputation in backward (last micro-batch: plain path)
    assert sorted(widths) == sorted([3, 3, 2] * 2 + [3, 3] * 2 + [2])
    assert got["loss/kl"] > 0 and got["optim/grad_norm"] > OPTIM.grad_clip
    assert_same_update((got, got_w), (want, want_w), atol=1e-6)


def test_chunked_update_is_exactly_on_policy(spec):
    # logprobs() (no grad, no checkpoint) and update() (checkpointed chunks) compute the same
    # values to the last bit: ratio = 1 exactly, so a zero-width clip range clips no token.
    ro = rollouts()
    t = trainer(spec, 0, 3)
    batch = make_batch(ro, t.logprobs(ro), None, seed=2)
    batch.old_logp_NT = t.logprobs(ro)
    stats = t.update(batch, ClippedSurrogate(clip_low=0.0, clip_high=0.0))
    assert stats["ppo/clip_frac"] == 0.0


def test_a_negative_chunk_is_rejected(spec):
    with pytest.raises(ValueError, match="logprob_chunk=-1"):
        trainer(spec, 0, -1)


def test_an_unsupported_model_type_keeps_the_plain_path(spec, monkeypatch):
    monkeypatch.setattr(ds, "CHUNKED_MODEL_TYPES", ("llama",))
    with pytest.warns(UserWarning, match="logprob_chunk=3 ignored for model_type='qwen2'"):
        t = trainer(spec, 0, 3)
    assert t.logprob_chunk == 0
    with head_widths(t.engine) as widths:
        t.logprobs(rollouts())
    assert widths == [9, 7, 2]


def test_two_ranks_take_the_full_batch_step_with_chunked_logprobs(tmp_path):
    # deepspeed_worker.py with CHUNK: ZeRO-3 over 2 real processes (gloo), logprob_chunk=3, the
    # prompts split unevenly; the step must be plain torch's full-batch step on the union.
    root, out = str(tmp_path / "tiny"), str(tmp_path / "out")
    os.makedirs(out)
    spec = build_tiny(root)
    launcher_vars = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher_vars}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*torchrun, WORKER, root, out, "3"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = torch.load(os.path.join(out, "results.pt"), weights_only=False)
    assert results["world_size"] == 2
    union = worker.union_rollouts()
    with torch.no_grad():
        plain = plain_logprobs(load_model(spec).eval(), union)
    lr = worker.OPTIM.lr * lr_factor(0, worker.OPTIM.warmup_steps, 4, worker.OPTIM.schedule)
    batch = make_batch(union, plain, plain, seed=2)
    want_state, want_stats = plain_step(spec, union, batch, worker.LOSS, worker.OPTIM, lr)
    got = results[3]
    for key, value in want_stats.items():
        assert got["stats"][key] == pytest.approx(value, abs=1e-5), key
    assert_state_close(got["weights"], want_state, atol=1e-7)
