"""fastMRI multi-coil folders the fastMRI way: measured coil k-space, a mask per volume (or the file's own), coil maps
from each slice's auto-calibration lines, RSS targets, volume metrics and the submission format; and the files
a multi-coil run refuses."""
from pathlib import Path

import h5py
import numpy as np
import pytest

from fastmri_files import CROP, write_folders, write_volume
from jacinv.config import ConfigError, load_config
from jacinv.experiment import build_experiment
from jacinv.mri import MeasuredMultiCoilKSpace
from jacinv.report import evaluate_run
from jacinv.training import train
from test_fastmri_measured import fastmri_volume_metrics

ROOT = Path(__file__).resolve().parents[1]
COILS = 4


def multicoil_config(folders: dict, *extra: str) -> dict:
    """configs/mri_4x_multicoil.yaml on the folders, as the README's command runs it (the config's noise added to the
    files' k-space), with a tiny E2E VarNet instead of the config's MoDL."""
    return load_config(ROOT / "configs" / "mri_4x_multicoil.yaml", [
        "data.source=fastmri", f"data.train_root={folders['train']}", f"data.test_root={folders['test']}",
        f"data.patch_size={CROP}", "data.n_train=null", "data.n_val=2", "data.n_test=null",
        "model.name=varnet", "model.kwargs={cascades: 2, chans: 4, num_pool_layers: 2}", "train.batch_size=3", "train.probe_size=2",
        "train.probe_iters=2", "train.eval_every=1", *extra])


def test_multicoil_folders_build_measured_multicoil_pairs(tmp_path):
    folders = write_folders(tmp_path, n_train=3, coils=COILS)
    exp = build_experiment(multicoil_config(folders))
    assert isinstance(exp.operator, MeasuredMultiCoilKSpace) and exp.operator.coils == COILS
    assert f"{COILS} coils from the files" in exp.data_note and "plus simulated noise" in exp.data_note
    assert "targets reconstruction_rss" in exp.data_note
    y, x, _ = exp.train_set[0]
    assert y.shape == (COILS, 32, 24, 2) and x.shape == (1, CROP, CROP)
    sampled = y.ne(0).any(-1).any(-2).any(0)
    assert 0 < int(sampled.sum()) < 24          # the volume's own mask, drawn from its name


def test_multicoil_fastmri_trains_evaluates_and_exports_what_fastmri_scores(tmp_path):
    folders = write_folders(tmp_path / "data", n_train=4, coils=COILS)
    train(multicoil_config(folders, "train.epochs=3"), tmp_path / "run", progress=False)
    report = evaluate_run(tmp_path / "run", save_reconstructions=tmp_path / "recon")
    summary = report["summary"]
    assert {"sense", "zero_filled_rss"} <= set(summary) and any(k.startswith("tv(") for k in summary)
    scores = []
    for path in sorted((tmp_path / "recon").glob("*.h5")):
        with h5py.File(path) as rec, h5py.File(folders["test"] / path.name) as src:
            scores.append(fastmri_volume_metrics(src["reconstruction_rss"][()].astype(np.float64),
                                                 rec["reconstruction"][()].astype(np.float64)))
    assert len(scores) == 2
    for key in ("nmse", "psnr", "ssim"):
        assert summary["network"][f"volume_{key}"] == pytest.approx(np.mean([s[key] for s in scores]), rel=1e-6)


@pytest.mark.parametrize("bad, match", [
    ("operator.kwargs.pattern=spiral", r"pattern must be one of \['random', 'equispaced', 'equispaced_fraction', "
                                       r"'magic'\], got 'spiral'"),
    ("operator.kwargs.acceleration=0.5", r"acceleration must be a finite number in \[1.0, inf\], got 0.5"),
    ("operator.kwargs.center_fraction=2", r"center_fraction"),
])
def test_bad_mask_settings_of_measured_kspace_fail_at_build_naming_the_key(tmp_path, bad, match):
    """The per-volume masks are drawn lazily; their settings are checked when the run is built, not mid-epoch."""
    folders = write_folders(tmp_path, n_train=2, coils=COILS)
    with pytest.raises(ConfigError, match=r"config key 'operator.kwargs' \(the per-volume masks of measured "
                                          r"k-space\): " + match):
        build_experiment(multicoil_config(folders, bad))


