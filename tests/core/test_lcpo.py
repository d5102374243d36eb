"""LCPO / L1 (ALGORITHMS.md 3.1): the length instruction and its targets, the L1-Exact (Eq. 1) and
L1-Max (Eq. 2) reward terms, every worked example of 3.1.7 and the edge cases of 3.1.6."""
from collections import Counter
from pathlib import Path

import pytest
import torch

from rlrun.core.advantages import GroupNormalized
from rlrun.core.lcpo import (
    MISSING_TARGET,
    L1Exact,
    L1Max,
    LengthInstruction,
    decode_num_tokens,
    target_of,
)
from rlrun.core.rewards import Composite, CorrectReward, FormatReward
from rlrun.types import StepBatch, Problem, Verdicts
from conftest import with_verdicts

CONF = Path(__file__).resolve().parents[2] / "conf"
V1_EXACT_ALPHA = 1 / 3000  # the first release's Eq. 1 slope, d = 1 - |N - n|/3000


def problems_with(*num_tokens: int) -> list[Problem]:
    """Prompts with the paper's stored num_tokens, passed through the transform (ALGORITHMS.md 3.1.3)."""
    raw = [Problem(uid=f"q{g}", prompt=f"Question {g}.\n", answer="1", meta={"num_tokens": k})
           for g, k in enumerate(num_tokens)]
    return LengthInstruction(seed=0)(raw, step=0)


def step_of(problems: list[Problem], correct: list[float], length: list[int], group_size: int = 4,
            truncated: list[bool] | None = None) -> StepBatch:
    n = len(correct)
    rollouts = StepBatch(
        problems=problems, group_size=group_size, prompt_ids=[[1]] * len(problems),
        completion_ids=[[5]] * n, texts=[""] * n, length_tokens_N=torch.tensor(length),
        truncated_N=torch.tensor(truncated if truncated is not None else [False] * n),
        budget_tokens_N=torch.full((n,), 4096),
    )
    verdicts = Verdicts(correct_N=torch.tensor(correct), format_ok_N=torch.ones(n), predicted=[None] * n)
    return with_verdicts(rollouts=rollouts, verdicts=verdicts, step=0)


def grpo(reward_N: torch.Tensor, step: StepBatch) -> torch.Tensor:
    """GRPO advantage as L1 runs it: sample std, eps 1e-6 outside (ALGORITHMS.md 3.0)."""
    g = step.group_N
    return GroupNormalized(eps=1e-6)(StepBatch(
        reward_N=reward_N, group_N=g, correct_N=step.correct_N,
        length_tokens_N=step.length_tokens_N, truncated_N=step.truncated_N))


def close(actual: torch.Tensor, expected: list[float]) -> None:
    assert actual.tolist() == pytest.approx(expected, abs=1e-6)


# ---- 3.1.7 worked examples ----------------------------------------------------------------------

def test_example_1_exact_eq1_and_first_release():
    problems = problems_with(1000)
    assert problems[0].prompt == "Question 0. Think for 1000 tokens.\n"
    step = step_of(problems, [1.0, 1.0, 0.0, 1.0], [950, 1200, 1000, 400])
    # |N-n| = 50, 200, 0, 600; α|N-n| (α=0.0003) = .015, .06, 0, .18; r = c - α|N-n|
    r = L1Exact()(step)
    close(r, [0.985, 0.94, 0.0, 0.82])
    # mean 0.68625; deviations .29875 .25375 -.68625 .13375; Σd² = 0.64246875; std = sqrt(/3) = 0.462770
    close(grpo(r, step), [0.645567, 0.548327, -1.482914, 0.289020])
    # first release: α = 1/3000: 1 - 50/3000 = .983333, 1 - 200/3000 = .933333, 0, 1 - 600/3000 = .8
    r_v1 = L1Exact(alpha=V1_EXACT_ALPHA)(step)
    close(r_v1, [0.983333, 0.933333, 0.0, 0.8])
    # mean 0.679167, sample std 0.459342
    close(grpo(r_v1, step), [0.662177, 0.553326, -1.478560, 0.263057])


