"""Assemble an experiment from its configuration: signals, operator, noise, data sets, model."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from . import distributed
from ._checks import finite_number, positive_int
from .config import ConfigError
from .datasets import (FASHION_MNIST_DIR, FastMRISliceDataset, InverseProblemDataset, embedded_dataset,
                       folder_patches, load_mnist_images)
from .metrics import volume_maxima
from .models import build_model
from .noise import BoundedNoise, GaussianNoise
from .operators import LinearOperator, build_operator
from .regularizers import build_regularizer


@dataclass
class Experiment:
    operator: LinearOperator
    train_set: InverseProblemDataset
    test_set: InverseProblemDataset
    model: torch.nn.Module
    data_note: str
    val_set: InverseProblemDataset | None = None
    test_volumes: torch.Tensor | None = None   # (N_test,) volume index of each test signal (fastMRI), else None


def _subsets(n: int, sizes: dict[str, int], seed: int) -> list[torch.Tensor]:
    """Indices of disjoint random subsets of range(n) of the given sizes (keys name the config entries)."""
    total = sum(sizes.values())
    if total > n:
        asked = " + ".join(f"data.{k} ({v})" for k, v in sizes.items())
        raise ConfigError(f"config key {asked} asks for {total} signals, but only {n} are available")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    bounds = torch.tensor([0, *sizes.values()]).cumsum(0).tolist()
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def load_signals(data: dict) -> tuple[torch.Tensor, torch.Tensor, str, torch.Tensor | None]:
    """(train, test, description, test volumes): float tensors (N, C, H, W) in [0, 1], and the volume
    index (N_test,) of each test signal for data that come in volumes (fastMRI), else None."""
    source = data["source"]
    if source == "mnist":
        root = data["root"] or (FASHION_MNIST_DIR if FASHION_MNIST_DIR.is_dir() else None)
        if root is not None:
            to_float = lambda a: torch.from_numpy(a).float().div(255.0)[:, None]  # noqa: E731
            return (to_float(load_mnist_images(root, "train")), to_float(load_mnist_images(root, "test")),
                    f"MNIST-format IDX files in {root}", None)
        if data["fallback"] == "error":
            raise ConfigError("config key 'data.root' is null and Fashion-MNIST is not installed "
                              f"({FASHION_MNIST_DIR}); give data.root or data.fallback=embedded")
        patches = lambda split: embedded_dataset("patches", split, patch_size=28)  # noqa: E731
        return patches("train"), patches("test"), "embedded natural-image patches (no MNIST files found)", None
    if source == "embedded":
        extra = {"patches": {"patch_size": data["patch_size"]}, "brain": {"downsample": data["downsample"]}}
        kw = extra.get(data["name"], {})
        return (embedded_dataset(data["name"], "train", **kw), embedded_dataset(data["name"], "test", **kw),
                f"embedded '{data['name']}'", None)
    if source == "folder":
        kw = dict(patch_size=data["patch_size"], channels=data["channels"])
        return (folder_patches(data["root"], split="train", **kw), folder_patches(data["root"], split="test", **kw),
                f"image folder {data['root']}", None)
    if source == "fastmri":
        return _fastmri_signals(data["root"], data["patch_size"])
    raise ConfigError(f"config key 'data.source' must be embedded, mnist, folder or fastmri, got {source!r}")


def _fastmri_signals(root, size: int) -> tuple[torch.Tensor, torch.Tensor, str, torch.Tensor]:
    """fastMRI targets (size x size centre crops), each volume divided by its maximum (fastMRI's data
    range); the last fifth of the volumes (at least one) is the test split, so no volume is on both sides."""
    ds = FastMRISliceDataset(root, target="kspace", crop=(size, size))
    n_volumes = len(ds.volumes)
    if n_volumes < 2:
        raise ConfigError(f"config key 'data.root' ({root}) holds {n_volumes} fastMRI volume; a train/test split "
                          "by volume needs at least 2")
    volume_of = torch.from_numpy(ds.items[:, 0])
    targets = torch.stack([ds[i]["target"] for i in range(len(ds))])
    images = targets / volume_maxima(targets, volume_of).clamp_min(1e-12).view(-1, 1, 1, 1)
    first_test = n_volumes - max(1, n_volumes // 5)
    test = volume_of >= first_test
    note = (f"fastMRI targets in {root}: {first_test} train / {n_volumes - first_test} test volumes "
            "(k-space simulated from them)")
    return images[~test], images[test], note, volume_of[test] - first_test


def build_noise(cfg: dict):
    kind = cfg["kind"]
    try:
        if kind == "bounded":
            return BoundedNoise(cfg["radius"], cfg["mode"])
        if kind == "gaussian":
            return GaussianNoise(cfg["sigma"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config key 'noise' (kind {kind!r}): {err}") from err
    if kind == "none":
        return None
    raise ConfigError(f"config key 'noise.kind' must be bounded, gaussian or none, got {kind!r}")


def check_keys(config: dict) -> None:
    """The scalar keys every run uses, checked before any data is read."""
    data = config["data"]
    checks = [("seed", config["seed"], 0), ("data.n_train", data["n_train"], 1), ("data.n_val", data["n_val"], 0),
              ("data.n_test", data["n_test"], 1), ("data.patch_size", data["patch_size"], 1),
              ("data.downsample", data["downsample"], 1)]
    try:
        for key, value, minimum in checks:
            positive_int(value, f"config key {key!r}", minimum=minimum)
        if data["channels"] not in (1, 3):
            raise ValueError(f"config key 'data.channels' must be 1 or 3, got {data['channels']!r}")
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None


def load_data(data: dict):
    """:func:`load_signals`, with every error about the files reported as a ConfigError naming data.source."""
    try:
        return load_signals(data)
    except ConfigError:
        raise
    except (ValueError, OSError) as err:
        where = f", root {data['root']}" if data["root"] else ""
        raise ConfigError(f"config key 'data' (source {data['source']!r}{where}): {err}") from err


def import_plugins(plugins: list) -> None:
    """Import each plug-in (a module name, or a path to a .py file) so its operators and models get
    registered; a file is executed once per process (as a module named after its resolved path)."""
    for entry in plugins:
        try:
            if str(entry).endswith(".py"):
                path = Path(entry).resolve()
                name = f"jacinv_plugin_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
                if name in sys.modules:
                    continue
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or not path.is_file():
                    raise FileNotFoundError(f"no such file {entry}")
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                sys.modules[name] = module
            else:
                importlib.import_module(entry)
        except (ImportError, FileNotFoundError) as err:
            raise ConfigError(f"config key 'plugins': cannot import {entry!r}: {err}") from err


def build_experiment(config: dict) -> Experiment:
    """Everything a run needs; fails before training on any inconsistency, naming the key."""
    import_plugins(config["plugins"])
    check_keys(config)
    seed = config["seed"]
    data = config["data"]
    train_x, test_x, note, test_volumes = load_data(data)
    train_x, val_x = (train_x[i] for i in _subsets(len(train_x), {"n_train": data["n_train"], "n_val": data["n_val"]},
                                                   seed))
    (test_index,) = _subsets(len(test_x), {"n_test": data["n_test"]}, seed + 1)
    test_x = test_x[test_index]
    test_volumes = None if test_volumes is None else test_volumes[test_index]
    op_cfg = config["operator"]
    kwargs = dict(op_cfg["kwargs"])
    if op_cfg["per_rank"]:
        if "key" in kwargs or "seed" not in kwargs:
            raise ConfigError("config key 'operator.per_rank' needs an operator drawn from operator.kwargs.seed "
                              "(and sets its 'key' itself)")
        kwargs["key"] = f"rank{distributed.world()[0]}"
    try:
        operator = build_operator(op_cfg["name"], in_shape=tuple(train_x.shape[1:]), **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config key 'operator' ({op_cfg['name']!r}, kwargs {op_cfg['kwargs']}): {err}") from err
    noise = build_noise(config["noise"])
    mode = config["noise"]["noise_mode"]
    train_set = InverseProblemDataset(train_x, operator, noise, seed=seed, noise_mode=mode)
    test_set = InverseProblemDataset(test_x, operator, noise, seed=seed + 10_000, noise_mode="fixed")
    val_set = (InverseProblemDataset(val_x, operator, noise, seed=seed + 20_000, noise_mode="fixed")
               if len(val_x) else None)
    torch.manual_seed(seed)
    try:
        model = build_model(config["model"]["name"], operator, **config["model"]["kwargs"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config key 'model' ({config['model']['name']!r}) does not fit the operator "
                          f"{type(operator).__name__} {operator.in_shape} -> {operator.out_shape}: {err}") from err
    return Experiment(operator, train_set, test_set, model, note, val_set, test_volumes)


def build_run_regularizer(config: dict, operator: LinearOperator):
    cfg = config["regularizer"]
    try:
        return build_regularizer(cfg["name"], operator=operator, lambda_ja=cfg["lambda_ja"], lambda_j=cfg["lambda_j"],
                                 weight=cfg["weight"], kappa=cfg["kappa"], every=cfg["every"], **cfg["options"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config key 'regularizer': {err}") from err
