"""The ``rlrun`` command as a user meets it, through a real process (``python -m rlrun``): one-line
errors with exit status 2, Hydra's traceback under HYDRA_FULL_ERROR=1, ``--help`` and ``--cfg``."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import child_env
from omegaconf import OmegaConf

from rlrun.wiring.cli import compose
from rlrun.wiring.cli import loss_option
from rlrun.wiring.config_check import config_groups, options_with_nested


def rlrun(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = child_env()
    return subprocess.run([sys.executable, "-m", "rlrun", *args], capture_output=True, text=True,
                          env={**environ, **env}, timeout=120)


def unknown_key_message(key: str, suggestion: str) -> str:
    parent, _, _ = key.rpartition(".")
    keys = sorted(k for k in OmegaConf.select(compose([]), parent) if k != "_target_")
    return (f"{key} is not a config key (did you mean {suggestion}?); "
            f"valid keys of {parent}: {', '.join(keys)}")


def cases():
    groups = config_groups()
    top = "checkpoint, checkpoint_every, group_size, length, prompts_per_step, resume, resume_allow_changes, seed, steps"
    return [
        (["algo=nonexistent"],
         f"algo=nonexistent is not an option; valid algo options: {', '.join(groups['algo'])}"),
        (["stepz=3"], f"stepz is not a config key or group (did you mean steps?); top-level keys: "
                      f"{top}; groups: {', '.join(groups)}"),
        (["algo.loss.clip_lo=0.1"], unknown_key_message("algo.loss.clip_lo", "clip_low")),
        (["steps=1.5"], "steps=1.5 is not an int"),
        (["trainer.optim.lr=abc"],
         "trainer.optim.lr=abc is not a float; OptimSettings takes lr: a float"),
        (["debug=cpu", "group_size=1"], "group_size=1 must be >= 2: group-relative advantages "
                                        "compare the completions of a prompt with each other"),
        # algo.loss=<name> is the nested group algo/loss (conf/algo/loss/): DRPO's loss is its own
        (["algo=drpo", "algo.loss=gspo"],
         "algo/loss=gspo does not combine with algo=drpo: its loss is its own, with no algo/loss option to "
         f"replace; algo/loss options combine with algo={','.join(options_with_nested('algo', 'loss'))}"),
        (["algo.loss=nope"], f"algo/loss=nope is not an option; valid algo/loss options: {', '.join(groups['algo/loss'])}"),
    ]


@pytest.mark.parametrize("args,message", cases(), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_a_bad_command_line_is_one_line_on_stderr_and_exit_2(args, message):
    result = rlrun(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"rlrun: error: {message}\n"
    assert result.stdout == ""


def test_hydra_full_error_shows_the_traceback():
    result = rlrun("algo=nonexistent", HYDRA_FULL_ERROR="1")
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "MissingConfigException" in result.stderr


def test_help_lists_every_group_and_its_options():
    result = rlrun("--help")
    assert result.returncode == 0, result.stderr
    assert "length-aware reinforcement learning" in result.stdout
    assert "rlrun experiment=demo" in result.stdout  # the usage examples
    for group, options in config_groups().items():
        # Hydra lists a sub-folder's options as a group of their own: experiment/compare: drpo, ...
        folders: dict[str, list[str]] = {}
        for option in options:
            folder, _, name = option.rpartition("/")
            folders.setdefault(f"{group}/{folder}" if folder else group, []).append(name)
        for name, listed in folders.items():
            assert f"{name}: {', '.join(listed)}" in result.stdout


def test_cfg_job_prints_the_composed_config():
    result = rlrun("--cfg", "job", "steps=7", "logger=jsonl")
    assert result.returncode == 0, result.stderr
    assert OmegaConf.create(result.stdout) == compose(["steps=7", "logger=jsonl"])


def test_algo_loss_is_the_nested_loss_group():
    result = rlrun("--cfg", "job", "algo=dapo", "algo.loss=cispo")
    assert result.returncode == 0, result.stderr
    assert OmegaConf.create(result.stdout) == compose(["algo=dapo", "algo/loss=cispo"])
    assert loss_option("algo.loss=gspo,sapo") == "algo/loss=gspo,sapo"  # a sweep: -m algo.loss=gspo,sapo
    for kept in ("algo.loss.clip_high=0.3", "algo.loss=3", "algo.loss=null", "+algo.loss=gspo"):
        assert loss_option(kept) == kept
    assert "drpo" not in options_with_nested("algo", "loss") and "tlts" in options_with_nested("algo", "loss")


def test_only_rank_0_reports_a_bad_command_line():
    result = rlrun("algo=nonexistent", RANK="1")
    assert (result.returncode, result.stderr) == (2, "")


def test_the_deepspeed_launchers_local_rank_argument_is_taken_off(monkeypatch):
    from rlrun.wiring.cli import launcher_args

    monkeypatch.setenv("LOCAL_RANK", "unset")  # registers the original value for restoring...
    monkeypatch.delenv("LOCAL_RANK")  # ...then starts without one
    assert launcher_args(["--local_rank=1", "steps=3"]) == ["steps=3"]
    assert os.environ["LOCAL_RANK"] == "1"
    assert launcher_args(["steps=3", "--local-rank", "0"]) == ["steps=3"]
    assert os.environ["LOCAL_RANK"] == "1"  # a launcher's LOCAL_RANK is kept
