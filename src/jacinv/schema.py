"""The configuration schema: every key's type, range, allowed values and when it has an effect.

The types and ranges are pydantic models (strict: no string is read as a number, no float as an int;
unknown keys are refused).  ``USED_WHEN`` says which settings make a key meaningful: a key that the
user set to something other than its default while the other settings ignore it is an error.
:func:`check_config` is the one place all of this is enforced; its errors are one line that names
the key, the value and what was expected.
"""
from __future__ import annotations

import collections.abc
import itertools
import math
import sys
import types
import typing
from typing import Annotated, Any, Literal, Optional, Union

import annotated_types
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from .errors import UserError
from .operators import partially_measuring_operators, registered_operators
from .regularizers import (J_DOMAINS, PRESETS, j_domain_names, names_weighted_by, registered_regularizers, spectral_names,
                           with_preset)
from .transforms import AUGMENTATIONS

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Weight = Union[NonNegFloat, Literal["auto"]]
Target = Union[Annotated[float, Field(gt=0.0, allow_inf_nan=False)], None]
Path = Union[str, None]


def _distinct(values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError("names must be distinct")
    return values


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DataConfig(_Block):
    source: Literal["embedded", "mnist", "folder", "fastmri"] = "embedded"
    name: Literal["patches", "digits", "brain"] = "patches"
    root: Path = None
    train_root: Path = None
    val_root: Path = None
    test_root: Path = None
    kspace: Literal["auto", "simulated", "measured"] = "auto"
    target: Literal["auto", "reconstruction_esc", "reconstruction_rss", "kspace"] = "auto"
    virtual_coils: Union[PosInt, None] = None
    fallback: Literal["embedded", "error"] = "embedded"
    n_train: Union[PosInt, None] = 500
    n_val: NonNegInt = 0
    n_test: Union[PosInt, None] = 200
    patch_size: PosInt = 28
    channels: Literal[1, 3] = 1
    downsample: PosInt = 1
    augment: Annotated[list[Literal[AUGMENTATIONS]], AfterValidator(_distinct),
                       Field(description=f"a list of distinct names from {list(AUGMENTATIONS)} (empty: none)")] = []


class OperatorConfig(_Block):
    name: str = "gaussian_cs"
    kwargs: dict[str, Any] = {"n_measurements": 160, "seed": 0}
    per_rank: bool = False


class NoiseConfig(_Block):
    kind: Literal["bounded", "gaussian", "none"] = "bounded"
    radius: NonNegFloat = 0.3
    mode: Literal["sphere", "ball"] = "sphere"
    sigma: NonNegFloat = 0.0
    noise_mode: Literal["fixed", "fresh"] = "fixed"
    support: Literal["measured", "all"] = "measured"


class ModelConfig(_Block):
    name: str = "fc"
    kwargs: dict[str, Any] = {}


class _Registered(collections.abc.Sequence):
    """The registered names (regularisers, operators) ``pick()`` gives, looked up when a config is checked (plug-ins, imported
    first, register more): a condition's allowed values in USED_WHEN."""

    def __init__(self, pick):
        self.pick = pick

    def __getitem__(self, i):
        return tuple(self.pick())[i]

    def __len__(self):
        return len(tuple(self.pick()))

    def __contains__(self, value):
        return value in tuple(self.pick())


REGULARIZER_NAMES = _Registered(registered_regularizers)
#: keys whose values are names in a registry (checked when a config is, after its plug-ins are imported)
REGISTERED_CHOICES = {"regularizer.name": REGULARIZER_NAMES, "operator.name": _Registered(registered_operators)}


class RegularizerConfig(_Block):
    name: Annotated[str, Field(description="a registered regulariser (" + ", ".join(REGULARIZER_NAMES)
                               + ", or a plug-in's)")] = "sja+sj"
    preset: Optional[Literal[tuple(PRESETS)]] = None
    lambda_ja: Weight = "auto"
    lambda_j: Weight = "auto"
    weight: Weight = "auto"
    kappa: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 20.0
    every: PosInt = 1
    target_ja: Target = None
    target_j: Target = None
    j_domain: Literal[J_DOMAINS] = "all"
    options: dict[str, Any] = {}


class TrainConfig(_Block):
    epochs: PosInt = 150
    batch_size: PosInt = 100
    lr: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 1e-3
    loss: Literal["l2", "mse"] = "l2"
    scheduler: Literal["none", "cosine", "step"] = "none"
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda|cuda:[0-9]+)$",
                                 description="one of auto, cpu, cuda, cuda:N")] = "auto"
    probe_size: PosInt = 16
    probe_iters: PosInt = 20
    eval_every: PosInt = 1
    checkpoint_every: PosInt = 1
    num_workers: NonNegInt = 0
    threads: NonNegInt = 0
    keep_freed_memory: bool = True
    max_loss_ratio: Union[Annotated[float, Field(gt=1.0, allow_inf_nan=False)], None] = 1000.0


