"""One step's completions: the step's prompts sampled, verified, rewarded and filtered.

A filter that declares ``Refills`` (DAPO's dynamic sampling, ``filter.max_rounds`` > 1) gets further
sampling rounds of new prompts until this rank's share of the step's prompt slots holds kept groups
(ALGORITHMS.md 1.4.3): every rank samples as many rounds as the rank shortest of kept groups, the first
kept groups fill the slots, and after ``max_rounds`` rounds the filter's ``when_short`` decides
between an error and training on what was kept.
"""
from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from rlrun.runtime import dist, memory
from rlrun.runtime.policy_scores import with_policy_scores
from rlrun.types import Refills, StepBatch, columns


@contextmanager
def timed(times: dict[str, float], stage: str):
    """Adds the block's wall seconds to ``time/<stage>_s`` and keeps its peak memory, the largest
    over the step's calls, in ``memory/<stage>_peak_gb`` (rlrun.runtime.memory)."""
    memory.reset_peak()
    start = time.perf_counter()
    yield
    times[f"time/{stage}_s"] = times.get(f"time/{stage}_s", 0.0) + time.perf_counter() - start
    key = f"memory/{stage}_peak_gb"
    times[key] = max(times.get(key, 0.0), memory.peak_gb())


def counted(batch: StepBatch, span: str) -> StepBatch:
    """``batch`` with its lengths counting ``span`` (``length.span``): ``response`` leaves it as the
    engine made it; ``thinking`` puts the thinking span (``StepBatch.thinking_tokens_N``) in
    ``length_tokens_N`` and makes ``sampled_tokens_N`` count it, so every length reward, filter and
    ``length/*`` metric counts only the tokens before the end-of-thinking marker."""
    if span == "response":
        return batch
    if span != "thinking":
        raise ValueError(f"length.span={span!r}; choose response or thinking")
    return batch.with_columns(length_tokens_N=batch.thinking_tokens_N, length_span="thinking")


@dataclass
class Sampled:
    """One step's completions of all sampling rounds (verdicts and reward included), the filter's
    keep mask, the budgets of the sampled prompts and the number of rounds."""

    batch: StepBatch
    keep_N: torch.Tensor
    budgets: list[int]
    rounds: int


def score(run, batch: StepBatch, step: int) -> tuple[StepBatch, torch.Tensor]:
    """The batch with the verifier's and the reward's columns, and the filter's keep mask."""
    batch = batch.with_columns(step=step, **columns(run.verifier(batch)))
    batch = with_policy_scores(run.trainer, run.reward, batch)  # what terms ask of the policy (SAR, PEAR)
    batch = batch.with_columns(**columns(run.reward(batch)))
    keep_N = torch.ones(len(batch), dtype=torch.bool) if run.filter is None else run.filter(batch)
    return batch, keep_N


def sample(run, step: int, times: dict[str, float]) -> Sampled:
    """Sample, verify, reward and filter the step's prompts (more rounds for a refilling filter)."""
    s = run.settings
    share = s.prompts_per_step // dist.world_size()
    refill = run.filter if isinstance(run.filter, Refills) else None
    max_rounds = 1 if refill is None else refill.max_rounds
    rounds: list[tuple[StepBatch, torch.Tensor]] = []
    budgets: list[int] = []
    kept_groups = 0
    for attempt in range(max_rounds):
        extra = {"attempt": attempt} if max_rounds > 1 else {}
        problems = run.problems.batch(step, s.prompts_per_step, dist.rank(), dist.world_size(), **extra)
        if run.prompts is not None:
            problems = run.prompts(problems, step)
        budgets += run.curriculum.budgets(step, problems)
        with timed(times, "rollout"):
            batch = counted(run.rollout.generate(problems, s.group_size, budgets[-len(problems):]), s.length.span)
        with timed(times, "reward"):
            batch, keep_N = score(run, batch, step)
        rounds.append((batch, keep_N))
        kept_groups += len(torch.unique(batch.group_N[keep_N]))
        if max_rounds == 1 or not dist.all_reduce_max(torch.tensor([int(kept_groups < share)])).item():
            break
    else:
        short(refill, kept_groups, share, max_rounds, step)
    batch = StepBatch.cat([b for b, _ in rounds])
    keep_N = torch.cat([k for _, k in rounds])
    if max_rounds > 1:  # the first `share` kept groups
        first = torch.unique(batch.group_N[keep_N])[:share]
        keep_N &= torch.isin(batch.group_N, first)
    return Sampled(batch, keep_N, budgets, len(rounds))


def short(refill: Refills, kept_groups: int, share: int, max_rounds: int, step: int) -> None:
    """After ``max_rounds`` rounds short of kept groups: stop (``when_short=error``) or warn."""
    message = (f"dynamic sampling kept {kept_groups} of the {share} groups this rank needs after "
               f"max_rounds={max_rounds} rounds at step {step + 1} (the filter's: algo.filter or, for LSPO, "
               "curriculum.filter)")
    if refill.when_short == "error":
        raise RuntimeError(f"{message}; raise its max_rounds or set its when_short=train")
    warnings.warn(f"{message}; training on the kept groups (when_short=train)", stacklevel=3)
