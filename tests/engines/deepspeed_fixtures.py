"""Shared pieces of the DeepSpeed trainer tests: a tiny random Qwen2 with a character tokenizer,
hand-made rollouts, and the plain-torch reference (one process, full batch, one row per forward,
no padding) that the trainer must reproduce."""
from __future__ import annotations

import os
import string

import torch

from rlrun.engines.model import ModelSpec
from rlrun.types import Problem, StepBatch

CHARS = string.ascii_letters + string.digits + " +-*/=()[]{}\\.,:;\n"


def build_tiny(root: str, tie_word_embeddings: bool = False) -> ModelSpec:
    """A 2-layer, hidden-64 Qwen2 (seed 0) in ``root/model`` and a character-level tokenizer kept
    in ``root/tokenizer`` (apart from the qwen2 config.json, MEASURED.md "Traps")."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + list(CHARS))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(os.path.join(root, "tokenizer"))
    config = Qwen2Config(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(os.path.join(root, "model"))
    return ModelSpec(path=os.path.join(root, "model"), tokenizer_path=os.path.join(root, "tokenizer"))


def make_rollouts(
    prompt_lengths: list[int], completion_lengths: list[int], group_size: int, seed: int
) -> StepBatch:
    """Random token ids (4..vocab-1): prompt b has ``prompt_lengths[b]`` tokens, completion i has
    ``completion_lengths[i]`` (a 0 makes an empty row)."""
    gen = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(4, 4 + len(CHARS), (n,), generator=gen).tolist()

    n = len(completion_lengths)
    return StepBatch(
        problems=[Problem(uid=str(b), prompt="", answer="") for b in range(len(prompt_lengths))],
        group_size=group_size,
        prompt_ids=[ids(k) for k in prompt_lengths],
        completion_ids=[ids(k) for k in completion_lengths],
        texts=[""] * n,
        length_tokens_N=torch.tensor(completion_lengths),
        truncated_N=torch.zeros(n, dtype=torch.bool),
        budget_tokens_N=torch.full((n,), 16),
    )


def subset(rollouts: StepBatch, prompts: list[int]) -> StepBatch:
    """The rollouts of the given prompts (what one rank sees)."""
    g = rollouts.group_size
    rows = [b * g + j for b in prompts for j in range(g)]
    return StepBatch(
        problems=[rollouts.problems[b] for b in prompts],
        group_size=g,
        prompt_ids=[rollouts.prompt_ids[b] for b in prompts],
        completion_ids=[rollouts.completion_ids[i] for i in rows],
        texts=[rollouts.texts[i] for i in rows],
        length_tokens_N=rollouts.length_tokens_N[rows],
        truncated_N=rollouts.truncated_N[rows],
        budget_tokens_N=rollouts.budget_tokens_N[rows],
    )


def plain_logprobs(model: torch.nn.Module, rollouts: StepBatch) -> torch.Tensor:
    """log π(o_t | q, o_<t) with one unpadded forward per row (grad follows torch's mode)."""
    mask = rollouts.mask_NT
    rows = []
    for i, completion in enumerate(rollouts.completion_ids):
        prompt = rollouts.prompt_ids[i // rollouts.group_size]
        row = torch.zeros(mask.shape[1])
        if completion:
            ids = torch.tensor([prompt + completion])
            logits = model(input_ids=ids, use_cache=False).logits[0, len(prompt) - 1 : -1]
            logp = logits.log_softmax(-1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)
            row = torch.cat([logp, torch.zeros(mask.shape[1] - len(completion))])
        rows.append(row)
    return torch.stack(rows)


def make_batch(
    rollouts: StepBatch, old_logp_NT: torch.Tensor, ref_logp_NT: torch.Tensor | None, seed: int
) -> StepBatch:
    """``rollouts`` with old log-probs shifted by ±0.3 noise (so that some ratios clip), random
    advantages and the reference's log-probs."""
    gen = torch.Generator().manual_seed(seed)
    mask = rollouts.mask_NT
    noise = (torch.rand(mask.shape, generator=gen) - 0.5) * 0.6 * mask
    return rollouts.with_columns(
        old_logp_NT=old_logp_NT + noise,
        advantages_N=torch.randn(len(rollouts), generator=gen),
        ref_logp_NT=ref_logp_NT,
    )


def plain_step(
    spec: ModelSpec, rollouts: StepBatch, batch: StepBatch, loss, optim, lr: float
) -> tuple[dict, dict]:
    """One full-batch AdamW step at learning rate ``lr`` in plain torch: the reference for the
    trainer's update. Returns the new state dict and the loss statistics plus the gradient norm
    before clipping (``optim/grad_norm``)."""
    from rlrun.core.losses import loss_norm
    from rlrun.engines.model import load_model
    from rlrun.engines.trainer.optim import param_groups

    model = load_model(spec).eval()
    adamw = torch.optim.AdamW(
        param_groups(model, optim.weight_decay), lr=lr, betas=optim.betas, eps=optim.eps
    )
    full = StepBatch(**{**batch.__dict__, "norm": loss_norm(batch.mask_NT)})
    value, stats = loss(plain_logprobs(model, rollouts), full)
    value.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip))
    adamw.step()
    stats = {k: float(v) for k, v in stats.items()} | {"optim/grad_norm": grad_norm}
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, stats


def assert_state_close(got: dict, want: dict, atol: float = 1e-7) -> None:
    """Same keys, and every tensor within `atol` (no relative slack)."""
    assert sorted(got) == sorted(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=atol, msg=key)


def assert_same_update(got: tuple[dict, dict], want: tuple[dict, dict], atol: float = 1e-6) -> None:
    """Two `(update stats, weights after)` pairs agree: every stat and every weight within `atol`."""
    (got_stats, got_w), (want_stats, want_w) = got, want
    assert set(got_stats) == set(want_stats)
    for key in want_stats:
        assert abs(got_stats[key] - want_stats[key]) <= atol, (key, got_stats[key], want_stats[key])
    assert_state_close(got_w, want_w, atol=atol)