class Config(_Block):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$",
                               description="a plain name (letters, digits, '.', '_', '+', '-'), not a path")] = "cs"
    seed: NonNegInt = 0
    plugins: list[str] = []
    data: DataConfig = DataConfig()
    operator: OperatorConfig = OperatorConfig()
    noise: NoiseConfig = NoiseConfig()
    model: ModelConfig = ModelConfig()
    regularizer: RegularizerConfig = RegularizerConfig()
    train: TrainConfig = TrainConfig()
    out_dir: str = "runs"


#: What each key means, for the docs and ``--help``; every leaf key has a line.
DOCS = {
    "name": "run name: the run directory is out_dir/name (made unique); a plain name, not a path",
    "seed": "seed of everything random: data split, operator draw, noise, initialisation, batch order",
    "plugins": "modules or .py files imported first (they may register operators and models)",
    "data.source": "embedded (shipped with installed packages) | mnist (IDX files) | folder (images) | fastmri (HDF5)",
    "data.name": "embedded data set: patches (scikit-image) | digits (scikit-learn) | brain (MNI152 slices)",
    "data.root": "the data folder (mnist, folder, fastmri)",
    "data.train_root": "fastmri: the training folder (with data.test_root, instead of data.root)",
    "data.val_root": "fastmri: an optional validation folder",
    "data.test_root": "fastmri: the test folder",
    "data.kspace": "fastmri: auto (measured for multicoil_kspace, else simulated) | simulated (y = A x + n from the "
                   "targets) | measured (the files' own k-space)",
    "data.target": "fastmri: auto | reconstruction_esc | reconstruction_rss | kspace",
    "data.virtual_coils": "fastmri multi-coil: compress every slice's coils to this many virtual coils (SVD; "
                          "files of mixed coil counts then share one run); null keeps the files' coils",
    "data.fallback": "mnist: what to do when no MNIST files are found: embedded patches, or error",
    "data.n_train": "training signals (fastmri: null = every slice)",
    "data.n_val": "validation signals, drawn from the training pool, disjoint from n_train",
    "data.n_test": "test signals (fastmri: null = every slice)",
    "data.patch_size": "side of the square signals (pixels): patches, image folders, fastMRI crops",
    "data.channels": "image folders: 1 (luma) or 3 (RGB)",
    "data.downsample": "brain slices: average over blocks of this size",
    "data.augment": "train-time augmentation, any of " + ", ".join(AUGMENTATIONS) + " (seeded per sample and epoch; "
                    "docs/robustness.md)",
    "operator.name": "a registered operator: gaussian_cs, blur_decimate, kspace, identity, matrix, or a plug-in",
    "operator.kwargs": "the operator's arguments (in_shape comes from the data)",
    "operator.per_rank": "under torchrun: a different random draw (e.g. mask) per rank",
    "noise.kind": "bounded (uniform on / in an l2 ball) | gaussian | none",
    "noise.radius": "bounded: the l2 radius eps of each sample's noise",
    "noise.mode": "bounded: sphere (||n|| = eps) or ball (||n|| <= eps)",
    "noise.sigma": "gaussian: the standard deviation per entry",
    "noise.noise_mode": "fixed (one draw per sample) | fresh (a new draw every epoch)",
    "noise.support": "measured (only on the entries a measurement records: the sampled k-space positions, as on a "
                     "scanner; radius and sigma refer to those) | all (every entry of y, the unsampled positions too: "
                     "as jacinv did before)",
    "model.name": "a registered network: fc, dncnn, edsr, wdsr, unet, unrolled, modl, varnet, or a plug-in",
    "model.kwargs": "the network's arguments",
    "regularizer.name": "the penalty: " + ", ".join(REGULARIZER_NAMES) + ", or one a plug-in registers",
    "regularizer.lambda_ja": "weight of the ||J A|| term (sja, fja and their sums), a number >= 0 or auto",
    "regularizer.lambda_j": "weight of the ||J|| term (sj, fj, sja+sj, fja+fj), a number >= 0 or auto",
    "regularizer.weight": "weight of wd, sw, datagrad or spectreg, a number >= 0 or auto",
    "regularizer.kappa": "divisor of the automatic weight (seed Algorithm 4)",
    "regularizer.every": "evaluate the penalty every k-th step, weights x k (lazy regularisation); with a preset, "
                         "the preset's",
    "regularizer.preset": "a named setting of the spectral estimator (every and options): "
                          + "; ".join(f"{k}: {p.summary}" for k, p in PRESETS.items())
                          + " (null: every and options as given); docs/cost.md",
    "regularizer.target_ja": "a bound L on the batch-max ||J A||: only the excess over L is penalised, by a "
                             "multiplier raised while it is exceeded (null: penalise the norm itself)",
    "regularizer.target_j": "a bound L on the batch-max ||J||; worst-case output change <= L r to first order "
                            "(null: penalise the norm itself)",
    "regularizer.j_domain": "all: the ||J|| term is J(y) itself | measured: J(y) P, J on the perturbations a "
                            "measurement can carry (k-space masks: the sampled positions), the ones "
                            "evaluate.py --stability attacks; a target_j then bounds that worst case",
    "regularizer.options": "estimator options (see jacinv.regularizers.build_regularizer)",
    "train.epochs": "epochs in all (a resumed run may raise it)",
    "train.batch_size": "signals per step",
    "train.lr": "Adam's learning rate",
    "train.loss": "l2: the seed's ||f(y) - x||_2 | mse",
    "train.scheduler": "learning-rate schedule: none | cosine | step",
    "train.device": "auto | cpu | cuda | cuda:N",
    "train.probe_size": "test samples whose Jacobian norms are tracked per evaluated epoch",
    "train.probe_iters": "power iterations for those norms",
    "train.eval_every": "epochs between evaluations (the last epoch always)",
    "train.checkpoint_every": "epochs between checkpoints (the last epoch of a session always)",
    "train.num_workers": "DataLoader worker processes",
    "train.threads": "torch CPU threads, 0 = torch's default",
    "train.keep_freed_memory": "on CPU: glibc keeps freed activations for the next step (jacinv.cpu_memory)",
    "train.max_loss_ratio": "stop when the training loss exceeds this multiple of its first value (null: never)",
    "out_dir": "folder under which run directories are made",
}

