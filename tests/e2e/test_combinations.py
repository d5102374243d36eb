"""Every ``algo x reward x curriculum`` combination (scanning conf/, so a new option file joins the
matrix by itself) either runs 2 steps under ``debug=cpu`` or fails at start with its one-line reason
(the composition rules of docs/composition.md).

Cost: the matrix has ~1300 cells, so the cells share one model, rollout engine and trainer
(``build_run(..., engines=)``) and each cell builds only its own pieces (data, verifier, reward,
advantage, loss, filter, prompt transform, curriculum) from the composed config. Two passes:

- ``test_every_valid_combination_runs``: every valid cell, 2 steps with the rollout engine's limit at
  8 new tokens (``rollout.max_new_tokens``) and learning rate 0 (real updates that leave the shared
  weights as they are, so no cell depends on the ones before it). Every completion is cut, so
  correctness is 0 everywhere: this pass proves that each composition builds, samples, shapes,
  filters, updates and logs.
- ``test_pairwise_combinations_run_on_real_answers``: a covering set in which every pair of
  options (algo-reward, algo-curriculum, reward-curriculum) occurs at least once, with the tiny
  model's full ~130-token answers (97 % correct), so correct rollouts, length preferences and
  budgets meet each other for real: one step each (the first pass runs the second step of every
  cell; each of the 278 cells samples ~130 tokens a completion, ~0.5 s a step).
- ``test_loss_option_with_every_reward_and_filter``: each loss option that is no algorithm's own
  (``algo.loss=gspo|luspo|cispo|sapo``) with every reward once, the filter-bearing algorithms and the
  curricula in turn (24 cells per loss, as in the first pass).

A cell's config is the base config with the three groups' nodes put in from the composed option
(composing 1300 configs through Hydra takes ~2 min); ``test_transplanted_config_equals_composed``
checks that this equals ``rlrun algo=.. reward=.. curriculum=..`` on a sample of cells.
"""
from __future__ import annotations

import itertools
import json
import math
import random
import re
from functools import cache
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlrun.runtime import checkpoint, dist, loop
from rlrun.wiring.cli import compose
from rlrun.wiring.config_check import ConfigError
from rlrun.wiring.build import build_run

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = ("algo", "reward", "curriculum")
OPTIONS = {g: [p.stem for p in sorted((CONF / g).glob("*.yaml"))] for g in GROUPS}
BASE = ["debug=cpu", "eval=none"]
BUDGET_CURRICULA = {"budget_exponential", "budget_linear", "budget_per_difficulty", "thinkprune"}
# settings a cell needs beyond its three options, keyed by option (applied when the key exists)
SETTINGS = {
    "overlong_soft": {"reward.terms.overlong_soft.fn.cache_tokens": 4},  # L_cache < the smallest cap
    "laser_d": {"reward.terms.laser_d.fn.monitor_problems": 2},  # a small monitor set, run for real
    "laser_de": {"reward.terms.laser_de.fn.monitor_problems": 2},
    "l1_max": {"algo.prompts.max_fraction": 0.5},  # L1-Max prompts (the paper's 50/50)
    # refilling filters: 2 rounds exercise the refill (10 would only repeat it on all-equal groups)
    **{a: {"algo.filter.max_rounds": 2} for a in ("dapo", "dler", "dler_paper")},
    "lspo": {"curriculum.filter.max_rounds": 2},
}


def expected_error(algo: str, reward: str, curriculum: str) -> str | None:
    """The start-up message of an invalid cell (a regex), None for a valid one."""
    if reward in ("l1_exact", "l1_max") and algo != "lcpo":
        return f"reward term {reward} needs a target length per prompt; use algo=lcpo"
    if algo == "lcpo" and reward not in ("l1_exact", "l1_max"):
        return r"algo=lcpo writes a target length into each prompt but the reward \(.*\) has no L1 term"
    if reward == "triangular" and curriculum not in BUDGET_CURRICULA:
        return "reward term triangular needs the curriculum's budget per prompt; use a budget curriculum"
    return None


CELLS = list(itertools.product(*(OPTIONS[g] for g in GROUPS)))
VALID = [c for c in CELLS if expected_error(*c) is None]
INVALID = [c for c in CELLS if expected_error(*c) is not None]


