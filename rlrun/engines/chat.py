"""How a prompt is put to a model: the chat format of its preset around the task's question.

A task writes the user's turn (``Problem.prompt``: the question in the data option's ``prompt``
template, with LCPO's length instruction when the algo adds one). The model preset says how that
turn reaches the model (``model.chat_format``, ``model.system_prompt``, ``model.generation_suffix``):

* ``plain``: the turn as it is, the tokenizer's special tokens added (``<bos>``); the tiny model.
* ``chatml``: Qwen2.5, Qwen2.5-Math and Qwen3 (``<|im_start|>role\\n...<|im_end|>\\n``); a system turn
  only where the preset or the command line gives one (the tokenizers' templates add a default
  system turn of their own to Qwen2.5 models: the presets write it out, so it can be seen and changed).
* ``deepseek_r1``: DeepSeek-R1 and its distilled models, DeepScaleR
  (``<｜begin▁of▁sentence｜>{system}<｜User｜>{turn}<｜Assistant｜>``).

``generation_suffix`` is written after the assistant's header: ``"<think>\\n"`` where the model's
template opens the thinking span itself (R1-Distill's tokenizer since its February 2025 update), so
the completion holds the thinking and ``</think>`` but no ``<think>``; ``"<think>\\n\\n</think>\\n\\n"``
is Qwen3's non-thinking mode. The rendered prompt is tokenized without added special tokens: the
format writes them. :func:`check_against_tokenizer` compares the rendering with the tokenizer's own
chat template, where it has one, at start.
"""
from __future__ import annotations

from dataclasses import dataclass

FORMATS = ("plain", "chatml", "deepseek_r1")
R1_BOS, R1_USER, R1_ASSISTANT = "<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"


@dataclass(frozen=True)
class ChatFormat:
    name: str = "plain"
    system: str | None = None
    generation_suffix: str = ""

    def __post_init__(self) -> None:
        if self.name not in FORMATS:
            raise ValueError(f"model.chat_format={self.name!r} is not one of {', '.join(FORMATS)}")
        if self.name == "plain" and (self.system or self.generation_suffix):
            raise ValueError("model.chat_format=plain takes no model.system_prompt or model.generation_suffix: "
                             "choose chatml or deepseek_r1, or write them into the data option's prompt")

    def render(self, turn: str) -> str:
        """The prompt text the model is given for the user's ``turn``."""
        if self.name == "plain":
            return turn
        if self.name == "chatml":
            system = f"<|im_start|>system\n{self.system}<|im_end|>\n" if self.system is not None else ""
            return f"{system}<|im_start|>user\n{turn}<|im_end|>\n<|im_start|>assistant\n{self.generation_suffix}"
        return f"{R1_BOS}{self.system or ''}{R1_USER}{turn}{R1_ASSISTANT}{self.generation_suffix}"

    def encode(self, tokenizer, turn: str) -> list[int]:
        """The token ids of the prompt for ``turn``: ``plain`` with the tokenizer's special tokens,
        the chat formats without (they write their own)."""
        return tokenizer(self.render(turn), add_special_tokens=self.name == "plain")["input_ids"]

    def messages(self, turn: str) -> list[dict[str, str]]:
        """The same prompt as chat messages (for a tokenizer's own template)."""
        system = [{"role": "system", "content": self.system}] if self.system is not None else []
        return [*system, {"role": "user", "content": turn}]


def encode_with_system(chat: ChatFormat, tokenizer, turn: str, system: str | None) -> list[int]:
    """The prompt ids of ``turn`` with ``system`` as the system prompt (None: the format's own). A
    ``plain`` model has no system role: the prompt is then ``"System: {system}\nUser: {turn}\nAssistant: "``
    (SAR's released code for a tokenizer without a chat template, ALGORITHMS.md 4.5.3)."""
    if system is None:
        return chat.encode(tokenizer, turn)
    if chat.name == "plain":
        text = f"System: {system}\nUser: {turn}\nAssistant: "
        return tokenizer(text, add_special_tokens=True)["input_ids"]
    return ChatFormat(chat.name, system, chat.generation_suffix).encode(tokenizer, turn)


def check_against_tokenizer(chat: ChatFormat, tokenizer, turn: str = "What is 1+1?") -> str | None:
    """None where the tokenizer has no chat template, the format is ``plain``, or the tokenizer's
    template renders ``turn`` as ``chat`` does; else one line showing both renderings (a preset
    can differ on purpose, as a paper's prompt may: the run says so at start and goes on)."""
    template = getattr(tokenizer, "chat_template", None)
    if chat.name == "plain" or not template:
        return None
    theirs = tokenizer.apply_chat_template(chat.messages(turn), tokenize=False, add_generation_prompt=True)
    ours = chat.render(turn)
    if theirs == ours:
        return None
    return (f"model.chat_format={chat.name} renders the prompt {ours!r}; the tokenizer's own chat template "
            f"renders {theirs!r} (rlrun uses the former; set model.chat_format/system_prompt/generation_suffix "
            "to match the template, or leave it if the paper's prompt differs on purpose)")
