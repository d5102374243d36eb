"""SAR, the self-aligned reward (Han, Krishnan, Friedland, You, Kong, "Self-Aligned Reward: Towards
Effective and Efficient Reasoners", arXiv 2509.05489; ALGORITHMS.md 4.5). Equation numbers: not found
(the paper body was not read; the formula is the released code's, amazon-science/Self-Aligned-Reward,
``efficiency_reward.py::compute_ppl_qa_log``).

How much the question helps the policy predict its own answer: the relative drop in perplexity of the
answer ``a`` (all T response tokens, EOS included) when it follows the question ``q`` rather than an
empty user turn ``∅`` (the chat scaffolding and SAR's system prompt kept, only the question removed):

    ppl(a|q) = exp(−(1/T) Σ_t log π_old(a_t | q, a_<t))
    ppl(a)   = exp(−(1/T) Σ_t log π_old(a_t | ∅, a_<t))
    R_SA     = max((ppl(a) − ppl(a|q)) / (ppl(a) + 1e-9), −1)        (code; always < 1)
    R_SA     = clip((ppl(a) − ppl(a|q)) / ppl(a), −1, 1)             (paper, ``clip=paper``)

and the reward is ``R = R_VR + α · R_SA`` with α = 0.2: ``reward=[correct,sar]`` (the yaml's weight).
``use_log`` (the code's ``ppl_qa.use_log``) uses the mean NLL (log perplexity) in place of ppl.

The two log-prob passes are asked of the trainer (``AsksPolicy``): the log-probs of each completion
after its own prompt, and after the prompt of an empty user turn with SAR's system prompt. The trainer
scores the untempered policy, i.e. verl's temperature-scaled logits at the scripts' temperature 1.0.
An empty response (T = 0) gets R_SA = 0 (the code would give 0/0; rlrun's choice).

Worked example (ALGORITHMS.md 4.5.7, tests/core/test_sar.py): cond (−0.1, −0.2, −0.05, −0.3), uncond
(−2.0, −1.5, −0.5, −1.0): ppl(a|q) = e^0.1625 = 1.176448, ppl(a) = e^1.25 = 3.490343,
R_SA = (3.490343 − 1.176448)/3.490343 = 0.662942; use_log: (1.25 − 0.1625)/1.25 = 0.87.
"""
from __future__ import annotations

import torch

from rlrun.types import PolicyRequest, StepBatch

SYSTEM_PROMPT = ("You are a reasoning expert assistant. Given a question, you will use your reasoning skills to "
                 "solve the problem.")
CLIPS = ("code", "paper")


class SelfAlignedReward:
    """R_SA per completion (module docstring). Shapes: ``batch.policy_NT`` two (N, T) log-prob
    tensors, ``batch.mask_NT`` (N, T) -> (N,) float32."""

    def __init__(self, system_prompt: str = SYSTEM_PROMPT, use_log: bool = False, clip: str = "code") -> None:
        if clip not in CLIPS:
            raise ValueError(f"sar clip={clip!r}; choose one of {', '.join(CLIPS)}")
        self.use_log, self.clip = bool(use_log), clip
        self.conditioned = PolicyRequest("logp")
        self.unconditioned = PolicyRequest("logp", turn="", system=system_prompt)
        self.policy_requests = (self.conditioned, self.unconditioned)

    def __call__(self, batch: StepBatch) -> torch.Tensor:
        mask = batch.mask_NT.to(torch.float64)
        count = mask.sum(-1)
        with_q = self._mean_nll(batch.policy_NT[self.conditioned.key], mask, count)
        without_q = self._mean_nll(batch.policy_NT[self.unconditioned.key], mask, count)
        if self.use_log:  # the mean NLL itself (log perplexity)
            ppl_q, ppl = with_q, without_q
        else:
            ppl_q, ppl = torch.exp(with_q), torch.exp(without_q)
        if self.clip == "code":
            value = ((ppl - ppl_q) / (ppl + 1e-9)).clamp(min=-1.0)
        else:
            value = ((ppl - ppl_q) / ppl).clamp(-1.0, 1.0)
        return torch.where(count > 0, value, torch.zeros_like(value)).to(torch.float32)

    @staticmethod
    def _mean_nll(logp_NT: torch.Tensor, mask: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        width = mask.shape[1]
        logp = torch.nn.functional.pad(logp_NT[:, :width].to(torch.float64), (0, max(0, width - logp_NT.shape[1])))
        return -(logp * mask).sum(-1) / count.clamp(min=1.0)
