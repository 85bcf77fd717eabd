"""Experiment configuration: YAML files over a typed default, with key=value overrides."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from .checkpoint import temporary_twin
from .errors import UserError

DEFAULTS: dict = {
    "name": "cs",
    "seed": 0,
    "plugins": [],                # modules or .py files to import first (they may @register_operator)
    "data": {
        "source": "embedded",     # embedded | mnist | folder | fastmri
        "name": "patches",        # embedded: patches | digits | brain
        "root": None,             # mnist / folder / fastmri directory
        "train_root": None,       # fastmri: separate train / validation / test folders (instead of root)
        "val_root": None,
        "test_root": None,
        "kspace": "simulated",    # fastmri: simulated (y = A x + n from the targets) | measured (the files' k-space)
        "target": "auto",         # fastmri: auto | reconstruction_esc | reconstruction_rss | kspace
        "fallback": "embedded",   # when root is missing: embedded, or "error"
        "n_train": 500,           # fastmri: null = every slice
        "n_val": 0,               # validation signals, drawn from the training pool, disjoint from n_train
        "n_test": 200,
        "patch_size": 28,
        "channels": 1,
        "downsample": 1,          # brain slices: average over blocks of this size
    },
    "operator": {"name": "gaussian_cs", "kwargs": {"n_measurements": 160, "seed": 0},
                 "per_rank": False},      # under torchrun: a different random draw (e.g. mask) per rank
    "noise": {"kind": "bounded", "radius": 0.3, "mode": "sphere", "sigma": 0.0, "noise_mode": "fixed"},
    "model": {"name": "fc", "kwargs": {}},
    "regularizer": {"name": "sja+sj", "lambda_ja": "auto", "lambda_j": "auto", "weight": "auto", "kappa": 20.0,
                    "every": 1,   # evaluate the penalty every k-th step, weights x k (lazy regularisation)
                    "options": {}},
    "train": {
        "epochs": 150,
        "batch_size": 100,
        "lr": 1e-3,
        "loss": "l2",             # l2: the seed's ||f(y) - x||_2; mse
        "scheduler": "none",      # none | cosine | step
        "device": "auto",         # auto | cpu | cuda | cuda:N
        "probe_size": 16,         # test samples whose Jacobian norms are tracked per epoch
        "probe_iters": 20,
        "eval_every": 1,
        "checkpoint_every": 1,    # epochs between checkpoints (and metrics files); the last epoch always
        "num_workers": 0,
        "threads": 0,             # torch CPU threads, 0 = torch's default
        "keep_freed_memory": True,  # on CPU: glibc keeps freed activations for the next step (jacinv.cpu_memory)
    },
    "out_dir": "runs",
}


class ConfigError(UserError, ValueError):
    """A bad configuration key or value; the message names the key."""


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
            out[key] = _typed(value, default, path)
    # a new component without its own arguments starts from none (not the old one's)
    if "name" in update and update["name"] != base.get("name"):
        for key in FREE_FORM:
            if key in base and key not in update:
                out[key] = {}
    return out


def _typed(value, default, path: str):
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key {path!r} must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(value, bool) and isinstance(value, int):
        return value
    if isinstance(default, float) and not isinstance(value, bool) and isinstance(value, (int, float)):
        return float(value)
    if isinstance(default, str) and (isinstance(value, str) or (default == "auto" and isinstance(value, (int, float)))):
        return value
    if type(value) is type(default):
        return value
    raise ConfigError(f"config key {path!r} must be {type(default).__name__}, got {value!r} ({type(value).__name__})")


def parse_override(text: str) -> dict:
    """'train.epochs=5' -> {'train': {'epochs': 5}} (the value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else None
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
    """DEFAULTS, updated by the YAML file at ``path`` and then by ``overrides`` (key=value)."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(err)}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping, got {type(loaded).__name__}")
        config = _merge(config, loaded)
    update: dict = {}
    for text in overrides:
        update = _combine(update, parse_override(text))
    return _merge(config, update) if update else config


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
