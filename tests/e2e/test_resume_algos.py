"""Every algorithm, reward and curriculum option resumes exactly: 4 steps straight equal 2 steps, a
checkpoint, fresh pieces restored from it, and 2 more steps (stateful filters, advantages, reward
terms and curricula included). In process, scanning conf/, so a new option is covered without
touching this file; so is a loss option that no algo takes by default (``algo/loss=...``), and PPO's
mini-batches and epochs (``trainer.mini_batches``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from rlrun.runtime import dist, loop
from rlrun.wiring.cli import compose
from rlrun.wiring.build import build_run

CONF = Path(__file__).resolve().parents[2] / "conf"
# options that only work with others (each refuses to start alone, with a one-line reason)
COMPANIONS = {
    "reward=l1_exact": ["algo=lcpo"],
    "reward=l1_max": ["algo=lcpo", "algo.prompts.max_fraction=0.5"],
    "reward=overlong_soft": ["reward.terms.overlong_soft.fn.cache_tokens=64"],  # L_cache < the cap
    "reward=triangular": ["curriculum=budget_exponential"],
    "trainer.mini_batches=2": ["trainer.epochs=2", "trainer.optim.warmup_steps=3"],  # PPO's several steps
}
OPTIONS = [f"{group}={p.stem}" for group in ("algo", "reward", "curriculum")
           for p in sorted((CONF / group).glob("*.yaml"))]


def algo_own_losses() -> set[str]:
    """The loss options an algo takes by default (``- loss: <option>`` in conf/algo/*.yaml): resumed with it."""
    found = set()
    for path in (CONF / "algo").glob("*.yaml"):
        for item in OmegaConf.load(path).get("defaults") or []:
            if isinstance(item, DictConfig) and "loss" in item:
                found.add(str(item["loss"]))
    return found


# the other loss options (conf/algo/loss/), with the default algo: algo.loss=<option> is algo/loss=<option>
OPTIONS += [f"algo/loss={p.stem}" for p in sorted((CONF / "algo" / "loss").glob("*.yaml"))
            if p.stem not in algo_own_losses()]
OPTIONS += ["trainer.mini_batches=2"]


def run_to_end(overrides: list[str], out_dir: Path) -> list[dict]:
    loop.train(build_run(compose(overrides), str(out_dir)))
    lines = [json.loads(line) for line in open(out_dir / "metrics.jsonl")]
    return [{k: v for k, v in m.items() if not k.startswith(("time/", "throughput/", "memory/"))} for m in lines]


@pytest.mark.parametrize("option", OPTIONS)
def test_two_plus_two_steps_equal_four(option, tmp_path):
    dist.init()
    common = [option, *COMPANIONS.get(option, []), "debug=cpu", "eval=none", "steps=4",
              "checkpoint_every=2"]
    straight = run_to_end(common, tmp_path / "straight")
    checkpoint = tmp_path / "straight" / "checkpoints" / "step_000002"
    resumed = run_to_end([*common, f"resume={checkpoint}"], tmp_path / "resumed")
    assert [m["step"] for m in resumed] == [3, 4]
    for want, got in zip(straight[2:], resumed):
        assert set(want) == set(got)
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-6), key
