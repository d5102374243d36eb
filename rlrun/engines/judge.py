"""Judges for the CRM reward (:mod:`rlrun.core.crm`): a second model that scores how concise a
response is, ``p ∈ [0, 1]`` per (question, response) pair.

Either kind is loaded like the policy (:mod:`rlrun.engines.model`: a :class:`ModelSpec` with a
model dir written by ``save_pretrained`` or a hub id, ``tokenizer_path``, ``dtype``, the chat format
its prompt is rendered in), in eval mode and without gradients, on ``device``: ``auto`` is this
rank's device (``cuda:LOCAL_RANK``, or the CPU without CUDA, :func:`rlrun.runtime.dist.device`),
else ``cpu`` or ``cuda:N``. The judge's input is ``template`` with ``{question}`` and ``{response}``
filled in, rendered by the spec's chat format and scored ``batch_size`` texts at a time.

Loading: the tokenizer and the model's config at construction (a path or hub id that cannot be
found, or a judge of the wrong shape, fails at start in one line), the weights on the first call
(a run whose completions are all wrong never loads them; building the reward stays cheap).

- :class:`ClassifierJudge`: ``AutoModelForSequenceClassification`` with one label; ``link``
  ``sigmoid`` gives p = σ(logit) (a Bradley-Terry reward head, TRL's RewardTrainer: p is the chance
  of beating a response at logit 0), ``clamp`` p = min(max(logit, 0), 1) (a head regressed onto
  [0, 1] scores). Right-padded; the head reads the last token that is not padding.
- :class:`CausalLMJudge`: ``AutoModelForCausalLM`` asked a Yes/No question; p = p(yes) / (p(yes) +
  p(no)) of the next token after the rendered prompt, ``answer_yes``/``answer_no`` the answer words
  (the first token of each). Left-padded with position ids counted from each text's first token.
"""
from __future__ import annotations

from typing import Any

import torch

from rlrun.engines.model import DTYPES, ModelSpec, fetched

# the override a user gives for the judge of conf/reward/crm.yaml (named in error messages)
KEY = "reward.terms.crm.fn.judge.model.path"
LINKS = ("sigmoid", "clamp")


def judge_model(path: str, tokenizer_path: str | None = None, dtype: str = "float32",
                chat_format: str = "plain", system_prompt: str | None = None,
                generation_suffix: str = "") -> ModelSpec:
    """The judge's :class:`ModelSpec` (the fields a judge uses), its errors naming the judge's key
    (``reward.terms.crm.fn.judge.model.path=...``) rather than the policy's ``model.path``."""
    try:
        return ModelSpec(path=path, tokenizer_path=tokenizer_path, dtype=dtype, chat_format=chat_format,
                         system_prompt=system_prompt, generation_suffix=generation_suffix)
    except ValueError as exc:
        message = str(exc)
        raise type(exc)(KEY.removesuffix(".path") + message[len("model"):] if message.startswith("model.")
                        else message) from exc


def judge_device(device: str) -> torch.device:
    """``auto``: this rank's device; else the device named (``cpu``, ``cuda:1``)."""
    if device == "auto":
        from rlrun.runtime import dist

        return dist.device()
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"judge device={device!r} is not auto, cpu or cuda:N") from exc


