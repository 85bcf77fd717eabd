"""Experiment configuration: YAML files over the defaults, with key=value overrides, checked by
:mod:`jacinv.schema` before anything else runs.  Numbers are read as YAML 1.2 (``1e-3`` is a float)."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from . import yaml12
from .checkpoint import temporary_twin
from .schema import ConfigError, check_config, defaults

DEFAULTS: dict = defaults()   # every key, its type, range and meaning: jacinv.schema


class _Update(dict):
    """Entries of a free-form block (kwargs, options) set one by one (``operator.kwargs.q=80``):
    merged into the block, whereas a whole mapping replaces it."""


FREE_FORM = ("kwargs", "options")


def _merge(base: dict, update: dict, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"unknown config key {path!r}; expected one of {sorted(base)}")
        default = base[key]
        if key in FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} must be a mapping, got {value!r}")
            out[key] = {**default, **value} if isinstance(value, _Update) else dict(value)
        elif isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} must be a mapping, got {value!r}")
            out[key] = _merge(default, value, path + ".")
        else:
            out[key] = value
    # a new component without its own arguments starts from none (not the old one's)
    if "name" in update and update["name"] != base.get("name"):
        for key in FREE_FORM:
            if key in base and key not in update:
                out[key] = {}
    return out


def parse_override(text: str) -> dict:
    """'train.epochs=5' -> {'train': {'epochs': 5}} (the value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    try:
        value = yaml12.load(raw) if raw else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({_yaml_problem(err)})") from None
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for depth, part in enumerate(parts[:-1]):
        node = node.setdefault(part, _Update() if depth > 0 and parts[depth] in FREE_FORM else {})
    node[parts[-1]] = value
    return out


def _combine(a: dict, b: dict) -> dict:
    """Deep union of two override trees (b wins), keeping _Update markers."""
    out = type(a)(a)
    for key, value in b.items():
        nested = isinstance(value, _Update) or (type(value) is dict and key not in FREE_FORM)
        out[key] = _combine(out[key], value) if nested and isinstance(out.get(key), dict) else value
    return out


def load_config(path=None, overrides=()) -> dict:
    """DEFAULTS, updated by the YAML file at ``path`` and then by ``overrides`` (key=value), checked
    against :mod:`jacinv.schema`: an override that the other settings ignore is an error, a key of
    the file that they ignore gets a printed note."""
    config = copy.deepcopy(DEFAULTS)
    from_file: set[str] = set()
    if path is not None:
        loaded = read_yaml_mapping(path)
        config = _merge(config, loaded)
        from_file = set_keys(loaded)
    update = overrides_tree(overrides)
    return check_config(_merge(config, update) if update else config, set_keys(update), inherited=from_file)


def overrides_tree(overrides) -> dict:
    """['a.b=1', 'a.c=x'] -> {'a': {'b': 1, 'c': 'x'}} (later overrides win)."""
    update: dict = {}
    for text in overrides:
        update = _combine(update, parse_override(text))
    return update


def set_keys(tree: dict, prefix: str = "") -> set[str]:
    """The dotted keys a (partial) config tree sets; free-form blocks (kwargs, options) count as one key."""
    out = set()
    for key, value in tree.items():
        if isinstance(value, dict) and key not in FREE_FORM:
            out |= set_keys(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def read_yaml_mapping(path) -> dict:
    """The mapping in the YAML file ``path`` (YAML 1.2 numbers, duplicate keys refused)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        loaded = yaml12.load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(loaded).__name__}")
    return loaded


def _yaml_problem(err: yaml.YAMLError) -> str:
    """'<problem> at line L, column C' of a YAML error (1-based)."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(err, 'problem', None) or err}{where}"


PATH_KEYS = ("root", "train_root", "val_root", "test_root")


def with_absolute_paths(config: dict) -> dict:
    """A copy whose data folders and .py plug-ins are absolute paths, so a saved run resumes from anywhere."""
    out = copy.deepcopy(config)
    for key in PATH_KEYS:
        if out["data"][key] is not None:
            out["data"][key] = str(Path(out["data"][key]).expanduser().resolve())
    out["plugins"] = [str(Path(p).resolve()) if str(p).endswith(".py") else p for p in out["plugins"]]
    return out


def dump_config(config: dict, path) -> None:
    path = Path(path)
    tmp = temporary_twin(path)
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.replace(path)


#: Keys a resumed run may change: how and where it trains, not what it trains.
RESUMABLE = ("train.epochs", "train.device", "train.num_workers", "train.threads", "train.eval_every",
             "train.checkpoint_every", "train.keep_freed_memory", "train.max_loss_ratio")


#: Keys added with a default that is not what runs written before them did: a saved configuration (a run's
#: config.yaml, a checkpoint's) without the key was trained with this value, and is read so.
EARLIER_DEFAULTS = {"noise.support": "all"}   # k-space noise on the whole grid, the unsampled positions too


def _saved_defaults() -> dict:
    """DEFAULTS as a saved configuration completes them (EARLIER_DEFAULTS for the keys it lacks)."""
    defaults = copy.deepcopy(DEFAULTS)
    for dotted, value in EARLIER_DEFAULTS.items():
        section, key = dotted.split(".")
        defaults[section][key] = value
    return defaults


def _under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def load_run_config(run_dir, overrides=(), changeable=RESUMABLE, command: str = "--resume") -> dict:
    """The saved configuration of the run in ``run_dir`` with ``overrides``, which may only touch the
    keys (or blocks) in ``changeable``; any other is refused, naming it and the way out."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} holds no config.yaml; expected a run directory written by train.py")
    config = _merge(_saved_defaults(), read_yaml_mapping(path))
    update = overrides_tree(overrides)
    fixed = sorted(k for k in set_keys(update) if not _under(k, changeable))
    if fixed:
        raise ConfigError(f"{command} {run_dir} cannot change {', '.join(fixed)}: the run's weights were trained with "
                          f"the saved values; {command} may change only {', '.join(changeable)}. To train with other "
                          f"settings, start a new run: train.py --config {path} {' '.join(overrides)}")
    return check_config(_merge(config, update) if update else config, set_keys(update))


def changed_keys(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configurations (free-form blocks compared whole)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key not in FREE_FORM:
            out += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def check_matches_checkpoint(saved: dict | None, current: dict, checkpoint, changeable=RESUMABLE) -> None:
    """Refuse a configuration that differs from the one ``checkpoint`` was trained with (``saved``; None for
    checkpoints written before configurations were stored in them) outside ``changeable``."""
    if saved is None:
        return
    saved = _merge(_saved_defaults(), saved)
    differ = [k for k in changed_keys(saved, current) if not _under(k, changeable)]
    if differ:
        shown = "; ".join(f"{k}: {_at(saved, k)!r} in the checkpoint, {_at(current, k)!r} now" for k in differ[:4])
        raise ConfigError(f"the configuration differs from the one checkpoint {checkpoint} was trained with ({shown}"
                          f"{'; ...' if len(differ) > 4 else ''}); undo the edit of config.yaml, or start a new run "
                          "with the new settings")


def _at(config: dict, key: str):
    for part in key.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config
