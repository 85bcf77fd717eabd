"""fastMRI run the fastMRI way: separate folders, measured k-space with a mask per volume (or the
file's own), targets from the files, volume metrics and exported reconstructions."""
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from fastmri_files import CROP, SHAPE, write_folders
from jacinv.config import ConfigError, load_config
from jacinv.datasets import FastMRISliceDataset
from jacinv.experiment import build_experiment, build_run_regularizer
from jacinv.noise import item_noise
from jacinv.operators import MeasuredKSpace, check_adjoint, make_mask
from jacinv.report import evaluate_run
from jacinv.training import train

ROOT = Path(__file__).resolve().parents[1]


def measured_config(folders: dict, *extra: str) -> dict:
    return load_config(ROOT / "configs" / "mri_4x_varnet.yaml", [
        "data.source=fastmri", f"data.train_root={folders['train']}", f"data.val_root={folders['val']}",
        f"data.test_root={folders['test']}", "data.kspace=measured", f"data.patch_size={CROP}", "data.n_train=null",
        "data.n_val=2", "data.n_test=null", "noise.kind=none", "model.kwargs={cascades: 2, chans: 4, num_pool_layers: 2}",
        "regularizer.name=sj", "train.batch_size=4", "train.probe_size=2", "train.probe_iters=3", "train.eval_every=1",
        *extra])


def test_measured_kspace_operator_is_exact():
    op = MeasuredKSpace((1, 8, 6), (16, 12)).double()
    assert check_adjoint(op) < 1e-12
    x = torch.rand(2, 1, 8, 6, dtype=torch.float64)
    torch.testing.assert_close(op.adjoint(op(x)), x)  # A^T A = I: ||A|| = 1
    assert op.spectral_norm() == 1.0
    masks = torch.stack([make_mask("random", 12, 4, 0.1, seed=s) for s in (0, 1)])
    y = op(x) * masks.double()[:, None, None, :, None]
    assert torch.equal(op.at(y).row_masks, masks)   # each measurement's own sampled columns


def test_measured_items_use_each_volumes_mask_and_the_files_own(tmp_path):
    folders = write_folders(tmp_path, n_train=3)
    exp = build_experiment(measured_config(folders, "data.n_train=6"))
    assert "measured k-space" in exp.data_note and len(exp.val_set) == 2 and len(exp.test_set) == 6
    masks = {}
    for i, (fname, s) in enumerate(exp.train_set.slice_keys()):
        y, x, index = exp.train_set[i]
        assert y.shape == (1, *SHAPE, 2) and x.shape == (1, CROP, CROP) and int(index) == i
        masks.setdefault(fname, []).append((y != 0).any(-1).any(-2)[0])
    for fname, per_slice in masks.items():  # one mask per volume, drawn from the file name
        expected = make_mask("random", SHAPE[1], 4, 0.08, 0, key=fname)
        assert all(torch.equal(m, expected) for m in per_slice)
    test_names = [k[0] for k in exp.test_set.slice_keys()]
    own = [i for i, name in enumerate(test_names) if name == "test001.h5"]
    with h5py.File(folders["test"] / "test001.h5") as fh:
        file_mask = torch.from_numpy(fh["mask"][()])
    y = exp.test_set.measure(torch.tensor(own))
    assert torch.equal((y != 0).any(-1).any(-2).any(0)[0], file_mask)
    # targets are the file's reconstruction divided by the volume's max
    with h5py.File(folders["test"] / "test001.h5") as fh:
        expected_x = torch.from_numpy(fh["reconstruction_esc"][0] / fh.attrs["max"]).float()
    torch.testing.assert_close(exp.test_set.targets(torch.tensor(own[:1]))[0, 0], expected_x)


def test_measured_kspace_takes_model_aware_penalties(tmp_path):
    """||J(y_i) A_i||: each volume's own mask (exactness: tests/test_per_sample.py)."""
    folders = write_folders(tmp_path, n_train=2)
    exp = build_experiment(measured_config(folders))
    reg = build_run_regularizer(measured_config(folders, "regularizer.name=sja+sj", "regularizer.lambda_ja=1",
                                                "regularizer.lambda_j=1"), exp.operator)
    y, _, index = (torch.stack(t) for t in zip(*(exp.train_set[i] for i in range(2))))
    total = reg(exp.model, y, index=index)
    assert bool(torch.isfinite(total)) and float(reg.last_stats["penalty_sja"]) > 0
    with pytest.raises(ConfigError, match=r"'data.test_root' is needed"):
        build_experiment(measured_config(folders, "data.test_root=null"))


