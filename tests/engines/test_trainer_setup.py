"""The trainer's precision (``trainer.precision=bf16``: bf16 module, fp32 master weights), gradient
checkpointing and the offloaded reference model, each against plain torch or against the trainer
without the option, on the tiny random Qwen2 of deepspeed_fixtures."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from deepspeed_fixtures import assert_same_update, build_tiny, make_batch, make_rollouts
from rlrun.core.losses import ClippedSurrogate, loss_norm
from rlrun.engines.model import ModelSpec, load_model
from rlrun.engines.trainer.deepspeed import DeepSpeedTrainer
from rlrun.engines.trainer.optim import OptimSettings, param_groups
from rlrun.engines.trainer.setup import training_spec
from rlrun.types import StepBatch

# lr 4e-5 is below half a bf16 step (2^-14 = 6.1e-5) of every weight with |w| >= 2^-6: one AdamW step
# (|update| ~ lr with eps 1e-8) cannot move such a weight in bf16 arithmetic; two steps summed in
# fp32 master weights (8e-5) can. So the weights that move prove the master copy.
LR = 4e-5
OPTIM = OptimSettings(lr=LR, weight_decay=0.0, eps=1e-8, grad_clip=0.0)


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> ModelSpec:
    return build_tiny(str(tmp_path_factory.mktemp("tiny")))


def rollouts():
    return make_rollouts([3, 5, 2], [4, 1, 7, 2, 3, 6], group_size=2, seed=1)


def logp_fp32(model: torch.nn.Module, ro: StepBatch) -> torch.Tensor:
    """One unpadded forward per row; log-softmax in fp32 of the model's (bf16) logits."""
    rows = []
    width = ro.mask_NT.shape[1]
    for i, completion in enumerate(ro.completion_ids):
        prompt = ro.prompt_ids[i // ro.group_size]
        logits = model(input_ids=torch.tensor([prompt + completion]), use_cache=False).logits[0, len(prompt) - 1 : -1]
        logits = logits.float()
        logp = logits.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1) - logits.logsumexp(-1)
        rows.append(torch.cat([logp, torch.zeros(width - len(completion))]))
    return torch.stack(rows)


def plain_bf16_steps(spec: ModelSpec, ro: StepBatch, batches: list[StepBatch], loss) -> dict:
    """Mixed precision in plain torch: forward and backward of the bf16 model, gradients cast to fp32
    master weights, AdamW on the masters, the masters rounded into the bf16 model after each step."""
    model = load_model(dataclasses.replace(spec, dtype="bfloat16")).eval()
    master = {n: torch.nn.Parameter(p.detach().float().clone()) for n, p in model.named_parameters()}
    groups = param_groups(model, OPTIM.weight_decay)  # the same grouping, mapped onto the masters
    by_id = {id(p): master[n] for n, p in model.named_parameters()}
    adamw = torch.optim.AdamW([{**g, "params": [by_id[id(p)] for p in g["params"]]} for g in groups],
                              lr=LR, betas=OPTIM.betas, eps=OPTIM.eps)
    for batch in batches:
        logp = logp_fp32(model, ro)
        full = StepBatch(**{**batch.__dict__, "norm": loss_norm(batch.mask_NT), "old_logp_NT": logp.detach()})
        value, _ = loss(logp, full)
        model.zero_grad()
        value.backward()
        for n, p in model.named_parameters():
            master[n].grad = p.grad.float()
        adamw.step()
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(master[n])
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_precision_resolves_into_the_dtype_the_trainer_loads(spec):
    assert training_spec(spec, "bf16").dtype == "bfloat16"
    assert training_spec(dataclasses.replace(spec, dtype="bfloat16"), "fp32").dtype == "float32"
    assert training_spec(spec, "auto") is spec
    with pytest.raises(ValueError, match=r"^trainer.precision='fp8' is not one of \('auto', 'fp32', 'bf16'\)$"):
        training_spec(spec, "fp8")


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_bf16_steps_equal_plain_torch_mixed_precision_with_fp32_master_weights(spec, stage):
    ro = rollouts()
    loss = ClippedSurrogate()
    t = DeepSpeedTrainer(spec, total_steps=4, zero_stage=stage, micro_batch_size=6, optim=OPTIM, precision="bf16")
    assert next(t.engine.module.parameters()).dtype == torch.bfloat16
    assert type(t.engine.optimizer).__name__ == ("BF16_Optimizer" if stage == 0 else "DeepSpeedZeroOptimizer" if stage == 2
                                                 else "DeepSpeedZeroOptimizer_Stage3")
    before = t.weights()
    batches = []
    for _ in range(2):  # the same advantages twice: both steps push each weight the same way
        batch = make_batch(ro, t.logprobs(ro), None, seed=2)
        batch.old_logp_NT = None  # on-policy: the ratio's denominator is the update's own forward
        batches.append(batch)
        t.update(batch, loss)
    got = t.weights()
    want = plain_bf16_steps(spec, ro, batches, loss)
    big = {k: (before[k].float().abs() >= 2**-6) & (before[k].float().abs() < 2**-5) for k in before}
    moved = sum(int(((got[k] != before[k]) & big[k]).sum()) for k in got)
    total = sum(int(m.sum()) for m in big.values())
    # pure bf16 AdamW would move none of these weights (see LR); the fp32 masters move most of them
    assert moved > 0.9 * total, (moved, total)
    differ = 0
    for key in want:
        assert got[key].dtype == torch.bfloat16
        gap = (got[key].float() - want[key].float()).abs()
        step = want[key].float().abs().clamp_min(2**-20) * 2**-7
        # equal, or apart by one bf16 step of the weight and the updates of a gradient whose sign
        # differs (a bf16 gradient near 0: at most 2 x lr a step)
        assert bool((gap <= (step + 4 * LR) * 1.01).all()), key
        differ += int((gap > 0).sum())
    assert differ < 0.02 * sum(v.numel() for v in want.values()), differ


