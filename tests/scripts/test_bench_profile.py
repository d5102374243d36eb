"""The bench's FLOP profile (scripts/bench.py ``profile``) counts what the model computes: every linear
layer and the attention products, forward and backward, checked against a hand count on the tiny
model (hidden 128, 2 layers, 4 query / 2 key-value heads of 32, MLP 512, vocabulary 100, tied head)."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import load_script


def hand_count(rows: int, seq: int, kept: int) -> tuple[int, int]:
    """Forward FLOPs (linear, attention) of the tiny model on rows x seq tokens, head on ``kept``."""
    tokens = rows * seq
    per_layer = 128 * 128 + 128 * 64 + 128 * 64 + 128 * 128 + 3 * 128 * 512  # q k v o, gate up down
    linear = 2 * tokens * per_layer * 2 + 2 * rows * kept * 128 * 100
    attention = 2 * 2 * (2 * rows * 4 * seq * seq * 32)  # 2 layers: q k^T and p v, 4 query heads of 32
    return linear, attention


def test_the_profile_counts_linear_and_attention_flops_of_forward_and_backward():
    from rlrun.engines.model import load_model
    from rlrun.tasks.tiny_model import tiny_model_spec

    bench = load_script("bench.py")
    model = load_model(tiny_model_spec()).eval()
    ids = torch.randint(3, 100, (2, 10))
    linear, attention = hand_count(2, 10, 4)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=bench.sdpa_cpu_flops()) as counter:
        model(input_ids=ids, use_cache=False, logits_to_keep=4)
    assert counter.get_total_flops() == linear + attention
    with FlopCounterMode(display=False, custom_mapping=bench.sdpa_cpu_flops()) as counter:
        model(input_ids=ids, use_cache=False, logits_to_keep=4).logits.sum().backward()
    # backward: 2x the linear forward (input and weight gradients; the embedding's input needs none,
    # the first layer's input gradient still flows to the tied embedding), attention 2.5x (scores
    # recomputed, then four products)
    assert counter.get_total_flops() == 3 * linear + attention + attention * 5 // 2
