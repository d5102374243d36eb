"""One rank of the multi-process DeepSpeed check (tests/engines/test_deepspeed_multiproc.py).

Run as ``torchrun --nproc_per_node 2 deepspeed_worker.py ROOT OUT [CHUNK]``: ROOT holds the tiny
model (deepspeed_fixtures.build_tiny), OUT receives rank 0's results. The prompts are split unevenly
(rank 0: prompts 0-2, rank 1: prompt 3) so that rank 1 runs empty micro-batches. For each ZeRO
stage: one update on the rank's rows; for stage 3 also save, a second update, then a fresh trainer
that loads the checkpoint and repeats the second update; then a ZeRO-2 update in which rank 1
skips all its rows (zero advantages), with and without skipping; then a ZeRO-2 update in 2 PPO
mini-batches (rank 1's second one empty). With CHUNK: only the ZeRO-3 update, with
``logprob_chunk=CHUNK``.
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from deepspeed_fixtures import make_batch, make_rollouts, subset  # noqa: E402

from rlrun.runtime import dist  # noqa: E402
from rlrun.core.losses import ClippedSurrogate  # noqa: E402
from rlrun.engines.model import ModelSpec  # noqa: E402
from rlrun.engines.rollout.hf import HFRollout  # noqa: E402
from rlrun.engines.trainer.deepspeed import DeepSpeedTrainer  # noqa: E402
from rlrun.engines.trainer.optim import OptimSettings  # noqa: E402
from rlrun.types import StepBatch  # noqa: E402

PROMPTS = {0: [0, 1, 2], 1: [3]}
OPTIM = OptimSettings(lr=1e-2, weight_decay=0.1, eps=1.0, grad_clip=2.0, warmup_steps=1, schedule="cosine")
LOSS = ClippedSurrogate(kl_coef=0.1, aggregation="token_mean")


def union_rollouts():
    return make_rollouts([3, 5, 2, 4], [4, 1, 7, 0, 3, 6, 2, 5], group_size=2, seed=1)


def local_batch(trainer: DeepSpeedTrainer, seed: int) -> StepBatch:
    """This rank's step batch: its rows of the union batch of ``make_batch(seed)``,
    with old/ref log-probs from the trainer itself."""
    union = union_rollouts()
    noise = make_batch(union, torch.zeros(union.mask_NT.shape), None, seed)
    mine = PROMPTS[dist.rank()]
    rows = [b * union.group_size + j for b in mine for j in range(union.group_size)]
    local = subset(union, mine)
    width = local.mask_NT.shape[1]
    return local.with_columns(
        old_logp_NT=trainer.logprobs(local) + noise.old_logp_NT[rows, :width],
        advantages_N=noise.advantages_N[rows],
        ref_logp_NT=trainer.logprobs(local, reference=True),
    )


def make_trainer(root: str, stage: int, **kw) -> DeepSpeedTrainer:
    spec = ModelSpec(path=os.path.join(root, "model"), tokenizer_path=os.path.join(root, "tokenizer"))
    extra = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}  # really shard the tiny model
    return DeepSpeedTrainer(
        spec, total_steps=4, zero_stage=stage, micro_batch_size=2, optim=OPTIM, deepspeed_config=extra, **kw
    )


def main(root: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init()
    results: dict = {"world_size": dist.world_size()}
    for stage in (0, 2, 3):
        trainer = make_trainer(root, stage)
        stats = trainer.update(local_batch(trainer, seed=2), LOSS)
        results[stage] = {"stats": stats, "weights": trainer.weights()}
        rollout = HFRollout(trainer.spec)  # the weight sync: streamed, under ZeRO-3 one gathered parameter at a time
        rollout.load_weights(trainer.named_weights())
        results[stage]["rollout"] = {k: v.clone() for k, v in rollout.model.state_dict().items()}
    params = list(trainer.engine.module.parameters())  # ZeRO-3: each rank holds a part of each
    results["sharded"] = all(p.ds_tensor.numel() < p.ds_numel for p in params)
    trainer.save(os.path.join(out, "ckpt"))
    results["second"] = trainer.update(local_batch(trainer, seed=3), LOSS), trainer.weights()
    resumed = make_trainer(root, 3)
    resumed.load(os.path.join(out, "ckpt"))
    results["resumed"] = resumed.update(local_batch(resumed, seed=3), LOSS), resumed.weights()
    results["skip"] = [skipped_update(root, skip) for skip in (True, False)]
    mini = make_trainer(root, 2, mini_batches=2)  # rank 1's one group: its second mini-batch is empty
    results["mini"] = mini.update(local_batch(mini, seed=2), LOSS), mini.weights()
    if dist.is_main():
        torch.save(results, os.path.join(out, "results.pt"))
    dist.barrier()


def skipped_update(root: str, skip: bool) -> tuple[dict, dict]:
    """One ZeRO-2 update where rank 1's rows all have zero advantage and the loss has no KL term:
    with ``skip``, rank 1 runs no loss at all (no statistics of its own), yet must join the
    reduction of rank 0's; the step equals the one without skipping."""
    trainer = make_trainer(root, 2, skip_zero_advantage=skip)
    batch = local_batch(trainer, seed=2)
    if dist.rank() == 1:
        batch = batch.with_columns(advantages_N=torch.zeros_like(batch.advantages_N))
    stats = trainer.update(batch, ClippedSurrogate(kl_coef=0.0, aggregation="token_mean"))
    return stats, trainer.weights()


def main_chunked(root: str, out: str, chunk: int) -> None:
    """Only the ZeRO-3 update, with log-probs over ``chunk`` completion positions at a time
    (tests/engines/test_chunked_logprobs.py); results as ``main``'s ``results[3]``."""
    torch.set_num_threads(1)
    dist.init()
    trainer = make_trainer(root, 3, logprob_chunk=chunk)
    stats = trainer.update(local_batch(trainer, seed=2), LOSS)
    results = {"world_size": dist.world_size(), 3: {"stats": stats, "weights": trainer.weights()}}
    if dist.is_main():
        torch.save(results, os.path.join(out, "results.pt"))
    dist.barrier()


if __name__ == "__main__":
    if len(sys.argv) > 3:  # ROOT OUT CHUNK
        main_chunked(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    else:
        main(sys.argv[1], sys.argv[2])
