"""Supervised warm start of the tiny model on synthetic traces, and its held-out evaluation.

Recipe (MEASURED.md): plain torch AdamW, lr 3e-3 with linear warm-up then cosine to 0, batch 64 of
fresh traces every step (:func:`rlrun.tasks.arith.sample_trace`), loss on response tokens and EOS
only. The loss is the *summed* token cross-entropy divided by a constant,
``L = sum_{i,t} CE_{i,t} / (batch_size * norm_tokens)``, not a per-batch token mean, so a batch
with many short answers does not weigh each of their tokens more (trace-design rule 3).

Training runs for ``steps`` optimizer steps (the default: bit-reproducible for a seed and a thread
count), or, if ``seconds`` is set, for that much wall-clock time with the cosine laid over time
(what MEASURED.md did; the step count then depends on the machine's speed).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from rlrun.tasks.arith import ArithProblems, TraceMix, sample_trace
from rlrun.tasks.verify import BoxedAnswerVerifier
from rlrun.types import Problem

_TRACE_STREAM = 3
_INSTRUCT_STREAM = 5


@dataclass(frozen=True)
class SFTConfig:
    seed: int = 0
    digits: int = 3
    steps: int = 1500
    seconds: float | None = None  # if set, train for this wall-clock time instead of `steps`
    batch_size: int = 64
    lr: float = 3e-3
    warmup_frac: float = 0.02
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    norm_tokens: float = 128.0  # ~ mean response length of the traces (+EOS)
    mix: TraceMix = field(default_factory=TraceMix)
    # The share of prompts that end with an L1 length instruction ("Think for [maximum] N tokens.",
    # N ~ U{instruction_min..instruction_max}, Max phrasing with probability instruction_max_frac)
    # whose N is unrelated to the trace: the model learns to read the sentence, not to obey it.
    instructed_frac: float = 0.0
    instruction_min: int = 100
    instruction_max: int = 200
    instruction_max_frac: float = 0.5


def lr_at(progress: float, cfg: SFTConfig) -> float:
    """Linear warm-up over ``warmup_frac`` then cosine: ``lr * (1 + cos(pi * u)) / 2``."""
    if progress < cfg.warmup_frac:
        return cfg.lr * progress / cfg.warmup_frac
    u = min(1.0, (progress - cfg.warmup_frac) / (1.0 - cfg.warmup_frac))
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * u))


def encode_examples(tokenizer, problems: list[Problem], responses: list[str]):
    """Right-padded ``ids(prompt, bos) + ids(response) + [eos]`` and labels that are -100 except
    on the response tokens and EOS (exactly what a rollout produces)."""
    prompts = tokenizer([p.prompt for p in problems], add_special_tokens=True)["input_ids"]
    bodies = tokenizer(responses, add_special_tokens=False)["input_ids"]
    rows = [p + r + [tokenizer.eos_token_id] for p, r in zip(prompts, bodies)]
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (prompt, row) in enumerate(zip(prompts, rows)):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, len(prompt) : len(row)] = ids[i, len(prompt) : len(row)]
    return ids, labels


def training_batch(step: int, cfg: SFTConfig, tokenizer):
    """The deterministic batch of ``step``: problems from the training stream, fresh traces (and,
    with ``instructed_frac`` > 0, a length instruction unrelated to the trace on that share of
    the prompts)."""
    problems = ArithProblems(cfg.seed, cfg.digits).batch(step, cfg.batch_size)
    rng = np.random.default_rng([cfg.seed, _TRACE_STREAM, step])
    traces = [sample_trace(p, rng, cfg.mix) for p in problems]
    if cfg.instructed_frac > 0:
        picked = np.random.default_rng([cfg.seed, _INSTRUCT_STREAM, step]).random(len(problems))
        instructed = instruct(problems, cfg)
        problems = [q if u < cfg.instructed_frac else p for p, q, u in zip(problems, instructed, picked)]
    return encode_examples(tokenizer, problems, traces)


def instruct(problems: list[Problem], cfg: SFTConfig) -> list[Problem]:
    """``problems`` with LCPO's length instruction appended (the text ``algo=lcpo`` writes), its N
    drawn per problem in ``[instruction_min, instruction_max]``."""
    from rlrun.core.lcpo import LengthInstruction

    transform = LengthInstruction(cfg.seed, cfg.instruction_min, cfg.instruction_max,
                                  cfg.instruction_max_frac)
    return transform(problems, 0)


def sft_loss(model, ids: torch.Tensor, labels: torch.Tensor, cfg: SFTConfig) -> torch.Tensor:
    """Summed next-token cross-entropy on labelled positions / (batch_size * norm_tokens)."""
    logits = model(input_ids=ids).logits[:, :-1]  # right padding: causal rows never see pads
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels[:, 1:].reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )
    return total / (cfg.batch_size * cfg.norm_tokens)


def train(model, tokenizer, cfg: SFTConfig) -> dict[str, float]:
    """Run the warm start in place; returns ``steps``, ``seconds`` and the last smoothed loss."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay
    )
    by_time = cfg.seconds is not None
    bar = tqdm(total=cfg.seconds if by_time else cfg.steps, unit="s" if by_time else "step",
               desc="tiny-model SFT", mininterval=2.0)
    start, step, smoothed = time.perf_counter(), 0, float("nan")
    while True:
        elapsed = time.perf_counter() - start
        progress = elapsed / cfg.seconds if by_time else step / cfg.steps
        if progress >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(progress, cfg)
        ids, labels = training_batch(step, cfg, tokenizer)
        loss = sft_loss(model, ids, labels, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        smoothed = loss.item() if step == 0 else 0.98 * smoothed + 0.02 * loss.item()
        step += 1
        bar.update(round(time.perf_counter() - start - bar.n, 1) if by_time else 1)
        bar.set_postfix(loss=f"{smoothed:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                        refresh=False)
    bar.close()
    model.eval()
    return {"steps": step, "seconds": time.perf_counter() - start, "loss": smoothed}


def evaluate(rollout, problems: list[Problem], max_new_tokens: int = 256, seed: int = 0) -> dict[str, float]:
    """One sample per problem from ``rollout`` (an :class:`rlrun.engines.rollout.hf.HFRollout`,
    the engine RL samples with; its temperature applies); accuracy by
    :class:`BoxedAnswerVerifier` and length statistics (response tokens without EOS)."""
    torch.manual_seed(seed)
    rollouts = rollout.generate(problems, 1, [max_new_tokens] * len(problems))
    texts = rollouts.texts
    verdicts = BoxedAnswerVerifier()(rollouts)
    short = torch.tensor([t.startswith("<think></think>") for t in texts], dtype=torch.bool)
    terse = torch.tensor([t.startswith("<think>\n") and "=" in t.split("\n")[1] and "," not in t.split("\n")[1]
                          for t in texts], dtype=torch.bool)  # terse_trace: "x+y=tt" lines, no ", write"
    recheck_chars = sum(len(line) + 1 for t in texts for line in t.split("\n")
                        if line.startswith("wait,"))
    return {
        "accuracy": verdicts.correct_N.mean().item(),
        "mean_tokens": rollouts.length_tokens_N.float().mean().item(),
        "format_ok": verdicts.format_ok_N.mean().item(),
        "truncated_frac": rollouts.truncated_N.float().mean().item(),
        "recheck_frac": float(np.mean([("\nwait," in t) for t in texts])),
        "recheck_token_frac": recheck_chars / max(1, int(rollouts.length_tokens_N.sum())),
        "short_frac": short.float().mean().item(),
        "short_accuracy": verdicts.correct_N[short].mean().item() if short.any() else float("nan"),
        "terse_frac": terse.float().mean().item(),
        "terse_accuracy": verdicts.correct_N[terse].mean().item() if terse.any() else float("nan"),
    }