def test_noise_on_measured_kspace_lands_on_the_sampled_columns_and_is_fresh_only_for_training(tmp_path):
    """Support "measured" (the default): y = M k + n, n the noise model's draw on the sampled columns, of norm exactly
    the radius; "all": the draw on the whole grid before the mask, y = M (k + n), whose norm is less.  "fresh" draws
    change with the epoch on the training set only."""
    folders = write_folders(tmp_path, n_train=2)
    clean = build_experiment(measured_config(folders))
    for support in ("measured", "all"):
        noisy = build_experiment(measured_config(folders, "noise.kind=bounded", "noise.radius=0.5",
                                                 "noise.noise_mode=fresh", f"noise.support={support}"))
        assert "plus simulated noise" in noisy.data_note
        for data_set, clean_set, mode in ((noisy.train_set, clean.train_set, "fresh"),
                                          (noisy.test_set, clean.test_set, "fixed")):
            i = torch.arange(len(data_set))
            y, y_clean = data_set.measure(i), clean_set.measure(i)
            mask = (y_clean != 0).any(-1).any(-2, keepdim=True)[..., None]           # (N, 1, 1, W, 1)
            on = [mask[k, 0] if support == "measured" else None for k in i]
            n = torch.stack([item_noise(data_set.noise, y.shape[1:], data_set.seed, k, mode, entries=on[k]) for k in i])
            torch.testing.assert_close(y, y_clean + n * mask)                          # y = M k + M n
            norms = (y - y_clean).flatten(1).norm(dim=1)
            if support == "measured":
                torch.testing.assert_close(norms, torch.full_like(norms, 0.5))         # all of it on what is recorded
            else:
                assert float(norms.max()) < 0.45                                       # most of it masked away
            assert torch.equal((y != 0).any(-1).any(-2, keepdim=True)[..., None], mask)  # masks still read from y
        y0 = noisy.train_set.measure(torch.arange(2))
        t0 = noisy.test_set.measure(torch.arange(2))
        noisy.train_set.set_epoch(1)
        noisy.test_set.set_epoch(1)
        assert not torch.equal(noisy.train_set.measure(torch.arange(2)), y0)      # fresh on the training set
        assert torch.equal(noisy.test_set.measure(torch.arange(2)), t0)            # fixed on the test set


def test_measured_kspace_needs_one_kspace_shape(tmp_path):
    folders = write_folders(tmp_path, n_train=2)
    with h5py.File(folders["train"] / "odd.h5", "w") as fh:
        fh["kspace"] = np.ones((2, 32, 20), dtype=np.complex64)
        fh["reconstruction_esc"] = np.ones((2, CROP, CROP), dtype=np.float32)
    with pytest.raises(ConfigError, match=r"one k-space shape \(and coil count\) per run, found single-coil \(32, 20\): "
                                          r"1 file\(s\), e.g. .*odd.h5; single-coil \(32, 24\): 6 file"):
        build_experiment(measured_config(folders))


def test_a_read_only_data_folder_keeps_its_index_in_the_user_cache(tmp_path, monkeypatch):
    folders = write_folders(tmp_path, n_train=2)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_text = Path.write_text

    def read_only_data(path, *args, **kwargs):  # chmod does not stop root, so refuse writes here
        if path.parent == folders["train"]:
            raise PermissionError(f"read-only folder: {path}")
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", read_only_data)
    FastMRISliceDataset(folders["train"])
    assert not any(folders["train"].glob(".jacinv*"))
    (cached,) = (tmp_path / "cache" / "jacinv" / "fastmri").glob("*.json")
    stamp = cached.stat().st_mtime_ns
    assert len(FastMRISliceDataset(folders["train"])) == 6
    assert cached.stat().st_mtime_ns == stamp  # reused, nothing re-indexed


