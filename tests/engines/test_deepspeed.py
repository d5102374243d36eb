"""The DeepSpeed trainer, run for real in this process (a world of one, gloo on the CPU), against
plain torch: one unpadded forward per row and one full-batch AdamW step.

The optimizer uses eps = 1 so that a step is about ``lr * g / (|g| + 1)``: unlike Adam's usual
``lr * sign(g)`` first step, it changes if the gradient is scaled, so the weights check the
gradient's size as well as its direction.
"""
from __future__ import annotations

import math
import os

import pytest
import torch

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
from rlrun.engines.model import ModelSpec, load_model, load_tokenizer
from rlrun.engines.trainer.batching import chunk_rows, micro_batches, pack
from rlrun.engines.trainer.deepspeed import DeepSpeedTrainer
from rlrun.engines.trainer.optim import OptimSettings, lr_factor

OPTIM = OptimSettings(lr=1e-2, weight_decay=0.1, eps=1.0, grad_clip=2.0)
SHARD = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}  # ZeRO-3 shards every tensor


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> ModelSpec:
    torch.set_num_threads(1)
    return build_tiny(str(tmp_path_factory.mktemp("tiny")))


def rollouts(seed: int = 1):
    # 3 prompts x 2 completions; row 3 is empty (no response token: out of N').
    return make_rollouts([3, 5, 2], [4, 1, 7, 0, 3, 6], group_size=2, seed=seed)


def trainer(spec: ModelSpec, stage: int, **kw) -> DeepSpeedTrainer:
    kw.setdefault("optim", OPTIM)
    kw.setdefault("micro_batch_size", 2)
    return DeepSpeedTrainer(spec, total_steps=4, zero_stage=stage, deepspeed_config=SHARD, **kw)


def test_lr_factor_warmup_then_cosine():
    # warmup 2: (0+1)/3, (1+1)/3; then cosine over 10 - 2 = 8 steps: step 6 -> p = 4/8,
    # 0.5 (1 + cos(pi/2)) = 0.5; step 10 and later -> p = 1 -> 0.
    assert lr_factor(0, 2, 10, "cosine") == pytest.approx(1 / 3, abs=1e-12)
    assert lr_factor(1, 2, 10, "cosine") == pytest.approx(2 / 3, abs=1e-12)
    assert lr_factor(2, 2, 10, "cosine") == pytest.approx(1.0, abs=1e-12)
    assert lr_factor(6, 2, 10, "cosine") == pytest.approx(0.5, abs=1e-12)
    assert lr_factor(12, 2, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(7, 0, 10, "constant") == 1.0
    assert lr_factor(3, 0, 10, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)), abs=1e-12)


def test_pack_left_pads_prompts_and_right_pads_completions():
    ids, attn, pos, target, mask = pack([[5, 6], [7]], [[8], [9, 10, 11]], pad_id=0)
    # P = 2, T = 3: row 0 = [5 6 | 8 0 0], row 1 = [0 7 | 9 10 11]
    assert ids.tolist() == [[5, 6, 8, 0, 0], [0, 7, 9, 10, 11]]
    assert attn.tolist() == [[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]]
    assert pos.tolist() == [[0, 1, 2, 2, 2], [0, 0, 1, 2, 3]]
    assert target.tolist() == [[8, 0, 0], [9, 10, 11]]
    assert mask.tolist() == [[1, 0, 0], [1, 1, 1]]


def test_micro_batches_sort_by_length_and_pad_to_count():
    # lengths 3, 9, 1, 5, 7 -> order 1, 4, 3, 0, 2 -> [1 4] [3 0] [2], plus one empty batch.
    got = micro_batches(chunk_rows([3, 9, 1, 5, 7], size=2), count=4)
    assert [b.tolist() for b in got] == [[1, 4], [3, 0], [2], []]


def test_a_token_budget_packs_short_rows_many_and_long_rows_few():
    # lengths 30, 90, 10, 50, 70, 12, 11 -> order 1(90) 4(70) 3(50) 0(30) 5(12) 6(11) 2(10); budget 100 padded
    # positions: [1] alone (2 x 90 > 100), [4] (2 x 70), [3] (2 x 50 = 100 fits: [3 0]), then 12 x 3 ... 12 x 4 = 48
    lengths = [30, 90, 10, 50, 70, 12, 11]
    assert chunk_rows(lengths, size=8, tokens=100) == [[1], [4], [3, 0], [5, 6, 2]]
    assert chunk_rows(lengths, size=2, tokens=100) == [[1], [4], [3, 0], [5, 6], [2]]  # and at most 2 rows
    assert chunk_rows([150, 20], size=8, tokens=100) == [[0], [1]]  # a row over the budget goes alone


