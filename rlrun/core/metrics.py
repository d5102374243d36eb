"""Per-step rollout and reward metrics, with the names of DESIGN.md section 5.

Every value is a finite Python float (JSON- and W&B-safe). A mean over an empty set (no correct
completion, no incorrect completion, no completion at all) is reported as 0.0; ``acc/train`` tells
the cases apart (``length/correct_mean_tokens`` is only meaningful when ``acc/train > 0``,
``length/incorrect_mean_tokens`` only when ``acc/train < 1``).
"""
from __future__ import annotations

import torch

from rlrun.types import Scored


def _mean(values: torch.Tensor) -> float:
    return float(values.mean()) if values.numel() else 0.0


def _quantile(values: torch.Tensor, q: float) -> float:
    return float(torch.quantile(values, q)) if values.numel() else 0.0


def rollout_metrics(
    length_tokens_N: torch.Tensor, truncated_N: torch.Tensor, correct_N: torch.Tensor
) -> dict[str, float]:
    """Accuracy and length statistics of one step's completions (DESIGN.md 5):

    - ``acc/train`` = mean_i correct_i (the verifier's, never the reward's)
    - ``length/mean_tokens`` = mean_i L_i; ``length/p50_tokens``, ``length/p90_tokens``: the 0.5 and
      0.9 quantiles of L with linear interpolation between order statistics (``torch.quantile``,
      numpy's default), e.g. p90 of [1..10] = 9.1
    - ``length/correct_mean_tokens`` = mean of L over correct completions (0.0 if none)
    - ``length/incorrect_mean_tokens`` = mean of L over incorrect completions (0.0 if none)
    - ``length/truncated_frac`` = mean_i truncated_i (hit the token cap before EOS)

    Shapes: three (N,) tensors (lengths in tokens, 0/1 or bool flags) -> dict of floats.
    """
    length = length_tokens_N.detach().to(torch.float64).flatten()
    correct = correct_N.detach().flatten() > 0
    truncated = truncated_N.detach().to(torch.float64).flatten()
    if not (length.numel() == correct.numel() == truncated.numel()):
        raise ValueError(
            f"lengths ({length.numel()}), truncated ({truncated.numel()}) and correct "
            f"({correct.numel()}) must have one value per completion"
        )
    return {
        "acc/train": _mean(correct.to(torch.float64)),
        "length/mean_tokens": _mean(length),
        "length/p50_tokens": _quantile(length, 0.5),
        "length/p90_tokens": _quantile(length, 0.9),
        "length/correct_mean_tokens": _mean(length[correct]),
        "length/incorrect_mean_tokens": _mean(length[~correct]),
        "length/truncated_frac": _mean(truncated),
    }


def span_metrics(thinking_tokens_N: torch.Tensor, answer_tokens_N: torch.Tensor) -> dict[str, float]:
    """``length/thinking_mean_tokens`` = mean_i of the tokens before the end-of-thinking marker (the
    whole response where there is none) and ``length/answer_mean_tokens`` = mean_i of the tokens
    after it (0 where there is none), EOS and the marker not counted (``StepBatch.thinking_tokens_N``).
    Shapes: two (N,) tensors -> dict of floats (0.0 for an empty step)."""
    return {"length/thinking_mean_tokens": _mean(thinking_tokens_N.detach().to(torch.float64)),
            "length/answer_mean_tokens": _mean(answer_tokens_N.detach().to(torch.float64))}


def reward_metrics(scored: Scored) -> dict[str, float]:
    """Means over the step's completions of the shaped reward and of each unweighted term:
    ``reward/total`` = mean_i r_i, ``reward/<term>`` = mean_i term_i (0.0 for an empty step).
    Shapes: ``scored.reward_N`` and each term (N,) -> dict of floats.
    """
    metrics = {"reward/total": _mean(scored.reward_N.detach().to(torch.float64))}
    for name, values in scored.terms.items():
        metrics[f"reward/{name}"] = _mean(values.detach().to(torch.float64))
    return metrics