def test_example_2_max_eq2():
    problems = problems_with(-1024)
    assert problems[0].prompt == "Question 0. Think for maximum 1024 tokens.\n"
    step = step_of(problems, [1.0, 1.0, 1.0, 0.0], [600, 1024, 1300, 2000])
    # 0.001·(N-n) + 0.5 = 0.924, 0.5, 0.224, -0.476 -> clip[0,1] -> × correct
    r = L1Max()(step)
    close(r, [0.924, 0.5, 0.224, 0.0])
    # mean 0.412, sample std 0.397901
    close(grpo(r, step), [1.286748, 0.221160, -0.472478, -1.035430])
    # HEAD, alpha 0.01, multiplier_reward: (clip(0.01·(N-n), -1, 1) + 1)/2 = Eq. 2 with α = 0.005:
    # 0.005·424 + .5 = 2.62 -> 1; .5; 0.005·(-276) + .5 = -.88 -> 0; wrong -> 0
    close(L1Max(max_alpha=0.005)(step), [1.0, 0.5, 0.0, 0.0])
    # HEAD additive (alpha 0.0003, multiplier_reward=False) gives a wrong answer +0.3536
    # [1.5636, 1.5, 1.4586, 0.3536]: not LCPO's Eq. 2 (3.1.9 pitfall 3) and not implemented:
    # a wrong answer never earns reward from L1Max.
    assert float(L1Max(max_alpha=0.00015)(step)[3]) == 0.0


def test_example_3_mixed_l1_max_batch_first_release():
    problems = problems_with(512, -1024, -1)
    assert [p.meta["target_mode"] for p in problems] == ["exact", "max", "none"]
    assert problems[2].prompt == "Question 2.\n"  # -1: no instruction
    step = step_of(
        problems,
        [1, 0, 1, 1] + [0, 0, 0, 0] + [1, 1, 0, 1],
        [500, 700, 512, 300] + [900, 1100, 1500, 2100] + [800, 820, 400, 810],
    )
    r = L1Max(max_alpha=0.001, delta=0.5, exact_alpha=V1_EXACT_ALPHA)(step)
    # group 0 (Exact 512): d = 1 - |512-n|/3000 = .996, .937333, 1, .929333; wrong -> d - 1
    # group 1 (Max 1024): all wrong -> 0; group 2 (no target): correctness
    close(r, [0.996, -0.062667, 1.0, 0.929333, 0, 0, 0, 0, 1, 1, 0, 1])
    # group 0: mean 0.715667, std 0.519900; group 1: all equal -> 0; group 2: mean .75, std .5
    close(grpo(r, step), [0.539205, -1.497080, 0.546899, 0.410976, 0, 0, 0, 0,
                          0.499999, 0.499999, -1.499997, 0.499999])


# ---- 3.1.6 edge cases ---------------------------------------------------------------------------

def test_incorrect_response_gets_length_term_only_in_exact_and_zero_in_max():
    # no </think> or no answer: the verifier says incorrect (correct = 0)
    exact = step_of(problems_with(1000), [0.0] * 4, [1200, 1000, 700, 3000])
    close(L1Exact()(exact), [-0.06, 0.0, -0.09, -0.6])  # -0.0003·|1000-n|
    capped = step_of(problems_with(-1000), [0.0] * 4, [100, 1000, 700, 3000])
    close(L1Max()(capped), [0.0, 0.0, 0.0, 0.0])


def test_truncated_has_no_special_rule():
    args = (problems_with(1000), [1.0, 0.0, 1.0, 0.0], [4096, 4096, 900, 1000])
    plain = L1Exact()(step_of(*args))
    cut = L1Exact()(step_of(*args, truncated=[True, True, False, False]))
    close(cut, plain.tolist())
    close(cut, [1 - 0.0003 * 3096, -0.0003 * 3096, 0.97, 0.0])


def test_all_correct_exact_group_still_has_advantages_all_wrong_max_group_has_none():
    step = step_of(problems_with(1000), [1.0] * 4, [900, 1000, 1100, 1300])
    r = L1Exact()(step)
    close(r, [0.97, 1.0, 0.97, 0.91])
    assert bool((grpo(r, step).abs() > 0.1).all())
    wrong = step_of(problems_with(-1000), [0.0] * 4, [900, 1000, 1100, 1300])
    close(grpo(L1Max()(wrong), wrong), [0.0] * 4)


def test_single_sample_group_advantage_is_r_over_one_plus_eps():
    step = step_of(problems_with(1000), [1.0], [950], group_size=1)
    r = L1Exact()(step)  # 1 - 0.0003·50 = 0.985
    with pytest.warns(UserWarning, match="single completion"):
        close(grpo(r, step), [0.985 / (1 + 1e-6)])


def test_correct_far_off_target_scores_below_wrong_on_target():
    step = step_of(problems_with(500), [1.0, 0.0], [4000, 500], group_size=2)
    close(L1Exact()(step), [-0.05, 0.0])  # 1 - 0.0003·3500 = -0.05; 0 - 0


