"""The whole contract of rlrun in one file: the step batch that flows through a step, the
protocols of the pieces that produce and consume it, and the capabilities a piece may declare
(DESIGN.md sections 3 and 4).

Shape suffixes: ``_B`` per prompt, ``_N`` per completion (N = B * G, the G completions of
prompt b are rows b*G .. b*G+G-1), ``_NT`` per response token (right-padded), ``_G`` per group.
Lengths are tokens and are named ``*_tokens``. Booleans read as predicates.

**Capabilities are declared, not probed.** What a piece can do beyond its call is one of the small
``runtime_checkable`` Protocols at the end of this file (``Stateful``, ``HasMetrics``, ``Refills``,
``NeedsMonitor``, ``UsesCollectives``, ...). A piece says what it is by implementing one; the
runtime asks with ``isinstance`` in one place per capability, never with ``hasattr``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

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


def row(**kwargs: Any) -> Any:
    """A per-completion column of :class:`StepBatch`: ``select`` and ``cat`` take its rows."""
    return field(metadata={"row": True}, **({"default": None} | kwargs))


@dataclass
class StepBatch:
    """One step's completions, column by column: what the rollout engine sampled, the verifier's
    verdicts, the shaped reward, the advantages and the update's log-probs. Filters, advantage
    estimators, reward terms, losses and the trainer all read this one batch; a new column is one
    line here (``row()``), and ``select``/``cat`` take it along.

    The rollout engine fills ``problems`` .. ``logp_NT``. ``completion_ids`` holds the sampled
    response tokens of each completion, including the EOS token when one was emitted.
    ``length_tokens_N`` counts response tokens *without* EOS (the length every length reward sees);
    ``truncated_N`` is true when the token budget ran out before EOS. ``mask_NT`` is 1.0 on each
    completion's sampled tokens (EOS included), 0.0 on right padding. ``logp_NT`` (optional) are
    the sampling log-probs of ``completion_ids`` under the untempered policy, right-padded: pi_old
    for estimators that need it (DRPO's negative weights). ``group_N`` indexes ``problems``.

    The loop adds ``step`` and the verifier's columns (``correct_N`` float 0/1, ``format_ok_N``,
    ``predicted``: never shaped, ALGORITHMS.md 0.1), then the reward's (``reward_N``, the unweighted
    ``terms``, ``preference_N``), then ``advantages_N`` and ``ref_logp_NT`` (the frozen reference's
    log-probs, None without KL). ``old_logp_NT`` are pi_old's log-probs in the update, or None when
    it is on-policy (one optimizer step on a batch sampled by the current weights): the trainer
    then uses the detached log-probs of its own forward pass (verl and TRL do the same,
    ALGORITHMS.md 1.1.5). ``norm`` holds the update's global denominators, set by the trainer.
    """

    # per prompt (rows point here through group_N) and per step
    problems: list[Problem] = field(default_factory=list)
    prompt_ids: list[list[int]] = field(default_factory=list)
    group_size: int = 1
    step: int = 0
    # per completion: the rollout engine's
    completion_ids: list[list[int]] | None = row()
    texts: list[str] | None = row()
    length_tokens_N: torch.Tensor | None = row()
    truncated_N: torch.Tensor | None = row()
    budget_tokens_N: torch.Tensor | None = row()
    group_N: torch.Tensor | None = row()
    mask_NT: torch.Tensor | None = row()
    logp_NT: torch.Tensor | None = row()
    # the verifier's
    correct_N: torch.Tensor | None = row()
    format_ok_N: torch.Tensor | None = row()
    predicted: list[str | None] | None = row()
    # the reward's
    reward_N: torch.Tensor | None = row()
    terms: dict[str, torch.Tensor] | None = row()
    preference_N: torch.Tensor | None = row()
    # the algorithm's and the update's
    advantages_N: torch.Tensor | None = row()
    old_logp_NT: torch.Tensor | None = row()
    ref_logp_NT: torch.Tensor | None = row()
    norm: LossNorm | None = None

    def __post_init__(self) -> None:
        if self.group_N is None and self.problems:
            self.group_N = torch.arange(len(self.problems)).repeat_interleave(self.group_size)
        if self.mask_NT is None and self.completion_ids is not None:
            width = max((len(c) for c in self.completion_ids), default=0)
            self.mask_NT = torch.zeros(len(self.completion_ids), width)
            for r, ids in enumerate(self.completion_ids):
                self.mask_NT[r, : len(ids)] = 1.0

    def __len__(self) -> int:
        for f in ROW_FIELDS:
            value = getattr(self, f)
            if value is not None and not isinstance(value, dict):
                return len(value)
        return 0

    @property
    def sampled_tokens_N(self) -> torch.Tensor:
        """Sampled tokens per completion, EOS included when one was emitted (verl's response-mask
        length, the ``|o|`` of several papers): the length of ``completion_ids``, or, in a batch
        made without token ids, ``length_tokens_N`` + 1 where not truncated."""
        if self.completion_ids is not None:
            return torch.tensor([len(ids) for ids in self.completion_ids], dtype=torch.long)
        return self.length_tokens_N + (~self.truncated_N.bool()).to(self.length_tokens_N.dtype)

    @property
    def answers_N(self) -> list[str]:
        return [self.problems[g].answer for g in self.group_N.tolist()]

    def with_columns(self, **columns: Any) -> StepBatch:
        """This batch with ``columns`` set (the other columns shared, not copied)."""
        return dataclasses.replace(self, **columns)

    def select(self, index: torch.Tensor) -> StepBatch:
        """The completions ``index`` (e.g. those a filter kept), every row column alike; prompts
        stay as they are (``group_N`` still points into ``problems``)."""
        rows = index.tolist()

        def pick(value: Any) -> Any:
            if value is None:
                return None
            if isinstance(value, torch.Tensor):
                return value[index]
            if isinstance(value, dict):
                return {k: v[index] for k, v in value.items()}
            return [value[i] for i in rows]

        return dataclasses.replace(self, **{f: pick(getattr(self, f)) for f in ROW_FIELDS})

    @staticmethod
    def cat(parts: list[StepBatch]) -> StepBatch:
        """One batch holding the prompts and completions of ``parts`` (sampling rounds), in order;
        per-token columns are right-padded with 0 to the widest part."""
        if len(parts) == 1:
            return parts[0]
        offsets = torch.tensor([0] + [len(p.problems) for p in parts[:-1]]).cumsum(0)
        columns: dict[str, Any] = {}
        for name in ROW_FIELDS:
            values = [getattr(p, name) for p in parts]
            if name == "group_N":
                columns[name] = torch.cat([v + int(o) for v, o in zip(values, offsets)])
            elif any(v is None for v in values):
                columns[name] = None
            elif isinstance(values[0], dict):
                columns[name] = {k: torch.cat([v[k] for v in values]) for k in values[0]}
            elif isinstance(values[0], torch.Tensor):
                columns[name] = _cat_padded(values) if name.endswith("_NT") else torch.cat(values)
            else:
                columns[name] = [x for v in values for x in v]
        return dataclasses.replace(parts[0], problems=[q for p in parts for q in p.problems],
                                   prompt_ids=[ids for p in parts for ids in p.prompt_ids], **columns)


def _cat_padded(values: list[torch.Tensor]) -> torch.Tensor:
    width = max(t.shape[1] for t in values)
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in values])


ROW_FIELDS = tuple(f.name for f in dataclasses.fields(StepBatch) if f.metadata.get("row"))


def columns(result: Any) -> dict[str, Any]:
    """A piece's result dataclass (``Verdicts``, ``Scored``) as step-batch columns."""
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}


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


