"""The run's settings: the composed config's top-level numbers and its ``eval`` group, read into
``Settings`` and checked (types against the dataclasses, ranges, impossible combinations, every
component node against its target's signature) before anything is built or loaded, so that a wrong
value fails in one line (``ConfigError``). ``COMPONENTS``/``OPTIONAL`` list what ``build_run``
(``rlrun.wiring.build``) instantiates.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from rlrun.wiring.config_check import ConfigError, check_component_node, check_fields, config_groups, suggest

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
    ``budgets``: further generation caps to evaluate at, each logged as ``budget_<N>/...``;
    ``force_budgets``: thinking budgets to force (s1's budget forcing, ``rlrun.runtime.forcing``: the
    thinking stopped at N tokens, ``model.think_end`` and ``model.answer_cue`` written, the answer
    sampled within ``force_answer_tokens`` more tokens), each logged as ``force_<N>/...``.
    The data group's held-out split is logged as ``eval/heldout/...``; ``benchmarks`` names further
    sets evaluated the same way at the same steps (``arith`` or a vendored data set, the first
    ``problems`` of each, ``rlrun.tasks.eval_sets.benchmark``), logged as ``eval/<name>/...``.
    ``samples_by_set`` gives some sets their own samples per problem (``heldout`` or a benchmark's
    name, e.g. ``{aime24: 16, amc: 16}`` beside ``samples: 4``: avg@16 on the small sets and avg@4 on
    MATH-500, as ALGORITHMS.md 7.2 evaluates); a name that is not evaluated is an error.
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
    samples_by_set: dict[str, int] = field(default_factory=dict)  # set name -> samples, over ``samples``
    force_budgets: tuple[int, ...] = ()
    force_answer_tokens: int = 128  # rlrun.runtime.forcing.DEFAULT_ANSWER_TOKENS


@dataclass(frozen=True)
class CheckpointSettings:
    """The ``checkpoint`` node: how many step checkpoints a run keeps."""

    keep_last: int = 0  # the newest K step checkpoints stay (0: all); older ones go once a newer is complete


SPANS = ("response", "thinking")


@dataclass(frozen=True)
class LengthSettings:
    """The ``length`` node: what a response's length counts, for every length reward, filter and
    ``length/*`` metric (``StepBatch.length_tokens_N``): the whole ``response`` (EOS not counted) or
    only the ``thinking`` span before the model's ``think_end`` marker (a response without one is
    all thinking)."""

    span: str = "response"


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
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    length: LengthSettings = field(default_factory=LengthSettings)
    resume_allow_changes: bool = False  # a resume may change keys that change the experiment


def read_settings(cfg: DictConfig, out_dir: str) -> Settings:
    """The top-level keys and the eval group as ``Settings``, type- and range-checked."""
    groups = config_groups()
    top = check_fields("", cfg, Settings, skip=("out_dir", "eval", "checkpoint", "length"))
    # repro: a reproduction preset's description (rlrun.analysis.repro reads it; training does not)
    allowed = set(top) | {path.split(".")[0] for path in COMPONENTS} | {"eval", "hydra", "checkpoint", "length", "repro"}
    for key in cfg:
        if key not in allowed:
            raise ConfigError(
                f"{key} is not a config key{suggest(str(key), allowed)}; top-level keys: "
                f"{', '.join(sorted({*top, 'checkpoint'}))}; groups: {', '.join(groups)}"
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
    ckpt = cfg.get("checkpoint")
    if not isinstance(ckpt, DictConfig):
        raise ConfigError("checkpoint is missing or not a node; add checkpoint.keep_last=0")
    kept = check_fields("checkpoint", ckpt, CheckpointSettings)
    for key in ckpt:
        if key not in kept:
            raise ConfigError(f"checkpoint.{key} is not a checkpoint setting{suggest(str(key), kept)}; "
                              f"valid keys of checkpoint: {', '.join(kept)}")
    settings = Settings(**top, out_dir=out_dir, checkpoint=CheckpointSettings(**kept), length=read_length(cfg),
                        eval=EvalSettings(
        ev["problems"], at_steps, every, ev["budget"], ev["samples"], tuple(ev["budgets"]),
        tuple(ev["benchmarks"]), ev["temperature"], ev["top_p"], dict(ev["samples_by_set"]),
        tuple(ev["force_budgets"]), ev["force_answer_tokens"]))
    check_ranges(settings)
    return settings


def read_length(cfg: DictConfig) -> LengthSettings:
    """The ``length`` node (absent: the whole response), checked."""
    node = cfg.get("length")
    if node is None:
        return LengthSettings()
    if not isinstance(node, DictConfig):
        raise ConfigError("length must be a node; set length.span=response or length.span=thinking")
    given = check_fields("length", node, LengthSettings)
    for key in node:
        if key not in given:
            raise ConfigError(f"length.{key} is not a length setting{suggest(str(key), given)}; valid keys of length: span")
    if given["span"] not in SPANS:
        raise ConfigError(f"length.span={given['span']} is not valid; choose one of {', '.join(SPANS)}")
    return LengthSettings(**given)


def check_ranges(s: Settings) -> None:
    """Values that are well typed but impossible."""
    for key, value in (("steps", s.steps), ("prompts_per_step", s.prompts_per_step),
                       ("checkpoint_every", s.checkpoint_every)):
        if value < 1:
            raise ConfigError(f"{key}={value} must be >= 1")
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
    if any(b < 1 for b in s.eval.force_budgets) or s.eval.force_answer_tokens < 1:
        raise ConfigError(f"eval.force_budgets={list(s.eval.force_budgets)} (thinking budgets) and "
                          f"eval.force_answer_tokens={s.eval.force_answer_tokens} must be >= 1 token each")
    sets = ("heldout", *s.eval.benchmarks)
    for name, k in s.eval.samples_by_set.items():
        if name not in sets or k < 1:
            raise ConfigError(f"eval.samples_by_set.{name}={k}: the name must be an evaluated set "
                              f"({', '.join(sets)}) and the samples >= 1")
    t, p = s.eval.temperature, s.eval.top_p
    if (t is not None and t < 0) or (p is not None and not 0 < p <= 1):
        raise ConfigError(f"eval.temperature={t} must be >= 0 and eval.top_p={p} in (0, 1] "
                          "(null: the rollout engine's)")
    if s.eval.budget not in EVAL_BUDGETS:
        raise ConfigError(f"eval.budget={s.eval.budget} is not valid; choose one of {', '.join(EVAL_BUDGETS)}")
    check_benchmarks(s.eval.benchmarks)
    if s.resume not in (None, "auto") and not os.path.isdir(s.resume):
        raise ConfigError(f"resume={s.resume} is not a directory; give a run or checkpoint directory, "
                          "resume=auto (this run dir's newest checkpoint, if any) or resume=null")
    if s.checkpoint.keep_last < 0:
        raise ConfigError(f"checkpoint.keep_last={s.checkpoint.keep_last} must be >= 0 (0: keep every checkpoint)")


def check_benchmarks(names: tuple[str, ...]) -> None:
    """Every ``eval.benchmarks`` entry is a benchmark ``rlrun.tasks.eval_sets.benchmark`` builds, once
    (``heldout`` is the data group's own split, always evaluated, so it is not one)."""
    if not names:
        return
    from rlrun.tasks.eval_sets import check_benchmark

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
    mini = OmegaConf.select(cfg, "trainer.mini_batches", default=1)
    if isinstance(mini, int) and mini > settings.prompts_per_step // world_size:
        raise ConfigError(f"trainer.mini_batches={mini} is more than the {settings.prompts_per_step // world_size} "
                          f"prompt groups of a rank (prompts_per_step={settings.prompts_per_step} over {world_size} "
                          f"rank(s)): each mini-batch holds whole groups; use at most that many")
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
