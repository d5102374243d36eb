"""A resumed run continues with the config of the run it resumes, not with today's defaults.

Every checkpoint holds ``config.json``: the run's composed config (interpolations kept, e.g.
``eval.at_steps: [0, ${steps}]``) and the same config resolved. ``rlrun resume=<run> steps=300``
then rebuilds the run from that saved config, and the command line may change only what does not
change the experiment (:data:`FREE`: the length of the run, logging, checkpoint and evaluation
cadence). Which values the command line sets is decided key by key, over the resolved configs:

- a key whose value differs between the saved config and today's composition is *given* when the
  command line names it (``group_size=8``, a group ``algo=drpo`` for every key under ``algo``) or
  when today's composition differs there from the defaults composed with no overrides (what an
  ``experiment=`` or ``debug=`` preset sets);
- a given key in :data:`FREE` takes the new value; any other given key is refused in one line
  listing every such key with both values, unless ``resume.allow_changes=true`` (the config key
  ``resume_allow_changes``), which takes them and records them;
- every other difference takes the saved value (the user did not ask for a change; the saved run's
  overrides, or a default that changed since, are restored).

Each resume appends one line to ``<run dir>/resumes.jsonl``: the checkpoint, the keys restored and
the keys changed (with both values, and whether it was forced), and the run dir's
``.hydra/config.yaml`` is rewritten with the config the run continues with (Hydra wrote today's
composition there before the app ran).
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlrun.wiring.config_check import ConfigError

CONFIG_FILE = "config.json"
RECORD_FILE = "resumes.jsonl"
# Keys (and subtrees) a resume may change: they do not change what the experiment computes.
FREE = ("steps", "checkpoint_every", "checkpoint", "resume", "resume_allow_changes", "logger",
        "eval.at_steps", "eval.every")
_SHOWN = 6  # differing keys written out in full in the refusal line


def record(cfg: DictConfig) -> dict[str, Any]:
    """What a checkpoint stores of the config (``config.json``)."""
    return {"composed": OmegaConf.to_container(cfg, resolve=False),
            "resolved": OmegaConf.to_container(cfg, resolve=True)}


def saved_config(checkpoint_dir: str) -> dict[str, Any] | None:
    """The config record of a checkpoint, or of the run dir above a checkpoint that predates the
    records (its ``.hydra/config.yaml``); None when there is neither."""
    path = os.path.join(checkpoint_dir, CONFIG_FILE)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    legacy = os.path.join(checkpoint_dir, os.pardir, os.pardir, ".hydra", "config.yaml")
    if os.path.exists(legacy):
        return record(OmegaConf.load(legacy))
    return None


def flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    found: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        found.update(flat(value, path) if isinstance(value, dict) and value else {path: value})
    return found


def named_keys(overrides: list[str]) -> list[str]:
    """The config keys the overrides name (``a.b=1`` -> ``a.b``; ``algo=drpo`` -> ``algo``);
    Hydra's own (``hydra.*``, ``hydra/...``) left out."""
    keys = []
    for override in overrides:
        match = re.match(r"^[+~]*([^=@]+)", override)
        if match is None:
            continue
        key = match.group(1).strip()
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        keys.append(key.replace("/", "."))
    return keys


def under(key: str, roots: tuple[str, ...] | list[str]) -> bool:
    return any(key == root or key.startswith(root + ".") for root in roots)


