"""The CRM judges (rlrun.engines.judge) on small models built here with transformers and loaded through
conf/reward/crm.yaml's judge settings: the scores are the models' own forward passes, batching changes
nothing, a judge that cannot be found fails in one line, and ``rlrun reward=crm debug=cpu`` runs 2 steps."""
from __future__ import annotations

import json
import os

import pytest
import torch

from rlrun.tasks.tokenizer import save_tokenizer
from rlrun.wiring.build import build, build_run
from rlrun.wiring.cli import compose
from rlrun.wiring.config_check import ConfigError
from rlrun.wiring.settings import validate

TEMPLATE = "Q: {question} R: {response} Concise? "
QUESTIONS = ["What is 12+30?", "What is 7+5?", "What is 100+1?"]
RESPONSES = ["<think>12+30=42</think> \\boxed{42}", "12", "<think>1+0=1, check: 1. 0+0=0 ok</think> \\boxed{101}"]
JUDGE = "reward.terms.crm.fn.judge"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A one-label Qwen2ForSequenceClassification and a Qwen2ForCausalLM, random, saved with
    save_pretrained; the tiny model's character tokenizer in its own dir."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    root = tmp_path_factory.mktemp("judges")
    save_tokenizer(root / "tokenizer")
    config = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    Qwen2ForSequenceClassification(Qwen2Config(num_labels=1, **config)).save_pretrained(str(root / "classifier"))
    Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=True, **config)).save_pretrained(str(root / "lm"))
    return root


def classifier_overrides(root, batch_size: int = 2, path: str | None = None) -> list[str]:
    model = (f"{{_target_:rlrun.engines.judge.judge_model,path:'{path or root / 'classifier'}',"
             f"tokenizer_path:'{root / 'tokenizer'}'}}")
    return [f"~{JUDGE}", f"+{JUDGE}={{_target_:rlrun.engines.judge.ClassifierJudge,model:{model},"
                         f"template:'{TEMPLATE}',batch_size:{batch_size},device:cpu,link:sigmoid}}"]


def lm_overrides(root, batch_size: int = 2) -> list[str]:
    return [f"++{JUDGE}.model={{_target_:rlrun.engines.judge.judge_model,path:'{root / 'lm'}',"
            f"tokenizer_path:'{root / 'tokenizer'}'}}", f"{JUDGE}.template='{TEMPLATE}'",
            f"{JUDGE}.batch_size={batch_size}", f"{JUDGE}.device=cpu"]


def judge_from_yaml(overrides: list[str]):
    """The judge of ``rlrun reward=crm <overrides>``, validated and built as a run builds it."""
    cfg = compose(["reward=crm", "debug=cpu", *overrides])
    validate(cfg, world_size=1, out_dir="/tmp/rlrun-test-crm")
    return build(cfg, "reward").fns["crm"].judge


