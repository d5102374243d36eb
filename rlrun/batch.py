"""The step's data: a question (``Problem``), the step batch (``StepBatch``: one step's completions,
column by column, with one generic ``select`` and ``cat``) and the update's global denominators
(``LossNorm``). Part of the contract in ``rlrun/types.py``, which exports them; their code lives here
so that the contract file stays readable. Imports only torch and the standard library."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

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
class LossNorm:
    """Denominators of the loss aggregation over the whole optimisation mini-batch (all ranks and
    micro-batches), so that summing micro-batch losses gives the full-batch loss exactly
    (ALGORITHMS.md section 1.2.3, "Scope of the means")."""

    total_tokens: float  # sum of |o_i| over the mini-batch
    total_rows: float  # N': rows with |o_i| > 0
    total_groups: float = 0.0  # Q: prompts (groups) with at least one row in the mini-batch


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
    think_end_ids: tuple[int, ...] = ()  # the end-of-thinking marker's token ids (model.think_end)
    length_span: str = "response"  # what lengths count: response | thinking (rlrun.runtime.sampling.counted)
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
    policy_NT: dict[str, torch.Tensor] | None = row()  # the policy's scores reward terms asked for (AsksPolicy)
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
        made without token ids, ``length_tokens_N`` + 1 where not truncated. Under
        ``length_span="thinking"`` the thinking span (no EOS in it): the length terms that count EOS
        count the thinking span too."""
        if self.length_span == "thinking":
            return self.thinking_tokens_N
        if self.completion_ids is not None:
            return torch.tensor([len(ids) for ids in self.completion_ids], dtype=torch.long)
        return self.length_tokens_N + (~self.truncated_N.bool()).to(self.length_tokens_N.dtype)

    @property
    def response_tokens_N(self) -> torch.Tensor:
        """The whole response's tokens, EOS not counted, whatever ``length_span`` says (from
        ``completion_ids``; ``length_tokens_N`` in a batch made without them). Shape (N,) long."""
        if self.completion_ids is None:
            return self.length_tokens_N.to(torch.long)
        ended = (~self.truncated_N.bool()).to(torch.long)
        return torch.tensor([len(ids) for ids in self.completion_ids], dtype=torch.long) - ended

    @property
    def thinking_tokens_N(self) -> torch.Tensor:
        """Response tokens before the first end-of-thinking marker (``think_end_ids``, e.g.
        ``</think>``): the thinking span. A response without the marker is all thinking (its
        ``length_tokens_N``, PEAR's convention k = T, ALGORITHMS.md 4.6.3); so is every response of a
        batch made without token ids or marker. Shape (N,) long."""
        return self._spans()[0]

    @property
    def answer_tokens_N(self) -> torch.Tensor:
        """Response tokens after the first end-of-thinking marker, EOS not counted: the answer span
        (0 for a response without the marker). ``thinking + marker + answer = length_tokens_N``
        where the marker was found. Shape (N,) long."""
        return self._spans()[1]

    def _spans(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(thinking, answer), found once per batch object: the metrics, PEAR and every length term
        under ``length.span=thinking`` ask (kept outside the fields; recomputed if the columns it
        reads are replaced)."""
        key = (id(self.completion_ids), id(self.truncated_N), id(self.length_tokens_N), self.think_end_ids)
        cached = self.__dict__.get("_span_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        spans = self._find_spans()
        self.__dict__["_span_cache"] = (key, spans)
        return spans

    def _find_spans(self) -> tuple[torch.Tensor, torch.Tensor]:
        length = self.response_tokens_N
        if self.completion_ids is None or not self.think_end_ids:
            return length.clone(), torch.zeros_like(length)
        marker = list(self.think_end_ids)
        thinking, answer = [], []
        for ids, n in zip(self.completion_ids, length.tolist()):
            at = find_marker(ids[:n], marker)
            thinking.append(n if at is None else at)
            answer.append(0 if at is None else n - at - len(marker))
        return torch.tensor(thinking, dtype=torch.long), torch.tensor(answer, dtype=torch.long)

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
                join = _cat_padded if name.endswith("_NT") else torch.cat
                columns[name] = {k: join([v[k] for v in values]) for k in values[0]}
            elif isinstance(values[0], torch.Tensor):
                columns[name] = _cat_padded(values) if name.endswith("_NT") else torch.cat(values)
            else:
                columns[name] = [x for v in values for x in v]
        return dataclasses.replace(parts[0], problems=[q for p in parts for q in p.problems],
                                   prompt_ids=[ids for p in parts for ids in p.prompt_ids], **columns)


def find_marker(ids: list[int], marker: list[int]) -> int | None:
    """The index of the first occurrence of ``marker`` in ``ids``, None where it does not occur."""
    first, width, at = marker[0], len(marker), 0
    while True:
        try:
            at = ids.index(first, at)
        except ValueError:
            return None
        if ids[at : at + width] == marker:
            return at
        at += 1


def _cat_padded(values: list[torch.Tensor]) -> torch.Tensor:
    width = max(t.shape[1] for t in values)
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in values])


ROW_FIELDS = tuple(f.name for f in dataclasses.fields(StepBatch) if f.metadata.get("row"))


def columns(result: Any) -> dict[str, Any]:
    """A piece's result dataclass (``Verdicts``, ``Scored``) as step-batch columns."""
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
