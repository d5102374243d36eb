"""PEAR, the phase entropy aware reward (Huang, Lu, Zhang, "PEAR: Phase Entropy Aware Reward for
Efficient Reasoning", arXiv 2510.08026; ALGORITHMS.md 4.6). The paper's code (iNLP-Lab/PEAR) was not
available; the formulas are two consistent third-party notes of the paper (Eqs. 5-7).

With H_t the full-vocabulary entropy of π_old at each generated position (Eq. 5; asked of the trainer,
``AsksPolicy``) and the response split at the first end-of-thinking marker (``model.think_end``, e.g.
``</think>``; the marker's own tokens in neither phase):

    H_think  = mean of H_t over the tokens before the marker                       (Eq. 6)
    H_answer = mean of H_t over the tokens after it (EOS included)
    P(y)     = max(0, H_think − α · H_answer)                                      (Eq. 7)
    r(y)     = min(1, s − P(y)) if correct, else r_fmt

No marker: every token is thinking (k = T, EOS included, as the worked examples average all T tokens)
and H_answer = 0; ``no_marker=drop_last`` is the literal reading (the first T − 1 tokens). An empty
phase has mean 0 (rlrun's choice for the formula's 0/0).

This term is the entropy part only, gated by correctness: ``term = −correct · P``. With the default
s = 1 and r_fmt = 0, ``reward=[correct,pear]`` is PEAR's reward exactly (``min(1, ·)`` is inactive
for s <= 1); s and r_fmt other than those are ``reward.terms.correct.weight`` and a constant. A correct
answer can score below a wrong one (P > 1): that is the method; ``reward/pear/below_wrong_frac``
logs how often.

Worked example (ALGORITHMS.md 4.6.7 P1, tests/core/test_pear.py): entropies 1.2, 0.8, 0.6, 0.4,
[0.0], 0.3, 0.2, 0.1 -> H_think = 0.75, H_answer = 0.2, P = 0.55, r = 1 − 0.55 = 0.45.
"""
from __future__ import annotations

import torch

from rlrun.types import PolicyRequest, StepBatch

NO_MARKER = ("all", "drop_last")


class PhaseEntropyPenalty:
    """``−correct_i · P_i`` per completion (module docstring). Shapes: ``batch.policy_NT["entropy"]``
    (N, T), ``batch.completion_ids``, ``batch.correct_N`` (N,) -> (N,) float32."""

    def __init__(self, alpha: float = 1.0, no_marker: str = "all") -> None:
        if no_marker not in NO_MARKER:
            raise ValueError(f"pear no_marker={no_marker!r}; choose one of {', '.join(NO_MARKER)}")
        self.alpha, self.no_marker = float(alpha), no_marker
        self.request = PolicyRequest("entropy")
        self.policy_requests = (self.request,)
        self.below = 0.0

    def penalty(self, batch: StepBatch) -> torch.Tensor:
        """P_i (N,) float64."""
        entropy = batch.policy_NT[self.request.key].to(torch.float64)
        thinking, answer = batch.thinking_tokens_N.tolist(), batch.answer_tokens_N.tolist()
        response = batch.response_tokens_N.tolist()
        out = torch.zeros(len(batch), dtype=torch.float64)
        for i, ids in enumerate(batch.completion_ids):
            total = len(ids)  # T, EOS included
            if thinking[i] < response[i]:  # the marker was found
                think = entropy[i, : thinking[i]]
                after = entropy[i, response[i] - answer[i]: total]  # from after the marker, EOS included
            else:
                think = entropy[i, : total - 1 if self.no_marker == "drop_last" else total]
                after = entropy[i, :0]
            h_think = float(think.mean()) if think.numel() else 0.0
            h_answer = float(after.mean()) if after.numel() else 0.0
            out[i] = max(0.0, h_think - self.alpha * h_answer)
        return out

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        correct = batch.correct_N.to(torch.float64)
        penalty = self.penalty(batch)
        self.below = float(((correct > 0) & (penalty > 1.0)).to(torch.float64).mean()) if len(batch) else 0.0
        return (-correct * penalty).to(torch.float32)

    def metrics(self) -> dict[str, float]:
        """``below_wrong_frac``: the share of the step's completions that are correct yet score below
        a wrong answer (P > s − r_fmt = 1 with the defaults)."""
        return {"below_wrong_frac": self.below}