_JA = _Registered(lambda: names_weighted_by("lambda_ja"))
_J = _Registered(lambda: names_weighted_by("lambda_j"))
_PENALTIES = _Registered(lambda: [n for n in registered_regularizers() if n != "none"])

#: key -> the settings under which it has an effect: any of the listed {key: allowed values} sets,
#: each met when every key in it has one of its values.
USED_WHEN: dict[str, list[dict[str, tuple]]] = {
    "data.name": [{"data.source": ("embedded",)}],
    "data.root": [{"data.source": ("mnist", "folder", "fastmri")}],
    "data.train_root": [{"data.source": ("fastmri",)}],
    "data.val_root": [{"data.source": ("fastmri",)}],
    "data.test_root": [{"data.source": ("fastmri",)}],
    "data.kspace": [{"data.source": ("fastmri",)}],
    "data.target": [{"data.source": ("fastmri",)}],
    "data.virtual_coils": [{"data.source": ("fastmri",), "operator.name": ("multicoil_kspace",)}],
    "data.fallback": [{"data.source": ("mnist",)}],
    "data.patch_size": [{"data.source": ("folder", "fastmri")}, {"data.source": ("embedded",), "data.name": ("patches",)}],
    "data.channels": [{"data.source": ("folder",)}],
    "data.downsample": [{"data.source": ("embedded",), "data.name": ("brain",)}],
    "data.augment": [{"data.source": ("embedded", "mnist", "folder")}],
    "noise.radius": [{"noise.kind": ("bounded",)}],
    "noise.mode": [{"noise.kind": ("bounded",)}],
    "noise.sigma": [{"noise.kind": ("gaussian",)}],
    "noise.noise_mode": [{"noise.kind": ("bounded", "gaussian")}],
    "noise.support": [{"noise.kind": ("bounded", "gaussian"), "operator.name": _Registered(partially_measuring_operators)}],
    "regularizer.lambda_ja": [{"regularizer.name": _JA}],
    "regularizer.lambda_j": [{"regularizer.name": _J}],
    "regularizer.weight": [{"regularizer.name": _Registered(lambda: names_weighted_by("weight"))}],
    "regularizer.kappa": [{"regularizer.name": _PENALTIES}],
    "regularizer.every": [{"regularizer.name": _PENALTIES}],
    "regularizer.preset": [{"regularizer.name": _Registered(spectral_names)}],
    "regularizer.target_ja": [{"regularizer.name": _Registered(lambda: spectral_names("ja"))}],
    "regularizer.target_j": [{"regularizer.name": _Registered(lambda: spectral_names("j"))}],
    "regularizer.options": [{"regularizer.name": _PENALTIES}],
    "regularizer.j_domain": [{"regularizer.name": _Registered(j_domain_names)}],
}