def restored(cfg: DictConfig, checkpoint_dir: str, overrides: list[str], defaults: DictConfig,
             out_dir: str) -> DictConfig:
    """The config a run resuming from ``checkpoint_dir`` continues with (module docstring).
    ``cfg`` is today's composition, ``defaults`` the composition without the user's overrides.
    Its ``steps`` below the checkpoint's is a ResumeError, raised before anything is recorded."""
    from rlrun.runtime.checkpoint import check_steps

    saved = saved_config(checkpoint_dir)
    if saved is None:
        print(f"rlrun: warning: {checkpoint_dir} holds no {CONFIG_FILE} and no run config: continuing "
              "with the config as composed now", file=sys.stderr, flush=True)
        return cfg
    old, new = flat(saved["resolved"]), flat(OmegaConf.to_container(cfg, resolve=True))
    # "set by the command line" compares values as written: eval.at_steps=[0,${steps}] is the
    # default's even when steps= changes what it resolves to
    written = flat(OmegaConf.to_container(cfg, resolve=False))
    base = flat(OmegaConf.to_container(defaults, resolve=False))
    named = named_keys(overrides)
    missing = object()
    given, kept = [], []
    for key in sorted(set(old) | set(new)):
        if old.get(key, missing) == new.get(key, missing):
            continue
        if under(key, named) or written.get(key, missing) != base.get(key, missing):
            given.append(key)
        else:
            kept.append(key)
    refused = [key for key in given if not under(key, FREE)]
    if refused and not cfg.get("resume_allow_changes", False):
        raise ConfigError(f"resume from {checkpoint_dir} would change the experiment: "
                          f"{refusal(refused, old, new, overrides)}; drop these overrides to continue the run "
                          "as it was (only steps, checkpoint_every, checkpoint.*, logger.*, eval.at_steps and "
                          "eval.every may change), or add resume.allow_changes=true to force them (recorded "
                          "in the run dir)")
    composed, today = saved.get("composed") or saved["resolved"], OmegaConf.to_container(cfg, resolve=False)
    changed = {}
    for key in given:  # today's value as written (an interpolation stays one)
        _set(composed, key, _get(today, key, missing), missing)
        changed[key] = [_plain(old.get(key, missing)), _plain(new.get(key, missing))]
    for key in ("resume", "resume_allow_changes"):  # always today's
        if key in cfg:
            composed[key] = cfg[key]
    result = OmegaConf.create(composed)
    OmegaConf.set_struct(result, True)
    step = check_steps(checkpoint_dir, int(result.steps))
    _say(kept, changed, [k for k in changed if not under(k, FREE)], old)
    _note(out_dir, {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "checkpoint": checkpoint_dir,
                    "after_step": step, "overrides": overrides, "restored": kept, "changed": changed,
                    "forced": sorted(k for k in changed if not under(k, FREE))}, result)
    return result


def refusal(keys: list[str], old: dict, new: dict, overrides: list[str]) -> str:
    """The refused keys in a few words: a group override that changes many keys is named once
    (``algo=drpo changes 17 keys, e.g. ...``), every other key with its two values."""
    missing = object()

    def both(key: str) -> str:
        return f"{key} ({_show(old.get(key, missing))} in the run, {_show(new.get(key, missing))} given)"

    parts, done = [], set()
    for override in overrides:
        root = named_keys([override])
        inside = [k for k in keys if root and under(k, root) and k not in done]
        if len(inside) > 1:
            parts.append(f"{override.lstrip('+~')} changes {len(inside)} keys, e.g. {both(inside[0])}")
            done.update(inside)
    rest = [k for k in keys if k not in done]
    parts += [both(k) for k in rest[:_SHOWN]]
    if len(rest) > _SHOWN:
        parts.append(f"and {len(rest) - _SHOWN} more keys")
    return "; ".join(parts)


def _set(tree: dict, key: str, value: Any, missing: object) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        below = tree.get(part)
        if not isinstance(below, dict):  # a leaf there before (e.g. null where a node is given)
            if value is missing:
                return
            below = tree[part] = {}
        tree = below
    if value is missing:
        tree.pop(parts[-1], None)
    else:
        tree[parts[-1]] = value


def _get(tree: Any, key: str, missing: object) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return missing
        tree = tree[part]
    return tree


def _plain(value: Any) -> Any:
    return None if not isinstance(value, (str, int, float, bool, list, dict, type(None))) else value


def _show(value: Any) -> str:
    return "absent" if not isinstance(value, (str, int, float, bool, list, dict, type(None))) else json.dumps(value)


def _say(kept: list[str], changed: dict, forced: list[str], old: dict) -> None:
    """Rank 0: one line for the restored keys, one warning for forced changes."""
    from rlrun.runtime import dist

    if not dist.is_main():
        return
    if kept:
        shown = ", ".join(f"{k}={_show(old.get(k))}" for k in kept[:_SHOWN])
        more = f" and {len(kept) - _SHOWN} more" if len(kept) > _SHOWN else ""
        print(f"resume: continuing with the run's own config: {shown}{more} as the run had them "
              f"(resumes.jsonl lists them)", flush=True)
    if forced:
        print(f"rlrun: warning: resume.allow_changes=true: the experiment changes at this step: "
              f"{'; '.join(f'{k} {_show(changed[k][0])} -> {_show(changed[k][1])}' for k in forced[:_SHOWN])}"
              f"{' ...' if len(forced) > _SHOWN else ''} (recorded in resumes.jsonl)", file=sys.stderr, flush=True)


def _note(out_dir: str, entry: dict[str, Any], cfg: DictConfig) -> None:
    """Rank 0: the resume's line in ``resumes.jsonl`` and the continued config in ``.hydra/``."""
    from rlrun.runtime import dist

    if not dist.is_main():
        return
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, RECORD_FILE), "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
    hydra_dir = os.path.join(out_dir, ".hydra")
    if os.path.isdir(hydra_dir):
        OmegaConf.save(cfg, os.path.join(hydra_dir, "config.yaml"))
