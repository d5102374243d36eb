"""``build_run(cfg, out_dir)``: the composed Hydra config becomes the objects the loop runs with.

The only place in rlrun that calls ``hydra.utils.instantiate`` (DESIGN.md sections 2 and 3). It
validates the whole config first (``validate``: types against the targets' signatures, impossible
combinations), so that a wrong value fails in one line before a model is loaded, then builds:

1. the cheap pieces: data source and verifier, reward, advantage, loss, curriculum;
2. the model (a ``ModelSpec``), passed to the rollout engine (``model=``) and to the trainer
   (``model=``, ``total_steps=steps``);
3. the logger on rank 0 only (``out_dir=`` and ``config=`` the resolved config, each when its
   signature takes it); other ranks get a ``NullLogger``.

Containers reach the targets as plain ``dict``/``list`` (``_convert_="all"``), never as OmegaConf
nodes, so ``rlrun.core`` never sees omegaconf.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from rlrun.wiring.config_check import (
    ConfigError,
    check_component_node,
    check_fields,
    config_groups,
    locate,
    one_line,
    suggest,
)

if TYPE_CHECKING:  # annotations only: validating a config must not wait for torch to import
    from rlrun.types import (Advantage, Curriculum, Filter, Logger, Loss, Reward, Rollout, Trainer,
                             Verifier)

# What build_run instantiates: config path -> the arguments build_run passes itself.
COMPONENTS: dict[str, tuple[str, ...]] = {
    "data.source": (),
    "data.verifier": (),
    "reward": (),
    "algo.advantage": (),
    "algo.loss": (),
    "curriculum": (),
    "model": (),
    "rollout": ("model",),
    "trainer": ("model", "total_steps"),
    "logger": ("out_dir", "config"),
}
# Components an option may add (built when its node is there, else None).
OPTIONAL: dict[str, tuple[str, ...]] = {
    "algo.filter": (),
    "algo.prompts": (),
    "algo.train_rows": (),
}


EVAL_BUDGETS = ("start", "current")


@dataclass(frozen=True)
class EvalSettings:
    """Held-out evaluation: ``problems`` problems after each step in ``at_steps`` (0 = before the
    first update, ``steps`` = after the last). An empty ``at_steps`` evaluates nothing. ``budget``:
    the curriculum's prompts and cap of step 0 (``start``) or of the evaluated step (``current``).
    ``samples`` per problem (accuracy = pass@1 averaged over them; pass@k logged when > 1);
    ``budgets``: further generation caps to evaluate at, each logged as ``budget_<N>/...``.
    The data group's held-out split is logged as ``eval/heldout/...``; ``benchmarks`` names further
    sets evaluated the same way at the same steps (``arith`` or a vendored data set, the first
    ``problems`` of each, ``rlrun.analysis.evaluate.benchmark``), logged as ``eval/<name>/...``.
    ``every`` K > 0 adds every K-th step (K, 2K, ... <= steps) to ``at_steps`` at validation, so a
    preset's curve thins out with the run's length (a 2-step debug run evaluates no extra step)."""

    problems: int
    at_steps: tuple[int, ...]
    every: int = 0
    budget: str = "start"
    samples: int = 1
    budgets: tuple[int, ...] = ()
    benchmarks: tuple[str, ...] = ()
    temperature: float | None = None  # None: the rollout engine's (rollout.temperature)
    top_p: float | None = None  # None: the rollout engine's (rollout.top_p)


@dataclass(frozen=True)
class Settings:
    """The run's top-level numbers (config keys of the same names) and its output directory."""

    seed: int
    steps: int
    prompts_per_step: int  # B, summed over ranks
    group_size: int  # G
    checkpoint_every: int
    resume: str | None
    out_dir: str
    eval: EvalSettings


@dataclass
class Run:
    """Everything the loop needs, built from one config (``rlrun.runtime.loop.train(run)``).

    ``problems`` is the data group's source (``data.source``); ``config`` the resolved config as
    plain containers (for the run dir, the logger and checkpoints).
    """

    settings: Settings
    problems: Any
    verifier: Verifier
    reward: Reward
    advantage: Advantage
    loss: Loss
    curriculum: Curriculum
    rollout: Rollout
    trainer: Trainer
    logger: Logger
    config: dict[str, Any]
    filter: Filter | None = None  # algo.filter, when the algorithm trains on a subset (GFPO, DAPO)
    prompts: Any = None  # algo.prompts: rewrites each step's prompts (LCPO's length instruction)
    train_rows: Any = None  # algo.train_rows: rows kept in the loss after advantages (DAPO overlong)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.logger.log(step, metrics)

    def finish(self, summary: dict[str, Any]) -> None:
        """Close the logger and write ``summary.json`` (rank 0 only)."""
        from rlrun.runtime import dist, rundir

        self.logger.close(summary)
        if dist.is_main():
            rundir.write_summary(self.settings.out_dir, summary)


