"""The DeepSpeed training engine: ZeRO stage 0, 2 or 3 on CPU (gloo, fp32) or GPU (nccl, bf16 when
``model.dtype`` is bfloat16), with the same code.

What it computes, per step (the loop calls ``logprobs`` then ``update``):

- ``logprobs``: log π(o_{i,t} | q, o_{i,<t}) of each completion token, no grad, in micro-batches.
- ``update``: one optimizer step on the loss of the whole mini-batch (all ranks). The loss divides
  by global denominators (``LossNorm``: response tokens and non-empty rows over all ranks, set
  here on ``batch.norm``), so the sum of the micro-batch losses of all ranks is the full-batch
  loss (ALGORITHMS.md 1.2.3 "Scope of the means", 1.2.8). Gradients are summed over micro-batches
  (no 1/accumulation-steps scaling) and DeepSpeed's mean over data-parallel ranks is undone by
  multiplying each micro-batch loss by the world size: the step equals one full-batch step of
  plain torch on the union of the ranks' rows (tests/engines/test_deepspeed*.py check this).

Layout of one micro-batch: prompts left-padded to the micro-batch's longest prompt P, completions
right-padded to its longest completion T, position ids counted over real tokens only; the model
returns logits for the last T + 1 positions only (``logits_to_keep``), KV cache off. When T + 1 >
``logprob_chunk``, the forward stops at the last hidden states and the output head and log-softmax
run on ``logprob_chunk`` positions at a time (recomputed in backward), so the (b, T, vocab) float32
logits never exist whole: the same values at a fraction of the peak memory. Rows are sorted by length
into micro-batches (little padding). Dropout is off (eval mode): the on-policy ratio is exactly 1.

Every rank must run the same number of forward passes (ZeRO-2/3 gather and reduce inside them),
so a rank with fewer rows runs empty zero-loss micro-batches. Under ZeRO-3 each call of the output
head gathers its weight too: with chunked log-probs every rank pads the micro-batch to the widest
completion over the ranks, so that all make as many calls.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from rlrun.runtime import dist
from rlrun.engines.model import ModelSpec, load_tokenizer
from rlrun.engines.trainer import setup
from rlrun.engines.chat import encode_with_system
from rlrun.engines.trainer.batching import (chunk_rows, columns, group_parts, head_entropy, head_logp, mean_stats,
                                            micro_batches, pack, token_entropy, token_logp)
from rlrun.engines.trainer.optim import OptimSettings, lr_factor
from rlrun.engines.trainer.setup import BadUpdates  # noqa: F401 (raised here; the loop catches UpdatesFailed)
from rlrun.types import LossNorm, StepBatch

# Causal LMs whose forward is exactly ``lm_head(decoder(...).last_hidden_state)`` (transformers
# 5.23: nothing in between or after, no logit scaling or soft-capping): chunked log-probs serve them.
CHUNKED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


class DeepSpeedTrainer:
    """The policy under DeepSpeed (see the module docstring). ``zero_stage`` 0, 2 or 3;
    ``micro_batch_size`` rows per forward, and with ``micro_batch_tokens`` at most that many padded
    positions (rows x the longest; batching.chunk_rows); ``total_steps`` sizes the cosine schedule;
    ``deepspeed_config`` is merged over the config built here (e.g. ZeRO offload, bucket sizes).
    ``mini_batches`` and ``epochs``: PPO's optimizer steps per run step (``update``; 1 and 1: one).
    ``skip_zero_advantage``: when the loss says a row with advantage 0 contributes exactly 0 to it
    (``loss.zero_advantage_is_zero_loss``: the clipped surrogate without KL), such rows get no
    forward or backward; the loss denominators still count them, so the gradient is the same (the
    groups a correctness reward gives all-equal rewards cost nothing to train on).
    ``logprob_chunk``: at most this many completion positions have logits at once (module
    docstring); 0 = all of them. Only for ``CHUNKED_MODEL_TYPES``: another model type warns and
    keeps the plain path (its forward may change the logits after the head). Under ZeRO-3 every
    chunk gathers the head's weight anew (forward, and recomputation and backward in ``update``).
    ``max_bad_steps``: an update whose loss (any micro-batch, any rank) or, without ZeRO, whose
    gradient norm is NaN or inf is skipped (gradients dropped, no optimizer or schedule step) and
    counted in ``optim/skipped_steps``; after this many such updates in a row ``update`` raises
    :class:`BadUpdates` (0: never). Under ZeRO-2/3 the gradients are partitioned inside the
    optimizer by the time the norm exists, so only the loss is checked before the step.
    ``precision`` (auto | fp32 | bf16), ``gradient_checkpointing`` and ``reference_offload``:
    :mod:`rlrun.engines.trainer.setup`."""

    def __init__(
        self,
        model: ModelSpec,
        total_steps: int,
        zero_stage: int = 0,
        micro_batch_size: int = 8,
        optim: OptimSettings | Mapping[str, Any] | None = None,
        deepspeed_config: Mapping[str, Any] | None = None,
        skip_zero_advantage: bool = True,
        logprob_chunk: int = 512,
        max_bad_steps: int = 3,
        micro_batch_tokens: int | None = None,
        precision: str = "auto",
        gradient_checkpointing: bool = False,
        reference_offload: bool = False,
        mini_batches: int = 1,
        epochs: int = 1,
    ) -> None:
        if zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage={zero_stage} is not one of 0, 1, 2, 3")
        if micro_batch_size < 1 or (micro_batch_tokens is not None and micro_batch_tokens < 1):
            raise ValueError(f"micro_batch_size={micro_batch_size} and micro_batch_tokens={micro_batch_tokens} "
                             "must be >= 1 (micro_batch_tokens may be null: rows only)")
        if logprob_chunk < 0:
            raise ValueError(f"logprob_chunk={logprob_chunk} must be >= 0 (0 = no chunking)")
        if mini_batches < 1 or epochs < 1:
            raise ValueError(f"mini_batches={mini_batches} and epochs={epochs} must be >= 1 (1 and 1: one on-policy "
                             "optimizer step per batch)")
        self.mini_batches, self.epochs = int(mini_batches), int(epochs)
        if max_bad_steps < 0:
            raise ValueError(f"max_bad_steps={max_bad_steps} must be >= 0 (0: never stop on NaN/inf updates)")
        self.max_bad_steps = int(max_bad_steps)
        self.skipped_steps = 0  # updates skipped for a NaN/inf loss or gradient, over the run
        self.bad_in_a_row = 0
        dist.init()
        import deepspeed  # lazy: heavy dependency, after dist.init() chose the accelerator

        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        # torch 2.13 deprecates collectives ZeRO-2/3 call and torch.jit.script_method (DeepSpeed imports it)
        warnings.filterwarnings("ignore", r"`torch\.distributed\.\w+` is deprecated", FutureWarning)
        warnings.filterwarnings("ignore", r"`torch\.jit\.script_method` is deprecated", DeprecationWarning)
        self.spec = setup.training_spec(model, precision)
        self.total_steps = int(total_steps)
        self.zero_stage = int(zero_stage)
        self.micro_batch_size, self.micro_batch_tokens = int(micro_batch_size), micro_batch_tokens
        self.skip_zero_advantage = bool(skip_zero_advantage)
        self.optim = optim if isinstance(optim, OptimSettings) else OptimSettings(**setup.plain(optim or {}))
        base = setup.base_config(self.spec, self.micro_batch_size, self.zero_stage, self.optim)
        self.config = setup.merge(base, setup.plain(deepspeed_config or {}))
        self.zero_stage = int(self.config["zero_optimization"]["stage"])  # bf16: 0 runs as 1 (setup)
        self.tokenizer = load_tokenizer(model)
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        # dropout off (eval mode, or dropout 0 with gradient checkpointing): deterministic log-probs
        module = setup.policy_module(self.spec, gradient_checkpointing)
        self.logprob_chunk = setup.warn_unchunked(module, int(logprob_chunk), CHUNKED_MODEL_TYPES)
        factor = self._lr_lambda
        with contextlib.redirect_stdout(io.StringIO()):  # BF16_Optimizer prints memory tables at start
            self.engine, *_ = deepspeed.initialize(
                model=module,
                optimizer=setup.optimizer(module, self.optim, self.config),
                lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor),
                config=self.config,
            )
        self.engine.train(module.training)
        self.reference_offload = bool(reference_offload)
        self._reference: Any = None

    # -- construction -------------------------------------------------------------------------
    def _lr_lambda(self, step: int) -> float:
        # the schedule counts the run's steps: the mini_batches x epochs optimizer steps of one
        # run step share its lr (warmup_steps and the cosine's length stay in run steps)
        o = self.optim
        return lr_factor(step // (self.mini_batches * self.epochs), o.warmup_steps, self.total_steps, o.schedule)

    def _reference_engine(self) -> Any:
        if self._reference is None:
            self._reference = setup.reference_engine(self.spec, self.zero_stage, self.config, self.reference_offload)
        return self._reference

    # -- log-probs ----------------------------------------------------------------------------
    def _logp(self, engine: Any, prompts: list[list[int]], completions: list[list[int]],
              entropy: bool = False) -> torch.Tensor:
        """Per-token log-probs (b, T) of one micro-batch, 0 on padding; grad if enabled. With
        ``entropy``, the full-vocabulary entropy at each position instead (no grad)."""
        chunk, width = self.logprob_chunk, max(1, max(len(c) for c in completions))
        if chunk and self.zero_stage == 3:
            # ZeRO-3 gathers the head's weight (a collective) at each call of it: every rank must
            # call it as often, so all pad to the widest completion of this micro-batch over ranks.
            width = int(dist.all_reduce_max(torch.tensor([width])).item())
        chunked = 0 < chunk < width + 1
        ids, attn, pos, target, mask = pack(prompts, completions, self.pad_id, width if chunked else 1)
        device = dist.device()
        width = target.shape[1]
        target, mask = target.to(device), mask.to(device)
        inputs = {
            "input_ids": ids.to(device),
            "attention_mask": attn.to(device),
            "position_ids": pos.to(device),
            "use_cache": False,
            "logits_to_keep": width + 1,
        }
        if not chunked:
            logits = engine(**inputs).logits[:, :-1]
            return (token_entropy(logits) if entropy else token_logp(logits, target)) * mask
        # The forward still goes through ``engine``, with the head swapped for the identity (its
        # "logits" are then the last hidden states, (b, T + 1, H)): DeepSpeed hooks its backward
        # prologue on the engine's outputs and ZeRO-3 resets its parameter trace there; calling the
        # decoder directly skips both and gives wrong ZeRO-3 gradients.
        module = getattr(engine, "module", engine)
        head = module.get_output_embeddings()
        module.set_output_embeddings(torch.nn.Identity())
        try:
            hidden = engine(**inputs).logits[:, :-1]
        finally:
            module.set_output_embeddings(head)
        parts = []
        for start in range(0, width, chunk):
            args = (head, hidden[:, start : start + chunk], target[:, start : start + chunk])
            if torch.is_grad_enabled():  # the chunk's logits are freed now and recomputed in backward
                parts.append(checkpoint(head_logp, *args, use_reentrant=False))
            else:
                parts.append((head_entropy if entropy else head_logp)(*args))
        return torch.cat(parts, dim=1) * mask

    def _plan(self, batch: StepBatch, rows: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Micro-batches of this rank's rows (or of ``rows`` only), as many on every rank and at
        least one (an empty one still makes every gradient a zero tensor, as the optimizer needs)."""
        index = torch.arange(len(batch)) if rows is None else rows
        lengths = [len(batch.prompt_ids[int(batch.group_N[i])]) + len(batch.completion_ids[int(i)]) for i in index]
        chunks = chunk_rows(lengths, self.micro_batch_size, self.micro_batch_tokens)
        count = int(dist.all_reduce_max(torch.tensor([max(1, len(chunks))])).item())
        return [index[chunk] for chunk in micro_batches(chunks, count)]

    def _rows(self, batch: StepBatch, index: torch.Tensor) -> tuple[list[list[int]], list[list[int]]]:
        if len(index) == 0:  # an empty micro-batch: one pad token each, its loss multiplied by 0
            return [[self.pad_id]], [[self.pad_id]]
        groups = batch.group_N
        prompts = [batch.prompt_ids[int(groups[i])] for i in index]
        return prompts, [batch.completion_ids[int(i)] for i in index]

    @torch.no_grad()
    def logprobs(self, batch: StepBatch, reference: bool = False) -> torch.Tensor:
        """log π(o_{i,t} | q_i, o_{i,<t}) (N, T) on the CPU, 0 on right padding, T the longest
        completion of ``batch``; the frozen initial model when ``reference``."""
        return self._scores(batch, reference, entropy=False)

    @torch.no_grad()
    def entropies(self, batch: StepBatch) -> torch.Tensor:
        """H_t = −Σ_v π(v | q_i, o_{i,<t}) log π(v | q_i, o_{i,<t}) (N, T) on the CPU, 0 on right
        padding: the entropy of the distribution each completion token was drawn from (untempered,
        verl's ``entropys`` at temperature 1)."""
        return self._scores(batch, False, entropy=True)

    def encode_prompt(self, turn: str, system: str | None = None) -> list[int]:
        """The prompt ids of the user's ``turn`` in the model's chat format (``system``: its system
        prompt; rlrun.engines.chat.encode_with_system)."""
        return encode_with_system(self.spec.chat, self.tokenizer, turn, system)

    def _scores(self, batch: StepBatch, reference: bool, entropy: bool) -> torch.Tensor:
        engine = self._reference_engine() if reference else self.engine
        moved = reference and self.reference_offload and self.zero_stage != 3 and dist.device().type != "cpu"
        if moved:  # trainer.reference_offload without ZeRO-3: on the device only while it scores
            engine.to(dist.device())
        width = max((len(c) for c in batch.completion_ids), default=0)
        out = torch.zeros(len(batch), width)
        try:
            for index in self._plan(batch):
                logp = self._logp(engine, *self._rows(batch, index), entropy=entropy).cpu()
                if len(index):
                    out[index, : min(width, logp.shape[1])] = logp[:, :width]
        finally:
            if moved:
                engine.to("cpu")
        return out

    # -- update -------------------------------------------------------------------------------
    def update(self, batch: StepBatch, loss: Any) -> dict[str, float]:
        """One on-policy optimizer step over ``batch`` (``_step``); with ``mini_batches`` M or ``epochs``
        E above 1 PPO's (arXiv 1707.06347 Alg. 1; verl's ppo_mini_batch_size, ppo_epochs): π_old from one
        no-grad forward first, then E passes over M mini-batches of whole groups (batching.group_parts),
        a step each, each loss normalised over its mini-batch as verl's; stats: batching.mean_stats."""
        if self.mini_batches == 1 and self.epochs == 1:
            return self._step(batch, loss)
        if batch.old_logp_NT is None:
            batch = batch.with_columns(old_logp_NT=self.logprobs(batch))
        parts = group_parts(batch.group_N, self.mini_batches)
        sizes = dist.all_reduce_sum(torch.tensor([float(len(rows)) for rows in parts]))
        # a part with no rows on any rank: no step (AdamW would still move), the lr's count kept
        results = [self._step(batch.select(rows), loss) if size > 0 else self.engine.lr_scheduler.step()
                   for _ in range(self.epochs) for rows, size in zip(parts, sizes)]
        return mean_stats([r for r in results if r is not None])

    def _step(self, batch: StepBatch, loss: Any) -> dict[str, float]:
        """One optimizer step on ``loss`` over ``batch`` (this rank's rows of the mini-batch);
        returns the loss statistics summed over micro-batches and ranks (each is already divided
        by the global denominators, so the sum is the mini-batch value), ``optim/lr`` and
        ``optim/grad_norm`` (before clipping); when the batch has the rollout engine's log-probs,
        ``rollout/logprob_gap_{mean,max}``: |this forward's log-prob - the engine's| over the trained
        tokens (their mean, and max), the rollout/trainer mismatch."""
        length_N = (batch.mask_NT > 0).sum(-1)
        groups = 0 if batch.group_N is None else len(torch.unique(batch.group_N))
        local = torch.tensor(
            [float(length_N.sum()), float((length_N > 0).sum()), float(groups)], dtype=torch.float64
        )
        total = dist.all_reduce_sum(local)
        batch.norm = LossNorm(
            total_tokens=float(total[0]), total_rows=float(total[1]), total_groups=float(total[2])
        )
        device, scale = dist.device(), float(dist.world_size())
        sums: dict[str, torch.Tensor] = {}
        lr = float(self.engine.get_lr()[0])
        rows = None
        if self.skip_zero_advantage and loss.zero_advantage_is_zero_loss:
            rows = (batch.advantages_N != 0).nonzero().squeeze(1)
        plan = self._plan(batch, rows)
        bad, gap_max = False, torch.zeros((), dtype=torch.float64)
        for step, index in enumerate(plan):
            # Gradients add up over the micro-batches; the last one is the reduction boundary.
            self.engine.set_gradient_accumulation_boundary(step == len(plan) - 1)
            logp = self._logp(self.engine, *self._rows(batch, index))
            if len(index) == 0:
                self.engine.backward(logp.sum() * 0.0, scale_wrt_gas=False)
                continue
            micro = columns(batch, index, logp.shape[1], device)
            if micro.old_logp_NT is None:  # on-policy: pi_old is the policy of this very forward
                micro.old_logp_NT = logp.detach()
            value, stats = loss(logp, micro)
            if micro.logp_NT is not None:  # the rollout engine's log-probs of the same tokens
                gap = (logp.detach().float() - micro.logp_NT.float()).abs() * micro.mask_NT
                stats = {**stats, "rollout/gap_sum": gap.sum(), "rollout/gap_tokens": micro.mask_NT.sum()}
                gap_max = torch.maximum(gap_max, gap.max().double().cpu())
            if not bool(torch.isfinite(value)):  # still one backward: the ranks reduce together
                bad, value = True, logp.sum() * 0.0
            self.engine.backward(value * scale, scale_wrt_gas=False)
            for key, stat in stats.items():
                sums[key] = sums.get(key, 0.0) + stat.detach().double().cpu()
        own_norm = self._grad_norm() if self.zero_stage == 0 else None
        bad = bad or (own_norm is not None and not math.isfinite(own_norm))
        if dist.all_reduce_sum(torch.tensor([float(bad)]))[0] > 0:
            return self._skip(sums)
        self.bad_in_a_row = 0
        self.engine.step()
        grad_norm = self.engine.get_global_grad_norm()
        grad_norm = own_norm if grad_norm is None else float(grad_norm)
        # a rank whose rows were all skipped (zero advantage) has no statistics: every rank must
        # still join the one all-reduce, over the keys any rank has (missing ones count as 0)
        keys = sorted(set(sums).union(*dist.all_gather_object(sorted(sums))))
        sums = {k: sums.get(k, torch.zeros((), dtype=torch.float64)) for k in keys}
        reduced = dist.all_reduce_sum(torch.stack([sums[k] for k in keys])) if keys else []
        result = {k: float(v) for k, v in zip(keys, reduced)}
        result.update({"optim/lr": lr, "optim/grad_norm": float(grad_norm),
                       "optim/skipped_steps": float(self.skipped_steps)})
        if "rollout/gap_sum" in result:  # the mean over the tokens trained on (skipped rows have no gap)
            result["rollout/logprob_gap_mean"] = result.pop("rollout/gap_sum") / max(result.pop("rollout/gap_tokens"), 1.0)
            result["rollout/logprob_gap_max"] = float(dist.all_reduce_max(gap_max.reshape(1))[0])
        return result

    def _skip(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        """Drop a NaN/inf update's gradients instead of stepping; count it (``max_bad_steps``)."""
        self.engine.zero_grad()
        if self.zero_stage > 0:
            self.engine.optimizer.zero_grad()
        self.skipped_steps += 1
        self.bad_in_a_row += 1
        if self.max_bad_steps and self.bad_in_a_row >= self.max_bad_steps:
            raise BadUpdates(self.bad_in_a_row, self.max_bad_steps)
        lr = float(self.engine.get_lr()[0])
        keys = sorted(set(sums).union(*dist.all_gather_object(sorted(sums))) - {"rollout/gap_sum", "rollout/gap_tokens"})
        return {**{k: float("nan") for k in keys}, "optim/lr": lr, "optim/grad_norm": float("nan"),
                "optim/skipped_steps": float(self.skipped_steps)}

    def _grad_norm(self) -> float:
        """Global L2 norm of the (already all-reduced) gradients without ZeRO."""
        norms = [p.grad.detach().float().norm() for p in self.engine.module.parameters() if p.grad is not None]
        return float(torch.stack(norms).norm()) if norms else 0.0

    # -- weights and checkpoints --------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        """The full state dict on the CPU, on every rank (tied weights under each of their names)."""
        return dict(self.named_weights())

    def weight_names(self) -> list[str]:
        """The names :meth:`named_weights` yields, in its order, without gathering anything."""
        return list(self.engine.module.state_dict().keys())

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, tensor)`` for every state-dict entry, one at a time, on the CPU; under ZeRO-3
        each parameter is gathered from the shards only while it is copied (a collective: every
        rank consumes the whole iterator), so a weight sync never holds the model twice."""
        import deepspeed

        module = self.engine.module
        params = dict(module.named_parameters(remove_duplicate=False)) if self.zero_stage == 3 else {}
        for key, value in module.state_dict().items():
            gathered = [params[key]] if key in params else []
            with deepspeed.zero.GatheredParameters(gathered, modifier_rank=None, enabled=bool(gathered)):
                value = (gathered[0] if gathered else value).detach().cpu().clone()
            yield key, value

    def save(self, directory: str) -> None:
        """``directory/model``: Hugging Face weights (+ tokenizer, or ``directory/tokenizer`` when
        the model keeps it apart, ModelSpec.tokenizer_path); ``directory/trainer``: DeepSpeed's
        model, optimizer and scheduler state (every rank writes its shards). Call on all ranks."""
        state = self.weights()
        if dist.is_main():
            model_dir = os.path.join(directory, "model")
            self.engine.module.save_pretrained(model_dir, state_dict=state)
            apart = self.spec.tokenizer_path not in (None, self.spec.path)
            self.tokenizer.save_pretrained(os.path.join(directory, "tokenizer") if apart else model_dir)
        self.engine.save_checkpoint(os.path.join(directory, "trainer"), tag="state",
                                    client_state={"skipped_steps": self.skipped_steps,
                                                  "bad_in_a_row": self.bad_in_a_row})
        dist.barrier()

    def load(self, directory: str) -> None:
        """Restore what ``save`` wrote in ``directory/trainer`` (model, optimizer, scheduler)."""
        path, client = self.engine.load_checkpoint(os.path.join(directory, "trainer"), tag="state")
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {directory}/trainer")
        self.skipped_steps = int((client or {}).get("skipped_steps", 0))
        self.bad_in_a_row = int((client or {}).get("bad_in_a_row", 0))
