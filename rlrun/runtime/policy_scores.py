"""The policy's scores that reward terms ask for (``AsksPolicy``: SAR's log-probs of each answer with
and without its question, PEAR's per-token entropies), computed by the trainer before the reward is
called and put into ``batch.policy_NT`` under each request's key.

Why the trainer and not the rollout engine: the trainer's forward is the same whatever engine sampled
(HF or vLLM), it has the full vocabulary's distribution at every position (vLLM returns the sampled
token's and the top-k log-probs only, not the entropy), and it is pi_old as verl's actor computes
``old_log_probs`` and ``entropys`` (ALGORITHMS.md 4.5.3, 4.6.3). The cost is one forward pass per
distinct request per step (no grad), shared between terms that ask the same.
"""
from __future__ import annotations

from rlrun.runtime.capabilities import having
from rlrun.types import AsksPolicy, PolicyRequest, StepBatch, Trainer


def requests_of(reward) -> list[PolicyRequest]:
    """The distinct requests of the reward's terms, in the order first asked."""
    seen: dict[str, PolicyRequest] = {}
    for term in having(AsksPolicy, reward):
        for request in term.policy_requests:
            seen.setdefault(request.key, request)
    return list(seen.values())


def with_policy_scores(trainer: Trainer, reward, batch: StepBatch) -> StepBatch:
    """``batch`` with ``policy_NT`` holding every request of the reward's terms (unchanged when no
    term asks). Every rank calls it for its own batch at the same points (a collective under ZeRO-3)."""
    requests = requests_of(reward)
    if not requests:
        return batch
    scores = {}
    for request in requests:
        scored = batch
        if request.turn is not None:  # every completion after the rewritten prompt
            ids = trainer.encode_prompt(request.turn, request.system)
            scored = batch.with_columns(prompt_ids=[ids] * len(batch.problems))
        if request.kind == "entropy":
            scores[request.key] = trainer.entropies(scored)
        else:
            scores[request.key] = trainer.logprobs(scored)
    return batch.with_columns(policy_NT=scores)