class NullLogger:
    """The logger of ranks other than 0: logs nothing."""

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def close(self, summary: dict[str, Any]) -> None:
        pass


def read_settings(cfg: DictConfig, out_dir: str) -> Settings:
    """The top-level keys and the eval group as ``Settings``, type- and range-checked."""
    groups = config_groups()
    top = check_fields("", cfg, Settings, skip=("out_dir", "eval"))
    allowed = set(top) | {path.split(".")[0] for path in COMPONENTS} | {"eval", "hydra"}
    for key in cfg:
        if key not in allowed:
            raise ConfigError(
                f"{key} is not a config key{suggest(str(key), allowed)}; top-level keys: "
                f"{', '.join(sorted(top))}; groups: {', '.join(groups)}"
            )
    if "eval" not in cfg or not isinstance(cfg.eval, DictConfig):
        raise ConfigError(f"eval is missing; choose one of eval={','.join(groups.get('eval', []))}")
    ev = check_fields("eval", cfg.eval, EvalSettings)
    for key in cfg.eval:
        if key not in ev:
            raise ConfigError(f"eval.{key} is not an eval setting{suggest(str(key), ev)}; "
                              f"valid keys of eval: {', '.join(ev)}")
    every = ev["every"]
    if every < 0:
        raise ConfigError(f"eval.every={every} must be >= 0 (0: only the steps of eval.at_steps)")
    periodic = range(every, top["steps"] + 1, every) if every else ()
    at_steps = tuple(sorted(set(ev["at_steps"]) | set(periodic)))
    settings = Settings(**top, out_dir=out_dir, eval=EvalSettings(
        ev["problems"], at_steps, every, ev["budget"], ev["samples"], tuple(ev["budgets"]),
        tuple(ev["benchmarks"]), ev["temperature"], ev["top_p"]))
    check_ranges(settings)
    return settings


def check_ranges(s: Settings) -> None:
    """Values that are well typed but impossible."""
    for key in ("steps", "prompts_per_step", "checkpoint_every"):
        if getattr(s, key) < 1:
            raise ConfigError(f"{key}={getattr(s, key)} must be >= 1")
    if s.group_size < 2:
        raise ConfigError(f"group_size={s.group_size} must be >= 2: group-relative advantages "
                          "compare the completions of a prompt with each other")
    bad = [step for step in s.eval.at_steps if not 0 <= step <= s.steps]
    if bad:
        raise ConfigError(f"eval.at_steps={list(s.eval.at_steps)} has steps outside "
                          f"0..steps={s.steps}: {bad}")
    if s.eval.at_steps and s.eval.problems < 1:
        raise ConfigError(f"eval.problems={s.eval.problems} must be >= 1 when eval.at_steps "
                          "is not empty")
    if s.eval.samples < 1 or any(b < 1 for b in s.eval.budgets):
        raise ConfigError(f"eval.samples={s.eval.samples} and every eval.budgets entry "
                          f"({list(s.eval.budgets)}) must be >= 1")
    t, p = s.eval.temperature, s.eval.top_p
    if (t is not None and t < 0) or (p is not None and not 0 < p <= 1):
        raise ConfigError(f"eval.temperature={t} must be >= 0 and eval.top_p={p} in (0, 1] "
                          "(null: the rollout engine's)")
    if s.eval.budget not in EVAL_BUDGETS:
        raise ConfigError(f"eval.budget={s.eval.budget} is not valid; choose one of {', '.join(EVAL_BUDGETS)}")
    check_benchmarks(s.eval.benchmarks)
    if s.resume is not None and not os.path.isdir(s.resume):
        raise ConfigError(f"resume={s.resume} is not a directory; give a checkpoint directory "
                          "or resume=null")


def check_benchmarks(names: tuple[str, ...]) -> None:
    """Every ``eval.benchmarks`` entry is a benchmark ``rlrun.analysis.evaluate.benchmark`` builds, once
    (``heldout`` is the data group's own split, always evaluated, so it is not one)."""
    if not names:
        return
    from rlrun.analysis.evaluate import check_benchmark

    given = f"eval.benchmarks=[{','.join(names)}]"
    for i, name in enumerate(names):
        try:
            check_benchmark(name, f"{given}: ")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if name in names[:i]:
            raise ConfigError(f"{given} lists {name} twice")


