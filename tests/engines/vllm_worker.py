"""One rank of the 2-process vLLM weight-sync check (tests/engines/test_vllm_multiproc.py).

Run as ``torchrun --nproc_per_node 2 vllm_worker.py OUT`` in .venv-vllm: each rank holds its own
vLLM engine (in process; vLLM treats the two ranks as external data parallelism) and, for ZeRO
stages 0 and 3 in turn, a fresh DeepSpeed trainer of the shipped tiny model. Each rank samples its
own rows with its engine, the trainer takes one real update on them (a large learning rate, so the
greedy output moves), the weights stream into the engine (under ZeRO-3 one gathered parameter at a
time), and the engine's greedy probe batch is compared with the HF model holding the trainer's
updated weights: same tokens (the HF engine decoding greedily), and the trainer's log-probs on the
engine's tokens. Each rank writes ``OUT/rank{r}.pt``.
"""
from __future__ import annotations

import os
import sys

import torch

from rlrun.engines.rollout.hf import HFRollout
from rlrun.engines.rollout.vllm import PROBE_PROMPTS, PROBE_TOKENS, VLLMRollout
from rlrun.engines.trainer.deepspeed import DeepSpeedTrainer
from rlrun.core.losses import ClippedSurrogate
from rlrun.runtime import dist
from rlrun.tasks.arith import ArithProblems
from rlrun.tasks.tiny_model import tiny_model_spec
from rlrun.types import Problem, Sampling

LR = 5e-3  # one step must move the greedy probe output (checked in the test)


def hf_greedy(trainer: DeepSpeedTrainer) -> tuple[list[list[int]], torch.Tensor]:
    """The probe prompts decoded greedily by the HF model holding the trainer's current weights."""
    hf = HFRollout(trainer.spec, temperature=0.0)
    hf.load_weights(trainer.named_weights())  # a collective under ZeRO-3: every rank runs it
    problems = [Problem(uid=f"probe-{i}", prompt=text, answer="") for i, text in enumerate(PROBE_PROMPTS)]
    batch = hf.generate(problems, 1, [PROBE_TOKENS] * len(problems), Sampling(temperature=0.0))
    return batch.completion_ids, batch.logp_NT


def one_stage(engine: VLLMRollout, stage: int) -> dict:
    trainer = DeepSpeedTrainer(tiny_model_spec(), total_steps=1, zero_stage=stage, micro_batch_size=4,
                               optim={"lr": LR, "grad_clip": 0.0},
                               deepspeed_config={"zero_optimization": {"stage3_param_persistence_threshold": 0}})
    engine.load_weights(trainer.named_weights())  # the start: engine = trainer (earlier stages moved it)
    engine.check(0, None, trainer)  # names and probe at start
    before = engine.probe()
    torch.manual_seed(100 + dist.rank())  # each rank its own rows
    batch = engine.generate(ArithProblems(seed=dist.rank()).held_out(2), 4, [48, 48])
    old = trainer.logprobs(batch)
    signs = torch.tensor([1.0, -1.0]).repeat(len(batch) // 2)
    stats = trainer.update(batch.with_columns(old_logp_NT=old, advantages_N=signs),
                           ClippedSurrogate(kl_coef=0.0, aggregation="token_mean"))
    engine.load_weights(trainer.named_weights())
    after = engine.probe()
    engine.check(1, stats, trainer)  # the self-check after a step passes on a synced engine
    hf_ids, hf_logp = hf_greedy(trainer)
    return {
        "before_ids": before.completion_ids, "before_logp": before.logp_NT * before.mask_NT,
        "ids": after.completion_ids, "logp": after.logp_NT * after.mask_NT,
        "trainer_logp": trainer.logprobs(after) * after.mask_NT,
        "hf_ids": hf_ids, "hf_logp": hf_logp, "weights": trainer.weights(),
        "sharded": stage == 3 and all(p.ds_tensor.numel() < p.ds_numel
                                      for p in trainer.engine.module.parameters()),
    }


def main(out: str) -> None:
    torch.set_num_threads(1)
    dist.init()
    engine = VLLMRollout(tiny_model_spec(), max_model_len=512)
    results = {"world_size": dist.world_size(), **{stage: one_stage(engine, stage) for stage in (0, 3)}}
    torch.save(results, os.path.join(out, f"rank{dist.rank()}.pt"))
    dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