def test_num_tokens_decoding_and_unrepresentable_targets():
    assert decode_num_tokens(512) == (512, "exact")
    assert decode_num_tokens(-512) == (512, "max")
    assert decode_num_tokens(-2) == (2, "max")
    assert decode_num_tokens(-1) == (None, "none")
    for bad in (0, 1.5, True, "512"):
        with pytest.raises(ValueError, match="num_tokens"):
            decode_num_tokens(bad)
    with pytest.raises(ValueError, match="Max target must be >= 2"):
        LengthInstruction(seed=0, min_tokens=1, max_fraction=0.5)


def test_reward_reads_the_datas_num_tokens_without_the_transform():
    raw = [Problem(uid="q", prompt="Q. Think for 1000 tokens.\n", answer="1", meta={"num_tokens": 1000})]
    close(L1Exact()(step_of(raw, [1.0, 0.0], [950, 1000], group_size=2)), [0.985, 0.0])


def test_missing_target_is_a_one_line_configuration_error():
    raw = [Problem(uid="q", prompt="Q.\n", answer="1")]
    step = step_of(raw, [1.0, 0.0], [10, 20], group_size=2)
    for term in (L1Exact(), L1Max()):
        with pytest.raises(ValueError) as info:
            term(step)
        assert str(info.value) == ("an L1 reward needs a target length per prompt: use algo=lcpo or "
                                   "data with num_tokens") == MISSING_TARGET
    with pytest.raises(ValueError, match="algo=lcpo"):
        target_of(raw[0])


def test_l1_exact_rejects_max_prompts():
    with pytest.raises(ValueError, match="l1_max"):
        L1Exact()(step_of(problems_with(-1000), [1.0] * 4, [1000] * 4))


def test_reward_terms_follow_rows_selected_out_of_order():
    step = step_of(problems_with(1000, -1000), [1.0] * 8, [950, 0, 0, 0, 0, 0, 0, 1100])
    picked = step.select(torch.tensor([7, 0]))
    sub = with_verdicts(picked, Verdicts(torch.ones(2), torch.ones(2), [None, None]), 0)
    close(L1Max()(sub), [0.4, 0.985])  # Max 1000, n=1100: .001·(-100)+.5; Exact 1000, n=950


def test_reward_parameters_are_checked():
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            L1Exact(alpha=bad)
        with pytest.raises(ValueError, match="max_alpha"):
            L1Max(max_alpha=bad)
    with pytest.raises(ValueError, match="delta"):
        L1Max(delta=1.5)


# ---- the prompt transform -----------------------------------------------------------------------

def arith(uid: str, meta: dict | None = None) -> Problem:
    return Problem(uid=uid, prompt="Add 347+708.\n", answer="1055", meta=meta or {"a": 347, "b": 708})


def test_prompt_wording_exact_and_max():
    exact = LengthInstruction(seed=0, min_tokens=150, max_tokens=150)([arith("u")], step=3)[0]
    assert exact.prompt == "Add 347+708. Think for 150 tokens.\n"
    assert exact.meta == {"a": 347, "b": 708, "target_tokens": 150, "target_mode": "exact"}
    assert (exact.uid, exact.answer) == ("u", "1055")
    cap = LengthInstruction(seed=0, min_tokens=150, max_tokens=150, max_fraction=1.0)([arith("u")], 3)[0]
    assert cap.prompt == "Add 347+708. Think for maximum 150 tokens.\n"
    assert (cap.meta["target_tokens"], cap.meta["target_mode"]) == (150, "max")
    bare = LengthInstruction(seed=0, min_tokens=7, max_tokens=7)([Problem("v", "No newline", "x")], 0)[0]
    assert bare.prompt == "No newline Think for 7 tokens."


def test_inputs_are_not_modified_and_a_second_pass_is_an_error():
    original = arith("u")
    transform = LengthInstruction(seed=0)
    out = transform([original], step=0)
    assert original.prompt == "Add 347+708.\n" and "target_tokens" not in original.meta
    with pytest.raises(ValueError, match="already has a length target"):
        transform(out, step=1)


def test_targets_are_deterministic_per_seed_and_uid_and_ignore_the_step():
    uids = [f"arith-d3-s0-t{t}-{i}" for t in range(3) for i in range(8)]
    first = LengthInstruction(seed=0)([arith(u) for u in uids], step=0)
    again = LengthInstruction(seed=0)([arith(u) for u in reversed(uids)], step=99)[::-1]
    assert [p.meta["target_tokens"] for p in first] == [p.meta["target_tokens"] for p in again]
    other = LengthInstruction(seed=1)([arith(u) for u in uids], step=0)
    assert [p.meta["target_tokens"] for p in first] != [p.meta["target_tokens"] for p in other]
    assert all(100 <= p.meta["target_tokens"] <= 4000 for p in first)
    assert all(p.meta["target_mode"] == "exact" for p in first)
    # the same N whatever max_fraction: switching L1-Exact data to L1-Max data keeps every target
    mixed = LengthInstruction(seed=0, max_fraction=0.5)([arith(u) for u in uids], step=0)
    assert [p.meta["target_tokens"] for p in mixed] == [p.meta["target_tokens"] for p in first]


