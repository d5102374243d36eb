"""How the trainer lays out a micro-batch: prompts left-padded and completions right-padded into one
tensor (``pack``), rows sorted by length into micro-batches (``micro_batches``), the step batch's
rows of one micro-batch on the device with its per-token columns cut to the micro-batch's width
(``columns``), the log-softmax at the sampled tokens (``token_logp``, ``head_logp``: the output
head per chunk, recomputed in backward), and PPO's mini-batches of whole groups (``group_parts``,
``mean_stats``).
"""
from __future__ import annotations

from typing import Any

import torch

from rlrun.types import ROW_FIELDS, StepBatch


def pack(prompts: list[list[int]], completions: list[list[int]], pad_id: int, min_width: int = 1):
    """Token ids of one micro-batch: prompts left-padded to P, completions right-padded to
    T >= ``min_width``.

    Returns ``input_ids``, ``attention_mask``, ``position_ids`` (b, P+T), ``target`` (b, T) the
    completion ids (pad beyond each row's end) and ``mask`` (b, T) float 1 on completion tokens.
    """
    rows = len(prompts)
    width_p = max(len(p) for p in prompts)
    width_t = max(min_width, max(len(c) for c in completions))
    ids = torch.full((rows, width_p + width_t), pad_id, dtype=torch.long)
    attn = torch.zeros(rows, width_p + width_t, dtype=torch.long)
    for r, (p, c) in enumerate(zip(prompts, completions)):
        ids[r, width_p - len(p) : width_p] = torch.tensor(p, dtype=torch.long)
        ids[r, width_p : width_p + len(c)] = torch.tensor(c, dtype=torch.long)
        attn[r, width_p - len(p) : width_p + len(c)] = 1
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    mask = attn[:, width_p:].float()
    return ids, attn, position_ids, ids[:, width_p:], mask


def chunk_rows(lengths: list[int], size: int, tokens: int | None = None) -> list[list[int]]:
    """Row indices, longest rows first (rows of similar length share a batch), in micro-batches of
    at most ``size`` rows and, with ``tokens``, at most ``tokens`` padded positions (the rows times
    the micro-batch's longest row; a row longer than ``tokens`` goes alone): a token budget keeps
    long rows few to a micro-batch and short rows many."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    chunks: list[list[int]] = []
    for i in order:
        last = chunks[-1] if chunks else None
        if last and len(last) < size and (tokens is None or (len(last) + 1) * lengths[last[0]] <= tokens):
            last.append(i)
        else:
            chunks.append([i])
    return chunks


def micro_batches(chunks: list[list[int]], count: int) -> list[torch.Tensor]:
    """``chunks`` (of :func:`chunk_rows`) as ``count`` index tensors, the missing ones empty."""
    out = [torch.tensor(chunk, dtype=torch.long) for chunk in chunks]
    return out + [torch.zeros(0, dtype=torch.long)] * (count - len(out))


def columns(batch: StepBatch, index: torch.Tensor, width: int, device: torch.device) -> StepBatch:
    """``batch.select(index)`` with the token axis of every per-token column cut (or padded) to
    ``width`` and the per-completion tensors moved to ``device``."""
    sub = batch.select(index)

    def fit(name: str, t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        if name.endswith("_NT"):
            t = torch.nn.functional.pad(t[:, :width], (0, max(0, width - t.shape[1])))
        return t.to(device)

    return sub.with_columns(**{name: fit(name, getattr(sub, name)) for name in ROW_FIELDS})


def token_logp(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log-softmax of ``logits`` (b, t, V), in float32, at ``target`` (b, t)."""
    logits = logits.float()
    return logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


def head_logp(head: torch.nn.Module, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return token_logp(head(hidden), target)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """The entropy (nats) of softmax(``logits``) (b, t, V) at each position, in float32:
    H = logsumexp(l) − Σ_v softmax(l)_v · l_v  (= −Σ_v p_v log p_v)."""
    logits = logits.float()
    return logits.logsumexp(-1) - (logits.softmax(-1) * logits).sum(-1)


def head_entropy(head: torch.nn.Module, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return token_entropy(head(hidden))


def group_parts(group_N: torch.Tensor, parts: int) -> list[torch.Tensor]:
    """``parts`` lists of row indices, whole groups each, the groups in order and split as evenly as
    they go (``torch.tensor_split``); fewer groups than parts leaves some empty (every rank still
    steps as often). E.g. groups (0, 0, 1, 1, 2, 2) in 2 parts: rows (0, 1, 2, 3) and (4, 5)."""
    groups = torch.unique(group_N)
    return [torch.isin(group_N, part).nonzero().squeeze(1) for part in torch.tensor_split(groups, parts)]


def mean_stats(results: list[dict[str, float]]) -> dict[str, float]:
    """The statistics of several optimizer steps of one run step: each key's mean over the steps
    that have it, ``optim/skipped_steps`` (a count over the run) the last one's."""
    keys = sorted(set().union(*results))
    out = {k: sum(r[k] for r in results if k in r) / sum(k in r for r in results) for k in keys}
    out["optim/skipped_steps"] = results[-1]["optim/skipped_steps"]
    return out
