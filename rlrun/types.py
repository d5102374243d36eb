"""The whole contract of rlrun in one file: the step batch that flows through a step
(``Problem``, ``StepBatch``, ``LossNorm``: their code is in ``rlrun/batch.py``), the protocols of the pieces that produce and
consume it, and the capabilities a piece may declare (DESIGN.md sections 3 and 4).

Shape suffixes: ``_B`` per prompt, ``_N`` per completion (N = B * G, the G completions of
prompt b are rows b*G .. b*G+G-1), ``_NT`` per response token (right-padded), ``_G`` per group.
Lengths are tokens and are named ``*_tokens``. Booleans read as predicates.

**Capabilities are declared, not probed.** What a piece can do beyond its call is one of the small
``runtime_checkable`` Protocols at the end of this file (``Stateful``, ``HasMetrics``, ``Refills``,
``NeedsMonitor``, ``UsesCollectives``, ...). A piece says what it is by implementing one; the
runtime asks with ``isinstance`` in one place per capability, never with ``hasattr``.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Union, runtime_checkable

import torch

from rlrun.batch import ROW_FIELDS, LossNorm, Problem, StepBatch, columns, row  # noqa: F401  (the step's data)

# What a rollout engine loads: a state dict, or (name, tensor) pairs handed over one at a time.
Weights = Union[Mapping[str, torch.Tensor], Iterable[tuple[str, torch.Tensor]]]


def weight_items(weights: Weights) -> Iterable[tuple[str, torch.Tensor]]:
    """``weights`` as ``(name, tensor)`` pairs, whichever of the two forms it came in."""
    return weights.items() if isinstance(weights, Mapping) else weights


@dataclass
class Verdicts:
    """The verifier's judgement per completion: never shaped (ALGORITHMS.md section 0.1)."""

    correct_N: torch.Tensor  # float 0/1
    format_ok_N: torch.Tensor  # float 0/1
    predicted: list[str | None]


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


@dataclass(frozen=True)
class Sampling:
    """Sampling settings for one ``generate`` call; None keeps the engine's own (``rollout.*``).
    The evaluation may sample unlike training (``eval.temperature=0.6``, the papers' setting)."""

    temperature: float | None = None
    top_p: float | None = None


# -- the pieces ---------------------------------------------------------------------------------
class Verifier(Protocol):
    def __call__(self, batch: StepBatch) -> Verdicts: ...


class Reward(Protocol):
    """Reads the batch with the verifier's columns and ``step``; a term is ``fn(batch) -> (N,)``."""

    def __call__(self, batch: StepBatch) -> Scored: ...


class Advantage(Protocol):
    def __call__(self, batch: StepBatch) -> torch.Tensor:
        """One advantage per completion of ``batch`` (the reward's columns filled)."""
        ...


class Filter(Protocol):
    """Which completions take part in the update (GFPO's top-k of G', DAPO's dynamic sampling):
    the advantage is computed over the kept rows only, the others are not trained on. A filter
    that may ask for more prompts declares :class:`Refills`."""

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        """Boolean keep mask (N,)."""
        ...


