"""Where a policy's weights and tokenizer live, and the one way rlrun loads them.

The tiny built-in model and a Hugging Face hub model go through the same
``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` calls.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    """A model directory or hub id. ``tokenizer_path`` defaults to ``path``; the tiny model keeps
    its tokenizer in a separate directory (transformers 5.x would otherwise load a Qwen2 tokenizer
    for a qwen2-type ``config.json`` and drop spaces, MEASURED.md "Traps")."""

    path: str
    tokenizer_path: str | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype={self.dtype!r} is not one of {sorted(DTYPES)}")


def load_tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_path or spec.path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: ModelSpec) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-shard bars on every load and save are noise in a run log
    return AutoModelForCausalLM.from_pretrained(spec.path, dtype=DTYPES[spec.dtype])
