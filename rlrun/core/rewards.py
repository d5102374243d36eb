"""Shaped rewards: a weighted sum of named terms (ALGORITHMS.md 0.2), and the two unshaped terms.

A term is any callable ``fn(batch: StepBatch) -> Tensor_N``. ``Composite`` binds names and weights to
terms; the config group ``reward/`` builds one from yaml (``reward=[correct,format]`` merges the
``terms`` of both files, so their weighted sum is the reward).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import torch

from rlrun.types import HasMetrics, Scored, Stateful, StepBatch

Term = Callable[[StepBatch], torch.Tensor]


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
            value = fn(batch)
            if value.dim() != 1:
                raise ValueError(f"reward term {name!r} returned shape {tuple(value.shape)}, need (N,)")
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
