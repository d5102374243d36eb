"""What reward terms ask of the policy (``AsksPolicy``, rlrun.runtime.policy_scores): the trainer's
entropies and log-probs after a rewritten prompt, checked against one unpadded forward per row of the
model itself (plain and chunked head, ZeRO-0 and 3), and SAR's empty-question prompt as a string."""
from __future__ import annotations

import pytest
import torch

from deepspeed_fixtures import build_tiny, make_rollouts
from rlrun.core.pear import PhaseEntropyPenalty
from rlrun.core.rewards import Composite
from rlrun.core.sar import SelfAlignedReward
from rlrun.engines.chat import ChatFormat, encode_with_system
from rlrun.engines.model import ModelSpec, load_model, load_tokenizer
from rlrun.engines.trainer.deepspeed import DeepSpeedTrainer
from rlrun.runtime.policy_scores import requests_of, with_policy_scores


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> ModelSpec:
    torch.set_num_threads(1)
    return build_tiny(str(tmp_path_factory.mktemp("tiny")))


def per_row(model, prompts: list[list[int]], rollouts) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy and log-prob of each completion position, one unpadded forward per row."""
    width = rollouts.mask_NT.shape[1]
    entropy, logp = torch.zeros(len(rollouts), width), torch.zeros(len(rollouts), width)
    for i, completion in enumerate(rollouts.completion_ids):
        if not completion:
            continue
        prompt = prompts[int(rollouts.group_N[i])]
        logits = model(input_ids=torch.tensor([prompt + completion]), use_cache=False).logits[0, len(prompt) - 1 : -1]
        p = logits.float().softmax(-1)
        entropy[i, : len(completion)] = -(p * p.log()).sum(-1)
        logp[i, : len(completion)] = logits.float().log_softmax(-1).gather(-1, torch.tensor(completion)[:, None])[:, 0]
    return entropy, logp


@pytest.mark.parametrize("stage,chunk", [(0, 0), (0, 3), (3, 3)])
def test_entropies_and_rewritten_prompt_logprobs_equal_the_model(spec, stage, chunk):
    trainer = DeepSpeedTrainer(spec, total_steps=1, zero_stage=stage, micro_batch_size=2, logprob_chunk=chunk)
    rollouts = make_rollouts([3, 5, 2], [8, 1, 7, 0, 1, 6], group_size=2, seed=1)
    sar, pear = SelfAlignedReward(system_prompt="Be brief."), PhaseEntropyPenalty()
    reward = Composite({"sar": {"weight": 0.2, "fn": sar}, "pear": {"weight": 1.0, "fn": pear},
                        "again": {"weight": 1.0, "fn": PhaseEntropyPenalty(alpha=2.0)}})
    assert len(requests_of(reward)) == 3  # the two PEAR terms share one entropy pass
    scored = with_policy_scores(trainer, reward, rollouts)
    model = load_model(spec).eval()
    with torch.no_grad():
        entropy, logp = per_row(model, rollouts.prompt_ids, rollouts)
        empty = load_tokenizer(spec)("System: Be brief.\nUser: \nAssistant: ")["input_ids"]
        _, logp_empty = per_row(model, [empty] * 3, rollouts)
    assert empty == trainer.encode_prompt("", "Be brief.")
    torch.testing.assert_close(scored.policy_NT[pear.request.key], entropy, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scored.policy_NT[sar.conditioned.key], logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scored.policy_NT[sar.unconditioned.key], logp_empty, atol=1e-5, rtol=1e-5)
    assert float(entropy.max()) > 1.0  # a real distribution (vocabulary ~100), not a one-hot
    assert not torch.allclose(logp, logp_empty)  # the question changes the answer's log-probs


def test_unasked_batch_is_untouched(spec):
    rollouts = make_rollouts([3], [2, 2], group_size=2, seed=0)
    assert with_policy_scores(None, Composite({"x": {"weight": 1.0, "fn": lambda b: b.length_tokens_N}}),
                              rollouts) is rollouts


def test_the_empty_question_prompt_in_each_chat_format():
    class Words:  # a tokenizer that shows the text it was given
        def __call__(self, text, add_special_tokens):
            return {"input_ids": [("<s>" if add_special_tokens else "") + text]}

    sys = "You are a reasoning expert assistant."
    assert encode_with_system(ChatFormat("plain"), Words(), "", sys) == [f"<s>System: {sys}\nUser: \nAssistant: "]
    assert encode_with_system(ChatFormat("chatml"), Words(), "", sys) == [
        f"<|im_start|>system\n{sys}<|im_end|>\n<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"]
    assert encode_with_system(ChatFormat("deepseek_r1", generation_suffix="<think>\n"), Words(), "", sys) == [
        f"<｜begin▁of▁sentence｜>{sys}<｜User｜><｜Assistant｜><think>\n"]
    assert encode_with_system(ChatFormat("plain"), Words(), "Q", None) == ["<s>Q"]  # no system: the format's own
