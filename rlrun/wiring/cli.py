"""The ``rlrun`` command (and ``python -m rlrun``): compose the config, build the run, train.

A Hydra app (``@hydra.main`` over the configs shipped in ``rlrun.conf``): ``rlrun group=option
key=value ...``; ``--help`` lists the groups, ``--cfg job`` prints the composed config, ``-m`` sweeps.

Errors in what the user typed (an unknown option, a misspelt key, a value of the wrong type, an
impossible combination) print exactly one line, ``rlrun: error: ...``, on stderr and exit with
status 2, like argparse. Hydra's own messages for these are multi-line with a traceback hint, so a
plain run composes and validates the overrides first (Hydra's compose API) and translates what goes
wrong; ``--help``, ``--cfg``, ``--info``, ``-m`` and the other flags go straight to Hydra, which
handles them. With ``HYDRA_FULL_ERROR=1`` the original exception and its traceback come through.

Launchers: ``torchrun ... -m rlrun`` and ``deepspeed ... -m rlrun`` (whose ``--local_rank=N`` is
taken off the command line) start one process per rank; each calls ``dist.init()``, all write to
rank 0's run dir, and only rank 0 prints errors and the final summary.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from typing import NoReturn

import hydra
from omegaconf import DictConfig, OmegaConf

from rlrun.wiring import run_dirs  # noqa: F401  (registers ${rlrun_fresh:...}, the run dir's resolver)
from rlrun.wiring.config_check import ConfigError, config_groups, suggest

# Flags that don't take the pre-check; --run/-r is a plain run.
PLAIN_RUN_FLAGS = ("--run", "-r")


def fail(exc: BaseException, overrides: list[str], out_dir: str | None = None) -> NoReturn:
    """Report ``exc`` as one line and exit 2, or re-raise it under HYDRA_FULL_ERROR=1. A single
    run's dir ``out_dir`` that holds nothing but what Hydra wrote at the start goes; a sweep's job dir
    stays, with the line in ``error.txt``, so that the sweep's summary names the failed job (rank 0)."""
    main = os.environ.get("RANK", "0") == "0"
    message = explain(exc, overrides)
    if out_dir is None and run_dirs.claimed():  # the pre-check claimed the run dir Hydra would use
        from rlrun.runtime.rundir import remove_if_unused

        remove_if_unused(run_dirs.claimed())
    if out_dir is not None and main:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from rlrun.runtime.rundir import remove_if_unused

        if HydraConfig.get().mode == RunMode.MULTIRUN:
            with open(os.path.join(out_dir, "error.txt"), "w") as f:
                f.write(f"rlrun: error: {message}\n")
        else:
            remove_if_unused(out_dir)
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise exc
    # Under a launcher every rank checks the same config: only rank 0 (launcher's RANK) says so.
    if main:
        print(f"rlrun: error: {message}", file=sys.stderr)
    sys.exit(2)


def explain(exc: BaseException, overrides: list[str]) -> str:
    """One line for an exception of composing or validating the config."""
    from hydra.errors import MissingConfigException

    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        if group:
            options = list(exc.options or config_groups().get(group, []))
            return (f"{group}={option} is not an option{suggest(option, options)}; "
                    f"valid {group} options: {', '.join(options) or 'none'}")
    no_match = re.search(r"Could not override '([^']+)'\. No match in the defaults list", str(exc))
    if no_match and "/" in no_match.group(1):
        return no_nested_default(no_match.group(1), overrides)
    key = getattr(exc.__cause__, "full_key", None)
    if key and "not in struct" in str(exc.__cause__):
        return unknown_key(str(key), overrides)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("Config search path", "provider="))]
    return "; ".join(lines) or type(exc).__name__


def no_nested_default(group: str, overrides: list[str]) -> str:
    """A nested group's option (``algo/loss=gspo``) given with a parent option whose defaults list has
    no such entry: ``algo=drpo``, whose loss is its own."""
    from rlrun.wiring.config_check import options_with_nested

    parent, _, name = group.rpartition("/")
    given = next((o for o in overrides if o.startswith(f"{group}=")), group)
    chosen = next((o for o in overrides if re.match(rf"^(override )?{re.escape(parent)}=", o)), None)
    takers = options_with_nested(parent, name)
    return (f"{given} does not combine with {chosen or 'the ' + parent + ' chosen'}: its {name} is its own, "
            f"with no {group} option to replace; {group} options combine with {parent}={','.join(takers)}")


