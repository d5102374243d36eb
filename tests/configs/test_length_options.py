"""Every length reward option of conf/reward (each yaml whose term has a ``gate``, plus the two length
terms without one) as configured:

- ``length.span`` reaches it: on a step counted with ``counted(batch, "thinking")`` it gives exactly what
  it gives on a step whose responses are those thinking spans alone (same EOS and truncation, no
  ``</think>``: counted whole, PEAR's k = T), and something else than on the whole responses;
- a bad ``gate`` is one line at validation, naming the key, the value and the valid ones.

Options are found by scanning conf/reward, so a new gated option joins by itself. The overrides below
only size the options to the step's ~2-24-token responses."""
from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch

from rlrun.runtime.sampling import counted
from rlrun.types import Problem, StepBatch
from rlrun.wiring.build import build
from rlrun.wiring.cli import compose
from rlrun.wiring.config_check import ConfigError
from rlrun.wiring.settings import validate

CONF = Path(__file__).resolve().parents[2] / "conf" / "reward"
UNGATED = ["format_length", "repetition"]  # length terms without a gate (docs: why)
GATED = sorted(p.stem for p in CONF.glob("*.yaml") if "\n      gate:" in p.read_text())
LENGTH_OPTIONS = sorted(GATED + UNGATED)
NOT_READING_LENGTH = {"dler_truncation"}  # reads the engine's truncated flag only
LASER_TARGETS = ["monitor=none", "targets.lower_bound=4", "targets.grid_start=4", "targets.upper_bound=24",
                 "targets.interval=2", "targets.default_tokens=8"]  # every bucket's target: 8 tokens
SIZED = {  # fn settings sized to this step (cap 24 tokens)
    "laser": ["target_tokens=8"],
    "laser_d": LASER_TARGETS,
    "laser_de": [*LASER_TARGETS, "repetition=as_released"],  # the detector reads ids, not a length
    "overlong_soft": ["cache_tokens=16"],
    "dler_difficulty": ["limits_tokens=[16,8]"],
    "adaptive_penalty": ["lambda_init=0.01"],
    "shorter_better": ["beta=0.01"],
    "grpo_lambda": ["top_lambda=1.0"],
    "l1_exact": ["alpha=0.05"],
    "l1_max": ["max_alpha=0.05", "exact_alpha=0.05"],
    "repetition": ["ngram_tokens=2"],
}
EOS, MARK = 2, (7, 8)
CAP = 24
# (thinking tokens, answer tokens or None for no </think>, ended with EOS)
ROWS = [(3, 2, True), (6, 3, True), (9, 2, True), (14, 8, False),
        (4, None, True), (7, 5, True), (10, 2, True), (24, None, False)]
CORRECT = [1, 1, 0, 0, 1, 1, 1, 0]


@cache
def term_name(option: str) -> str:
    return next(iter(compose([f"reward={option}"]).reward.terms))


@cache
def sized_config(option: str):
    term = term_name(option)
    return compose([f"reward={option}", *(f"reward.terms.{term}.fn.{s}" for s in SIZED.get(option, []))])


def reward(option: str):
    """A fresh reward of the option (its own state)."""
    return build(sized_config(option), "reward")


def ids(thinking: int, answer: int | None, ended: bool, cut: bool) -> list[int]:
    """A response: thinking ids 10.., then </think> and the answer, which repeats the first thinking
    ids (unless ``cut``: the thinking span alone), then EOS if it ended."""
    out = list(range(10, 10 + thinking))
    if answer is not None and not cut:
        out += [*MARK, *range(10, 10 + answer)]
    return out + [EOS] * ended


def step(option: str, cut: bool) -> StepBatch:
    """The step of ROWS (two prompts of four); ``cut``: each response is its thinking span alone."""
    completion_ids = [ids(*row, cut) for row in ROWS]
    truncated = [not ended for *_, ended in ROWS]
    meta = {"budget_tokens": 8, "target_tokens": 8, "target_mode": "exact"}
    problems = [Problem("q0", "p", "a", {**meta, "target_mode": "max" if option == "l1_max" else "exact"}),
                Problem("q1", "p", "a", dict(meta))]
    return StepBatch(
        problems=problems, prompt_ids=[[1], [1]], group_size=4, think_end_ids=MARK,
        completion_ids=completion_ids, texts=["<think>t</think> <answer>a</answer>"] * len(ROWS),
        length_tokens_N=torch.tensor([len(c) - (not t) for c, t in zip(completion_ids, truncated)]),
        truncated_N=torch.tensor(truncated), budget_tokens_N=torch.full((len(ROWS),), CAP),
        correct_N=torch.tensor(CORRECT, dtype=torch.float32),
        format_ok_N=torch.tensor([1.0] * 7 + [0.0]), predicted=[None] * len(ROWS))


def scored(option: str, batch: StepBatch) -> torch.Tensor:
    """The option's reward on ``batch``, from a fresh term called twice (the second call: HAPO's
    history is then filled)."""
    fn = reward(option)
    fn(batch)
    return fn(batch).reward_N


def test_the_scan_finds_the_length_options():
    assert len(GATED) >= 15 and {"kimi", "triangular", "l1_max", "laser_de", "dler_difficulty"} <= set(GATED)
    assert not set(UNGATED) & set(GATED)


def test_the_steps_spans():
    whole, cut = step("kimi", cut=False), step("kimi", cut=True)
    assert whole.thinking_tokens_N.tolist() == [3, 6, 9, 14, 4, 7, 10, 24]
    assert whole.response_tokens_N.tolist() == [7, 11, 13, 24, 4, 14, 14, 24]
    assert cut.response_tokens_N.tolist() == whole.thinking_tokens_N.tolist()
    # the thinking span holds no EOS: counted, both steps count the same sampled tokens
    assert counted(cut, "thinking").sampled_tokens_N.tolist() == counted(whole, "thinking").sampled_tokens_N.tolist()


@pytest.mark.parametrize("option", LENGTH_OPTIONS)
def test_length_span_reaches_the_term(option):
    whole, cut = step(option, cut=False), step(option, cut=True)
    thinking = scored(option, counted(whole, "thinking"))
    assert torch.equal(thinking, scored(option, counted(cut, "thinking"))), option
    if option not in NOT_READING_LENGTH:  # the span changed what the term saw
        assert not torch.equal(thinking, scored(option, counted(whole, "response"))), option


@pytest.mark.parametrize("option", GATED)
def test_a_bad_gate_is_one_line(option):
    term = term_name(option)
    cfg = compose([f"reward={option}", f"reward.terms.{term}.fn.gate=some"])
    with pytest.raises(ConfigError, match=rf"^reward\.terms\.{term}\.fn\.gate=some is not one of correct, all; "
                                          r"\w+ takes gate: one of correct, all$"):
        validate(cfg, world_size=1)
