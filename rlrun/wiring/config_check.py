"""Checks a composed config before anything heavy starts, so that a wrong value fails in one line.

Hydra already rejects unknown options and misspelt override keys. What it cannot see, because the
yaml files carry no schema, is checked here against the code the config will call:

- every node with a ``_target_``: the target imports, each key is one of its parameters, each value
  matches the parameter's type hint (int, float, str, bool, None, list, dict, unions and literals;
  other hints are not checked), and every required parameter has a value;
- plain values against a dataclass's field types (``check_fields``, used for the run settings).

Every failure is a :class:`ConfigError` whose message is one line naming the bad value and what
would be valid. ``config_groups`` lists the groups and options shipped in ``rlrun.conf``.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import functools
import importlib.resources
import inspect
import types
import typing
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# Keys Hydra's instantiate reads itself; they are not parameters of the target.
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


class ConfigError(ValueError):
    """A config that cannot run; ``str(error)`` is one line for the user."""


def config_groups() -> dict[str, list[str]]:
    """Every config group shipped in ``rlrun.conf`` and its options (yaml file names), sorted; an
    option in a sub-folder is named with its path, as Hydra selects it (``experiment=compare/drpo``).
    A sub-folder that an option's defaults list names (``- loss: clipped`` in ``algo/grpo.yaml``) is a
    nested group of its own, ``algo/loss``, chosen as ``algo/loss=<option>``, not options of ``algo``.
    ``hydra/`` is not one: it holds options of Hydra's own groups (``hydra/launcher=slurm``).
    Read once per process (every run's validation asks; the shipped files do not change)."""
    return {group: list(options) for group, options in _config_groups()}


@functools.cache
def _config_groups() -> tuple[tuple[str, tuple[str, ...]], ...]:
    root = importlib.resources.files("rlrun.conf")
    groups: dict[str, list[str]] = {}
    for entry in root.iterdir():
        if entry.is_dir() and not entry.name.startswith(("_", ".")) and entry.name != "hydra":
            nested = nested_groups(entry)
            groups[entry.name] = sorted(_options(entry, skip=nested))
            for name in nested:
                groups[f"{entry.name}/{name}"] = sorted(_options(entry / name))
    return tuple((group, tuple(options)) for group, options in sorted(groups.items()))


def nested_groups(folder) -> list[str]:
    """The sub-folders of a group folder that the defaults lists of its top-level options name as
    groups (relative entries ``- <sub-folder>: <option>``; ``override`` and absolute ``/`` entries are
    other groups)."""
    subfolders = {f.name for f in folder.iterdir() if f.is_dir() and not f.name.startswith(("_", "."))}
    found: set[str] = set()
    for f in folder.iterdir():
        if f.name.endswith(".yaml") and subfolders:
            text = f.read_text()
            if not any(f"{name}:" in text for name in subfolders):  # names none of them: not parsed
                continue
            defaults = OmegaConf.create(text).get("defaults") or []
            for item in defaults:
                keys = item.keys() if isinstance(item, DictConfig) else []
                found.update(str(k) for k in keys if str(k) in subfolders)
    return sorted(found)


def options_with_nested(group: str, name: str) -> list[str]:
    """The options of ``group`` whose defaults list, or that of an option of the same group it
    includes (``- grpo`` in ``algo/tlts.yaml``), names the nested group ``name``: those that take a
    ``group/name=<option>`` (the algos whose loss is a loss option)."""
    folder = importlib.resources.files("rlrun.conf") / group

    def names(option: str, seen: frozenset[str]) -> bool:
        path = folder / f"{option}.yaml"
        if option in seen or not path.is_file():
            return False
        for item in OmegaConf.create(path.read_text()).get("defaults") or []:
            if isinstance(item, DictConfig) and name in item:
                return True
            if isinstance(item, str) and item != "_self_" and names(item, seen | {option}):
                return True
        return False

    return [option for option in config_groups().get(group, []) if names(option, frozenset())]


def _options(folder, prefix: str = "", skip: typing.Collection[str] = ()) -> list[str]:
    found = []
    for f in folder.iterdir():
        if f.is_dir() and not f.name.startswith(("_", ".")) and f.name not in skip:
            found += _options(f, f"{prefix}{f.name}/")
        elif f.name.endswith(".yaml"):
            found.append(prefix + f.name[: -len(".yaml")])
    return found


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def show(value: Any) -> str:
    """A value as it would be typed on the command line."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def read(node: DictConfig | ListConfig, key: Any, path: str) -> Any:
    """``node[key]`` with interpolations resolved; resolution errors become ConfigError."""
    try:
        return node[key]
    except OmegaConfBaseException as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path} cannot be read: {first}") from exc


# ----------------------------------------------------------------------------- type hints


def type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if isinstance(hint, type) and typing.get_origin(hint) is None:
        return {"int": "an int", "float": "a float", "str": "a string", "bool": "true/false",
                "list": "a list", "tuple": "a list", "dict": "a mapping", "Mapping": "a mapping",
                "Sequence": "a list"}.get(hint.__name__, hint.__name__)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(show(arg) for arg in typing.get_args(hint))
    if origin is not None:
        return type_name(origin)
    return str(hint)


def matches(value: Any, hint: Any) -> bool:
    """Whether a config value can be passed where ``hint`` is annotated: scalars, lists, mappings,
    unions, literals and dataclasses are checked; other hints (classes, protocols, callables,
    ``Any``) accept any value."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if is_target_node(value):
        return True  # becomes an object; its own parameters are checked separately
    base = origin or hint
    if base in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        if not isinstance(value, (ListConfig, list, tuple)):
            return False
        if base is tuple and args and args[-1] is not Ellipsis:  # fixed length: tuple[float, float]
            return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        return all(matches(v, item) for v in value)
    if base in (dict, collections.abc.Mapping):
        if not isinstance(value, (DictConfig, dict)):
            return False
        return len(args) != 2 or all(matches(v, args[1]) for v in value.values())
    if dataclasses.is_dataclass(base):  # settings given as a mapping (checked field by field)
        return isinstance(value, (DictConfig, dict))
    return True  # a class, protocol or callable: a path string may be fine, a node becomes one


def check_type(where: str, value: Any, hint: Any, takes: str) -> None:
    """ConfigError naming the innermost bad entry when ``value`` does not match ``hint``."""
    if matches(value, hint):
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (dict, collections.abc.Mapping) and len(args) == 2 and isinstance(value, DictConfig):
        for key in value:  # the mapping is fine, one of its entries is not
            check_type(f"{where}.{key}", read(value, key, f"{where}.{key}"), args[1], takes)
    raise ConfigError(f"{where}={show(value)} is not {type_name(hint)}; {takes}")


def is_target_node(value: Any) -> bool:
    return isinstance(value, DictConfig) and "_target_" in value


# ----------------------------------------------------------------------------- targets


def locate(path: str, target: Any) -> Any:
    """The object a ``_target_`` names (imported the way ``instantiate`` will import it)."""
    from hydra._internal.utils import _locate  # what instantiate uses; get_object also logs

    if not isinstance(target, str):
        raise ConfigError(f"{path}._target_={show(target)} is not a dotted import path")
    try:
        return _locate(target)
    except Exception as exc:  # ImportError, AttributeError, or the module's own import failure
        cause = exc.__cause__ or exc
        raise ConfigError(f"{path}._target_={target} cannot be imported: "
                          f"{type(cause).__name__}: {one_line(cause)}") from exc


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def signature_of(obj: Any) -> tuple[dict[str, inspect.Parameter] | None, dict[str, Any]]:
    """The parameters (``self`` dropped; None when unknown) and resolved type hints of a class or
    function."""
    try:
        params = dict(inspect.signature(obj).parameters)
    except (TypeError, ValueError):  # some builtins have no signature: check nothing
        return None, {}
    try:
        hints = typing.get_type_hints(obj.__init__ if isinstance(obj, type) else obj)
    except Exception:  # unresolvable annotations: check names only
        hints = {}
    return params, hints


def check_target(path: str, node: DictConfig, provided: typing.Iterable[str] = ()) -> None:
    """Check one ``_target_`` node (and every target node inside it) against the target's signature.

    ``provided`` names the arguments the caller passes itself (e.g. ``model`` for a rollout engine).
    """
    target = read(node, "_target_", path)
    obj = locate(path, target)
    name = target.rsplit(".", 1)[-1]
    params, hints = signature_of(obj)
    if params is None:
        return
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = [k for k, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for key in node:
        if key in HYDRA_KEYS:
            continue
        where = f"{path}.{key}"
        if key in provided:
            raise ConfigError(f"{where} is passed by rlrun itself (build_run); remove it from the config")
        if key not in params and not takes_any:
            valid = ", ".join(k for k in named if k not in provided) or "none"
            raise ConfigError(f"{where} is not a parameter of {name}{suggest(key, named)}; "
                              f"valid keys of {path}: {valid}")
        value = read(node, key, where)
        if key in hints:
            check_type(where, value, hints[key], f"{name} takes {key}: {type_name(hints[key])}")
        settings = dataclass_in(hints.get(key))
        if settings is not None and isinstance(value, DictConfig) and not is_target_node(value):
            check_mapping(where, value, settings)
        else:
            check_nested(where, value)
    partial = node.get("_partial_", False)
    for key in named:
        param = params[key]
        if param.default is param.empty and key not in node and key not in provided and not partial:
            hint = f" ({type_name(hints[key])})" if key in hints else ""
            raise ConfigError(f"{path}.{key} is missing: {name} needs {key}{hint}; add {path}.{key}=...")


def check_nested(path: str, value: Any) -> None:
    """Check every target node inside a value (a target itself, or mappings/lists holding them)."""
    if is_target_node(value):
        check_target(path, value)
    elif isinstance(value, DictConfig):
        for key in value:
            check_nested(f"{path}.{key}", read(value, key, f"{path}.{key}"))
    elif isinstance(value, ListConfig):
        for i in range(len(value)):
            check_nested(f"{path}[{i}]", read(value, i, f"{path}[{i}]"))


def dataclass_in(hint: Any) -> type | None:
    """The dataclass a parameter is annotated with (alone or in a union), if any."""
    for arg in (hint, *typing.get_args(hint)):
        if isinstance(arg, type) and dataclasses.is_dataclass(arg):
            return arg
    return None


def check_mapping(path: str, node: DictConfig, cls: type) -> None:
    """A mapping given for a dataclass-typed parameter (e.g. ``trainer.optim``): its keys must be
    fields of ``cls`` and its values match the fields' types."""
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    for key in node:
        where = f"{path}.{key}"
        if key not in fields:
            raise ConfigError(f"{where} is not a field of {cls.__name__}{suggest(str(key), fields)}; "
                              f"valid keys of {path}: {', '.join(fields)}")
        value = read(node, key, where)
        check_type(where, value, hints[key], f"{cls.__name__} takes {key}: {type_name(hints[key])}")
        check_nested(where, value)


def check_fields(path: str, node: DictConfig, cls: type, skip: typing.Iterable[str] = ()) -> dict:
    """The values of ``node`` for the fields of dataclass ``cls`` (not in ``skip``), type-checked;
    keys that are not fields are reported by the caller. Returns plain Python values."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        where = f"{path}.{field.name}" if path else field.name
        if field.name not in node:
            raise ConfigError(f"{where} is missing; add {where}=... ({type_name(hints[field.name])})")
        value = read(node, field.name, where)
        if not matches(value, hints[field.name]):
            raise ConfigError(f"{where}={show(value)} is not {type_name(hints[field.name])}")
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        values[field.name] = value
    return values


def check_component_node(path: str, cfg: DictConfig, provided: typing.Iterable[str]) -> DictConfig:
    """The node at dotted ``path``, which must be a config node with a ``_target_``, checked."""
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            raise ConfigError(f"{path} is missing; choose an option of the {path.split('.')[0]} group")
        node = read(node, part, path)
    if not is_target_node(node):
        raise ConfigError(f"{path}={show(node)} is not a config node with a _target_; "
                          f"choose an option of the {path.split('.')[0]} group")
    check_target(path, node, provided)
    return node