#: Keys that ask for something a result depends on (a stability bound, augmented training): set where the
#: other settings ignore them, they are an error even when a config file sets them.
ALWAYS_CHECKED = ("data.augment", "regularizer.target_ja", "regularizer.target_j", "regularizer.j_domain")

#: key -> the settings under which it may be null (elsewhere null is refused).
NULL_ONLY_WHEN: dict[str, list[dict[str, tuple]]] = {
    "data.n_train": [{"data.source": ("fastmri",)}],
    "data.n_test": [{"data.source": ("fastmri",)}],
}


#: key -> the settings under which it must not be null (it names data that nothing else gives).
REQUIRED_WHEN: dict[str, list[dict[str, tuple]]] = {
    "data.root": [{"data.source": ("folder",)},
                  {"data.source": ("fastmri",), "data.train_root": (None,), "data.test_root": (None,)}],
}


class ConfigError(UserError, ValueError):
    """A bad configuration key or value; the message names the key."""


def defaults() -> dict:
    """The default configuration as plain nested dicts."""
    return Config().model_dump()


def get(config: dict, key: str):
    """``config`` at the dotted ``key``."""
    for part in key.split("."):
        config = config[part]
    return config


def leaf_keys(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> pydantic FieldInfo for every leaf of the schema (free-form mappings are leaves)."""
    out = {}
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out.update(leaf_keys(field.annotation, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = field
    return out


def describe(field) -> str:
    """What a key accepts, in words: 'an int >= 1 or null', "one of ['l2', 'mse']", ..."""
    if field.description:
        return field.description
    return " or ".join(_describe(t) for t in _alternatives(field.annotation, field.metadata))


def _alternatives(annotation, metadata=()) -> list[tuple]:
    """(base type or literal values, constraints) for each alternative of a (union) annotation."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [alt for arg in typing.get_args(annotation) for alt in _alternatives(arg)]
    if typing.get_origin(annotation) is Annotated:
        base, *extra = typing.get_args(annotation)
        return _alternatives(base, [m for e in extra for m in getattr(e, "metadata", [e])] + list(metadata))
    if typing.get_origin(annotation) is Literal:
        return [("literal", typing.get_args(annotation))]
    return [(annotation, tuple(metadata))]


def _describe(alternative: tuple) -> str:
    kind, extra = alternative
    if kind == "literal":
        return _one_of(extra)
    if kind is type(None):
        return "null"
    words = {int: "an int", float: "a finite number", bool: "true or false", str: "a string",
             list: "a list of strings"}.get(typing.get_origin(kind) or kind, "a mapping")
    for m in extra:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None and isinstance(m, getattr(annotated_types, attr.capitalize())):
                words += f" {sign} {getattr(m, attr):g}"
        if getattr(m, "pattern", None):
            words += f" matching {m.pattern}"
    return words


FIELDS: dict[str, Any] = leaf_keys()
_DEFAULTS = defaults()   # read only


def _met(condition: list[dict[str, tuple]], config: dict) -> bool:
    return any(all(get(config, k) in allowed for k, allowed in alt.items()) for alt in condition)


def _where(condition: list[dict[str, tuple]], config: dict) -> str:
    """'data.source is 'embedded' and data.name is 'brain' (here data.source='mnist')'."""
    said = " or ".join(" and ".join(f"{k} is {_one_of(v)}" for k, v in alt.items()) for alt in condition)
    keys = sorted({k for alt in condition for k in alt})
    return f"{said} (here " + ", ".join(f"{k}={get(config, k)!r}" for k in keys) + ")"


def _one_of(values: tuple) -> str:
    return repr(values[0]) if len(values) == 1 else f"one of {list(values)}"


def check_config(config: dict, explicit: typing.Iterable[str] = (), inherited: typing.Iterable[str] = ()) -> dict:
    """Check every key of ``config`` (nested dicts) against the schema; return a checked copy in which
    whole numbers given for real-valued keys are floats (``noise.radius=0`` -> 0.0).

    ``explicit``: the dotted keys the user set on the command line; each that the other settings make
    meaningless, set to other than its default, is refused.  ``inherited``: keys a config file set;
    those get a printed note instead (a file is often reused with overrides that change what it means,
    e.g. an MRI config pointed at fastMRI folders).
    """
    try:
        checked = Config.model_validate(config).model_dump()
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(p) for p in first["loc"]]
        key = next((".".join(loc[:n]) for n in range(len(loc), 0, -1) if ".".join(loc[:n]) in FIELDS),
                   ".".join(loc))
        field = FIELDS.get(key)
        if field is None:  # a whole block of the wrong type, or an unknown key
            raise ConfigError(f"config key {key!r}: {first['msg'][0].lower()}{first['msg'][1:]}, "
                              f"got {first.get('input')!r}") from None
        value = get(config, key)
        raise ConfigError(f"config key {key!r} must be {describe(field)}, got {_show(value)}") from None
    from .plugins import import_plugins
    import_plugins(checked["plugins"])   # they may register the names checked below
    name = checked["regularizer"]["name"]
    if name not in REGULARIZER_NAMES:
        raise ConfigError(f"config key 'regularizer.name' must be one of {list(REGULARIZER_NAMES)}, got {name!r} "
                          "(a plug-in may register more with register_regularizer)")
    _apply_preset(checked["regularizer"], {*explicit, *inherited})
    for key, condition in NULL_ONLY_WHEN.items():
        if get(config, key) is None and not _met(condition, config):
            raise ConfigError(f"config key {key!r} may be null only when {_where(condition, config)}; "
                              f"expected {describe(FIELDS[key]).replace(' or null', '')}")
    for key, condition in REQUIRED_WHEN.items():
        if get(config, key) is None and _met(condition, config):
            raise ConfigError(f"config key {key!r} is null, but it is needed when {_where(condition, config)}; "
                              f"expected {describe(FIELDS[key]).replace(' or null', '')}: {DOCS[key]}")
    for key in unused_keys(config, {*explicit, *ALWAYS_CHECKED}):
        raise ConfigError(f"config key {key!r} = {get(config, key)!r} has no effect: it is used only when "
                          f"{_where(USED_WHEN[key], config)}; remove it or change those settings")
    for key in unused_keys(config, set(inherited) - set(explicit)):
        print(f"note: config key {key!r} = {get(config, key)!r} from the config file has no effect here (it is "
              f"used only when {_where(USED_WHEN[key], config)})", file=sys.stderr)
    return checked


