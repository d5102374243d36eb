"""The character tokenizer, loaded exactly as rlrun loads any tokenizer."""
from __future__ import annotations

import pytest

from rlrun.engines.model import ModelSpec, load_tokenizer
from rlrun.tasks.arith import worked_trace
from rlrun.tasks.tokenizer import CHARS, save_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    directory = save_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")
    return load_tokenizer(ModelSpec(path="unused", tokenizer_path=str(directory)))


def test_vocabulary_and_special_ids(tokenizer):
    assert len(tokenizer) == 100  # 95 printable ASCII + newline + 4 specials
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.unk_token_id == 3
    assert tokenizer("a b", add_special_tokens=False)["input_ids"] == [
        4 + CHARS.index("a"), 4 + CHARS.index(" "), 4 + CHARS.index("b")
    ]


@pytest.mark.parametrize(
    "text",
    ["Add 347+708.\n", worked_trace(347, 708, 3, rechecks=(0, 2)), "  two  spaces\n\nand ~!{}"],
)
def test_round_trip_keeps_spaces_and_newlines(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per character
    assert tokenizer.decode(ids) == text


def test_prompt_then_response_is_what_a_rollout_sees(tokenizer):
    prompt, response = "Add 347+708.\n", worked_trace(347, 708, 3)
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    assert prompt_ids[0] == tokenizer.bos_token_id and len(prompt_ids) == 14
    assert tokenizer.eos_token_id not in prompt_ids + response_ids
    whole = tokenizer(prompt + response, add_special_tokens=True)["input_ids"]
    assert prompt_ids + response_ids == whole  # concatenation-safe
    sequence = prompt_ids + response_ids + [tokenizer.eos_token_id]
    assert tokenizer.decode(sequence[len(prompt_ids):], skip_special_tokens=True) == response


def test_unknown_characters_map_to_unk(tokenizer):
    assert tokenizer("\té", add_special_tokens=False)["input_ids"] == [3, 3]


def test_refuses_a_directory_with_a_model_config(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="own directory"):
        save_tokenizer(tmp_path)
