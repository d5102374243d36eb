"""PPO's mini-batches and epochs (``trainer.mini_batches``, ``trainer.epochs``): π_old from one
forward of the whole batch, then one optimizer step per mini-batch of whole groups, each against
that π_old. Checked against plain torch doing the same steps by hand (one unpadded forward per row,
AdamW), and that the ratio leaves 1 after the first step (the clips bite), and the lr schedule."""
from __future__ import annotations

import pytest
import torch

from deepspeed_fixtures import assert_state_close, build_tiny, make_rollouts, plain_logprobs, subset
from rlrun.core.losses import ClippedSurrogate, loss_norm
from rlrun.engines.model import ModelSpec, load_model
from rlrun.engines.trainer.batching import group_parts, mean_stats
from rlrun.engines.trainer.deepspeed import DeepSpeedTrainer
from rlrun.engines.trainer.optim import OptimSettings, param_groups
from rlrun.types import StepBatch

OPTIM = OptimSettings(lr=1e-2, weight_decay=0.1, eps=1.0, grad_clip=2.0)
SHARD = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> ModelSpec:
    torch.set_num_threads(1)
    return build_tiny(str(tmp_path_factory.mktemp("tiny")))


def rollouts() -> StepBatch:
    # 3 prompts x 2 completions; row 3 is empty
    return make_rollouts([3, 5, 2], [4, 1, 7, 0, 3, 6], group_size=2, seed=1)


ADVANTAGES = torch.tensor([1.0, -1.0, 0.5, -0.5, -2.0, 2.0])


def trainer(spec: ModelSpec, stage: int = 0, **kw) -> DeepSpeedTrainer:
    return DeepSpeedTrainer(spec, total_steps=4, zero_stage=stage, deepspeed_config=SHARD,
                            optim=kw.pop("optim", OPTIM), micro_batch_size=2, **kw)


def test_group_parts_keep_groups_whole_and_in_order():
    parts = group_parts(torch.tensor([0, 0, 1, 1, 2, 2]), 2)
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3], [4, 5]]
    parts = group_parts(torch.tensor([0, 0, 2, 2, 2]), 3)  # 2 groups in 3 parts: the last is empty
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3, 4], []]


def test_mean_stats_average_each_key_over_the_steps_that_have_it():
    got = mean_stats([{"loss/policy": 1.0, "optim/skipped_steps": 0.0},
                      {"loss/policy": 3.0, "ppo/clip_frac": 0.5, "optim/skipped_steps": 1.0}])
    assert got == {"loss/policy": 2.0, "ppo/clip_frac": 0.5, "optim/skipped_steps": 1.0}


def plain_ppo(spec: ModelSpec, loss, parts: list[list[int]], epochs: int) -> dict:
    """PPO by hand: π_old of every row at the start, then one AdamW step per part (prompt indices)
    and epoch, each loss over its part's rows alone (normalised over them)."""
    model = load_model(spec).eval()
    adamw = torch.optim.AdamW(param_groups(model, OPTIM.weight_decay), lr=OPTIM.lr, betas=OPTIM.betas, eps=OPTIM.eps)
    ro = rollouts()
    with torch.no_grad():
        old = plain_logprobs(model, ro)
    for _ in range(epochs):
        for prompts in parts:
            rows = [b * 2 + j for b in prompts for j in range(2)]
            part = subset(ro, prompts)
            width = part.mask_NT.shape[1]
            batch = part.with_columns(old_logp_NT=old[rows, :width], advantages_N=ADVANTAGES[rows])
            batch.norm = loss_norm(batch.mask_NT)
            adamw.zero_grad()
            value, _ = loss(plain_logprobs(model, part), batch)
            value.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM.grad_clip)
            adamw.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("stage", [0, 3])
def test_two_mini_batches_are_two_plain_torch_steps_from_one_pi_old(spec, stage):
    loss = ClippedSurrogate(clip_low=0.2, clip_high=0.2, aggregation="token_mean")
    want = plain_ppo(spec, loss, parts=[[0, 1], [2]], epochs=1)  # 3 groups in 2 mini-batches
    t = trainer(spec, stage, mini_batches=2)
    stats = t.update(rollouts().with_columns(advantages_N=ADVANTAGES), loss)
    assert_state_close(t.weights(), want, atol=1e-6)
    assert stats["optim/lr"] == pytest.approx(OPTIM.lr, abs=1e-12)
    # one step alone (the whole batch) is another update: the two-step result is not it
    one = plain_ppo(spec, loss, parts=[[0, 1, 2]], epochs=1)
    assert max(float((t.weights()[k] - one[k]).abs().max()) for k in one) > 1e-4


def test_a_second_epoch_moves_the_ratio_off_one_and_the_clip_bites(spec):
    loss = ClippedSurrogate(clip_low=0.002, clip_high=0.002, aggregation="token_mean")
    want = plain_ppo(spec, loss, parts=[[0, 1, 2]], epochs=2)
    t = trainer(spec, 0, epochs=2)
    stats = t.update(rollouts().with_columns(advantages_N=ADVANTAGES), loss)
    assert_state_close(t.weights(), want, atol=1e-6)
    # the first epoch is on-policy (ratio 1: nothing clipped); after one step at lr 1e-2 every token's
    # ratio has moved past 1 ± 0.002 in its advantage's direction (all clipped): the mean is (0 + 1) / 2
    assert stats["ppo/clip_frac"] == pytest.approx(0.5, abs=1e-6)
    once = trainer(spec, 0)
    assert once.update(rollouts().with_columns(advantages_N=ADVANTAGES), loss)["ppo/clip_frac"] == 0.0


def test_the_lr_schedule_counts_run_steps_not_optimizer_steps(spec):
    # warmup 2 run steps: factor (0+1)/3 for run step 0 and (1+1)/3 for run step 1, each shared by
    # its 2 x 2 optimizer steps (mini_batches 2, epochs 2)
    optim = OptimSettings(lr=1e-2, weight_decay=0.1, eps=1.0, grad_clip=2.0, warmup_steps=2)
    t = trainer(spec, 0, optim=optim, mini_batches=2, epochs=2)
    batch = rollouts().with_columns(advantages_N=ADVANTAGES)
    assert t.update(batch, ClippedSurrogate())["optim/lr"] == pytest.approx(1e-2 / 3, abs=1e-12)
    assert t.update(batch, ClippedSurrogate())["optim/lr"] == pytest.approx(2e-2 / 3, abs=1e-12)
    assert t.update(batch, ClippedSurrogate())["optim/lr"] == pytest.approx(1e-2, abs=1e-12)


def test_bad_sizes_are_one_line():
    with pytest.raises(ValueError, match=r"^mini_batches=0 and epochs=1 must be >= 1"):
        DeepSpeedTrainer(ModelSpec(path="unused"), total_steps=1, mini_batches=0)


def test_more_mini_batches_than_a_ranks_groups_is_refused_before_the_run():
    from rlrun.wiring.cli import compose
    from rlrun.wiring.settings import ConfigError, validate

    cfg = compose(["prompts_per_step=8", "trainer.mini_batches=5"])
    with pytest.raises(ConfigError, match=r"^trainer\.mini_batches=5 is more than the 4 prompt groups of a rank "
                                          r"\(prompts_per_step=8 over 2 rank\(s\)\)"):
        validate(cfg, world_size=2)
    assert validate(cfg, world_size=1).prompts_per_step == 8
