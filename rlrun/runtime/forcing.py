"""Budget forcing (s1: Muennighoff et al., arXiv 2501.19393; ALGORITHMS.md 5.3, "Accuracy vs
inference budget"), the test-time length control that L1 and Train Long, Think Short compare against:
the thinking is stopped at N tokens, the model's end-of-thinking marker and answer cue are written
after it (``model.think_end`` and ``model.answer_cue``: ``</think>`` and ``\\n\\n**Final Answer.**``
for real models, ThinkPrune's and LASER's text), and the model answers within a small cap.

Two phases over any rollout engine that declares ``ContinuesFromIds`` (both of rlrun's), one code
path for both:

1. ``generate`` with each prompt's cap at its N: a response that ends (EOS) within N tokens is done.
2. Every response that used its N tokens goes on from its prompt, those N tokens and the forced text,
   for at most A more tokens (``answer_tokens``):

   - its N tokens hold no end-of-thinking marker (the thinking was cut): the forced text is the marker
     (only its missing tokens where the N tokens end with its first ones: a marker of several tokens
     cut mid-way) and then the cue;
   - they hold the marker (the response ended its thinking by itself before N and was answering):
     nothing is forced and its answer goes on, so its answer has the tokens left of N plus A.

So every response samples at most N + A tokens, the forced text comes on top, and its length counts
every token of the completion, forced text included (ALGORITHMS.md 5.2: the whole response).
``truncated_N`` says the answer cap ran out too (phase 2 ended without EOS); ``budget_tokens_N`` is N.
vLLM 0.32's own ``thinking_token_budget`` does another thing (docs/data-and-evaluation.md).
"""
from __future__ import annotations

import torch

from rlrun.batch import find_marker
from rlrun.types import ContinuesFromIds, Problem, Sampling, StepBatch

DEFAULT_ANSWER_TOKENS = 128  # rlrun-eval --force-answer-tokens, eval.force_answer_tokens


def marker_tail(ids: list[int], marker: list[int]) -> list[int]:
    """The tokens of ``marker`` still to write after ``ids``: the rest of it where ``ids`` ends with
    its first tokens (the longest such start), else all of it."""
    for cut in range(min(len(marker) - 1, len(ids)), 0, -1):
        if ids[-cut:] == marker[:cut]:
            return marker[cut:]
    return list(marker)


class BudgetForced:
    """A rollout engine's ``generate`` with each budget a thinking budget that is forced (module
    docstring); ``answer_tokens`` caps what the model samples after it. Hand it to
    ``rlrun.runtime.evaluation.sample_and_score`` in place of the engine."""

    def __init__(self, rollout, answer_tokens: int = DEFAULT_ANSWER_TOKENS) -> None:
        if not isinstance(rollout, ContinuesFromIds):
            raise ValueError(f"budget forcing needs a rollout engine that samples from token ids "
                             f"(rlrun.types.ContinuesFromIds); {type(rollout).__name__} does not")
        if answer_tokens < 1:
            raise ValueError(f"the forced answer cap is {answer_tokens} tokens; it must be >= 1")
        self.rollout, self.answer_tokens = rollout, int(answer_tokens)

    def generate(self, problems: list[Problem], group_size: int, budgets: list[int],
                 sampling: Sampling | None = None) -> StepBatch:
        """``group_size`` responses per prompt, prompt ``b``'s thinking forced to end at ``budgets[b]``."""
        if any(b < 1 for b in budgets):
            raise ValueError(f"forced budgets {budgets} must be >= 1 token")
        rollout, marker = self.rollout, list(self.rollout.think_end_ids)
        first = rollout.generate(problems, group_size, budgets, sampling)
        rows = [r for r, cut in enumerate(first.truncated_N.tolist()) if cut]
        forced: dict[int, list[int]] = {}  # row -> the tokens written after its N tokens
        for r in rows:
            ids = first.completion_ids[r]
            ended_thinking = find_marker(ids, marker) is not None
            forced[r] = [] if ended_thinking else marker_tail(ids, marker) + list(rollout.answer_cue_ids)
        groups = first.group_N.tolist()
        second = rollout.generate_from(
            [first.problems[groups[r]] for r in rows], 1,
            [first.prompt_ids[groups[r]] + first.completion_ids[r] + forced[r] for r in rows],
            [self.answer_tokens] * len(rows), sampling) if rows else None
        return joined(first, rows, forced, second, rollout.tokenizer)


def joined(first: StepBatch, rows: list[int], forced: dict[int, list[int]], second: StepBatch | None,
           tokenizer) -> StepBatch:
    """``first`` with each of its ``rows`` continued by its forced tokens and ``second``'s row of
    the same rank: token ids, text, lengths, truncation and log-probs (0 on forced tokens)."""
    ids_N = [list(ids) for ids in first.completion_ids]
    truncated = first.truncated_N.clone()
    logps = [first.logp_NT[r, : len(ids)] if first.logp_NT is not None else torch.zeros(len(ids))
             for r, ids in enumerate(ids_N)]
    for i, r in enumerate(rows):
        more = second.completion_ids[i]
        ids_N[r] += forced[r] + more
        truncated[r] = second.truncated_N[i]
        tail = second.logp_NT[i, : len(more)] if second.logp_NT is not None else torch.zeros(len(more))
        logps[r] = torch.cat([logps[r], torch.zeros(len(forced[r])), tail])
    ended = (~truncated).tolist()
    bodies = [ids[:-1] if end else ids for ids, end in zip(ids_N, ended)]
    logp_NT = torch.zeros(len(ids_N), max((len(ids) for ids in ids_N), default=0))
    for r, values in enumerate(logps):
        logp_NT[r, : len(values)] = values
    return first.with_columns(
        completion_ids=ids_N, texts=[tokenizer.decode(body, skip_special_tokens=True) for body in bodies],
        length_tokens_N=torch.tensor([len(body) for body in bodies], dtype=torch.long),
        truncated_N=truncated, mask_NT=None, logp_NT=logp_NT)