class _Judge:
    """Loading, templating and batching shared by both kinds; a kind gives ``auto_class`` and
    ``scores(model, encoded)``."""

    auto_class = "AutoModel"
    padding_side = "right"

    def __init__(self, model: ModelSpec, template: str, batch_size: int, device: str) -> None:
        if not isinstance(model, ModelSpec):
            raise ValueError(f"judge model={model!r} is not a ModelSpec: give a model node "
                             "({_target_: rlrun.engines.judge.judge_model, path: <dir or hub id>})")
        if batch_size < 1:
            raise ValueError(f"judge batch_size={batch_size} must be >= 1")
        try:
            template.format(question="q", response="r")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"judge template: fields are {{question}} and {{response}} (write a literal "
                             f"brace as {{{{ or }}}}): {type(exc).__name__}: {exc}") from exc
        if "{question}" not in template or "{response}" not in template:
            raise ValueError("judge template must hold {question} and {response}")
        self.spec, self.template, self.batch_size = model, template, int(batch_size)
        self.device = judge_device(device)
        self.tokenizer = self.load_tokenizer()
        self.config = fetched(KEY, model.path, self.load_config)
        self.check(self.config)
        self._model: Any = None

    def load_config(self, path: str):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(path)

    def load_tokenizer(self):
        from transformers import AutoTokenizer

        key = KEY.replace(".path", ".tokenizer_path") if self.spec.tokenizer_path else KEY
        tokenizer = fetched(key, self.spec.tokenizer_path or self.spec.path, AutoTokenizer.from_pretrained)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if tokenizer.pad_token_id is None:
            raise ValueError(f"{KEY}={self.spec.path}: the judge's tokenizer has no pad or eos token")
        tokenizer.padding_side = self.padding_side
        return tokenizer

    def check(self, config) -> None:
        """Refuse a judge of the wrong shape at start (the kinds override it)."""

    def model(self) -> torch.nn.Module:
        """The judge's weights, loaded on first use, in eval mode with gradients off."""
        if self._model is None:
            import transformers
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            auto = getattr(transformers, self.auto_class)
            model = fetched(KEY, self.spec.path,
                            lambda path: auto.from_pretrained(path, dtype=DTYPES[self.spec.dtype]))
            model.requires_grad_(False)
            self._model = model.eval().to(self.device)
        return self._model

    def texts(self, questions: list[str], responses: list[str]) -> list[str]:
        """The judge's input per pair: ``template`` filled in, in the spec's chat format."""
        chat = self.spec.chat
        return [chat.render(self.template.format(question=q, response=r)) for q, r in zip(questions, responses)]

    def __call__(self, questions: list[str], responses: list[str]) -> torch.Tensor:
        """p ∈ [0, 1] per (question, response) pair, float32 on the CPU."""
        if len(questions) != len(responses):
            raise ValueError(f"{len(questions)} questions for {len(responses)} responses")
        texts = self.texts(questions, responses)
        model = self.model()
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                encoded = self.tokenizer(texts[start:start + self.batch_size], padding=True, return_tensors="pt",
                                         add_special_tokens=self.spec.chat_format == "plain")
                out.append(self.scores(model, {k: v.to(self.device) for k, v in encoded.items()}).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def scores(self, model, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class ClassifierJudge(_Judge):
    """A sequence classifier with one label: p = σ(logit) (``sigmoid``) or clamp(logit, 0, 1)
    (``clamp``); module docstring."""

    auto_class = "AutoModelForSequenceClassification"

    def __init__(self, model: ModelSpec, template: str, batch_size: int, device: str, link: str) -> None:
        if link not in LINKS:
            raise ValueError(f"judge link={link!r} is not one of {', '.join(LINKS)}")
        self.link = link
        super().__init__(model, template, batch_size, device)

    def check(self, config) -> None:
        if getattr(config, "num_labels", None) != 1:
            raise ValueError(f"{KEY}={self.spec.path} has {getattr(config, 'num_labels', None)} labels; a "
                             "classifier judge needs one (a scalar conciseness score)")

    def model(self) -> torch.nn.Module:
        model = super().model()
        if model.config.pad_token_id is None:  # the head finds each row's last token by the pad id
            model.config.pad_token_id = self.tokenizer.pad_token_id
        return model

    def scores(self, model, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        logit = model(**encoded).logits[:, 0].float()
        return torch.sigmoid(logit) if self.link == "sigmoid" else logit.clamp(0.0, 1.0)


class CausalLMJudge(_Judge):
    """A causal LM asked Yes/No: p = p(yes) / (p(yes) + p(no)) of the next token (module docstring)."""

    auto_class = "AutoModelForCausalLM"
    padding_side = "left"

    def __init__(self, model: ModelSpec, template: str, batch_size: int, device: str,
                 answer_yes: str, answer_no: str) -> None:
        super().__init__(model, template, batch_size, device)
        ids = [self.tokenizer(word, add_special_tokens=False)["input_ids"] for word in (answer_yes, answer_no)]
        if not ids[0] or not ids[1] or ids[0][0] == ids[1][0]:
            raise ValueError(f"judge answer_yes={answer_yes!r} and answer_no={answer_no!r} must start with "
                             f"different tokens (their tokens: {ids[0]} and {ids[1]})")
        self.yes_id, self.no_id = ids[0][0], ids[1][0]

    def scores(self, model, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = encoded["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=encoded["input_ids"], attention_mask=mask, position_ids=positions,
                       logits_to_keep=1).logits[:, -1].float()
        pair = logits[:, [self.yes_id, self.no_id]]  # p(yes)/(p(yes)+p(no)): the softmax over the two
        return torch.softmax(pair, dim=-1)[:, 0]
