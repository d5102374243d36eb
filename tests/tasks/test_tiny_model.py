"""The tiny model: SFT pieces, installing the shipped weights into the cache, loading them like any
hub model, and (slow) that a rebuild with the recipe's schedule compressed into 500 steps of 32
examples learns the task (≥ 75 % held-out accuracy at T=1.0; measured 82.8 %)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from conftest import threads_alone
from rlrun.engines.model import ModelSpec, load_model, load_tokenizer
from rlrun.engines.rollout.hf import HFRollout
from rlrun.tasks import tiny_model
from rlrun.tasks.arith import ArithProblems
from rlrun.tasks.sft import SFTConfig, encode_examples, evaluate, lr_at, sft_loss, train
from rlrun.tasks.tokenizer import save_tokenizer
from rlrun.types import Problem

needs_shipped = pytest.mark.skipif(
    not tiny_model.is_complete(tiny_model.SHIPPED_DIR), reason="no weights shipped in the package"
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    directory = save_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")
    return load_tokenizer(ModelSpec(path=str(directory)))


def test_lr_schedule():
    cfg = SFTConfig(lr=1.0, warmup_frac=0.1)
    assert lr_at(0.0, cfg) == 0.0
    assert lr_at(0.05, cfg) == pytest.approx(0.5)  # half-way through warm-up
    assert lr_at(0.1, cfg) == pytest.approx(1.0)
    assert lr_at(0.55, cfg) == pytest.approx(0.5)  # cosine mid-point: (1 + cos(pi/2)) / 2
    assert lr_at(1.0, cfg) == pytest.approx(0.0, abs=1e-12)


def test_labels_cover_response_and_eos_only(tokenizer):
    problem = Problem("p", "Add 1+2.\n", "3")
    ids, labels = encode_examples(tokenizer, [problem, problem], ["ab", "abcd"])
    # row: <bos> "Add 1+2.\n" (9 chars) = 10 prompt tokens, then response, then <eos>
    assert ids.shape == (2, 15)
    assert ids[0, 10:].tolist() == [69, 70, 2, 0, 0]  # 'a'=4+65, 'b'=4+66, eos, pad, pad
    assert (labels[:, :10] == -100).all()
    assert labels[0, 10:].tolist() == [69, 70, 2, -100, -100]
    assert labels[1, 10:].tolist() == [69, 70, 71, 72, 2]


def test_loss_is_summed_token_loss_over_a_constant(tokenizer):
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(tiny_model.tiny_config(len(tokenizer)))
    problem = Problem("p", "Add 1+2.\n", "3")
    ids, labels = encode_examples(tokenizer, [problem, problem], ["ab", "abcd"])
    cfg = SFTConfig(batch_size=2, norm_tokens=4.0)
    logp = model(input_ids=ids).logits.log_softmax(-1)
    # 3 + 5 labelled tokens, summed, divided by batch_size * norm_tokens = 8
    picked = [-logp[r, t - 1, ids[r, t]] for r, n in ((0, 3), (1, 5)) for t in range(10, 10 + n)]
    torch.testing.assert_close(sft_loss(model, ids, labels, cfg), torch.stack(picked).sum() / 8)


def test_cache_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("RLRUN_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tiny_model.tiny_model_dir() == tmp_path / "xdg" / "rlrun" / "tiny-arith-v1"
    monkeypatch.setenv("RLRUN_CACHE", str(tmp_path / "mine"))
    assert tiny_model.tiny_model_dir() == tmp_path / "mine" / "tiny-arith-v1"


@needs_shipped
def test_spec_installs_shipped_weights_and_loads_them(monkeypatch, tmp_path):
    monkeypatch.setenv("RLRUN_CACHE", str(tmp_path))
    spec = tiny_model.tiny_model_spec(dtype="float32")
    target = tmp_path / "tiny-arith-v1"
    assert spec == ModelSpec(str(target / "model"), str(target / "tokenizer"), "float32", answer_cue="\n")
    shipped = (tiny_model.SHIPPED_DIR / "model" / "model.safetensors").read_bytes()
    assert (target / "model" / "model.safetensors").read_bytes() == shipped
    assert not (target / "tokenizer" / "config.json").exists()
    stamp = (target / "model" / "model.safetensors").stat().st_mtime_ns
    assert tiny_model.tiny_model_spec() == spec  # second call: already installed, no copy
    assert (target / "model" / "model.safetensors").stat().st_mtime_ns == stamp

    model, tokenizer = load_model(spec), load_tokenizer(spec)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 505_472
    text = "Add 347+708.\n"
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    # the warm start works through this loading path: greedy answers to held-out problems
    metrics = evaluate(HFRollout(spec, temperature=0.0), ArithProblems(0).held_out(32))
    assert metrics["accuracy"] >= 0.9
    assert metrics["format_ok"] == 1.0


@needs_shipped
def test_spec_repairs_an_incomplete_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RLRUN_CACHE", str(tmp_path))
    (tmp_path / "tiny-arith-v1" / "model").mkdir(parents=True)  # e.g. an interrupted copy
    spec = tiny_model.tiny_model_spec()
    assert tiny_model.is_complete(tmp_path / "tiny-arith-v1")
    assert load_tokenizer(spec).eos_token_id == 2


def test_sft_is_deterministic_given_the_seed(tokenizer):
    from transformers import Qwen2ForCausalLM

    cfg = SFTConfig(steps=3, batch_size=4)
    weights = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(tiny_model.tiny_config(len(tokenizer)))
        run = train(model, tokenizer, replace(cfg, seed=seed))
        assert run["steps"] == 3
        weights.append(model.state_dict()["model.layers.0.mlp.up_proj.weight"].clone())
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)
    assert not torch.equal(weights[0], weights[2])


# The shipped recipe (1500 steps of 64 examples) takes ~10 min alone on 2 cores, most of `make test`'s
# budget; the same recipe with its schedule compressed into 500 steps (warm-up and cosine are
# fractions of the run) of 32 examples takes ~3 min. Measured with SFTConfig(steps=500, batch_size=B)
# through tiny_model.build, 2 threads, 2026-12-07: B=32: held-out accuracy 0.828 at T=1.0, format_ok
# 0.977, 130.2 mean tokens, 192 s; B=64 (2026-12-06): 0.844, 0.980, 128.1, ~390 s; the full recipe:
# 0.953, 0.996, 129.2 (the shipped build_info.json). Fewer examples do not learn the sums in 500 steps
# (B=16: accuracy 0.027; 250 steps of 64: 0.0), so this is the smallest build that shows the recipe
# learns. The bounds leave room for another torch build's rounding, not for a recipe that stops learning.
SHORT_BUILD = SFTConfig(steps=500, batch_size=32)


@pytest.mark.slow
def test_a_rebuild_with_a_compressed_schedule_learns_the_task(tmp_path):
    """Both cores when run alone; one under `make test`'s slow tier, whose second worker trains the demo."""
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_alone())
    try:
        record = tiny_model.build(tmp_path, SHORT_BUILD)
    finally:
        torch.set_num_threads(threads)
    assert record["run"]["steps"] == SHORT_BUILD.steps and record["sft"]["batch_size"] == 32
    assert record["eval"]["accuracy"] >= 0.75, record["eval"]
    assert record["eval"]["format_ok"] >= 0.95
    assert 100 <= record["eval"]["mean_tokens"] <= 160  # traces average ~130 tokens


