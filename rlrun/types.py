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
    group_index: torch.Tensor | None = None  # set by select(); else rows are grouped in order

    @property
    def group_N(self) -> torch.Tensor:
        """Index into ``problems`` (the group) of each completion."""
        if self.group_index is not None:
            return self.group_index
        return torch.arange(len(self.problems)).repeat_interleave(self.group_size)

    @property
    def sampled_tokens_N(self) -> torch.Tensor:
        """Sampled tokens per completion, EOS included when one was emitted (verl's response-mask
        length, the ``|o|`` of several papers); ``length_tokens_N`` is the same without EOS."""
        return torch.tensor([len(ids) for ids in self.completion_ids], dtype=torch.long)

    @property
    def answers_N(self) -> list[str]:
        return [self.problems[g].answer for g in self.group_N.tolist()]

    @staticmethod
    def cat(parts: list["Rollouts"]) -> "Rollouts":
        """One Rollouts holding the prompts and completions of ``parts`` (sampling rounds)."""
        if len(parts) == 1:
            return parts[0]
        offsets = torch.tensor([0] + [len(p.problems) for p in parts[:-1]]).cumsum(0)
        logps = [p.logp_NT for p in parts]
        width = max((t.shape[1] for t in logps if t is not None), default=0)
        return Rollouts(
            problems=[q for p in parts for q in p.problems],
            group_size=parts[0].group_size,
            prompt_ids=[ids for p in parts for ids in p.prompt_ids],
            completion_ids=[c for p in parts for c in p.completion_ids],
            texts=[t for p in parts for t in p.texts],
            length_tokens_N=torch.cat([p.length_tokens_N for p in parts]),
            truncated_N=torch.cat([p.truncated_N for p in parts]),
            budget_tokens_N=torch.cat([p.budget_tokens_N for p in parts]),
            logp_NT=None if any(t is None for t in logps) else torch.cat(
                [torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in logps]),
            group_index=torch.cat([p.group_N + int(o) for p, o in zip(parts, offsets)]),
        )

    def select(self, index: torch.Tensor) -> "Rollouts":
        """The completions ``index`` (e.g. those a filter kept); prompts stay as they are."""
        rows = index.tolist()
        return Rollouts(
            problems=self.problems,
            group_size=self.group_size,
            prompt_ids=self.prompt_ids,
            completion_ids=[self.completion_ids[i] for i in rows],
            texts=[self.texts[i] for i in rows],
            length_tokens_N=self.length_tokens_N[index],
            truncated_N=self.truncated_N[index],
            budget_tokens_N=self.budget_tokens_N[index],
            logp_NT=None if self.logp_NT is None else self.logp_NT[index],
            group_index=self.group_N[index],
        )

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

    @staticmethod
    def cat(parts: list["Verdicts"]) -> "Verdicts":
        return Verdicts(torch.cat([p.correct_N for p in parts]), torch.cat([p.format_ok_N for p in parts]),
                        [x for p in parts for x in p.predicted])


@dataclass
class Scored:
    """Shaped reward per completion and its named terms (``reward/<term>`` metrics).

    ``preference_N`` is the weighted sum of the terms that are not correctness (length and format
    terms), None when the reward has only correctness: algorithms that act on a preference among
    correct rollouts (DRPO) take it from here (ALGORITHMS.md 0.2).
    """

    reward_N: torch.Tensor
    terms: dict[str, torch.Tensor]
    preference_N: torch.Tensor | None = None

    @staticmethod
    def cat(parts: list["Scored"]) -> "Scored":
        preference = None if parts[0].preference_N is None else torch.cat([p.preference_N for p in parts])
        return Scored(torch.cat([p.reward_N for p in parts]),
                      {k: torch.cat([p.terms[k] for p in parts]) for k in parts[0].terms}, preference)


@dataclass
class AdvantageInput:
    """What filters and advantage estimators see for one step (this rank's completions).

    ``logp_NT`` are the sampling log-probs from the rollout engine (the policy that sampled,
    untempered), right-padded, with ``mask_NT``; they are pi_old for estimators that need it
    (DRPO's negative weights).
    """

    reward_N: torch.Tensor
    group_N: torch.Tensor
    correct_N: torch.Tensor
    length_tokens_N: torch.Tensor
    truncated_N: torch.Tensor
    preference_N: torch.Tensor | None = None
    logp_NT: torch.Tensor | None = None
    mask_NT: torch.Tensor | None = None
    step: int = 0

    @property
    def sampled_tokens_N(self) -> torch.Tensor:
        """Response tokens with EOS (``Rollouts.sampled_tokens_N``): +1 where the completion was
        not truncated."""
        return self.length_tokens_N + (~self.truncated_N.bool()).to(self.length_tokens_N.dtype)

    def select(self, index: torch.Tensor) -> "AdvantageInput":
        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[index]

        return AdvantageInput(
            reward_N=self.reward_N[index], group_N=self.group_N[index],
            correct_N=self.correct_N[index], length_tokens_N=self.length_tokens_N[index],
            truncated_N=self.truncated_N[index], preference_N=pick(self.preference_N),
            logp_NT=pick(self.logp_NT), mask_NT=pick(self.mask_NT), step=self.step,
        )


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
    total_groups: float = 0.0  # Q: prompts (groups) with at least one row in the mini-batch


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
    def __call__(self, inp: AdvantageInput) -> torch.Tensor:
        """One advantage per completion of ``inp``."""
        ...


class Filter(Protocol):
    """Which completions take part in the update (GFPO's top-k of G', DAPO's dynamic sampling):
    the advantage is computed over the kept rows only, the others are not trained on.
    ``max_rounds`` > 1 asks the loop to sample more prompts until every one of the step's prompt
    slots holds a kept group, at most that many sampling rounds (DAPO)."""

    max_rounds: int

    def __call__(self, inp: AdvantageInput) -> torch.Tensor:
        """Boolean keep mask (N,)."""
        ...


class Loss(Protocol):
    """``needs_reference`` tells the trainer whether to compute ``ref_logp_NT``. Returns the scalar to
    minimise for one micro-batch and detached per-batch statistics (``loss/policy``, ``loss/kl``,
    ``ppo/clip_frac``) already scaled like the loss. Optional ``zero_advantage_is_zero_loss = True``
    promises that a row with advantage 0 adds exactly 0 to the loss and its statistics: the trainer
    then skips its forward and backward."""

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
        the loss statistics summed over micro-batches and ranks (each is already divided by the
        mini-batch's global denominators, so the sum is the mini-batch value) plus ``optim/lr`` and
        ``optim/grad_norm``."""
        ...

    def weights(self) -> dict[str, torch.Tensor]: ...

    def save(self, directory: str) -> None: ...

    def load(self, directory: str) -> None: ...


class Logger(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self, summary: dict[str, Any]) -> None: ...
