"""``build_run(cfg, out_dir)``: the composed Hydra config becomes the objects the loop runs with.

The only place in rlrun that calls ``hydra.utils.instantiate`` (DESIGN.md sections 2 and 3). It
validates the whole config first (``rlrun.wiring.settings.validate``: types against the targets'
signatures, impossible combinations), so that a wrong value fails in one line before a model is
loaded, then builds:

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
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from rlrun.wiring.config_check import ConfigError, locate, one_line
from rlrun.wiring.settings import Settings, validate

if TYPE_CHECKING:  # annotations only: validating a config must not wait for torch to import
    from rlrun.types import (Advantage, Curriculum, Filter, Logger, Loss, Reward, Rollout, Trainer,
                             Verifier)


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
    composed: dict[str, Any] | None = None  # the config with its interpolations (checkpoints keep it)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.logger.log(step, metrics)

    def pieces(self) -> dict[str, Any]:
        """The pieces a checkpoint asks for their state (those that declare ``Stateful``)."""
        return {"problems": self.problems, "verifier": self.verifier, "reward": self.reward,
                "filter": self.filter, "advantage": self.advantage, "loss": self.loss,
                "curriculum": self.curriculum}

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
            raise ConfigError(located(path, exc.__cause__)) from exc
        raise
    except ValueError as exc:
        raise ConfigError(located(path, exc)) from exc


def located(path: str, exc: ValueError) -> str:
    """The one-line message of a component's ValueError, headed by its config path unless the
    message already starts with the key it is about (``model.path=...``)."""
    message = one_line(exc)
    return message if re.match(r"^[\w.]+\.[\w]+=", message) else f"{path}: {message}"


def accepted(cfg: DictConfig, path: str, offered: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``offered`` arguments the target at ``path`` takes by name."""
    params = inspect.signature(locate(path, node_at(cfg, path)._target_)).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {k: v for k, v in offered.items() if takes_any or k in params}


def check_prompts_and_reward(prompts: Any, curriculum: Any, reward: Any) -> None:
    """A prompt transform that puts a target in the prompt (LCPO) needs a reward that reads it
    (``ChecksReward``), and a reward term that reads a prompt fact (``RequiresPromptFacts``: a
    target length, a stated budget) needs a transform or curriculum that writes it
    (``ProvidesPromptFacts``; ALGORITHMS.md 0.2)."""
    from rlrun.runtime.capabilities import having, provided_facts
    from rlrun.types import ChecksReward, RequiresPromptFacts

    for transform in having(ChecksReward, prompts):
        try:
            transform.check_reward(reward)
        except ValueError as exc:
            raise ConfigError(f"algo.prompts: {one_line(exc)}") from exc
    provided = provided_facts(prompts, curriculum)
    needs = {fact: [name for name, fn in reward.fns.items()
                    if isinstance(fn, RequiresPromptFacts) and fact in fn.requires]
             for fact in ("target_length", "stated_budget")}
    if needs["target_length"] and "target_length" not in provided:
        raise ConfigError(f"reward term {needs['target_length'][0]} needs a target length per prompt; use "
                          "algo=lcpo (which writes it into the prompt) or data with num_tokens")
    if needs["stated_budget"] and "stated_budget" not in provided:
        raise ConfigError(f"reward term {needs['stated_budget'][0]} needs the curriculum's budget per "
                          "prompt; use a budget curriculum: curriculum=budget_exponential, budget_linear, "
                          "budget_per_difficulty or thinkprune")


def check_monitor_source(problems: Any, reward: Any) -> None:
    """A reward term with a monitor set (LASER-D monitor=data/eval) needs a data source that gives one."""
    from rlrun.runtime import monitor

    try:
        monitor.check_source(problems, monitor.monitored_pieces(reward))
    except ValueError as exc:
        raise ConfigError(one_line(exc)) from exc


def build_optional(cfg: DictConfig, curriculum: Any) -> tuple[Any, Any, Any]:
    """The algorithm's optional pieces: its filter (chained with a curriculum's prompt filter,
    LSPO: ``FiltersPrompts``), its prompt transform (chained with a curriculum's, which states the
    budget: Train Long, Think Short, ThinkPrune: ``RewritesPrompts``) and its post-advantage row
    selection; None where absent."""
    from rlrun.core.lspo import ChainedFilter
    from rlrun.core.prompt_text import ChainedPrompts
    from rlrun.types import FiltersPrompts, RewritesPrompts

    keep = build(cfg, "algo.filter") if node_at(cfg, "algo.filter") is not None else None
    if isinstance(curriculum, FiltersPrompts) and curriculum.filter is not None:
        keep = curriculum.filter if keep is None else ChainedFilter([keep, curriculum.filter])
    prompts, train_rows = (build(cfg, path) if node_at(cfg, path) is not None else None
                           for path in ("algo.prompts", "algo.train_rows"))
    if isinstance(curriculum, RewritesPrompts):
        prompts = curriculum.prompts if prompts is None else ChainedPrompts([prompts, curriculum.prompts])
    return keep, prompts, train_rows


def build_run(cfg: DictConfig, out_dir: str, engines: tuple[Any, Any] | None = None) -> Run:
    """Validate ``cfg`` and build the run; see the module docstring for the order. ``engines`` =
    ``(rollout, trainer)`` already built (from the same model, rollout and trainer options) are used
    instead of building new ones: many runs of cheap pieces in one process (the combination test)."""
    from rlrun.runtime import dist
    from rlrun.runtime.capabilities import wire_collectives

    settings = validate(cfg, dist.world_size(), out_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    problems = build(cfg, "data.source")
    verifier = build(cfg, "data.verifier")
    reward = build(cfg, "reward")
    advantage = build(cfg, "algo.advantage")
    curriculum = build(cfg, "curriculum")
    keep, prompts, train_rows = build_optional(cfg, curriculum)
    wire_collectives(dist.collectives(), advantage, reward, keep)
    check_prompts_and_reward(prompts, curriculum, reward)
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
               logger, config, keep, prompts, train_rows, OmegaConf.to_container(cfg, resolve=False))