def loss_option(arg: str) -> str:
    """``algo.loss=<name>`` (a bare name, or a comma-separated sweep of names) spelt as Hydra selects an
    option of the nested group ``algo/loss``: ``algo/loss=<name>`` (an unknown name then fails with
    the list of loss options). Any other argument is unchanged: ``algo.loss.clip_high=0.3`` sets a key,
    ``algo.loss=3`` or ``algo.loss=null`` stay values (and fail validation)."""
    match = re.fullmatch(r"algo\.loss=([A-Za-z_]\w*(?:,[A-Za-z_]\w*)*)", arg)
    if match is None or match.group(1) in ("null", "true", "false"):
        return arg
    return f"algo/loss={match.group(1)}"


def unknown_key(key: str, overrides: list[str]) -> str:
    """``key is not a config key; valid keys of <parent>: ...`` from the config without ``key``."""
    parent, _, leaf = key.rpartition(".")
    rest = [o for o in overrides if not re.match(rf"^[+~]*{re.escape(key)}(=|$)", o)]
    try:
        cfg = compose(rest)
        node = OmegaConf.select(cfg, parent) if parent else cfg
    except Exception:
        node = None
    if not isinstance(node, DictConfig):
        return f"{key} is not a config key"
    keys = [str(k) for k in node if k not in ("_target_", "hydra")]
    if not parent:
        groups = config_groups()
        plain = [k for k in keys if k not in groups]
        return (f"{key} is not a config key or group{suggest(leaf, keys)}; top-level keys: "
                f"{', '.join(sorted(plain))}; groups: {', '.join(groups)}")
    return f"{key} is not a config key{suggest(leaf, keys)}; valid keys of {parent}: {', '.join(sorted(keys))}"


def compose(overrides: list[str], run_dir: list[str] | None = None) -> DictConfig:
    """The config ``rlrun <overrides>`` would run with (Hydra's compose API, no run dir);
    ``run_dir``, when given, gets the run dir Hydra would use appended."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with initialize_config_module(config_module="rlrun.conf", version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # so that ${hydra:...} interpolations resolve
    if run_dir is not None:
        run_dir.append(str(cfg.hydra.run.dir))
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def precheck(argv: list[str]) -> None:
    """Compose and validate a plain run's overrides; exit 2 with one line on a config error."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in argv if a not in PLAIN_RUN_FLAGS]
    run_dir: list[str] = []
    try:
        cfg = compose(overrides, run_dir)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        fail(exc, overrides)
    if run_dir:
        probe_run_dir(run_dir[0])
    from rlrun.wiring.settings import validate

    try:
        validate(cfg, world_size=1)  # the world size is checked again inside the app
    except ConfigError as exc:
        fail(exc, overrides)


def probe_run_dir(path: str) -> None:
    """Exit 2 with one line when the run dir cannot be made or written (Hydra's own failure there is
    a traceback); what the probe made goes again."""
    made, parent = [], os.path.abspath(path)
    while not os.path.exists(parent):
        made.append(parent)
        parent = os.path.dirname(parent)
    probe = os.path.join(path, f".rlrun-probe-{os.getpid()}")
    try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "w") as f:
            f.write("x")
        os.remove(probe)
    except OSError as exc:
        fail(ConfigError(f"cannot write the run dir {path} ({exc.strerror}: {exc.filename}); choose a writable "
                         "hydra.run.dir=<dir>"), [])
    finally:
        for directory in made:  # innermost first; Hydra makes them again
            try:
                os.rmdir(directory)
            except OSError:
                pass


