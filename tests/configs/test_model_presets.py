"""The model presets (conf/model/*.yaml): each composes into a ModelSpec and renders a known question
to the prompt string written out by hand below (the chat formats of rlrun/engines/chat.py); the
rendering is checked against a tokenizer's own chat template (built in place: no downloads); the
chat formats are tokenized without added special tokens, plain text with them; rlrun-eval takes the
format of the checkpoint's own run."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from rlrun.engines.chat import ChatFormat, check_against_tokenizer
from rlrun.engines.model import ModelSpec, load_tokenizer
from rlrun.wiring.cli import compose

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
QUESTION = "What is 1+1?"
R1 = "<｜begin▁of▁sentence｜><｜User｜>What is 1+1?<｜Assistant｜><think>\n"
QWEN3 = "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n"
QWEN_MATH = ("<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
             "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n")
EXPECTED = {  # preset: (hub id, the prompt the model is given for QUESTION)
    "r1_distill_qwen_1_5b": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", R1),
    "r1_distill_qwen_7b": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", R1),
    "deepscaler_1_5b": ("agentica-org/DeepScaleR-1.5B-Preview", R1),
    "qwen2_5_math_1_5b": ("Qwen/Qwen2.5-Math-1.5B", QWEN_MATH),
    "qwen2_5_math_7b": ("Qwen/Qwen2.5-Math-7B", QWEN_MATH),
    "qwen2_5_math_1_5b_instruct": ("Qwen/Qwen2.5-Math-1.5B-Instruct", QWEN_MATH),
    "qwen2_5_math_7b_instruct": ("Qwen/Qwen2.5-Math-7B-Instruct", QWEN_MATH),
    "qwen2_5_1_5b_instruct": ("Qwen/Qwen2.5-1.5B-Instruct",
                              "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                              "assistant.<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n"),
    "qwen2_5_1_5b": ("Qwen/Qwen2.5-1.5B", "What is 1+1?"),
    "qwen2_5_7b": ("Qwen/Qwen2.5-7B", "What is 1+1?"),
    "qwen3_0_6b": ("Qwen/Qwen3-0.6B", QWEN3),
    "qwen3_1_7b": ("Qwen/Qwen3-1.7B", QWEN3),
    "qwen3_4b": ("Qwen/Qwen3-4B", QWEN3),
    "qwen3_8b": ("Qwen/Qwen3-8B", QWEN3),
}
# A ChatML template written for this test (Jinja, the form tokenizers keep in tokenizer_config.json).
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_every_real_model_preset_is_listed_here():
    shipped = {p.stem for p in CONF.glob("*.yaml")} - {"hf", "tiny", "tiny_compare"}
    assert shipped == set(EXPECTED)


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_preset_composes_and_renders_the_known_prompt(preset):
    spec = instantiate(compose([f"model={preset}"]).model)
    assert isinstance(spec, ModelSpec)
    hub_id, prompt = EXPECTED[preset]
    assert spec.path == hub_id and spec.dtype == "bfloat16"
    assert spec.chat.render(QUESTION) == prompt
    assert spec.max_new_tokens <= spec.context_length


def test_the_chat_fields_change_on_the_command_line():
    spec = instantiate(compose(["model=qwen3_8b", "model.generation_suffix='<think>\n\n</think>\n\n'",
                                "model.system_prompt=Be brief."]).model)
    assert spec.chat.render("Hi") == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                                      "<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_a_bad_chat_format_is_one_line():
    with pytest.raises(ValueError, match=r"^model\.chat_format='chatlm' is not one of plain, chatml, deepseek_r1$"):
        ModelSpec(path="Qwen/Qwen3-8B", chat_format="chatlm")
    with pytest.raises(ValueError, match=r"^model\.chat_format=plain takes no model\.system_prompt"):
        ModelSpec(path="Qwen/Qwen3-8B", system_prompt="Be brief.")
    with pytest.raises(ValueError, match=r"^model\.max_new_tokens=0 must be a positive number of tokens"):
        ModelSpec(path="Qwen/Qwen3-8B", max_new_tokens=0)


@pytest.fixture
def tokenizer(tmp_path):
    from rlrun.tasks.tokenizer import save_tokenizer

    tok = load_tokenizer(ModelSpec(path=str(save_tokenizer(tmp_path / "tok"))))
    tok.chat_template = CHATML_TEMPLATE
    return tok


def test_the_rendering_is_checked_against_the_tokenizers_own_template(tokenizer):
    chatml = ChatFormat("chatml", system="Be brief.")
    assert check_against_tokenizer(chatml, tokenizer) is None  # the same string, from transformers' Jinja
    note = check_against_tokenizer(ChatFormat("chatml", generation_suffix="<think>\n"), tokenizer)
    assert note == ("model.chat_format=chatml renders the prompt '<|im_start|>user\\nWhat is 1+1?<|im_end|>\\n"
                    "<|im_start|>assistant\\n<think>\\n'; the tokenizer's own chat template renders "
                    "'<|im_start|>user\\nWhat is 1+1?<|im_end|>\\n<|im_start|>assistant\\n' (rlrun uses the former; "
                    "set model.chat_format/system_prompt/generation_suffix to match the template, or leave it if "
                    "the paper's prompt differs on purpose)")
    assert check_against_tokenizer(ChatFormat("plain"), tokenizer) is None  # plain text has no template


def test_chat_formats_write_their_own_special_tokens(tokenizer):
    # the character tokenizer: <bos> = 1 is added to plain text only; one id per character otherwise
    assert ChatFormat("plain").encode(tokenizer, "1+1") == [1, *tokenizer("1+1", add_special_tokens=False)["input_ids"]]
    chat = ChatFormat("chatml")
    assert chat.encode(tokenizer, "1+1") == tokenizer(chat.render("1+1"), add_special_tokens=False)["input_ids"]
    assert chat.encode(tokenizer, "1+1")[0] != 1


def test_rlrun_eval_takes_the_chat_format_of_the_checkpoints_run(tmp_path):
    import json

    from rlrun.analysis.evaluate import model_spec

    step = tmp_path / "run" / "checkpoints" / "step_000002"
    (step / "model").mkdir(parents=True)
    (step / "model" / "config.json").write_text("{}")
    resolved = {"model": {"chat_format": "deepseek_r1", "system_prompt": None, "generation_suffix": "<think>\n"}}
    (step / "config.json").write_text(json.dumps({"composed": {}, "resolved": resolved}))
    spec, run_dir = model_spec(str(step), str(step / "model"), {})
    assert spec.chat == ChatFormat("deepseek_r1", None, "<think>\n") and run_dir == tmp_path / "run"
    spec, _ = model_spec(str(step), str(step / "model"), {"generation_suffix": ""})  # the command line wins
    assert spec.chat == ChatFormat("deepseek_r1", None, "")
