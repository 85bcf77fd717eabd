"""Assemble an experiment from its configuration: signals, operator, noise, data sets, model."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .plugins import import_plugins  # noqa: F401 (public here before plugins.py existed)
from .schema import ConfigError, check_config
from .datasets import (FASHION_MNIST_DIR, FastMRIPairs, FastMRISliceDataset, InverseProblemDataset, embedded_dataset,
                       folder_patches, kspace_operator, load_mnist_images)
from .models import build_model
from .mri import make_mask
from .noise import BoundedNoise, GaussianNoise
from .operators import LinearOperator, build_operator
from .regularizers import build_regularizer
from .transforms import Augmentation


@dataclass
class Experiment:
    operator: LinearOperator
    train_set: InverseProblemDataset
    test_set: InverseProblemDataset
    model: torch.nn.Module
    data_note: str
    val_set: InverseProblemDataset | None = None
    test_volumes: torch.Tensor | None = None   # (N_test,) volume index of each test signal (fastMRI), else None
    augment: Augmentation | None = None        # train-time augmentation (data.augment), else None

    def training_data(self) -> InverseProblemDataset:
        """What training iterates over: the training set, augmented when data.augment asks (evaluation and
        the bound use the clean ``train_set``)."""
        return self.train_set if self.augment is None else self.train_set.with_augmentation(self.augment)


def _subsets(n: int, sizes: dict[str, int | None], seed: int) -> list[torch.Tensor]:
    """Indices of disjoint random subsets of range(n) of the given sizes (keys name the config entries);
    one size may be None: all the signals the others leave."""
    total = sum(v for v in sizes.values() if v is not None)
    if total > n:
        asked = " + ".join(f"data.{k} ({v})" for k, v in sizes.items() if v is not None)
        raise ConfigError(f"config key {asked} asks for {total} signals, but only {n} are available")
    sizes = {k: (n - total if v is None else v) for k, v in sizes.items()}
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    bounds = torch.tensor([0, *sizes.values()]).cumsum(0).tolist()
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def mnist_root(data: dict):
    """The folder data.source=mnist reads: data.root, else the installed Fashion-MNIST, else None (no MNIST
    files: data.fallback applies)."""
    return data["root"] or (FASHION_MNIST_DIR if FASHION_MNIST_DIR.is_dir() else None)


def load_signals(data: dict) -> tuple[torch.Tensor, torch.Tensor, str, torch.Tensor | None]:
    """(train, test, description, test volumes): float tensors (N, C, H, W) in [0, 1], and the volume
    index (N_test,) of each test signal for data that come in volumes (fastMRI), else None."""
    source = data["source"]
    if source == "mnist":
        root = mnist_root(data)
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
    raise ConfigError(f"config key 'data.source' must be embedded, mnist, folder or fastmri, got {source!r}")


def build_noise(cfg: dict):
    kind = cfg["kind"]
    try:
        if kind == "bounded":
            return BoundedNoise(cfg["radius"], cfg["mode"], cfg["support"])
        if kind == "gaussian":
            return GaussianNoise(cfg["sigma"], cfg["support"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config key 'noise' (kind {kind!r}): {err}") from err
    if kind == "none":
        return None
    raise ConfigError(f"config key 'noise.kind' must be bounded, gaussian or none, got {kind!r}")


def load_data(data: dict):
    """:func:`load_signals`, with every error about the files reported as a ConfigError naming data.source."""
    try:
        return load_signals(data)
    except ConfigError:
        raise
    except (ValueError, OSError) as err:
        where = f", root {data['root']}" if data["root"] else ""
        raise ConfigError(f"config key 'data' (source {data['source']!r}{where}): {err}") from err


def _fastmri_folders(data: dict) -> tuple[FastMRISliceDataset, FastMRISliceDataset | None, FastMRISliceDataset,
                                           list, list]:
    """(train pool, validation folder or None, test source, train-pool slice positions, test positions):
    data.train_root / val_root / test_root, or one data.root whose last fifth of volumes is the test split."""
    read = lambda root: FastMRISliceDataset(root, target=data["target"], crop=(data["patch_size"],) * 2,  # noqa: E731
                                            virtual_coils=data["virtual_coils"])
    if data["train_root"] is not None or data["test_root"] is not None:
        missing = [k for k in ("train_root", "test_root") if data[k] is None]
        if missing:
            raise ConfigError(f"config key 'data.{missing[0]}' is needed beside data.train_root / data.test_root "
                              "(separate folders name both; data.val_root is optional)")
        train, test = read(data["train_root"]), read(data["test_root"])
        val = read(data["val_root"]) if data["val_root"] is not None else None
        return train, val, test, list(range(len(train))), list(range(len(test)))
    if data["val_root"] is not None:
        raise ConfigError("config key 'data.val_root' needs data.train_root and data.test_root")
    pool = read(data["root"])
    n_volumes = len(pool.volumes)
    if n_volumes < 2:
        raise ConfigError(f"config key 'data.root' ({data['root']}) holds {n_volumes} fastMRI volume; a train/test "
                          "split by volume needs at least 2 (or give data.train_root and data.test_root)")
    first_test = n_volumes - max(1, n_volumes // 5)
    test = pool.items[:, 0] >= first_test
    return pool, None, pool, np.flatnonzero(~test).tolist(), np.flatnonzero(test).tolist()


def _fastmri_sets(config: dict):
    """(operator, train, val, test, note) for data.source=fastmri, read lazily (see ``FastMRIPairs``)."""
    data, op_cfg, seed = config["data"], config["operator"], config["seed"]
    if op_cfg["name"] not in ("kspace", "multicoil_kspace"):
        raise ConfigError(f"config key 'operator.name' must be 'kspace' or 'multicoil_kspace' for fastMRI data, got "
                          f"{op_cfg['name']!r}")
    multicoil = op_cfg["name"] == "multicoil_kspace"
    train_pool, val_folder, test_folder, train_items, test_items = _fastmri_folders(data)
    kspace = data["kspace"] if data["kspace"] != "auto" else ("measured" if multicoil else "simulated")
    folders = [f for f in (train_pool, val_folder, test_folder) if f is not None]
    mask = {"acceleration": 4.0, "center_fraction": 0.08, "pattern": "random", "seed": 0}
    coils_note = ""
    if kspace == "measured":
        kwargs = dict(op_cfg["kwargs"])
        coils = kwargs.pop("coils", None) if multicoil else None
        unknown = sorted(set(kwargs) - set(mask))
        if unknown:
            raise ConfigError(f"config key 'operator.kwargs' {unknown}: measured k-space takes only "
                              f"{sorted(mask) + (['coils'] if multicoil else [])} (one mask per volume, drawn from its "
                              "file name)")
        mask.update(kwargs)
    try:
        operator = kspace_operator(folders, kspace, data["patch_size"], op_cfg["kwargs"] if kspace == "simulated" else {},
                                   multicoil)
    except ValueError as err:
        raise ConfigError(f"config key 'operator' ({op_cfg['name']}, data.kspace={kspace}): {err}") from err
    if kspace == "measured":   # the masks are drawn lazily, per volume: check their settings once, here
        try:
            make_mask(mask["pattern"], operator.out_shape[-2], mask["acceleration"], mask["center_fraction"],
                      mask["seed"])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"config key 'operator.kwargs' (the per-volume masks of measured k-space): {err}") from err
    if kspace == "measured" and multicoil:
        coils_note = f", {operator.coils} coils from the files" + (
            f" (operator.kwargs.coils = {coils} sets the coils of simulated k-space only)"
            if coils not in (None, operator.coils) else "")
    noise, noise_mode = build_noise(config["noise"]), config["noise"]["noise_mode"]

    def pairs(folder, items, sizes: dict, s: int, modes=("fixed", "fixed")) -> list[FastMRIPairs]:
        """Random subsets of ``items`` of the sizes asked, each in file order, as data sets (noise drawn as
        ``modes`` says, one per subset)."""
        return [FastMRIPairs(folder, sorted(items[int(i)] for i in part), operator, kspace, mask, noise, s + k, mode)
                for k, part, mode in zip((0, 20_000), _subsets(len(items), sizes, s), modes)]

    if val_folder is None:
        train_set, val_set = pairs(train_pool, train_items, {"n_train": data["n_train"], "n_val": data["n_val"]}, seed,
                                   (noise_mode, "fixed"))
    else:
        (train_set,) = pairs(train_pool, train_items, {"n_train": data["n_train"]}, seed, (noise_mode,))
        (val_set,) = pairs(val_folder, list(range(len(val_folder))), {"n_val": data["n_val"]}, seed + 2)
    (test_set,) = pairs(test_folder, test_items, {"n_test": data["n_test"]}, seed + 10_000)
    folders = [data[k] for k in ("train_root", "val_root", "test_root") if data[k]] or [data["root"]]
    how = ("measured k-space" + (" plus simulated noise" if noise is not None else "") + ", a mask per volume"
           if kspace == "measured" else "k-space simulated from the targets")
    count = lambda folder, items: len(np.unique(folder.items[items, 0]))  # noqa: E731
    note = (f"fastMRI {how}{coils_note}, targets {train_pool.target}, from {', '.join(map(str, folders))} "
            f"({count(train_pool, train_items)} train / {count(test_folder, test_items)} test volumes)")
    return operator, train_set, val_set if len(val_set) else None, test_set, note


def build_experiment(config: dict) -> Experiment:
    """Everything a run needs; fails before training on any inconsistency, naming the key."""
    check_config(config)
    import_plugins(config["plugins"])
    seed = config["seed"]
    data = config["data"]
    if data["source"] == "fastmri":
        try:
            operator, train_set, val_set, test_set, note = _fastmri_sets(config)
        except (TypeError, ValueError, OSError) as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"config key 'data' (source 'fastmri'): {err}") from err
        return Experiment(operator, train_set, test_set, _build_model(config, operator), note, val_set,
                          test_set.volumes)
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
    augment = Augmentation(data["augment"], seed) if data["augment"] else None
    return Experiment(operator, train_set, test_set, _build_model(config, operator), note, val_set, test_volumes,
                      augment)


def _build_model(config: dict, operator: LinearOperator) -> torch.nn.Module:
    torch.manual_seed(config["seed"])
    try:
        return build_model(config["model"]["name"], operator, **config["model"]["kwargs"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config key 'model' ({config['model']['name']!r}) does not fit the operator "
                          f"{type(operator).__name__} {operator.in_shape} -> {operator.out_shape}: {err}") from err


def build_run_regularizer(config: dict, operator: LinearOperator):
    cfg = config["regularizer"]
    try:
        return build_regularizer(cfg["name"], operator=operator, lambda_ja=cfg["lambda_ja"], lambda_j=cfg["lambda_j"],
                                 weight=cfg["weight"], kappa=cfg["kappa"], every=cfg["every"],
                                 target_ja=cfg["target_ja"], target_j=cfg["target_j"], j_domain=cfg["j_domain"],
                                 **cfg["options"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config key 'regularizer': {err}") from err