@cache
def option_node(group: str, option: str, loss: str | None = None):
    """A group's composed node; ``loss`` (algo only) chooses the loss option (``algo/loss=<loss>``)."""
    return compose([f"{group}={option}", *([f"algo/loss={loss}"] if loss else []), *BASE])[group]


@cache
def base_config(*overrides: str):
    return compose([*BASE, *overrides])


def cell_config(cell: tuple[str, str, str], *overrides: str, loss: str | None = None):
    cfg = base_config(*overrides).copy()
    for group, option in zip(GROUPS, cell):
        cfg[group] = option_node(group, option, loss if group == "algo" else None)
    for option in cell:
        for key, value in SETTINGS.get(option, {}).items():
            if OmegaConf.select(cfg, key) is not None:
                OmegaConf.update(cfg, key, value)
    for override in overrides:  # the base's overrides win over an option's own values
        key, value = override.split("=", 1)
        OmegaConf.update(cfg, key, yaml_value(value))
    return cfg


def yaml_value(text: str):
    return OmegaConf.create(f"v: {text}")["v"]


@cache
def shared_engines(*overrides: str):
    dist.init()
    run = build_run(base_config(*overrides), "/tmp/rlrun-combinations-engines")
    run.logger.close({})
    return run.rollout, run.trainer


def run_steps(cell, out_dir: Path, *overrides: str, loss: str | None = None, steps: int = 2) -> list[dict]:
    run = build_run(cell_config(cell, *overrides, loss=loss), str(out_dir), engines=shared_engines(*overrides))
    checkpoint.seed_all(0)
    cache_: dict = {}
    try:
        for step in range(steps):
            loop.advance(run, step, cache_)
    finally:
        run.logger.close({})
    return [json.loads(line) for line in open(out_dir / "metrics.jsonl")]


def check_lines(cell, lines: list[dict], steps: int = 2) -> None:
    assert [line["step"] for line in lines] == list(range(1, steps + 1)), cell
    for line in lines:
        assert math.isfinite(line["reward/total"]), (cell, line)
        assert 0.0 <= line["acc/train"] <= 1.0, (cell, line)
        assert line["rollout/sampled"] >= 8, (cell, line)  # debug: 2 prompts x 4


FAST = ("rollout.max_new_tokens=8", "trainer.optim.lr=0.0")


def test_every_valid_combination_runs(tmp_path):
    assert len(VALID) > 1000 and len(INVALID) > 200  # the matrix is what this file says it is
    failures = []
    for i, cell in enumerate(VALID):
        try:
            lines = run_steps(cell, tmp_path / str(i), *FAST)
            check_lines(cell, lines)
            assert all(line["length/mean_tokens"] <= 8 for line in lines), cell
        except Exception as exc:  # collect every failing cell, not only the first
            failures.append(f"algo={cell[0]} reward={cell[1]} curriculum={cell[2]}: {type(exc).__name__}: {exc}")
    assert not failures, f"{len(failures)} of {len(VALID)} cells failed:\n" + "\n".join(failures[:20])


def pairwise_cells(seed: int = 0) -> list[tuple[str, str, str]]:
    """A small set of valid cells covering every valid pair of options (greedy: the uncovered pairs
    of each algo-reward cell pick its curriculum)."""
    pairs = set()
    for a, r, c in VALID:
        pairs |= {("ar", a, r), ("ac", a, c), ("rc", r, c)}
    chosen: list[tuple[str, str, str]] = []
    rng = random.Random(seed)
    while pairs:
        best = max(VALID, key=lambda cell: (len(cell_pairs(cell) & pairs), rng.random()))
        chosen.append(best)
        pairs -= cell_pairs(best)
    return chosen


def cell_pairs(cell):
    a, r, c = cell
    return {("ar", a, r), ("ac", a, c), ("rc", r, c)}


def test_pairwise_combinations_run_on_real_answers(tmp_path):
    cells = pairwise_cells()
    covered = set().union(*(cell_pairs(c) for c in cells))
    assert {("ar", a, r) for a, r, _ in VALID} <= covered
    failures, correct = [], 0.0
    for i, cell in enumerate(cells):
        try:
            lines = run_steps(cell, tmp_path / str(i), "trainer.optim.lr=0.0", steps=1)
            check_lines(cell, lines, steps=1)
            correct += sum(line["acc/train"] for line in lines)
        except Exception as exc:
            failures.append(f"algo={cell[0]} reward={cell[1]} curriculum={cell[2]}: {type(exc).__name__}: {exc}")
    assert not failures, f"{len(failures)} of {len(cells)} cells failed:\n" + "\n".join(failures[:20])
    assert correct > 0  # real answers met the pieces