@pytest.mark.parametrize("stage", [0, 3])
def test_logprobs_match_plain_forward(spec, stage):
    ro = rollouts()
    with torch.no_grad():
        want = plain_logprobs(load_model(spec).eval(), ro)
    t = trainer(spec, stage)
    got = t.logprobs(ro)
    assert got.shape == ro.mask_NT.shape == (6, 7)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    assert got[3].abs().sum() == 0  # the empty row stays 0
    torch.testing.assert_close(t.logprobs(ro, reference=True), want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_update_equals_one_full_batch_step(spec, stage):
    ro = rollouts()
    loss = ClippedSurrogate(kl_coef=0.1, aggregation="seq_mean_token_mean")
    with torch.no_grad():
        plain = plain_logprobs(load_model(spec).eval(), ro)
    reference_batch = make_batch(ro, plain, plain, seed=2)
    want_state, want_stats = plain_step(spec, ro, reference_batch, loss, OPTIM, lr=OPTIM.lr)

    t = trainer(spec, stage)
    batch = make_batch(ro, t.logprobs(ro), t.logprobs(ro, reference=True), seed=2)
    stats = t.update(batch, loss)

    # 5 non-empty rows, 21 response tokens (4+1+7+3+6), set on the batch for the whole mini-batch
    assert (batch.norm.total_rows, batch.norm.total_tokens) == (5.0, 21.0)
    assert stats["optim/lr"] == pytest.approx(OPTIM.lr, abs=1e-12)
    assert want_stats["optim/grad_norm"] > OPTIM.grad_clip  # the clip was active
    for key, value in want_stats.items():
        assert stats[key] == pytest.approx(value, abs=1e-5), key
    assert_state_close(t.weights(), want_state)


def test_update_is_exactly_on_policy_with_the_trainers_old_logprobs(spec):
    # The update's forward packs the micro-batches as logprobs() did, so ratio = exp(0) = 1 exactly
    # and with a zero-width clip range no token counts as clipped (1e-7 off would clip ~half).
    ro = rollouts()
    t = trainer(spec, 0)
    batch = make_batch(ro, t.logprobs(ro), None, seed=2)
    batch.old_logp_NT = t.logprobs(ro)
    stats = t.update(batch, ClippedSurrogate(clip_low=0.0, clip_high=0.0))
    assert stats["ppo/clip_frac"] == 0.0


@pytest.mark.parametrize("stage", [0, 3])
def test_on_policy_update_without_old_logprobs_equals_the_two_pass_update(spec, stage):
    # old_logp_NT=None: the trainer takes pi_old from its own forward (detached); the step must be
    # the same as with old log-probs from a separate no-grad pass, to the last bit of the weights.
    ro = rollouts()
    loss = ClippedSurrogate(kl_coef=0.1)
    two_pass = trainer(spec, stage)
    batch = make_batch(ro, two_pass.logprobs(ro), two_pass.logprobs(ro, reference=True), seed=2)
    batch.old_logp_NT = two_pass.logprobs(ro)  # no noise: the true pi_old
    want = two_pass.update(batch, loss)
    one_pass = trainer(spec, stage)
    batch = make_batch(ro, one_pass.logprobs(ro), one_pass.logprobs(ro, reference=True), seed=2)
    batch.old_logp_NT = None
    got = one_pass.update(batch, loss)
    assert got == want
    assert_state_close(one_pass.weights(), two_pass.weights(), atol=0.0)


def test_save_load_continues_identically(spec, tmp_path):
    optim = OptimSettings(
        lr=1e-2, weight_decay=0.1, eps=1.0, grad_clip=2.0, warmup_steps=1, schedule="cosine"
    )
    loss = ClippedSurrogate(aggregation="token_mean")

    def step(t: DeepSpeedTrainer, seed: int) -> dict[str, float]:
        ro = rollouts(seed)
        return t.update(make_batch(ro, t.logprobs(ro), None, seed), loss)

    first = trainer(spec, 2, optim=optim)
    step(first, seed=1)
    after_one = first.weights()
    first.save(str(tmp_path))
    want_stats = step(first, seed=5)
    second = trainer(spec, 2, optim=optim)
    second.load(str(tmp_path))
    got_stats = step(second, seed=5)

    # lr: warmup (0+1)/2 -> 0.5 lr at step 0; step 1 is cosine p = 0 -> 1.0 lr
    assert want_stats["optim/lr"] == pytest.approx(1e-2, abs=1e-12)
    assert got_stats == want_stats
    assert_state_close(second.weights(), first.weights(), atol=0.0)
    # the Hugging Face copy holds the weights after the first step and loads with its tokenizer
    saved = ModelSpec(
        path=os.path.join(tmp_path, "model"), tokenizer_path=os.path.join(tmp_path, "tokenizer")
    )
    assert_state_close(load_model(saved).state_dict(), after_one, atol=0.0)
    assert load_tokenizer(saved).pad_token_id == first.tokenizer.pad_token_id


@pytest.mark.parametrize("stage", [0, 3])
def test_weights_is_the_full_state_dict_with_tied_embeddings(tmp_path, stage):
    tied = build_tiny(str(tmp_path), tie_word_embeddings=True)
    want = load_model(tied).state_dict()
    assert_state_close(trainer(tied, stage).weights(), want, atol=0.0)


@pytest.mark.parametrize("stage", [0, 3])
def test_a_token_budget_per_micro_batch_takes_the_same_step_as_the_row_count(spec, stage):
    # Row lengths (prompt + completion) 7 4 12 5 5 8, longest first: rows 2 5 0 3 4 1.
    # micro_batch_size=2 -> [2 5] [0 3] [4 1]; a budget of 24 padded positions with up to 6 rows ->
    # [2 5] (2 x 12), [0 3 4] (3 x 7; a 4th row would make 28), [1]. The global loss denominators
    # make the optimizer step the same either way.
    ro = rollouts()
    loss = ClippedSurrogate(kl_coef=0.1)
    results, plans = [], []
    for size, tokens in ((2, None), (6, 24)):
        t = trainer(spec, stage, micro_batch_size=size, micro_batch_tokens=tokens)
        batch = make_batch(ro, t.logprobs(ro), 0.9 * t.logprobs(ro, reference=True), seed=2)
        plans.append([len(index) for index in t._plan(batch)])
        results.append((t.update(batch, loss), t.weights()))
    assert plans == [[2, 2, 2], [2, 3, 1]], plans
    assert_same_update(results[1], results[0], atol=1e-6)


@pytest.mark.parametrize("stage", [0, 3])
def test_skipping_zero_advantage_rows_leaves_the_step_unchanged(spec, stage):
    # Without KL a row with advantage 0 adds exactly 0 to the clipped surrogate: the trainer skips
    # its forward and backward (fewer micro-batches) and must still take the same optimizer step.
    ro = rollouts()
    loss = ClippedSurrogate(kl_coef=0.0)
    assert loss.zero_advantage_is_zero_loss and not ClippedSurrogate(kl_coef=0.1).zero_advantage_is_zero_loss
    results = {}
    for skip in (False, True):
        t = trainer(spec, stage, skip_zero_advantage=skip)
        batch = make_batch(ro, t.logprobs(ro), None, seed=2)
        batch.advantages_N[[0, 2]] = 0.0  # two of the five non-empty rows
        results[skip] = (t.update(batch, loss), t.weights())
    assert_same_update(results[True], results[False], atol=1e-6)


def test_a_step_with_every_advantage_zero_still_steps_the_optimizer(spec):
    # All rows skipped: one empty micro-batch still gives every parameter a zero gradient, so AdamW
    # applies weight decay (and momentum) as it does after a full zero-gradient backward.
    ro = rollouts()
    before = trainer(spec, 0).weights()
    results = []
    for skip in (False, True):
        t = trainer(spec, 0, skip_zero_advantage=skip)
        batch = make_batch(ro, t.logprobs(ro), None, seed=2)
        batch.advantages_N.zero_()
        t.update(batch, ClippedSurrogate())
        results.append(t.weights())
    assert_state_close(results[1], results[0], atol=0.0)
    changed = [k for k in before if not torch.equal(before[k], results[1][k])]
    assert changed  # weight decay 0.1 moved the matrices


def test_the_logprob_gap_is_over_the_tokens_trained_on(spec):
    """rollout/logprob_gap_{mean,max}: the engine's log-probs are the trainer's own plus a known offset
    per row; rows 0-1 (advantage 0, skipped: no forward) are off by 0.5 and must not count. Trained:
    row 2 (7 tokens, off by 0.01), row 4 (3 tokens, 0.02), row 5 (6 tokens, 0.04); row 3 is empty.
    Mean = (7 * 0.01 + 3 * 0.02 + 6 * 0.04) / 16 = 0.37 / 16 = 0.023125; max 0.04."""
    t = trainer(spec, 0)
    batch = rollouts()
    with torch.no_grad():
        mine = t.logprobs(batch)
    offset = torch.tensor([0.5, -0.5, 0.01, 0.0, -0.02, 0.04])[:, None] * batch.mask_NT
    batch = batch.with_columns(old_logp_NT=mine, logp_NT=mine + offset,
                               advantages_N=torch.tensor([0.0, 0.0, 1.0, 1.0, -1.0, 1.0]))
    stats = t.update(batch, ClippedSurrogate(kl_coef=0.0, aggregation="token_mean"))
    assert stats["rollout/logprob_gap_mean"] == pytest.approx(0.37 / 16, abs=1e-6)
    assert stats["rollout/logprob_gap_max"] == pytest.approx(0.04, abs=1e-6)
    assert not any(key.startswith("rollout/gap_") for key in stats)