def test_the_configs_modl_trains_on_multicoil_files(tmp_path):
    """The config's own model (MoDL: CG data consistency with each slice's mask and ACS maps), tiny."""
    folders = write_folders(tmp_path / "data", n_train=3, coils=COILS)
    config = multicoil_config(folders, "model.name=modl", "model.kwargs={iterations: 2, cg_iters: 3, depth: 3, "
                              "features: 8}", "train.epochs=1")
    train(config, tmp_path / "run", progress=False)
    summary = evaluate_run(tmp_path / "run")["summary"]
    assert np.isfinite(summary["network"]["volume_psnr"]) and "sense" in summary


@pytest.mark.parametrize("odd, match", [
    (dict(coils=COILS + 2), rf"one k-space shape \(and coil count\) per run, found {COILS} coils \(32, 24\): .*"
                            rf"{COILS + 2} coils \(32, 24\): 1 file\(s\), e.g. .*odd.h5"),
    (dict(coils=None), r"found .*single-coil \(32, 24\): 1 file\(s\), e.g. .*odd.h5"),
    (dict(coils=COILS, shape=(32, 20)), r"found .*4 coils \(32, 20\): 1 file\(s\), e.g. .*odd.h5"),
])
def test_a_multicoil_run_refuses_files_of_another_kind_naming_them(tmp_path, odd, match):
    folders = write_folders(tmp_path, n_train=2, coils=COILS)
    write_volume(folders["test"] / "odd.h5", seed=7, **odd)
    with pytest.raises(ConfigError, match=match):
        build_experiment(multicoil_config(folders))


def test_single_coil_runs_refuse_multicoil_files_and_the_reverse(tmp_path):
    multi = write_folders(tmp_path / "multi", n_train=2, coils=COILS)
    with pytest.raises(ConfigError, match=r"operator kspace needs single-coil \(slices, H, W\) files; .*train000.h5 is "
                                          rf"{COILS} coils"):
        build_experiment(multicoil_config(multi, "operator.name=kspace", "operator.kwargs={}", "data.kspace=measured"))
    single = write_folders(tmp_path / "single", n_train=2)
    with pytest.raises(ConfigError, match=r"operator multicoil_kspace needs multi-coil \(slices, coils, H, W\) files; "
                                          r".*is single-coil \(32, 24\)"):
        build_experiment(multicoil_config(single))


def test_coil_compression_keeps_the_most_energy_and_is_unitary_at_full_count():
    import torch

    from jacinv.mri.fastmri import compress_coils

    g = torch.Generator().manual_seed(0)
    kspace = torch.randn(5, 8, 6, 2, generator=g, dtype=torch.float64)
    kspace[..., 1::2, :] = 0                                               # a mask: zero columns
    full = compress_coils(kspace, 5)
    torch.testing.assert_close(full.pow(2).sum((0, -1)), kspace.pow(2).sum((0, -1)))   # RSS per position kept
    z = torch.view_as_complex(kspace).reshape(5, -1)
    singular = torch.linalg.svdvals(z)
    for coils in (1, 2, 4):
        kept = compress_coils(kspace, coils)
        assert kept.shape == (coils, 8, 6, 2) and bool((kept[..., 1::2, :] == 0).all())
        torch.testing.assert_close(kept.pow(2).sum(), singular[:coils].pow(2).sum())


def test_virtual_coils_let_files_of_mixed_coil_counts_share_a_run(tmp_path):
    folders = write_folders(tmp_path, n_train=2, coils=COILS)
    write_volume(folders["train"] / "more.h5", seed=7, coils=COILS + 2)
    exp = build_experiment(multicoil_config(folders, "data.virtual_coils=3"))
    assert exp.operator.coils == 3 and exp.train_set[0][0].shape[0] == 3
    with pytest.raises(ConfigError, match=r"virtual_coils=5 compresses multi-coil files of at least that many coils; "
                                          r".*train000.h5 is 4 coils"):
        build_experiment(multicoil_config(folders, "data.virtual_coils=5"))