@hydra.main(config_path="pkg://rlrun.conf", config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> None:
    """One training run in Hydra's run dir (one job of a sweep)."""
    from hydra.core.hydra_config import HydraConfig

    from rlrun.runtime import dist, loop, report, rundir
    from rlrun.wiring.build import build_run

    dist.init()
    if cfg.resume is None and "submitit" in str(HydraConfig.get().launcher.get("_target_", "")):
        cfg.resume = "auto"  # a requeued SLURM job continues from its own checkpoint
    # Every rank writes to rank 0's run dir (ranks may start in different seconds).
    own = HydraConfig.get().runtime.output_dir
    out_dir = dist.broadcast_object(own)
    if not dist.is_main() and own != out_dir and own == run_dirs.claimed():
        shutil.rmtree(own, ignore_errors=True)  # this rank's private dir (rlrun.wiring.run_dirs)
    if dist.is_main():
        rundir.inherit_wandb_run(cfg.resume, out_dir)
    from rlrun.core.rewards import RewardError
    from rlrun.types import RolloutMismatch, UpdatesFailed
    from rlrun.runtime.checkpoint import CheckpointError, ResumeError
    from rlrun.runtime.stopping import Stopped

    try:
        source = resume_source(cfg, out_dir)
        if source is not None:
            cfg = continued_config(cfg, source, out_dir)  # steps below those done: refused here
        run = build_run(cfg, out_dir)
    except (ConfigError, ResumeError) as exc:
        fail(exc, [], out_dir)
    if dist.is_main():
        rundir.write_environment(out_dir)
    try:
        summary = loop.train(run, source)
    except Stopped as stopped:  # a signal: the checkpoint is written, say so in one line
        if dist.is_main() and not stopped.said:
            print(f"rlrun: {stopped}", file=sys.stderr, flush=True)
        sys.exit(stopped.code)
    except ResumeError as exc:  # no valid checkpoint to resume from, steps below those done
        fail(exc, [])
    # a full disk or a read-only dir; a reward term that raised; NaN/inf updates; the engine parted
    except (CheckpointError, OSError, RewardError, UpdatesFailed, RolloutMismatch) as exc:
        stop_on(run, exc)
    report.print_summary(summary)


def stop_on(run, exc: BaseException) -> NoReturn:
    """A run that cannot go on: one line, the loggers closed, exit 1 (what was written stays)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise exc
    from rlrun.runtime import dist

    if isinstance(exc, OSError):
        what = f"{exc.strerror or type(exc).__name__}: {exc.filename}" if exc.filename else str(exc)
        message = (f"{what}; the run stopped; its checkpoints and metrics.jsonl written before are intact; "
                   "fix the cause, then continue with resume=auto in the same run dir")
    else:
        message = str(exc)
    try:
        run.logger.close({"error": message})
    except Exception:  # the logger's own files may be what failed
        pass
    if dist.is_main():
        print(f"rlrun: error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def resume_source(cfg: DictConfig, out_dir: str) -> str | None:
    """The checkpoint ``resume=`` names (None: a fresh start), found before anything is built."""
    from rlrun.runtime import checkpoint, dist
    from rlrun.wiring.settings import read_settings

    resume = read_settings(cfg, out_dir).resume
    return checkpoint.resolve(resume, out_dir, dist.world_size()) if resume else None


def continued_config(cfg: DictConfig, source: str, out_dir: str) -> DictConfig:
    """The saved config of the run being resumed, with the command line's allowed changes
    (``rlrun.wiring.resume_config``)."""
    from hydra import compose as hydra_compose
    from hydra.core.hydra_config import HydraConfig

    from rlrun.wiring.resume_config import restored

    defaults = hydra_compose(config_name="config", overrides=[])  # Hydra's own overrides are not task ones
    overrides = list(HydraConfig.get().overrides.task)
    return restored(cfg, source, overrides, defaults, out_dir)


def launcher_args(argv: list[str]) -> list[str]:
    """``argv`` without the ``--local_rank=N`` the ``deepspeed`` launcher appends (Hydra would
    reject it); N goes to ``LOCAL_RANK`` unless the launcher set that too."""
    kept, i = [], 0
    while i < len(argv):
        match = re.fullmatch(r"--local[-_]rank(?:=(\d+))?", argv[i])
        if match is None:
            kept.append(argv[i])
        else:
            value = match.group(1)
            if value is None and i + 1 < len(argv):
                i, value = i + 1, argv[i + 1]
            if value is not None:
                os.environ.setdefault("LOCAL_RANK", value)
        i += 1
    return kept


def main() -> None:
    """Console entry point ``rlrun``."""
    from rlrun.runtime.stopping import exit_early_on_signals

    exit_early_on_signals()
    argv = [loss_option(re.sub(r"^([+~]*)resume\.allow_changes(?==|$)", r"\1resume_allow_changes", a))
            for a in launcher_args(sys.argv[1:])]  # the spellings the docs use: a config key, a nested group
    sys.argv[1:] = argv
    run_dirs.dry = any(a.split("=")[0] in ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--resolve")
                       for a in argv)
    try:
        if not any(a.startswith("-") and a not in PLAIN_RUN_FLAGS for a in argv):
            precheck(argv)
        app()
    except KeyboardInterrupt:  # Ctrl-C before the loop took over the signal: nothing to save yet
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print("rlrun: interrupted (Ctrl-C) before training started; nothing was lost", file=sys.stderr)
        sys.exit(130)