def validate(cfg: DictConfig, world_size: int, out_dir: str = "") -> Settings:
    """Check the whole config (no instantiation, no model loading) and return its settings."""
    settings = read_settings(cfg, out_dir)
    if settings.prompts_per_step % world_size:
        raise ConfigError(f"prompts_per_step={settings.prompts_per_step} is not divisible by the "
                          f"world size {world_size}; use a multiple of {world_size}")
    for path, provided in COMPONENTS.items():
        check_component_node(path, cfg, provided)
    for path, provided in OPTIONAL.items():
        if OmegaConf.select(cfg, path) is not None:
            check_component_node(path, cfg, provided)
    check_containers(cfg)
    return settings


def check_containers(cfg: DictConfig) -> None:
    """Groups holding several components (algo, data) hold nothing else: a key there that build_run
    does not build would be ignored silently."""
    paths = [*COMPONENTS, *OPTIONAL]
    for root in sorted({path.split(".")[0] for path in paths if "." in path}):
        built = [path.split(".", 1)[1] for path in paths if path.startswith(root + ".")]
        for key in cfg[root]:
            if key not in built:
                raise ConfigError(f"{root}.{key} is not built by rlrun{suggest(str(key), built)}; "
                                  f"valid keys of {root}: {', '.join(built)}")


def node_at(cfg: DictConfig, path: str) -> DictConfig:
    return OmegaConf.select(cfg, path)


def build(cfg: DictConfig, path: str, **given: Any) -> Any:
    """Instantiate the component at ``path``; a ValueError from its constructor (a bad value the
    component itself rejects) becomes a ConfigError naming the node."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    node = node_at(cfg, path)
    try:
        if not given:
            return instantiate(node, _convert_="all")
        # Objects are passed to the partial, not to instantiate, which would turn a dataclass
        # argument (the ModelSpec) into a dict.
        return instantiate(node, _partial_=True, _convert_="all")(**given)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ValueError):
            raise ConfigError(f"{path}: {one_line(exc.__cause__)}") from exc
        raise
    except ValueError as exc:
        raise ConfigError(f"{path}: {one_line(exc)}") from exc


def accepted(cfg: DictConfig, path: str, offered: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``offered`` arguments the target at ``path`` takes by name."""
    params = inspect.signature(locate(path, node_at(cfg, path)._target_)).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {k: v for k, v in offered.items() if takes_any or k in params}


def gather_prompts(values_B):
    """Every rank's per-prompt values in rank order, and where this rank's block starts (ranks
    hold equal numbers of prompts): for filters that keep statistics over all prompts."""
    from rlrun.runtime import dist

    return dist.gather_cat(values_B), dist.rank() * len(values_B)


def check_prompts_and_reward(prompts: Any, reward: Any) -> None:
    """A prompt transform that puts a target in the prompt (LCPO) needs a reward that reads it,
    and a reward term that reads a target needs the transform (ALGORITHMS.md 0.2)."""
    if prompts is not None and hasattr(prompts, "check_reward"):
        try:
            prompts.check_reward(reward)
        except ValueError as exc:
            raise ConfigError(f"algo.prompts: {one_line(exc)}") from exc
    fns = getattr(reward, "fns", {})
    needs = [name for name, fn in fns.items() if getattr(fn, "needs_target_length", False)]
    if needs and not any(getattr(p, "writes_target_length", False) for p in transforms(prompts)):
        raise ConfigError(f"reward term {needs[0]} needs a target length per prompt; use algo=lcpo "
                          "(which writes it into the prompt) or data with num_tokens")
    needs = [name for name, fn in fns.items() if getattr(fn, "needs_stated_budget", False)]
    if needs and not has_stated_budget(prompts):
        raise ConfigError(f"reward term {needs[0]} needs the curriculum's budget per prompt; use a "
                          "budget curriculum: curriculum=budget_exponential, budget_linear, "
                          "budget_per_difficulty or thinkprune")


def check_monitor_source(problems: Any, reward: Any) -> None:
    """A reward term with a monitor set (LASER-D monitor=data/eval) needs a data source that gives one."""
    from rlrun.runtime import monitor

    try:
        monitor.check_source(problems, monitor.monitored_pieces(reward))
    except ValueError as exc:
        raise ConfigError(one_line(exc)) from exc