class Loss(Protocol):
    """``needs_reference`` tells the trainer whether to compute ``ref_logp_NT``. Returns the scalar to
    minimise for one micro-batch and detached per-batch statistics (``loss/policy``, ``loss/kl``,
    ``ppo/clip_frac``) already scaled like the loss. ``zero_advantage_is_zero_loss`` promises that a
    row with advantage 0 adds exactly 0 to the loss and its statistics: the trainer may then skip
    its forward and backward."""

    needs_reference: bool
    zero_advantage_is_zero_loss: bool

    def __call__(
        self, logp_NT: torch.Tensor, batch: StepBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


class Curriculum(Protocol):
    def budgets(self, step: int, problems: list[Problem]) -> list[int]: ...

    def observe(self, step: int, metrics: dict[str, float]) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class PromptTransform(Protocol):
    """Rewrites a step's prompts (LCPO's length instruction, a curriculum's stated budget)."""

    def __call__(self, problems: list[Problem], step: int) -> list[Problem]: ...


class Rollout(Protocol):
    def generate(self, problems: list[Problem], group_size: int, budgets: list[int],
                 sampling: Sampling | None = None) -> StepBatch: ...

    def load_weights(self, weights: Weights) -> None:
        """The trainer's weights into the engine: a state dict or ``(name, tensor)`` pairs (a
        trainer's :meth:`Trainer.named_weights`, consumed to the end)."""
        ...


class Trainer(Protocol):
    tokenizer: Any

    def logprobs(self, batch: StepBatch, reference: bool = False) -> torch.Tensor:
        """Per-token log-probs of ``batch.completion_ids`` (no grad), right-padded with 0, as wide
        as the longest completion; ``reference=True`` uses the frozen reference model."""
        ...

    def entropies(self, batch: StepBatch) -> torch.Tensor:
        """The policy's full-vocabulary entropy (nats) at each position of ``batch.completion_ids``
        (the distribution each sampled token was drawn from; no grad), right-padded with 0."""
        ...

    def encode_prompt(self, turn: str, system: str | None = None) -> list[int]:
        """The prompt ids of the user's ``turn`` in the model's chat format, with ``system`` as the
        system prompt where given (rlrun.engines.chat.render_with_system)."""
        ...

    def update(self, batch: StepBatch, loss: Loss) -> dict[str, float]:
        """One optimizer step over ``batch`` (micro-batched, gradient accumulation), returning
        the loss statistics summed over micro-batches and ranks (each is already divided by the
        mini-batch's global denominators, so the sum is the mini-batch value) plus ``optim/lr`` and
        ``optim/grad_norm``."""
        ...

    def weights(self) -> dict[str, torch.Tensor]: ...

    def weight_names(self) -> list[str]: ...

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The state dict one entry at a time (under ZeRO-3 gathered one parameter at a time; a
        collective: every rank consumes all of it)."""
        ...

    def save(self, directory: str) -> None: ...

    def load(self, directory: str) -> None: ...


class Logger(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self, summary: dict[str, Any]) -> None: ...


class DataSource(Protocol):
    """``data.source``: the training prompts of a step (this rank's share) and a held-out split."""

    def batch(self, step: int, n: int, rank: int, world: int, **extra: Any) -> list[Problem]: ...

    def held_out(self, n: int) -> list[Problem]: ...


# -- capabilities: what a piece may declare beyond its call ------------------------------------
# Each is checked with isinstance in one place of the runtime (rlrun/runtime/capabilities.py lists
# the helpers; checkpoint.py, loop.py, sampling.py, evaluation.py, monitor.py and build.py ask).
@runtime_checkable
class Stateful(Protocol):
    """Keeps state across a resume (curricula, HAPO's history, LASER-D's targets): checkpointed."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class HasMetrics(Protocol):
    """Reports numbers about itself each step (``verify/errors``, LASER-D's targets, ...)."""

    def metrics(self) -> dict[str, float]: ...


@runtime_checkable
class HasBatchMetrics(Protocol):
    """Reports this rank's numbers about the step's batch (a curriculum's stated budget), which the
    runtime averages over ranks."""

    def batch_metrics(self, batch: StepBatch) -> dict[str, float]: ...


@runtime_checkable
class MeasuresEval(Protocol):
    """Adds evaluation numbers (LCPO's |length - target|) as ``{name: (sum, count)}`` over this
    rank's completions; the runtime sums over ranks and leaves out a name no rank counted."""

    def eval_sums(self, batch: StepBatch) -> dict[str, tuple[float, float]]: ...


@dataclass(frozen=True)
class PolicyRequest:
    """Per-token scores of the step's completions under the policy that sampled them (pi_old), which
    a reward term asks the trainer for before it is called (:class:`AsksPolicy`): ``kind`` ``logp``
    (log pi(o_t | prompt, o_<t) of each sampled token) or ``entropy`` (the full-vocabulary entropy at
    each position); ``turn`` None scores each completion after its own prompt, else after the prompt
    of this user turn (with ``system`` as the system prompt, None: the model's own) in the model's
    chat format. The result is ``batch.policy_NT[request.key]``, (N, T) right-padded with 0."""

    kind: str = "logp"
    turn: str | None = None
    system: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("logp", "entropy"):
            raise ValueError(f"PolicyRequest kind={self.kind!r}; choose logp or entropy")

    @property
    def key(self) -> str:
        return self.kind if self.turn is None else f"{self.kind}|system={self.system!r}|turn={self.turn!r}"


@runtime_checkable
class AsksPolicy(Protocol):
    """A reward term that reads the policy's scores of the step's completions (SAR's log-probs with
    and without the question, PEAR's entropies): the runtime has the trainer compute each of
    ``policy_requests`` (one forward pass each, shared between terms asking the same) before the
    reward is called (rlrun.runtime.policy_scores). A collective where the trainer's forward is one."""

    policy_requests: tuple[PolicyRequest, ...]


@runtime_checkable
class Refills(Protocol):
    """A filter that asks for more prompts until every prompt slot of the step holds a kept group
    (DAPO's dynamic sampling): at most ``max_rounds`` rounds, then ``when_short`` (``error`` or
    ``train`` on what was kept)."""

    max_rounds: int
    when_short: str


@runtime_checkable
class NeedsMonitor(Protocol):
    """A reward term that chooses its targets from a monitor set (LASER-D/DE): ``monitor`` names the
    set (``data``/``eval`` are sampled by the runtime), ``monitor_problems`` its size, ``due(step)``
    when, and ``observe_monitor`` takes every rank's responses."""

    monitor: str
    monitor_problems: int

    def due(self, step: int) -> bool: ...

    def observe_monitor(self, correct_N: torch.Tensor, length_N: torch.Tensor,
                        group_N: torch.Tensor, step: int) -> None: ...


@runtime_checkable
class UsesCollectives(Protocol):
    """Statistics over every rank's rows or prompts (DLER, A-DLP, HAPO, GRPO-lambda, GFPO adaptive,
    LSPO): the runtime sets ``collectives`` (``rlrun.core.collectives.Collectives``) at build."""

    collectives: Any


@runtime_checkable
class HasParts(Protocol):
    """A composite (a reward's terms, chained filters or prompt transforms): capabilities are
    looked for in its parts too."""

    def parts(self) -> list[Any]: ...


@runtime_checkable
class ProvidesPromptFacts(Protocol):
    """Writes facts into ``Problem.meta``: ``target_length`` (LCPO), ``stated_budget`` (a budget
    curriculum)."""

    provides: tuple[str, ...]


@runtime_checkable
class RequiresPromptFacts(Protocol):
    """A reward term that reads facts a transform or curriculum writes (checked at build)."""

    requires: tuple[str, ...]


@runtime_checkable
class ChecksReward(Protocol):
    """A prompt transform that tells at build whether the reward scores what it writes."""

    def check_reward(self, reward: Any) -> None: ...


@runtime_checkable
class RewritesPrompts(Protocol):
    """A curriculum whose ``prompts`` transform runs after the algorithm's (a stated budget)."""

    prompts: Callable[[list[Problem], int], list[Problem]]


@runtime_checkable
class FiltersPrompts(Protocol):
    """A curriculum whose ``filter`` runs after the algorithm's filter (LSPO)."""

    filter: Any


@runtime_checkable
class HasMonitorSet(Protocol):
    """A data source with a fixed sample of its training data (``monitor=data``)."""

    def monitor(self, n: int) -> list[Problem]: ...


@runtime_checkable
class HasPromptTemplate(Protocol):
    """A data source with a prompt template (vendored benchmarks are shown with it in the loop)."""

    prompt: str


class UpdatesFailed(RuntimeError):
    """Raised by a trainer's ``update`` when updates keep failing (``trainer.max_bad_steps`` NaN/inf
    updates in a row): the loop checkpoints the last good state and the run stops."""


class RolloutMismatch(RuntimeError):
    """The rollout engine's log-probs left the trainer's (a ``ChecksRollout`` engine's check): the
    run stops in one line."""


@runtime_checkable
class ChecksRollout(Protocol):
    """A rollout engine that checks its log-probs against the trainer's (at start, step 0, and
    after steps, with that step's metrics) and raises :class:`RolloutMismatch` when they part. A
    collective where the trainer's forward is one: every rank calls it at the same steps."""

    def check(self, step: int, metrics: dict[str, float] | None, trainer: Trainer) -> None: ...


@runtime_checkable
class SleepsRollout(Protocol):
    """A rollout engine that can give its accelerator memory back while the trainer updates: the loop
    calls ``sleep`` after sampling; the engine wakes itself (weights first, re-synced by the next
    ``load_weights``, then its cache) before it samples again."""

    def sleep(self) -> None: ...


@runtime_checkable
class ContinuesFromIds(Protocol):
    """A rollout engine that samples from prompts given as token ids (a prompt followed by tokens
    already sampled and text written in: budget forcing, ``rlrun.runtime.forcing``), and holds the
    token ids of the model's end-of-thinking marker and answer cue (``model.think_end``,
    ``model.answer_cue``) and its tokenizer. ``generate_from`` is ``generate`` with
    ``prompt_ids[b]`` put to the model as prompt ``b`` instead of ``problems[b]``'s encoded prompt."""

    think_end_ids: tuple[int, ...]
    answer_cue_ids: tuple[int, ...]
    tokenizer: Any

    def generate_from(self, problems: list[Problem], group_size: int, prompt_ids: list[list[int]],
                      budgets: list[int], sampling: Sampling | None = None) -> StepBatch: ...


@runtime_checkable
class CarriesHistory(Protocol):
    """A logger with a history of its own (W&B): a resumed run hands it the lines already logged up
    to the checkpoint (``metrics.jsonl`` of the run being resumed) to log what it lacks."""

    def carry(self, lines: list[dict[str, Any]]) -> None: ...


@runtime_checkable
class Closable(Protocol):
    """Holds processes or files to release at the end (math-verify's workers)."""

    def close(self) -> None: ...
