"""Shared fixtures: a small random Qwen2 policy with a character tokenizer, built in seconds."""
from __future__ import annotations

import os
import string

import pytest
import torch

from rlrun.engines.model import ModelSpec

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest-xdist workers on the 2-core machine: one thread each (and in the
    # processes they start), since torch threads that outnumber the cores wait on each other many
    # times over; the tiny model's work is faster on one thread anyway.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def threads_alone(count: int = 2) -> int:
    """Torch threads for a test that uses ``count`` cores when run alone: one under pytest-xdist, where
    the other worker has the other core (`make test-slow`: the rebuild beside the bf16 demo)."""
    return 1 if os.environ.get("PYTEST_XDIST_WORKER") else count


def load_script(name: str):
    """scripts/<name> imported as a module (the scripts are not a package), for their tests."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / name
    if str(path.parent) not in sys.path:  # its sibling scripts import as when it runs
        sys.path.append(str(path.parent))
    spec = importlib.util.spec_from_file_location(f"rlrun_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_random_policy(directory, hidden: int = 64, seed: int = 0) -> ModelSpec:
    """A randomly initialised Qwen2ForCausalLM and a character tokenizer, saved like a real model
    (weights in ``directory/model``, tokenizer in ``directory/tokenizer``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    chars = list(string.printable[:95]) + ["\n"]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(str(directory / "tokenizer"))
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=2 * hidden, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(config).save_pretrained(str(directory / "model"))
    return ModelSpec(path=str(directory / "model"), tokenizer_path=str(directory / "tokenizer"))


@pytest.fixture(scope="session")
def random_policy(tmp_path_factory) -> ModelSpec:
    return build_random_policy(tmp_path_factory.mktemp("random_policy"))


def debug_overrides(option: str) -> list[str]:
    """Extra overrides an experiment preset needs under ``debug=cpu`` (2 prompts, 4 completions each):
    the GFPO comparison preset keeps 8 of 16, so under debug it keeps 2 of 4; a reproduction preset's
    own ``repro.debug`` list, as ``rlrun-repro ... debug=cpu`` adds it (e.g. DLER's 8 PPO mini-batches
    become 2: one group each)."""
    if option == "compare/gfpo":
        return ["algo.filter.keep=2"]
    if option.startswith("repro/"):
        from rlrun.wiring.cli import compose

        repro = compose([f"experiment={option}", "debug=cpu"]).get("repro") or {}
        return [str(o) for o in (repro.get("debug") or [])]
    return []


LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "HYDRA_FULL_ERROR")


def child_env(**extra: str) -> dict[str, str]:
    """The environment for an ``rlrun`` subprocess: this one without the process-group variables
    that an in-process ``dist.init()`` of an earlier test set (a child would take them for a
    launcher's and reuse the port this process still holds), nor HYDRA_FULL_ERROR, nor the
    ``WANDB_SERVICE`` an in-process W&B run sets (a child would log through this process's W&B
    service, which keeps a killed child's run id open: "run ID ... is in use" on its resume)."""
    import os

    dropped = (*LAUNCHER_VARS, "WANDB_SERVICE")
    return {**{k: v for k, v in os.environ.items() if k not in dropped}, **extra}


def step_input(correct, sampled_tokens, truncated, cap, group_size):
    """A StepBatch (for reward terms) whose completion i has ``sampled_tokens[i]`` sampled ids, EOS
    included when it is not truncated, under generation cap ``cap``; groups of ``group_size``."""
    from rlrun.types import Problem, StepBatch, Verdicts

    n = len(correct)
    problems = [Problem(uid=f"p{b}", prompt="q", answer="a") for b in range(n // group_size)]
    rollouts = StepBatch(
        problems=problems, group_size=group_size, prompt_ids=[[1]] * len(problems),
        completion_ids=[[7] * k for k in sampled_tokens], texts=[""] * n,
        length_tokens_N=torch.tensor([k - (0 if t else 1) for k, t in zip(sampled_tokens, truncated)]),
        truncated_N=torch.tensor(truncated, dtype=torch.bool), budget_tokens_N=torch.full((n,), cap),
    )
    verdicts = Verdicts(correct_N=torch.tensor(correct, dtype=torch.float32),
                        format_ok_N=torch.ones(n), predicted=[None] * n)
    return with_verdicts(rollouts=rollouts, verdicts=verdicts, step=0)


def with_verdicts(rollouts, verdicts, step: int = 0):
    """The step batch a reward term reads: the engine's columns, the verifier's and the step."""
    from rlrun.types import columns

    return rollouts.with_columns(step=step, **columns(verdicts))


def steps_logged(run_dir) -> list[int]:
    """The steps in ``run_dir``'s metrics.jsonl so far (complete lines only; none before it exists)."""
    import json
    import os

    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            return [json.loads(line)["step"] for line in f if line.endswith("\n")]
    except FileNotFoundError:
        return []
