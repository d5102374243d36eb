"""The whole contract of rlrun in one file: the data that flows through a step and the
protocols of the pieces that produce and consume it (DESIGN.md sections 3 and 4).

Shape suffixes: ``_B`` per prompt, ``_N`` per completion (N = B * G, the G completions of
prompt b are rows b*G .. b*G+G-1), ``_NT`` per response token (right-padded), ``_G`` per group.
Lengths are tokens and are named ``*_tokens``. Booleans read as predicates.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class Problem:
    """One question: the prompt text shown to the model and the gold answer the verifier checks.

    ``meta`` holds task-specific facts (difficulty, source, a per-prompt token target, ...).
    """

    uid: str
    prompt: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rollouts:
    """What a rollout engine returns for B prompts with G completions each.

    ``completion_ids`` holds the sampled response tokens of each completion, including the EOS
    token when one was emitted. ``length_tokens_N`` counts response tokens *without* EOS (the
    length every length reward sees); ``truncated_N`` is true when the token budget ran out before
    EOS. ``logp_NT`` (optional) are the sampling log-probs of ``completion_ids``, right-padded.
    """

    problems: list[Problem]
    group_size: int
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    texts: list[str]
    length_tokens_N: torch.Tensor
    truncated_N: torch.Tensor
    budget_tokens_N: torch.Tensor
    logp_NT: torch.Tensor | None = None

    @property
    def group_N(self) -> torch.Tensor:
        """Index of the prompt (group) each completion belongs to."""
        n_prompts = len(self.problems)
        return torch.arange(n_prompts).repeat_interleave(self.group_size)

    @property
    def answers_N(self) -> list[str]:
        return [p.answer for p in self.problems for _ in range(self.group_size)]

    def __len__(self) -> int:
        return len(self.completion_ids)

    def mask_NT(self) -> torch.Tensor:
        """1.0 on each completion's sampled tokens (EOS included), 0.0 on right padding."""
        width = max((len(c) for c in self.completion_ids), default=0)
        mask = torch.zeros(len(self.completion_ids), width)
        for row, ids in enumerate(self.completion_ids):
            mask[row, : len(ids)] = 1.0
        return mask


@dataclass
class Verdicts:
    """The verifier's judgement per completion: never shaped (ALGORITHMS.md section 0.1)."""

    correct_N: torch.Tensor  # float 0/1
    format_ok_N: torch.Tensor  # float 0/1
    predicted: list[str | None]


@dataclass
class Scored:
    """Shaped reward per completion and its named terms (``reward/<term>`` metrics)."""

    reward_N: torch.Tensor
    terms: dict[str, torch.Tensor]


@dataclass
class StepInput:
    """Everything a reward term may look at for one step."""

    rollouts: Rollouts
    verdicts: Verdicts
    step: int


@dataclass
class LossNorm:
    """Denominators of the loss aggregation over the whole optimisation mini-batch (all ranks and
    micro-batches), so that summing micro-batch losses gives the full-batch loss exactly
    (ALGORITHMS.md section 1.2.3, "Scope of the means")."""

    total_tokens: float  # sum of |o_i| over the mini-batch
    total_rows: float  # N': rows with |o_i| > 0


@dataclass
class TrainBatch:
    """One micro-batch of the update, as the loss sees it.

    ``mask_NT`` is 1 on response tokens up to and including EOS. ``old_logp_NT`` are the log-probs
    of the policy that sampled, or None when the update is on-policy (one optimizer step on a batch
    sampled by the current weights): then pi_old = pi_theta and the trainer uses the detached
    log-probs of its own forward pass, exactly what a separate no-grad pass would return, without
    paying for it (verl and TRL do the same, ALGORITHMS.md 1.1.5). ``ref_logp_NT`` are the frozen
    reference's log-probs (None without KL).
    """

    mask_NT: torch.Tensor
    old_logp_NT: torch.Tensor | None
    advantages_N: torch.Tensor
    norm: LossNorm | None = None  # set by the trainer over the whole mini-batch, all ranks
    ref_logp_NT: torch.Tensor | None = None
    group_N: torch.Tensor | None = None
    correct_N: torch.Tensor | None = None

    def rows(self, index: torch.Tensor) -> "TrainBatch":
        """The micro-batch made of rows ``index`` (the norm is kept: it is global)."""

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[index]

        return TrainBatch(
            mask_NT=self.mask_NT[index],
            old_logp_NT=None if self.old_logp_NT is None else self.old_logp_NT[index],
            advantages_N=self.advantages_N[index],
            norm=self.norm,
            ref_logp_NT=pick(self.ref_logp_NT),
            group_N=pick(self.group_N),
            correct_N=pick(self.correct_N),
        )


class Verifier(Protocol):
    def __call__(self, rollouts: Rollouts) -> Verdicts: ...


class Reward(Protocol):
    def __call__(self, step: StepInput) -> Scored: ...


class Advantage(Protocol):
    def __call__(self, reward_N: torch.Tensor, group_N: torch.Tensor) -> torch.Tensor: ...


class Loss(Protocol):
    """``needs_reference`` tells the trainer whether to compute ``ref_logp_NT``. Returns the scalar to minimise for one micro-batch and detached per-batch statistics
    (``loss/policy``, ``loss/kl``, ``ppo/clip_frac``) already scaled like the loss."""

    needs_reference: bool

    def __call__(
        self, logp_NT: torch.Tensor, batch: TrainBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


class Curriculum(Protocol):
    def budgets(self, step: int, problems: list[Problem]) -> list[int]: ...

    def observe(self, step: int, metrics: dict[str, float]) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Rollout(Protocol):
    def generate(
        self, problems: list[Problem], group_size: int, budgets: list[int]
    ) -> Rollouts: ...

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None: ...


class Trainer(Protocol):
    tokenizer: Any

    def logprobs(self, rollouts: Rollouts, reference: bool = False) -> torch.Tensor:
        """Per-token log-probs of ``rollouts.completion_ids`` (no grad), right-padded with 0,
        shape like ``rollouts.mask_NT()``; ``reference=True`` uses the frozen reference model."""
        ...

    def update(self, rollouts: Rollouts, batch: TrainBatch, loss: Loss) -> dict[str, float]:
        """One optimizer step over ``batch`` (micro-batched, gradient accumulation), returning
        the loss statistics averaged over ranks plus ``optim/lr`` and ``optim/grad_norm``."""
        ...

    def weights(self) -> dict[str, torch.Tensor]: ...

    def save(self, directory: str) -> None: ...

    def load(self, directory: str) -> None: ...


class Logger(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self, summary: dict[str, Any]) -> None: ...