def test_instructed_batches_carry_the_lcpo_sentence_on_their_share(tokenizer):
    from rlrun.core.lcpo import LengthInstruction
    from rlrun.tasks.sft import training_batch

    plain = training_batch(7, SFTConfig(batch_size=64), tokenizer)
    cfg = SFTConfig(batch_size=64, instructed_frac=0.5)
    ids, labels = training_batch(7, cfg, tokenizer)
    # the responses (labels) are the plain batch's: the instruction says nothing about the trace
    responses = [[t for t in row.tolist() if t != -100] for row in labels]
    assert responses == [[t for t in row.tolist() if t != -100] for row in plain[1]]
    prompts = [tokenizer.decode(row[: (lab != -100).nonzero()[0].item()].tolist(), skip_special_tokens=True)
               for row, lab in zip(ids, labels)]
    instructed = [p for p in prompts if "Think for" in p]
    assert 20 <= len(instructed) <= 44  # Binomial(64, 0.5)
    problems = ArithProblems(cfg.seed).batch(7, 64)
    expected = LengthInstruction(cfg.seed, 100, 200, 0.5)(problems, 0)
    assert set(instructed) <= {q.prompt for q in expected}
    assert any("maximum" in p for p in instructed) and any("maximum" not in p for p in instructed)
    # with instructed_frac 0 the batch is bit-identical to the plain recipe (the base build's)
    torch.testing.assert_close(training_batch(7, SFTConfig(batch_size=64, instructed_frac=0.0), tokenizer)[0],
                               plain[0], rtol=0, atol=0)


needs_compare = pytest.mark.skipif(not tiny_model.is_complete(tiny_model.COMPARE_SHIPPED_DIR),
                                      reason="no compare weights shipped in the package")


@needs_compare
def test_compare_variant_reads_the_sentence_the_tiny_model_cannot(monkeypatch, tmp_path):
    """The point of the variant: on prompts ending with "Think for N tokens." it stays accurate,
    while the tiny model (never shown the sentence) fails them."""
    monkeypatch.setenv("RLRUN_CACHE", str(tmp_path))
    spec = tiny_model.tiny_compare_spec()
    assert spec.path == str(tmp_path / "tiny-arith-compare-v1" / "model")
    problems = tiny_model.instruct(ArithProblems(0).held_out(32), tiny_model.COMPARE_SFT)
    assert all("Think for" in p.prompt for p in problems)
    variant = evaluate(HFRollout(spec, temperature=0.0), problems)
    base = evaluate(HFRollout(tiny_model.tiny_model_spec(), temperature=0.0), problems)
    assert variant["accuracy"] >= 0.8, variant
    assert base["accuracy"] <= 0.2, base