def fastmri_volume_metrics(gt: np.ndarray, pred: np.ndarray) -> dict:
    """fastMRI's evaluate.py definitions for one volume (slices, h, w)."""
    maxval = gt.max()
    return {"nmse": np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2,
            "psnr": 10 * np.log10(maxval**2 / np.mean((gt - pred) ** 2)),
            "ssim": np.mean([structural_similarity(g, p, data_range=maxval, win_size=7) for g, p in zip(gt, pred)])}


def test_measured_fastmri_trains_evaluates_and_exports_what_fastmri_scores(tmp_path):
    folders = write_folders(tmp_path / "data", n_train=6)
    config = measured_config(folders, "train.epochs=20", "train.eval_every=5")
    train(config, tmp_path / "run", progress=False)
    assert str(folders["train"].resolve()) in (tmp_path / "run" / "config.yaml").read_text()
    report = evaluate_run(tmp_path / "run", save_reconstructions=tmp_path / "recon")
    summary = report["summary"]
    assert sorted(p.name for p in (tmp_path / "recon").glob("*.h5")) == ["test000.h5", "test001.h5"]
    scores = []
    for path in sorted((tmp_path / "recon").glob("*.h5")):
        with h5py.File(path) as rec, h5py.File(folders["test"] / path.name) as src:
            scores.append(fastmri_volume_metrics(src["reconstruction_esc"][()].astype(np.float64),
                                                 rec["reconstruction"][()].astype(np.float64)))
    for key in ("nmse", "psnr", "ssim"):
        assert summary["network"][f"volume_{key}"] == pytest.approx(np.mean([s[key] for s in scores]), rel=1e-6)
    # trained VarNet beats fastMRI's zero-filled baseline on these volumes
    assert summary["network"]["volume_psnr"] > summary["zero_filled_magnitude"]["volume_psnr"] + 1.0


def test_only_a_few_files_stay_open(tmp_path):
    from jacinv.mri.fastmri import OPEN_FILES

    folders = write_folders(tmp_path, n_train=OPEN_FILES + 3)
    ds = FastMRISliceDataset(folders["train"], crop=(CROP, CROP))
    firsts = [ds[i]["target"] for i in range(0, len(ds), 3)]  # the first slice of every file
    assert len(ds._handles) == OPEN_FILES
    torch.testing.assert_close(ds[0]["target"], firsts[0])  # a closed file reopens


def test_the_start_up_block_warns_when_the_warm_start_store_is_large(tmp_path):
    from jacinv.console import startup_block
    from jacinv.regularizers import build_regularizer

    folders = write_folders(tmp_path, n_train=2)
    exp = build_experiment(measured_config(folders))
    reg = build_regularizer("sj", store_dtype=torch.float16)
    per_sample = 2 * 1 * SHAPE[0] * SHAPE[1] * 2  # float16 bytes of one k-space vector
    assert reg.terms[0].store_bytes(len(exp.train_set), exp.operator.out_shape) == len(exp.train_set) * per_sample
    assert "warm-start store" not in startup_block(measured_config(folders), exp, reg, torch.device("cpu"), tmp_path)
    exp.train_set.items = exp.train_set.items.repeat(2**30 // (len(exp.train_set) * per_sample) + 1)
    assert "GiB of memory" in startup_block(measured_config(folders), exp, reg, torch.device("cpu"), tmp_path)


def test_the_start_up_block_says_where_the_noise_lands(tmp_path):
    from jacinv.console import startup_block
    from jacinv.regularizers import build_regularizer

    folders = write_folders(tmp_path, n_train=2)
    for support, said in (("measured", "on the measured entries only"), ("all", "drawn on every entry (the unmeasured ones too)")):
        config = measured_config(folders, "noise.kind=bounded", "noise.radius=0.5", f"noise.support={support}")
        text = startup_block(config, build_experiment(config), build_regularizer("none"), torch.device("cpu"), tmp_path)
        assert f"uniform on the l2 sphere of radius 0.5, {said} (fixed draws)" in text
    config = measured_config(folders)                                            # noise.kind=none: nothing to say
    text = startup_block(config, build_experiment(config), build_regularizer("none"), torch.device("cpu"), tmp_path)
    assert "entries" not in text.split("noise")[1].splitlines()[0]