@dataclass
class LossNorm:
    """Denominators of the loss aggregation over the whole optimisation mini-batch (all ranks and
    micro-batches), so that summing micro-batch losses gives the full-batch loss exactly
    (ALGORITHMS.md section 1.2.3, "Scope of the means")."""

    total_tokens: float  # sum of |o_i| over the mini-batch
    total_rows: float  # N': rows with |o_i| > 0
    total_groups: float = 0.0  # Q: prompts (groups) with at least one row in the mini-batch


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

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None: ...


class Trainer(Protocol):
    tokenizer: Any

    def logprobs(self, batch: StepBatch, reference: bool = False) -> torch.Tensor:
        """Per-token log-probs of ``batch.completion_ids`` (no grad), right-padded with 0, as wide
        as the longest completion; ``reference=True`` uses the frozen reference model."""
        ...

    def update(self, batch: StepBatch, loss: Loss) -> dict[str, float]:
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


class DataSource(Protocol):
    """``data.source``: the training prompts of a step (this rank's share) and a held-out split."""

    def batch(self, step: int, n: int, rank: int, world: int, **extra: Any) -> list[Problem]: ...

    def held_out(self, n: int) -> list[Problem]: ...


# -- capabilities: what a piece may declare beyond its call ------------------------------------
@runtime_checkable
class Stateful(Protocol):
    """Keeps state across a resume (curricula, HAPO's history, LASER-D's targets, ...):
    checkpoints save and restore it."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class HasMetrics(Protocol):
    """Reports numbers about itself each step (``verify/errors``, LASER-D's targets, ...)."""

    def metrics(self) -> dict[str, float]: ...


@runtime_checkable
class HasBatchMetrics(Protocol):
    """Reports per-step numbers about the step's batch (a curriculum's stated budget): this
    rank's means, averaged over ranks by the runtime."""

    def batch_metrics(self, batch: StepBatch) -> dict[str, float]: ...


@runtime_checkable
class MeasuresEval(Protocol):
    """Adds evaluation numbers of its own (LCPO's |length - target|): per name ``(sum, count)``
    over this rank's completions, summed over ranks by the runtime; a name whose count is 0 on
    every rank is left out."""

    def eval_sums(self, batch: StepBatch) -> dict[str, tuple[float, float]]: ...


@runtime_checkable
class Refills(Protocol):
    """A filter that asks for more prompts until every prompt slot of the step holds a kept group
    (DAPO's dynamic sampling): at most ``max_rounds`` sampling rounds; then ``when_short`` says
    whether to stop with an error (``error``) or train on what was kept (``train``)."""

    max_rounds: int
    when_short: str


@runtime_checkable
class NeedsMonitor(Protocol):
    """A reward term that chooses its targets from a monitor set (LASER-D/DE): ``monitor`` names
    the set (``data``/``eval``: the runtime samples it; anything else: none), ``monitor_problems``
    its size; ``due(step)`` says when; ``observe_monitor`` takes every rank's responses."""

    monitor: str
    monitor_problems: int

    def due(self, step: int) -> bool: ...

    def observe_monitor(self, correct_N: torch.Tensor, length_N: torch.Tensor,
                        group_N: torch.Tensor, step: int) -> None: ...


@runtime_checkable
class UsesCollectives(Protocol):
    """Computes statistics over every rank's completions or prompts (DLER, A-DLP, HAPO,
    GRPO-lambda, GFPO's adaptive difficulty, LSPO): the runtime sets ``collectives``
    (``rlrun.core.collectives.Collectives``) before the first step."""

    collectives: Any


@runtime_checkable
class HasParts(Protocol):
    """A composite (a reward's terms, chained filters, chained prompt transforms): capabilities
    are looked for in its parts too."""

    def parts(self) -> list[Any]: ...


@runtime_checkable
class ProvidesPromptFacts(Protocol):
    """A prompt transform that writes facts into ``Problem.meta`` (``target_length``: LCPO's
    target; ``stated_budget``: a curriculum's budget in the prompt)."""

    provides: tuple[str, ...]


@runtime_checkable
class RequiresPromptFacts(Protocol):
    """A reward term that reads facts a prompt transform writes (``ProvidesPromptFacts``)."""

    requires: tuple[str, ...]


@runtime_checkable
class ChecksReward(Protocol):
    """A prompt transform that can tell at start whether the reward scores what it writes."""

    def check_reward(self, reward: Any) -> None: ...


@runtime_checkable
class RewritesPrompts(Protocol):
    """A curriculum whose prompts state the budget (Train Long, Think Short; ThinkPrune): its
    ``prompts`` transform runs after the algorithm's."""

    prompts: Callable[[list[Problem], int], list[Problem]]


@runtime_checkable
class FiltersPrompts(Protocol):
    """A curriculum that also filters the step's groups (LSPO): ``filter`` runs after the
    algorithm's filter."""

    filter: Any


@runtime_checkable
class HasMonitorSet(Protocol):
    """A data source that gives a fixed sample of its training data (monitor=data)."""

    def monitor(self, n: int) -> list[Problem]: ...


@runtime_checkable
class HasPromptTemplate(Protocol):
    """A data source with a prompt template: vendored benchmarks are shown with it in the loop."""

    prompt: str


@runtime_checkable
class Closable(Protocol):
    """Holds processes or files to release at the end (math-verify's workers)."""

    def close(self) -> None: ...
