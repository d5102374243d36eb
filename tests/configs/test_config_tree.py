"""Every option of every config group composes, validates and (where cheap) instantiates
(DESIGN.md section 6, rule 6). Options are found by scanning conf/, so a new yaml file is tested
without touching this file. Engines (model, rollout, trainer, logger) are not built here: their
targets must import and take the configured keys (the e2e tests build them)."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from conftest import debug_overrides

from rlrun.wiring.cli import compose
from rlrun.wiring.config_check import ConfigError, config_groups
from rlrun.wiring.build import NullLogger, accepted, build
from rlrun.wiring.settings import COMPONENTS, validate

CONF = Path(__file__).resolve().parents[2] / "conf"
TOP = sorted(d.name for d in CONF.iterdir()
             if d.is_dir() and not d.name.startswith(("_", ".")) and d.name != "hydra")  # Hydra's own
# nested groups: a sub-folder an option's defaults list names (algo/grpo.yaml: `- loss: clipped`)
NESTED = sorted(f"{g}/{d.name}" for g in TOP for d in (CONF / g).iterdir() if d.is_dir()
                and any(f"\n  - {d.name}: " in f.read_text() for f in (CONF / g).glob("*.yaml")))
GROUPS = sorted(TOP + NESTED)


def group_options(group: str) -> list[str]:
    """The group's options, those in sub-folders by path (``compare/drpo``), a nested group's apart."""
    inner = [n[len(group) + 1:] + "/" for n in NESTED if n.startswith(group + "/")]
    found = [str(f.relative_to(CONF / group).with_suffix("")) for f in (CONF / group).rglob("*.yaml")]
    return sorted(o for o in found if not o.startswith(tuple(inner)))


OPTIONS = [(g, o) for g in GROUPS for o in group_options(g)]
ENGINES = ("model", "rollout", "trainer", "logger")
CHEAP = tuple(path for path in COMPONENTS if path.split(".")[0] not in ENGINES)


def overrides_for(group: str, option: str) -> list[str]:
    # A preset is checked the way CI runs it: with debug=cpu on top.
    if group == "experiment":
        return [f"experiment={option}", "debug=cpu", *debug_overrides(option)]
    if (group, option) == ("data", "jsonl"):  # the generic option needs a file: a vendored one
        return ["data=jsonl", "data.source.path=builtin:aime24"]
    if (group, option) == ("model", "hf"):  # any model dir or hub id (nothing is loaded here)
        return ["model=hf", "model.path=Qwen/Qwen2.5-Math-1.5B"]
    return [f"{group}={option}"]  # a nested group's option with the default parent: algo/loss=gspo


def test_the_scan_finds_the_groups_the_package_ships():
    assert config_groups() == {g: group_options(g) for g in GROUPS}
    assert "compare/drpo" in config_groups()["experiment"]
    assert "algo/loss" in NESTED and "gspo" in config_groups()["algo/loss"]
    assert not any(o.startswith("loss/") for o in config_groups()["algo"])
    assert {"algo", "reward", "model", "curriculum", "data", "rollout", "trainer", "logger", "eval",
            "experiment", "debug"} <= set(GROUPS)


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_validates_and_builds(group, option, tmp_path):
    cfg = compose(overrides_for(group, option))
    settings = validate(cfg, world_size=1, out_dir=str(tmp_path))
    for path in CHEAP:
        assert build(cfg, path) is not None, path
    for path in ENGINES:
        node = OmegaConf.select(cfg, path)
        target = get_object(node._target_)
        keys = {k: None for k in node if not str(k).startswith("_")}
        injected = accepted(cfg, path, {name: None for name in COMPONENTS[path]})
        inspect.signature(target).bind(**keys, **injected)  # raises TypeError on a mismatch
    if group in ("experiment", "debug"):
        assert settings.steps == 2 and settings.prompts_per_step * settings.group_size <= 16


@pytest.mark.parametrize("path", sorted(str(p.relative_to(CONF)) for p in CONF.rglob("*.yaml")))
def test_every_yaml_starts_with_a_comment_saying_what_it_is(path):
    lines = (CONF / path).read_text().splitlines()
    if lines and lines[0].startswith("# @package"):
        lines = lines[1:]
    assert lines and lines[0].startswith("#") and len(lines[0]) > 20, f"{path}: no header comment"


def target_paths(node, path: str = ""):
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path
        for key in node:
            yield from target_paths(node[key], f"{path}.{key}" if path else str(key))


def test_every_target_node_is_inside_a_component_build_run_builds():
    cfg = compose([])
    for path in target_paths(cfg):
        assert any(path == c or path.startswith(c + ".") for c in COMPONENTS), path


def test_a_loss_option_replaces_the_loss_and_keeps_the_algorithms_kl():
    # algo=dler: clip-higher 0.2/0.28, dual clip 10, token_mean, KL 5e-4. algo/loss=gspo: GSPO's own
    # clip and aggregation, none of dler's clip keys left over, dler's KL and rollout settings kept
    loss = compose(["algo=dler", "algo/loss=gspo"]).algo.loss
    assert OmegaConf.to_container(loss) == {
        "_target_": "rlrun.core.seq_losses.GSPO", "clip_low": 3e-4, "clip_high": 4e-4,
        "aggregation": "seq_mean_token_mean", "norm_constant": None, "kl_coef": 0.0005,
        "rollout_correction": "none", "rollout_cap": 2.0}
    sapo = compose(["algo=dapo", "algo/loss=sapo", "algo.loss.tau_neg=2.0"]).algo.loss
    assert sapo._target_.endswith("SAPO") and sapo.tau_neg == 2.0 and "clip_high" not in sapo
    # an algo's own loss is its option plus its KL: dapo's clip-higher, dr_grpo's C
    assert compose(["algo=dapo"]).algo.loss.clip_high == 0.28
    assert compose(["algo=dr_grpo", "curriculum.max_new_tokens=300"]).algo.loss.norm_constant == 300


def test_demo_experiment_is_the_embedded_default():
    assert compose(["experiment=demo"]) == compose([])


def test_debug_cpu_overrides_a_preset_and_keeps_command_line_choices():
    cfg = compose(["experiment=demo", "debug=cpu", "steps=3"])
    assert (cfg.steps, cfg.prompts_per_step, cfg.group_size, cfg.checkpoint_every) == (3, 2, 4, 3)
    assert cfg.eval.at_steps == [0, 3]
    assert cfg.logger._target_.endswith("JsonlLogger")
    assert compose(["debug=cpu", "logger=wandb"]).logger._target_.endswith("WandbLogger")


def test_eval_settings():
    s = validate(compose([]), world_size=1)
    assert (s.eval.problems, s.eval.at_steps) == (256, (0, 100))
    assert validate(compose(["eval=none"]), world_size=1).eval.at_steps == ()
    s = validate(compose(["eval.at_steps=[0,10,100]"]), world_size=1)
    assert s.eval.at_steps == (0, 10, 100)


BAD = [
    (["steps=1.5"], "steps=1.5 is not an int"),
    (["steps=0"], "steps=0 must be >= 1"),
    (["resume=3"], "resume=3 is not a string or null"),
    (["group_size=1"], "group_size=1 must be >= 2: group-relative advantages compare the "
                       "completions of a prompt with each other"),
    (["curriculum.max_new_tokens=abc"],
     "curriculum.max_new_tokens=abc is not an int; FixedBudget takes max_new_tokens: an int"),
    (["+curriculum.max_tokens=3"], "curriculum.max_tokens is not a parameter of FixedBudget (did you "
                                   "mean max_new_tokens?); valid keys of curriculum: max_new_tokens"),
    (["~data.source.seed"], "data.source.seed is missing: ArithProblems needs seed (an int); "
                            "add data.source.seed=..."),
    (["+algo.extra=3"], "algo.extra is not built by rlrun; valid keys of algo: advantage, loss, filter, prompts, train_rows"),
    (["+algo.filter=3"], "algo.filter=3 is not a config node with a _target_; choose an option of the algo group"),
    (["reward.terms.correct=3"], "reward.terms.correct=3 is not a mapping; Composite takes terms: a mapping"),
    (["algo.loss=3"], "algo.loss=3 is not a config node with a _target_; choose an option of the algo group"),
    (["eval.at_steps=[0,101]"], "eval.at_steps=[0, 101] has steps outside 0..steps=100: [101]"),
    (["+stepz=3"], "stepz is not a config key (did you mean steps?); top-level keys: checkpoint, "
                   "checkpoint_every, group_size, prompts_per_step, resume, resume_allow_changes, seed, steps; groups: " + ", ".join(GROUPS)),
    (["resume=/nonexistent/ckpt"], "resume=/nonexistent/ckpt is not a directory; give a run or checkpoint "
                                   "directory, resume=auto (this run dir's newest checkpoint, if any) "
                                   "or resume=null"),
    (["data.source._target_=rlrun.tasks.nope.Problems"],
     "data.source._target_=rlrun.tasks.nope.Problems cannot be imported: ModuleNotFoundError: "
     "No module named 'rlrun.tasks.nope'"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_validate_names_the_bad_value_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as info:
        validate(compose(overrides), world_size=1)
    assert str(info.value) == message


def test_prompts_must_split_evenly_over_ranks():
    validate(compose(["prompts_per_step=8"]), world_size=4)
    with pytest.raises(ConfigError, match=r"^prompts_per_step=8 is not divisible by the world size 3; "
                                          r"use a multiple of 3$"):
        validate(compose(["prompts_per_step=8"]), world_size=3)


def test_a_value_the_component_rejects_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^curriculum: max_new_tokens must be >= 1, got 0$"):
        build(compose(["curriculum.max_new_tokens=0"]), "curriculum")


def test_logger_gets_only_the_arguments_it_takes(tmp_path):
    offered = {"out_dir": str(tmp_path), "config": {}}
    assert accepted(compose(["logger=jsonl"]), "logger", offered) == {"out_dir": str(tmp_path)}
    assert accepted(compose(["logger=wandb"]), "logger", offered) == offered
    NullLogger().log(1, {"acc/train": 1.0})
    NullLogger().close({})



@pytest.mark.parametrize("launcher,target", [("slurm", "SlurmLauncher"), ("local", "LocalLauncher")])
def test_the_launchers_compose_over_submitit(launcher, target):
    import subprocess
    import sys

    got = subprocess.run([sys.executable, "-m", "rlrun", f"hydra/launcher={launcher}", "--cfg", "hydra",
                          "-p", "hydra.launcher"], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr
    launcher_cfg = OmegaConf.create(got.stdout)
    assert launcher_cfg["_target_"] == f"hydra_plugins.hydra_submitit_launcher.submitit_launcher.{target}"
    if launcher == "slurm":
        assert (launcher_cfg["signal_delay_s"], launcher_cfg["max_num_timeout"]) == (90, 20)