def test_target_distribution_is_uniform_inclusive_and_max_share_is_max_fraction():
    transform = LengthInstruction(seed=0, min_tokens=1, max_tokens=3)
    counts = Counter(transform.draw(f"u{i}")[0] for i in range(3000))
    assert set(counts) == {1, 2, 3} and all(900 < c < 1100 for c in counts.values())
    mixed = LengthInstruction(seed=0, max_fraction=0.5)
    share = sum(mixed.draw(f"u{i}")[1] == "max" for i in range(4000)) / 4000
    assert 0.47 < share < 0.53  # binomial sd 0.008


def test_data_num_tokens_wins_over_sampling():
    out = LengthInstruction(seed=0, max_fraction=1.0)(
        [arith("a", {"num_tokens": 512}), arith("b", {"num_tokens": -1}), arith("c", {"num_tokens": -64})], 0)
    assert [p.prompt for p in out] == ["Add 347+708. Think for 512 tokens.\n", "Add 347+708.\n",
                                       "Add 347+708. Think for maximum 64 tokens.\n"]
    assert [p.meta["target_tokens"] for p in out] == [512, None, 64]


def test_transform_parameters_are_checked():
    with pytest.raises(ValueError, match="min_tokens"):
        LengthInstruction(seed=0, min_tokens=500, max_tokens=100)
    with pytest.raises(ValueError, match="max_fraction"):
        LengthInstruction(seed=0, max_fraction=1.5)
    with pytest.raises(ValueError, match="seed"):
        LengthInstruction(seed=0.5)


def test_check_reward_pairs_prompts_with_an_l1_term():
    exact, mixed = LengthInstruction(seed=0), LengthInstruction(seed=0, max_fraction=0.5)

    def term(fn):
        return Composite({"t": {"weight": 1.0, "fn": fn}})

    exact.check_reward(term(L1Exact()))
    mixed.check_reward(term(L1Max()))
    with pytest.raises(ValueError, match="reward=l1_exact or reward=l1_max"):
        exact.check_reward(Composite({"correct": {"weight": 1.0, "fn": CorrectReward()},
                                      "format": {"weight": 1.0, "fn": FormatReward()}}))
    with pytest.raises(ValueError, match="only reward=l1_max scores"):
        mixed.check_reward(term(L1Exact()))
    with pytest.raises(ValueError, match="max_fraction=0.5"):
        exact.check_reward(term(L1Max()))


def test_yaml_files_build_the_paper_defaults():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    algo = OmegaConf.create({"seed": 7, "algo": OmegaConf.load(CONF / "algo" / "lcpo.yaml")}).algo
    # the loss: the option lcpo names (conf/algo/loss/clipped_token_mean.yaml), then its own keys
    assert {"loss": "clipped_token_mean"} in OmegaConf.to_container(algo.defaults)
    algo.loss = OmegaConf.merge(OmegaConf.load(CONF / "algo" / "loss" / "clipped_token_mean.yaml"), algo.loss)
    prompts = instantiate(algo.prompts)
    assert (prompts.seed, prompts.min_tokens, prompts.max_tokens, prompts.max_fraction) == (7, 100, 4000, 0.0)
    loss = instantiate(algo.loss)
    assert (loss.clip_low, loss.clip_high, loss.kl_coef, loss.aggregation) == (0.2, 0.2, 0.001, "token_mean")
    exact = instantiate(OmegaConf.load(CONF / "reward" / "l1_exact.yaml"))
    assert exact.fns["l1_exact"].alpha == 0.0003
    both = instantiate(OmegaConf.load(CONF / "reward" / "l1_max.yaml"))
    fn = both.fns["l1_max"]
    assert (fn.max_alpha, fn.delta, fn.exact_alpha) == (0.001, 0.5, 0.0003)
    prompts.check_reward(exact)
    scored = exact(step_of(problems_with(1000), [1.0, 0.0, 1.0, 1.0], [950, 1000, 1200, 400]))
    close(scored.reward_N, [0.985, 0.0, 0.94, 0.82])
    close(scored.terms["l1_exact"], [0.985, 0.0, 0.94, 0.82])