def test_bf16_logprobs_are_fp32_values_of_the_bf16_model(spec):
    ro = rollouts()
    t = DeepSpeedTrainer(spec, total_steps=2, micro_batch_size=6, optim=OPTIM, precision="bf16")
    got = t.logprobs(ro)
    assert got.dtype == torch.float32
    with torch.no_grad():
        want = logp_fp32(load_model(dataclasses.replace(spec, dtype="bfloat16")).eval(), ro)
    torch.testing.assert_close(got, want, rtol=0, atol=0.05)  # bf16 activations: padded vs unpadded rows


@pytest.mark.parametrize("stage", [0, 3])
def test_gradient_checkpointing_recomputes_each_layer_and_takes_the_same_step(spec, stage, monkeypatch):
    from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP

    count = []
    forward = Qwen2MLP.forward  # counted in the class: module hooks do not run in the recomputation
    monkeypatch.setattr(Qwen2MLP, "forward", lambda self, x: count.append(1) or forward(self, x))
    ro = rollouts()
    loss = ClippedSurrogate(kl_coef=0.1)
    results, calls = [], []
    for checkpointing in (False, True):
        t = DeepSpeedTrainer(spec, total_steps=4, zero_stage=stage, micro_batch_size=2,
                             optim=OptimSettings(lr=1e-2, eps=1.0, grad_clip=2.0), gradient_checkpointing=checkpointing)
        batch = make_batch(ro, t.logprobs(ro), t.logprobs(ro, reference=True), seed=2)
        count.clear()
        results.append((t.update(batch, loss), t.weights()))
        calls.append(len(count))
    # 3 micro-batches x 2 layers: one MLP forward each, and with checkpointing one more in backward
    assert calls == [6, 12], calls
    assert_same_update(results[1], results[0], atol=1e-6)


def test_the_offloaded_reference_under_zero3_scores_as_the_plain_one(spec):
    ro = rollouts()
    plain = DeepSpeedTrainer(spec, total_steps=2, zero_stage=3, micro_batch_size=2, optim=OPTIM)
    offloaded = DeepSpeedTrainer(spec, total_steps=2, zero_stage=3, micro_batch_size=2, optim=OPTIM,
                                 reference_offload=True)
    torch.testing.assert_close(offloaded.logprobs(ro, reference=True), plain.logprobs(ro, reference=True),
                               rtol=0, atol=1e-6)
    assert offloaded._reference.zero_offload_param().device == "cpu"  # DeepSpeed's parsed config
    assert plain._reference.zero_offload_param() is None
