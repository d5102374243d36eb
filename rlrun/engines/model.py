"""Where a policy's weights and tokenizer live, and the one way rlrun loads them.

The tiny built-in model and a Hugging Face hub model go through the same
``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` calls.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from rlrun.engines.chat import ChatFormat, check_against_tokenizer

# Files one of which a model or tokenizer dir written by save_pretrained holds
MARKERS = ("config.json", "tokenizer_config.json", "tokenizer.json")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    """A model directory or hub id. ``tokenizer_path`` defaults to ``path``; the tiny model keeps
    its tokenizer in a separate directory (transformers 5.x would otherwise load a Qwen2 tokenizer
    for a qwen2-type ``config.json`` and drop spaces, MEASURED.md "Traps")."""

    path: str
    tokenizer_path: str | None = None
    dtype: str = "float32"
    # how the prompt is put to the model (rlrun.engines.chat): plain | chatml | deepseek_r1
    chat_format: str = "plain"
    system_prompt: str | None = None
    generation_suffix: str = ""
    # the model's context (prompt + completion tokens; vLLM's max_model_len) and the generation cap
    # its papers evaluate at (the rollout engines' default cap); None: the engine's own
    context_length: int | None = None
    max_new_tokens: int | None = None
    # the end of the thinking span in a completion (``length.span=thinking``, PEAR, budget forcing)
    # and the cue a budget-forced evaluation writes after it before the model answers (ALGORITHMS.md 5.3)
    think_end: str = "</think>"
    answer_cue: str = "\n\n**Final Answer.**"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype={self.dtype!r} is not one of {sorted(DTYPES)}")
        _ = self.chat  # a bad chat format fails here, when the config is built
        if not self.think_end:
            raise ValueError("model.think_end is empty: give the string that ends the thinking span, e.g. '</think>'")
        for key, value in (("model.context_length", self.context_length), ("model.max_new_tokens", self.max_new_tokens)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{key}={value!r} must be a positive number of tokens (or null)")
        for key, value in (("model.path", self.path), ("model.tokenizer_path", self.tokenizer_path)):
            if value is not None:
                check_local(key, value)


    @property
    def chat(self) -> ChatFormat:
        return ChatFormat(self.chat_format, self.system_prompt, self.generation_suffix)

    def think_end_ids(self, tokenizer) -> tuple[int, ...]:
        """The token ids of ``think_end`` (one special token for Qwen3 and R1-distill tokenizers,
        several for the tiny model's characters): what :attr:`StepBatch.thinking_tokens_N` looks for."""
        return _ids(tokenizer, self.think_end)

    def answer_cue_ids(self, tokenizer) -> tuple[int, ...]:
        """The token ids of ``answer_cue`` (empty for an empty cue): what a budget-forced
        evaluation writes after ``think_end`` (rlrun.runtime.forcing)."""
        return _ids(tokenizer, self.answer_cue)


def _ids(tokenizer, text: str) -> tuple[int, ...]:
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else ()


class ModelError(ValueError):
    """A model that cannot be found or loaded: one line naming the path and what to give instead."""


def looks_local(path: str) -> bool:
    """A filesystem path rather than a hub id (``org/name`` or ``name``)."""
    return os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1 or os.path.exists(path)


def check_local(key: str, path: str) -> None:
    """A local ``path`` must be a model dir (a ``config.json`` or a tokenizer file in it)."""
    if not looks_local(path):
        return  # a hub id: from_pretrained fetches it (or says why not, load_model)
    full = os.path.expanduser(path)
    if not os.path.exists(full):
        raise ModelError(f"{key}={path} does not exist; give a model dir (written by save_pretrained) "
                         "or a Hugging Face hub id")
    if not os.path.isdir(full):
        raise ModelError(f"{key}={path} is a file, not a model dir; give the directory holding config.json")
    if not any(os.path.exists(os.path.join(full, name)) for name in MARKERS):
        raise ModelError(f"{key}={path} is not a model dir (no config.json or tokenizer files in it: "
                         f"{', '.join(sorted(os.listdir(full))[:5]) or 'empty'}); give the directory "
                         "save_pretrained wrote")


def fetched(key: str, path: str, load):
    """``load(path)``, with a hub id that cannot be fetched (offline, unknown) as one line."""
    try:
        return load(path)
    except OSError as exc:
        if looks_local(path):
            raise ModelError(f"{key}={path} could not be loaded: {str(exc).splitlines()[0]}") from exc
        raise ModelError(
            f"{key}={path} is not a local dir and could not be fetched from the Hugging Face Hub "
            f"({str(exc).splitlines()[0]}); download it on a machine with network access "
            f"(hf download {path} --local-dir <dir>) and give {key}=<dir>, or point HF_HOME at a "
            "cache that holds it") from exc


def load_tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    key = "model.tokenizer_path" if spec.tokenizer_path else "model.path"
    tokenizer = fetched(key, spec.tokenizer_path or spec.path, AutoTokenizer.from_pretrained)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: ModelSpec) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-shard bars on every load and save are noise in a run log
    return fetched("model.path", spec.path,
                   lambda path: AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[spec.dtype]))


def chat_note(spec: ModelSpec, tokenizer) -> None:
    """At start: warn in one line where ``spec``'s chat format renders a prompt otherwise than the
    tokenizer's own chat template (:func:`rlrun.engines.chat.check_against_tokenizer`)."""
    import warnings

    note = check_against_tokenizer(spec.chat, tokenizer)
    if note is not None:
        warnings.warn(note, stacklevel=2)
