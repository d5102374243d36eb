"""A real 2-process DeepSpeed run on the CPU (torchrun, gloo): ZeRO stages 0, 2 and 3 with the
prompts split unevenly over the ranks must take the same step as one plain-torch process on the
union batch, and a ZeRO-3 checkpoint must resume identically. Runs in about 20-30 s."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from deepspeed_fixtures import build_tiny, make_batch, plain_logprobs, plain_step
from deepspeed_worker import LOSS, OPTIM, union_rollouts
from rlrun.engines.model import ModelSpec, load_model
from rlrun.engines.trainer.optim import lr_factor

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "deepspeed_worker.py")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tiny"))
    out = str(tmp_path_factory.mktemp("out"))
    spec = build_tiny(root)
    launcher_vars = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher_vars}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*torchrun, WORKER, root, out], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return spec, out, torch.load(os.path.join(out, "results.pt"), weights_only=False)


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_two_ranks_take_the_full_batch_step(run, stage):
    spec, _, results = run
    assert results["world_size"] == 2 and results["sharded"]
    union = union_rollouts()
    with torch.no_grad():
        plain = plain_logprobs(load_model(spec).eval(), union)
    lr = OPTIM.lr * lr_factor(0, OPTIM.warmup_steps, 4, OPTIM.schedule)  # warmup 1: 0.5 lr
    want_state, want_stats = plain_step(spec, union, make_batch(union, plain, plain, seed=2), LOSS, OPTIM, lr)
    got = results[stage]
    assert got["stats"]["optim/lr"] == pytest.approx(lr, abs=1e-12)
    for key, value in want_stats.items():
        assert got["stats"][key] == pytest.approx(value, abs=1e-5), key
    assert sorted(got["weights"]) == sorted(want_state)
    for key, value in want_state.items():
        torch.testing.assert_close(got["weights"][key], value, rtol=0, atol=1e-7, msg=key)
        torch.testing.assert_close(got["rollout"][key], value, rtol=0, atol=1e-7, msg=key)  # the synced engine


def test_zero3_sharded_checkpoint_resumes_identically(run):
    spec, out, results = run
    (want_stats, want), (got_stats, got) = results["second"], results["resumed"]
    assert got_stats == want_stats
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    saved = load_model(ModelSpec(path=os.path.join(out, "ckpt", "model"))).state_dict()
    for key, value in results[3]["weights"].items():  # the HF copy is the state after step 1
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0, msg=key)


def test_a_rank_that_skips_every_row_still_joins_the_reduction(run):
    """Rank 1's rows all have zero advantage: skipping them leaves it no loss statistics, and the
    update must neither hang nor change (a real two-task SLURM job hung here)."""
    _, _, results = run
    (skip_stats, skip_weights), (full_stats, full_weights) = results["skip"]
    assert sorted(skip_stats) == sorted(full_stats)
    for key, value in full_stats.items():
        assert skip_stats[key] == pytest.approx(value, abs=1e-6), key
    for key, value in full_weights.items():
        torch.testing.assert_close(skip_weights[key], value, rtol=0, atol=1e-6, msg=key)


def test_two_mini_batches_over_two_ranks_are_two_plain_steps(run):
    """trainer.mini_batches=2 on ZeRO-2: rank 0's groups (0, 1, 2) split as (0, 1) and (2), rank 1's
    (3) as (3) and nothing; so the steps are plain torch's on prompts {0, 1, 3} then {2}, each loss
    normalised over its own rows, from one π_old, both at run step 0's lr (warmup 1: 0.5 lr)."""
    from deepspeed_fixtures import subset
    from rlrun.core.losses import loss_norm
    from rlrun.engines.trainer.optim import param_groups

    spec, _, results = run
    union = union_rollouts()
    model = load_model(spec).eval()
    with torch.no_grad():
        plain = plain_logprobs(model, union)
    full = make_batch(union, plain, plain, seed=2)
    lr = OPTIM.lr * lr_factor(0, OPTIM.warmup_steps, 4, OPTIM.schedule)
    adamw = torch.optim.AdamW(param_groups(model, OPTIM.weight_decay), lr=lr, betas=OPTIM.betas, eps=OPTIM.eps)
    for prompts in ([0, 1, 3], [2]):
        rows = [b * 2 + j for b in prompts for j in range(2)]
        part = subset(union, prompts)
        width = part.mask_NT.shape[1]
        batch = part.with_columns(old_logp_NT=full.old_logp_NT[rows, :width], advantages_N=full.advantages_N[rows],
                                  ref_logp_NT=full.ref_logp_NT[rows, :width])
        batch.norm = loss_norm(batch.mask_NT)
        adamw.zero_grad()
        LOSS(plain_logprobs(model, part), batch)[0].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM.grad_clip)
        adamw.step()
    stats, weights = results["mini"]
    assert stats["optim/lr"] == pytest.approx(lr, abs=1e-12)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(weights[key], value, rtol=0, atol=1e-6, msg=key)