def has_stated_budget(prompts: Any) -> bool:
    """Whether the prompt transform (chain) includes a budget schedule's ``prompts``."""
    from rlrun.core.budget_curricula import BudgetSchedule

    return any(isinstance(getattr(p, "__self__", None), BudgetSchedule) for p in transforms(prompts))


def transforms(prompts: Any) -> list[Any]:
    """The prompt transforms of a chain (or the one transform, or none)."""
    return [] if prompts is None else list(getattr(prompts, "transforms", [prompts]))


class ChainedPrompts:
    """Prompt transforms applied in order (the algorithm's, then the curriculum's)."""

    def __init__(self, transforms: list[Any]) -> None:
        self.transforms = transforms

    def __call__(self, problems: list[Any], step: int) -> list[Any]:
        for transform in self.transforms:
            problems = transform(problems, step)
        return problems

    def check_reward(self, reward: Any) -> None:
        for transform in self.transforms:
            if hasattr(transform, "check_reward"):
                transform.check_reward(reward)


def build_optional(cfg: DictConfig, curriculum: Any) -> tuple[Any, Any, Any]:
    """The algorithm's optional pieces: its filter (chained with a curriculum's prompt filter,
    LSPO), its prompt transform (chained with a curriculum's, which states the budget: Train Long,
    Think Short, ThinkPrune) and its post-advantage row selection; None where absent."""
    keep = build(cfg, "algo.filter") if node_at(cfg, "algo.filter") is not None else None
    extra = getattr(curriculum, "filter", None)
    if extra is not None:
        from rlrun.core.lspo import ChainedFilter

        keep = extra if keep is None else ChainedFilter([keep, extra])
    prompts, train_rows = (build(cfg, path) if node_at(cfg, path) is not None else None
                           for path in ("algo.prompts", "algo.train_rows"))
    stated = getattr(curriculum, "prompts", None)
    if stated is not None:
        prompts = stated if prompts is None else ChainedPrompts([prompts, stated])
    return keep, prompts, train_rows


def wire_collectives(*pieces: Any) -> None:
    """Pieces with statistics over every rank's completions (DLER, A-DLP, GRPO-lambda) or prompts
    (HAPO, GFPO's adaptive difficulty, LSPO) get the collectives as attributes (core cannot import
    dist); each calls them on every rank at every step. Composites and chained filters are
    searched for their parts."""
    from rlrun.runtime import dist

    hooks = {"reduce_sum": dist.all_reduce_sum, "gather_objects": dist.all_gather_object,
             "gather": gather_prompts, "gather_cat": dist.gather_cat}
    for piece in pieces:
        parts = [*getattr(piece, "fns", {}).values(), *getattr(piece, "filters", [])]
        if parts:
            wire_collectives(*parts)
        for name, hook in hooks.items():
            if hasattr(piece, name):
                setattr(piece, name, hook)
        if hasattr(piece, "gather_cat"):  # GRPO-lambda also orders ties by rank
            piece.rank = dist.rank


def build_run(cfg: DictConfig, out_dir: str, engines: tuple[Any, Any] | None = None) -> Run:
    """Validate ``cfg`` and build the run; see the module docstring for the order. ``engines`` =
    ``(rollout, trainer)`` already built (from the same model, rollout and trainer options) are used
    instead of building new ones: many runs of cheap pieces in one process (the combination test)."""
    from rlrun.runtime import dist

    settings = validate(cfg, dist.world_size(), out_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    problems = build(cfg, "data.source")
    verifier = build(cfg, "data.verifier")
    reward = build(cfg, "reward")
    advantage = build(cfg, "algo.advantage")
    curriculum = build(cfg, "curriculum")
    keep, prompts, train_rows = build_optional(cfg, curriculum)
    wire_collectives(advantage, reward, keep)
    check_prompts_and_reward(prompts, reward)
    check_monitor_source(problems, reward)
    loss = build(cfg, "algo.loss")
    if engines is None:
        model = build(cfg, "model")
        engines = (build(cfg, "rollout", model=model),
                   build(cfg, "trainer", model=model, total_steps=settings.steps))
    rollout, trainer = engines
    if dist.is_main():
        logger = build(cfg, "logger", **accepted(cfg, "logger", {"out_dir": out_dir, "config": config}))
    else:
        logger = NullLogger()
    return Run(settings, problems, verifier, reward, advantage, loss, curriculum, rollout, trainer,
               logger, config, keep, prompts, train_rows)