def own_forward(root, name: str):
    """Each text alone through the saved model, unpadded: what the judge must give."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(root / "tokenizer"))
    auto = AutoModelForSequenceClassification if name == "classifier" else AutoModelForCausalLM
    model = auto.from_pretrained(str(root / name)).eval()
    yes, no = (tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in ("Y", "N"))
    out = []
    with torch.no_grad():
        for q, r in zip(QUESTIONS, RESPONSES):
            ids = tokenizer(TEMPLATE.format(question=q, response=r), return_tensors="pt")["input_ids"]
            logits = model(input_ids=ids).logits
            if name == "classifier":
                out.append(torch.sigmoid(logits[0, 0]))  # p = sigmoid(logit)
            else:
                probs = torch.softmax(logits[0, -1], dim=-1)  # p(Yes) / (p(Yes) + p(No)), first tokens
                out.append(probs[yes] / (probs[yes] + probs[no]))
    return torch.stack(out)


@pytest.mark.parametrize("name,overrides", [("classifier", classifier_overrides), ("lm", lm_overrides)])
def test_judge_scores_are_the_models_own_forward(models, name, overrides):
    expected = own_forward(models, name)
    assert float(expected.max() - expected.min()) > 1e-4  # the texts score differently
    for batch_size in (1, 2, 3):  # one by one, padded pairs with a remainder, one padded batch
        judge = judge_from_yaml(overrides(models, batch_size))
        assert judge.batch_size == batch_size and judge.device == torch.device("cpu")
        torch.testing.assert_close(judge(QUESTIONS, RESPONSES), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make test-gpu)")
@pytest.mark.parametrize("name,overrides", [("classifier", classifier_overrides), ("lm", lm_overrides)])
def test_judge_on_cuda_scores_what_it_scores_on_cpu(models, name, overrides):
    # written without a GPU lent to the task: not run yet
    cpu = judge_from_yaml(overrides(models, 2))(QUESTIONS, RESPONSES)
    judge = judge_from_yaml([*overrides(models, 2), f"{JUDGE}.device=auto"])  # auto: this rank's GPU
    assert judge.device == torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    got = judge(QUESTIONS, RESPONSES)
    assert next(judge.model().parameters()).device.type == "cuda" and got.device.type == "cpu"
    torch.testing.assert_close(got, cpu, atol=1e-3, rtol=1e-3)  # TF32 matmuls on the GPU


def test_the_weights_load_on_the_first_call(models):
    judge = judge_from_yaml(lm_overrides(models))
    assert judge._model is None
    judge(QUESTIONS[:1], RESPONSES[:1])
    model = judge.model()
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_a_hub_id_that_is_not_available_fails_in_one_line(models, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network: fail at once
    with pytest.raises(ConfigError) as error:
        judge_from_yaml([f"++{JUDGE}.model={{_target_:rlrun.engines.judge.judge_model,path:rlrun-test/no-such-judge}}"])
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{JUDGE}.model.path=rlrun-test/no-such-judge is not a local dir and could not be fetched")


def test_a_missing_dir_names_the_judges_key(tmp_path):
    with pytest.raises(ConfigError, match=rf"^{JUDGE}.model.path={tmp_path}/none does not exist"):
        judge_from_yaml([f"++{JUDGE}.model={{_target_:rlrun.engines.judge.judge_model,path:'{tmp_path}/none'}}"])


@pytest.mark.parametrize("overrides,message", [
    (lambda root: [*lm_overrides(root), f"{JUDGE}.answer_yes=' Yes'", f"{JUDGE}.answer_no=' No'"],
     "must start with different tokens"),  # the character tokenizer: both start with ' '
    (lambda root: classifier_overrides(root, path=str(root / "lm")), "has None labels|has 2 labels"),
    (lambda root: [*lm_overrides(root), f"{JUDGE}.template='{{question}} only'"], "must hold"),
    (lambda root: [*lm_overrides(root), f"{JUDGE}.device=gpu0"], "is not auto, cpu or cuda:N"),
])
def test_bad_judge_settings_fail_at_start(models, overrides, message):
    with pytest.raises(ConfigError, match=message):
        judge_from_yaml(overrides(models))


def test_rlrun_reward_crm_debug_cpu_runs_two_steps(tmp_path):
    from rlrun.runtime import dist, loop

    dist.init()
    loop.train(build_run(compose(["reward=crm", "debug=cpu", "eval=none"]), str(tmp_path)))
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [line["step"] for line in lines] == [1, 2]
    for line in lines:
        assert 0.0 < line["reward/crm/judged_frac"] <= 1.0  # the tiny model answers most prompts right
        assert 0.0 < line["reward/crm/judge_score"] < 1.0
        assert line["reward/crm/s"] == (line["step"] - 1) / 2  # anneal 0 -> 1 over steps=2
        # R = correct (1 + 0.5 c (s + d)) with c, d <= 1: in [0, 1 + 0.5 (s + 1)]
        assert line["acc/train"] <= line["reward/total"] <= line["acc/train"] * (1 + 0.5 * (line["reward/crm/s"] + 1))
