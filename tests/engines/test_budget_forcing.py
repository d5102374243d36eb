"""Budget forcing (rlrun.runtime.forcing) with the HF engine on the tiny model, greedily: a budget
below the natural thinking cuts it and writes the model spec's marker and cue at position N; a budget
above it leaves the plain greedy response; a response that ended its thinking before N goes on.

The tiny model's greedy responses to the first 4 held-out questions: 96, 96, 97, 97 thinking tokens,
then "</think>" (8 tokens), "\\n\\boxed{...}" and EOS (116-118 tokens without EOS)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from rlrun.engines.rollout.hf import HFRollout
from rlrun.runtime.forcing import BudgetForced, marker_tail
from rlrun.tasks.arith import ArithProblems
from rlrun.tasks.tiny_model import tiny_model_spec
from rlrun.types import ContinuesFromIds, Sampling

pytestmark = pytest.mark.both_venvs  # also in .venv-vllm's transformers (make test-vllm)
GREEDY = Sampling(temperature=0.0)


@pytest.fixture(scope="module")
def engine():
    return HFRollout(tiny_model_spec(), temperature=1.0)


@pytest.fixture(scope="module")
def problems():
    return ArithProblems(seed=0).held_out(4)


@pytest.fixture(scope="module")
def plain(engine, problems):
    return engine.generate(problems, 1, [256] * 4, GREEDY)


def test_the_natural_greedy_responses_are_as_the_docstring_says(plain):
    assert plain.thinking_tokens_N.tolist() == [96, 96, 97, 97] and not plain.truncated_N.any()


def test_a_budget_below_the_natural_thinking_cuts_it_and_writes_the_marker_and_cue_at_n(engine, problems, plain):
    forced = BudgetForced(engine, answer_tokens=32).generate(problems, 1, [64] * 4, GREEDY)
    marker, cue = list(engine.think_end_ids), list(engine.answer_cue_ids)
    assert cue == engine.tokenizer("\n", add_special_tokens=False)["input_ids"]  # the tiny model's cue
    eos = engine.tokenizer.eos_token_id
    for ids, natural, text in zip(forced.completion_ids, plain.completion_ids, forced.texts):
        assert ids[:64] == natural[:64]  # the thinking as the model wrote it, up to N
        assert ids[64:64 + len(marker) + len(cue)] == marker + cue  # then the forced text
        assert "</think>\n" in text and len(ids) <= 64 + len(marker) + len(cue) + 32
    assert forced.thinking_tokens_N.tolist() == [64] * 4
    assert forced.budget_tokens_N.tolist() == [64] * 4
    # tokens counted: the whole completion, forced text included (EOS not counted)
    ended = [ids[-1] == eos for ids in forced.completion_ids]
    assert forced.length_tokens_N.tolist() == [len(ids) - e for ids, e in zip(forced.completion_ids, ended)]
    assert forced.truncated_N.tolist() == [not e for e in ended]
    assert forced.mask_NT.sum(1).tolist() == [float(len(ids)) for ids in forced.completion_ids]


def test_a_budget_above_the_natural_length_leaves_the_plain_greedy_response(engine, problems, plain):
    forced = BudgetForced(engine).generate(problems, 1, [200] * 4, GREEDY)
    assert forced.completion_ids == plain.completion_ids and forced.texts == plain.texts
    assert forced.length_tokens_N.tolist() == plain.length_tokens_N.tolist()


def test_a_response_that_ended_its_thinking_before_n_goes_on_within_the_answer_cap(engine, problems, plain):
    # N = 110: every response ended its thinking (marker at 96/97 .. 104/105) and is answering
    on = BudgetForced(engine, answer_tokens=32).generate(problems, 1, [110] * 4, GREEDY)
    assert on.completion_ids == plain.completion_ids  # nothing forced: its answer went on to EOS
    capped = BudgetForced(engine, answer_tokens=2).generate(problems, 1, [110] * 4, GREEDY)
    assert [len(ids) for ids in capped.completion_ids] == [112] * 4  # N + A sampled tokens in all
    assert capped.completion_ids == [ids[:112] for ids in plain.completion_ids] and capped.truncated_N.all()


def test_a_marker_cut_mid_way_is_completed_not_written_twice(engine, problems, plain):
    # N = 99/100: the N tokens end with "</t" / "</th"; only the rest of "</think>" is written, then
    # the cue "\n": exactly what the model writes itself, so the plain greedy response again
    forced = BudgetForced(engine).generate(problems, 1, [99, 99, 100, 100], GREEDY)
    assert forced.completion_ids == plain.completion_ids


def test_marker_and_cue_come_from_the_model_spec(problems):
    spec = dataclasses.replace(tiny_model_spec(), think_end="</end>", answer_cue=" Answer: ")
    engine = HFRollout(spec)
    forced = BudgetForced(engine, answer_tokens=4).generate(problems[:2], 1, [40, 40], GREEDY)
    written = engine.tokenizer("</end> Answer: ", add_special_tokens=False)["input_ids"]
    for ids, text in zip(forced.completion_ids, forced.texts):
        assert ids[40:40 + len(written)] == written and "</end> Answer: " in text


@pytest.mark.parametrize("ids, want", [
    ([5, 6, 7], [1, 2, 3]),  # no start of the marker at the end: all of it
    ([5, 1], [2, 3]),  # ends with its first token
    ([5, 1, 2], [3]),  # ends with its first two
    ([1, 2, 5], [1, 2, 3]),  # its start, but not at the end
    ([], [1, 2, 3]),
])
def test_marker_tail(ids, want):
    assert marker_tail(ids, [1, 2, 3]) == want


def test_bad_values_and_an_engine_without_token_id_prompts_are_one_line(engine, problems):
    class Plain:  # a Rollout with generate only
        def generate(self, problems, group_size, budgets, sampling=None): ...

    assert isinstance(engine, ContinuesFromIds) and not isinstance(Plain(), ContinuesFromIds)
    with pytest.raises(ValueError, match=r"^budget forcing needs a rollout engine that samples from token ids "
                                         r"\(rlrun\.types\.ContinuesFromIds\); Plain does not$"):
        BudgetForced(Plain())
    with pytest.raises(ValueError, match=r"^the forced answer cap is 0 tokens; it must be >= 1$"):
        BudgetForced(engine, answer_tokens=0)
    with pytest.raises(ValueError, match=r"^forced budgets \[0, 8\] must be >= 1 token$"):
        BudgetForced(engine).generate(problems[:2], 1, [0, 8])


def test_sampled_forcing_is_reproducible_with_a_seed(engine, problems):
    forcer = BudgetForced(engine, answer_tokens=16)
    torch.manual_seed(5)
    first = forcer.generate(problems, 2, [48] * 4)
    torch.manual_seed(5)
    assert forcer.generate(problems, 2, [48] * 4).completion_ids == first.completion_ids
    assert first.logp_NT.shape == first.mask_NT.shape