# the loss options that are not an algo's own (conf/algo/loss/: the clipped ones run with their algos above)
NEW_LOSSES = ("gspo", "luspo", "cispo", "sapo")
FILTER_ALGOS = ("gfpo", "gfpo_efficiency", "gfpo_adaptive", "dapo", "dler")


def loss_cells(loss: str) -> list[tuple[str, str, str]]:
    """The loss option with every reward once, the filter-bearing algos and the curricula in turn (a
    reward that needs another algo or curriculum gets the first that makes the cell valid): every
    (loss, reward) and every (loss, filter algo) pair in 24 cells per loss, not the full matrix."""
    cells, shift = [], NEW_LOSSES.index(loss)  # each loss starts the rotation elsewhere
    for turn, reward in enumerate(OPTIONS["reward"], start=shift):
        k = turn % len(FILTER_ALGOS)
        algos = FILTER_ALGOS[k:] + FILTER_ALGOS[:k] + ("lcpo",)  # lcpo: the L1 rewards need it
        curricula = OPTIONS["curriculum"][turn % len(OPTIONS["curriculum"]):] + OPTIONS["curriculum"]
        cells.append(next((a, reward, c) for a in algos for c in curricula if expected_error(a, reward, c) is None))
    return cells


@pytest.mark.parametrize("loss", NEW_LOSSES)
def test_loss_option_with_every_reward_and_filter(loss, tmp_path):
    cells = loss_cells(loss)
    assert {r for _, r, _ in cells} == set(OPTIONS["reward"]) and {a for a, _, _ in cells} >= set(FILTER_ALGOS)
    failures = []
    for i, cell in enumerate(cells):
        try:
            lines = run_steps(cell, tmp_path / str(i), *FAST, loss=loss)
            check_lines(cell, lines)
            assert all(math.isfinite(line["loss/policy"]) for line in lines if "loss/policy" in line), cell
        except Exception as exc:
            failures.append(f"algo={cell[0]} algo.loss={loss} reward={cell[1]} curriculum={cell[2]}: "
                            f"{type(exc).__name__}: {exc}")
    assert not failures, f"{len(failures)} of {len(cells)} cells failed:\n" + "\n".join(failures[:20])


@pytest.mark.parametrize("cell", INVALID[:: max(1, len(INVALID) // 40)] + [("grpo", "triangular", "none")],
                         ids=lambda c: "-".join(c))
def test_invalid_combination_fails_at_start_with_its_reason(cell, tmp_path):
    with pytest.raises(ConfigError, match=expected_error(*cell)):
        build_run(cell_config(cell, *FAST), str(tmp_path), engines=shared_engines(*FAST))


def test_every_invalid_combination_is_refused(tmp_path):
    wrong = []
    for cell in INVALID:
        try:
            build_run(cell_config(cell, *FAST), str(tmp_path), engines=shared_engines(*FAST)).logger.close({})
            wrong.append(cell)
        except ConfigError as exc:
            if not re.search(expected_error(*cell), str(exc)):
                wrong.append((cell, str(exc)))
    assert not wrong, wrong[:10]


def test_transplanted_config_equals_composed():
    rng = random.Random(1)
    cells = [(cell, None) for cell in rng.sample(CELLS, 12) + [("lcpo", "l1_exact", "budget_exponential")]]
    for cell, loss in cells + [(loss_cells(loss)[0], loss) for loss in NEW_LOSSES]:  # a loss option too
        composed = compose([f"{g}={o}" for g, o in zip(GROUPS, cell)] + ([f"algo/loss={loss}"] if loss else []) + BASE)
        ours = cell_config(cell, loss=loss)
        for option in cell:  # the SETTINGS this test adds on purpose
            for key in SETTINGS.get(option, {}):
                if OmegaConf.select(ours, key) is not None:
                    OmegaConf.update(composed, key, OmegaConf.select(ours, key))
        assert OmegaConf.to_container(ours) == OmegaConf.to_container(composed), (cell, loss)
