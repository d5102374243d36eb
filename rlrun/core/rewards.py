"""Shaped rewards: a weighted sum of named terms (ALGORITHMS.md 0.2), and the two unshaped terms.

A term is any callable ``fn(batch: StepBatch) -> Tensor_N``. ``Composite`` binds names and weights to
terms; the config group ``reward/`` builds one from yaml (``reward=[correct,format]`` merges the
``terms`` of both files, so their weighted sum is the reward).

A term that raises, or returns anything but one float per completion, stops the step with a
:class:`RewardError` of one line naming the term and, where it can be found, the completion.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Callable, Literal, get_args

import torch

from rlrun.types import HasMetrics, HasParts, NeedsMonitor, Scored, Stateful, StepBatch, UsesCollectives

Term = Callable[[StepBatch], torch.Tensor]
PROBE_BUDGET_S = 5.0  # the most time spent re-running a failed term on single completions
Gate = Literal["correct", "all"]  # which answers a length term applies to (``gate`` of the length terms)
GATES: tuple[str, ...] = get_args(Gate)


class RewardError(RuntimeError):
    """A reward term failed on the step's batch: it raised (the exception is ``__cause__``) or
    returned something other than a tensor of shape (N,). ``str()`` is one line naming the term
    ``term`` and the completion ``index`` of the batch it was given (None when unknown).

    A term is called on the whole batch, so its exception does not say which completion it came
    from. Only then, a term that declares no state, metrics, monitor, parts or collectives (re-running
    it changes nothing that is kept and waits for no other rank) is re-run on one completion at a
    time, for at most ``PROBE_BUDGET_S`` seconds, and the first completion that raises the same
    exception (type and message) on its own is named; otherwise the line says "on the step's batch"
    and why.
    """

    def __init__(self, message: str, term: str = "", index: int | None = None) -> None:
        super().__init__(message)
        self.term, self.index = term, index


class Composite:
    """The shaped reward as a weighted sum of named terms (ALGORITHMS.md 0.1 "r_N", 0.2 step 2):

        r_i = Σ_k w_k · term_k(i)

    ``terms`` maps a name to ``{"weight": w_k, "fn": term_k}``. Returns ``Scored(reward_N, terms,
    preference_N)`` where ``terms[name]`` is the **unweighted** term (logged as ``reward/<name>``)
    and ``preference_N = Σ_{k not correctness} w_k · term_k`` (None if every term is
    :class:`CorrectReward`): the preference among correct rollouts that DRPO consumes.
    Shapes: every term returns (N,) -> ``reward_N`` (N,) float32 (or the terms' float dtype).
    """

    def __init__(self, terms: Mapping[str, Mapping[str, Any]]) -> None:
        if not isinstance(terms, Mapping) or len(terms) == 0:
            raise ValueError("Composite needs at least one term: {name: {weight: float, fn: callable}}")
        self.weights: dict[str, float] = {}
        self.fns: dict[str, Term] = {}
        for name, term in terms.items():
            if str(name) == "total":
                raise ValueError("a reward term may not be named 'total' (reward/total is the sum)")
            if not isinstance(term, Mapping) or set(term.keys()) != {"weight", "fn"}:
                raise ValueError(f"reward term {name!r} must have exactly the keys 'weight' and 'fn'")
            if not callable(term["fn"]):
                raise ValueError(f"reward term {name!r}: fn {term['fn']!r} is not callable")
            self.weights[str(name)] = float(term["weight"])
            self.fns[str(name)] = term["fn"]

    def __call__(self, batch: StepBatch) -> Scored:
        values: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        for name, fn in self.fns.items():
            try:
                value = fn(batch)
            except RewardError:  # a nested composite's term: already named
                raise
            except Exception as error:  # noqa: BLE001 - named and re-raised as one line
                raise raised(name, fn, batch, error) from error
            if not isinstance(value, torch.Tensor) or value.shape != (len(batch),):
                got = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
                raise RewardError(f"reward term {name!r} returned {got} for a batch of {len(batch)} completions, "
                                  f"need a tensor of shape ({len(batch)},); fix the term or leave it out", name)
            if not value.is_floating_point():
                value = value.to(torch.float32)
            values[name] = value
            weighted = self.weights[name] * value
            total = weighted if total is None else total + weighted
        assert total is not None  # at least one term (checked in __init__)
        preference = None
        for name, value in values.items():
            if not isinstance(self.fns[name], CorrectReward):
                weighted = self.weights[name] * value
                preference = weighted if preference is None else preference + weighted
        return Scored(reward_N=total, terms=values, preference_N=preference)


    def parts(self) -> list[Any]:
        """The terms (``HasParts``: their capabilities are the reward's, e.g. collectives)."""
        return list(self.fns.values())

    def state_dict(self) -> dict[str, Any]:
        """The state of every term that keeps one (HAPO's history, adaptive weights, ...)."""
        return {name: fn.state_dict() for name, fn in self.fns.items() if isinstance(fn, Stateful)}

    def metrics(self) -> dict[str, float]:
        """What terms report about themselves (LASER-D's targets, A-DLP's lambda, ...), logged as
        ``reward/<term>/<key>``."""
        return {f"reward/{name}/{key}": float(value)
                for name, fn in self.fns.items() if isinstance(fn, HasMetrics)
                for key, value in fn.metrics().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, term_state in state.items():
            if name not in self.fns or not isinstance(self.fns[name], Stateful):
                raise ValueError(f"checkpoint has state for reward term {name!r}, which this reward "
                                 f"does not have a stateful term of: {sorted(self.fns)}")
            self.fns[name].load_state_dict(term_state)


def raised(name: str, fn: Term, batch: StepBatch, error: Exception) -> RewardError:
    """The one-line :class:`RewardError` for term ``name`` raising ``error`` on ``batch``."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    text = type(error).__name__ + (f": {text[:300]}" + ("..." if len(text) > 300 else "") if text else "")
    index, why = failing_completion(fn, batch, error)
    if index is None:
        where = f"on the step's batch of {len(batch)} completions ({why})"
    else:
        where = f"on completion {index} of the step's batch"
        if batch.group_N is not None and int(batch.group_N[index]) < len(batch.problems):
            prompt = int(batch.group_N[index])
            where += f" (prompt {prompt}, uid {batch.problems[prompt].uid!r})"
    return RewardError(f"reward term {name!r} raised {text} {where} at step {batch.step + 1}; "
                       f"fix the term or leave it out of the reward", name, index)


def failing_completion(fn: Term, batch: StepBatch, error: Exception) -> tuple[int | None, str]:
    """The first completion on which ``fn`` alone raises what it raised on the batch (same type and
    message), or None and why not. A term that declares state, metrics, a monitor, parts or
    collectives is not re-run: that could change its state or wait for other ranks."""
    if any(isinstance(fn, kind) for kind in (Stateful, HasMetrics, NeedsMonitor, HasParts, UsesCollectives)):
        return None, "which completion is unknown: a term with state, metrics or collectives is not re-run alone"
    deadline = time.monotonic() + PROBE_BUDGET_S
    for index in range(len(batch)):
        if time.monotonic() > deadline:
            return None, f"which completion is unknown: re-running the term alone took over {PROBE_BUDGET_S:g} s"
        try:
            fn(batch.select(torch.tensor([index])))
        except Exception as again:  # noqa: BLE001 - only compared with the batch's exception
            if type(again) is type(error) and str(again) == str(error):
                return index, ""
    return None, "which completion is unknown: none raises it alone"


class CorrectReward:
    """The verifier's correctness, unshaped (ALGORITHMS.md 0.1): ``term_i = correct_i`` ∈ {0, 1}.
    Outcome reward of GRPO (DeepSeekMath arXiv 2402.03300, Sec. 4.1.2).
    Shapes: ``batch.correct_N`` (N,) -> (N,) float32.
    """

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        return batch.correct_N.to(torch.float32)


class FormatReward:
    """The format reward R_f (Xin et al., arXiv 2505.19439, Eq. 1; ALGORITHMS.md 4.4.3):
    ``R_f = 1 if the format is right else 0``, with "format right" decided by the verifier
    (``format_ok_N``). The paper's weight is 1.0; the released code's is 0.5 (set it as the term's
    weight, ``reward.terms.format.weight=0.5``). Uses no gold answer.
    Shapes: ``batch.format_ok_N`` (N,) -> (N,) float32.
    """

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        return batch.format_ok_N.to(torch.float32)


def check_gate(gate: str, key: str = "gate") -> str:
    """``gate`` if it is one of :data:`GATES`, else a one-line ValueError naming it and the valid ones."""
    if gate not in GATES:
        raise ValueError(f"{key}={gate!r} is not a gate; valid: {', '.join(GATES)}")
    return gate


def gated(length_N: torch.Tensor, correct_N: torch.Tensor, gate: str) -> torch.Tensor:
    """A length term's part under its correctness gate (docs/rewards-and-curricula.md, "Which answers
    a length term applies to"): ``all`` keeps ``length_N`` for every completion, ``correct`` keeps it
    for the correct ones and gives the wrong ones 0:

        gated_i = length_i                      gate = all
                = length_i if correct_i else 0  gate = correct

    A term whose value is ``correct · f`` (a length factor that zeroes wrong answers: DLER, L1-Max,
    GRPO-λ) writes it ``correct + gated(f − 1)``: ``correct`` is the paper's product, ``all`` gives a
    wrong answer its ``f − 1`` too. Shapes: (N,), (N,) -> (N,) in ``length_N``'s dtype.
    """
    if gate == "all":
        return length_N
    return torch.where(correct_N.bool(), length_N, torch.zeros_like(length_N))