def _apply_preset(reg: dict, given: set) -> None:
    """Write a preset's every and options into the regularizer block ``reg``: they may be added to but not
    contradicted (``given``: the keys the user set; an ``every`` left at its default 1 is the preset's)."""
    if reg["preset"] is None:
        return
    every = reg["every"] if reg["every"] != 1 or "regularizer.every" in given else None
    try:
        reg["every"], reg["options"] = with_preset(reg["preset"], every, reg["options"],
                                                   "config key 'regularizer.preset': ")
    except ValueError as err:
        raise ConfigError(str(err)) from None


def in_effect(config: dict, key: str) -> bool:
    """Whether the other settings of ``config`` use ``key`` (USED_WHEN; a key without a condition always is)."""
    return key not in USED_WHEN or _met(USED_WHEN[key], config)


def unused_keys(config: dict, keys: typing.Iterable[str]) -> list[str]:
    """Those of ``keys`` that are set to other than their defaults while the other settings ignore them."""
    return [key for key in sorted(keys) if not in_effect(config, key) and get(config, key) != get(_DEFAULTS, key)]


def _show(value) -> str:
    """A value as the error shows it: its repr, and its type when it is a string that looks like something else."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return f"{value!r} ({type(value).__name__})" if isinstance(value, (str, bool)) else repr(value)


def contexts_where_unused(key: str) -> typing.Iterator[dict[str, Any]]:
    """Settings (dotted key -> value) of the controlling keys under which ``key`` has no effect (for tests)."""
    condition = USED_WHEN[key]
    controls = sorted({k for alt in condition for k in alt})
    choices = [tuple(REGISTERED_CHOICES[k]) if k in REGISTERED_CHOICES else typing.get_args(FIELDS[k].annotation)
               for k in controls]
    for values in itertools.product(*choices):
        setting = dict(zip(controls, values))
        if not any(all(setting[k] in allowed for k, allowed in alt.items()) for alt in condition):
            yield setting


def reference_markdown() -> str:
    """The configuration reference page (docs/configuration.md): every key, its default, what it
    accepts, when it has an effect and what it means."""
    default = defaults()
    lines = ["# Configuration reference", "",
             "Generated from `jacinv.schema` (`python -c \"from jacinv.schema import reference_markdown as r; "
             "print(r())\" > docs/configuration.md`); a test checks that this page matches the schema.", "",
             "A key set on the command line that the other settings make meaningless is an error; set in a "
             "config file, it gets a printed note, except " + ", ".join(f"`{k}`" for k in ALWAYS_CHECKED)
             + ", which are errors there too (a request a result depends on). Numbers are read as YAML 1.2: "
             "`1e-3` is a float.", "",
             "| key | default | accepts | used when | meaning |", "| --- | --- | --- | --- | --- |"]
    for key, field in FIELDS.items():
        when = " or ".join(" and ".join(f"{k} is {_one_of(v)}" for k, v in alt.items()) for alt in USED_WHEN[key]) \
            if key in USED_WHEN else "always"
        cells = [f"`{key}`", f"`{get(default, key)!r}`", describe(field), when, DOCS[key]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
