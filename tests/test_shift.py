"""Distribution shift (jacinv.shift) and evaluate.py --shift."""
import json

import numpy as np
import pytest
import torch
from skimage import io

from jacinv.cli import evaluate_main
from jacinv.schema import ConfigError
from jacinv.shift import add_structure, shift_report

from test_training import trained_tiny_run


@pytest.mark.parametrize("kind", ["ring", "blob"])
def test_structures_are_bright_local_and_keep_the_value_range(kind):
    x = torch.rand(3, 1, 40, 48, generator=torch.Generator().manual_seed(0)) * 0.3
    shifted = add_structure(x, kind, amplitude=0.8, generator=torch.Generator().manual_seed(1))
    assert shifted.shape == x.shape and float(shifted.max()) <= 1.0
    assert bool((shifted >= x).all())  # the pointwise maximum: nothing darkened
    changed = (shifted > x).float().mean(dim=(1, 2, 3))
    assert bool((changed > 0.005).all()) and bool((changed < 0.3).all())  # a structure, not a new image
    assert float((shifted - x).amax()) == pytest.approx(0.8 - 0.3, abs=0.31)


def test_a_ring_has_a_dark_centre_and_a_blob_a_bright_one():
    x = torch.zeros(1, 1, 64, 64)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731 (the same centre for both)
    ring, blob = add_structure(x, "ring", generator=g()), add_structure(x, "blob", generator=g())
    centre = torch.nonzero(blob[0, 0] == blob.max())[0]
    assert float(blob[0, 0, centre[0], centre[1]]) == pytest.approx(0.8, rel=0.05)
    assert float(ring[0, 0, centre[0], centre[1]]) < 0.01 and float(ring.max()) > 0.7


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "square"}, "kind must be one of"),
    ({"kind": "ring", "amplitude": 1.5}, r"amplitude must lie in \(0, 1\]"),
])
def test_add_structure_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        add_structure(torch.zeros(1, 1, 8, 8), **kwargs)


@pytest.fixture(scope="module")
def cs_run(tmp_path_factory):
    return trained_tiny_run(tmp_path_factory.mktemp("shift") / "run", "cs_unrolled", "regularizer.name=none")


def test_evaluate_shift_compares_the_network_with_tv_and_the_adjoint(cs_run, capsys):
    assert evaluate_main([str(cs_run), "--shift", "blob", "--shift-samples", "6"]) == 0
    out = capsys.readouterr().out
    report = json.loads((cs_run / "shift_blob.json").read_text())
    assert report["n_samples"] == 6 and report["zero_filled"] == "adjoint"
    for split in ("in_distribution", "shifted"):
        assert {"network", "adjoint"} <= set(report[split]) and any(m.startswith("tv(mu=") for m in report[split])
    # the blob adds error for every method measured on it: the shifted PSNR differs from the in-distribution one
    assert report["shifted"]["network"]["psnr"] != report["in_distribution"]["network"]["psnr"]
    assert (cs_run / "shift_blob.png").stat().st_size > 0 and "| network |" in out
    shift_report(cs_run, "ring", n_samples=2)  # another shift of the same run keeps the blob's files
    assert json.loads((cs_run / "shift_blob.json").read_text())["shift"] == "blob"
    assert json.loads((cs_run / "shift_ring.json").read_text())["n_samples"] == 2


def test_shift_to_another_family_reads_the_overrides(cs_run, tmp_path):
    # the other family: an image folder of noise (the run's own data is Fashion-MNIST, or without it
    # the embedded natural-image patches)
    rng = np.random.default_rng(0)
    for k in range(24):  # 4 patches each: enough for the run's 40 training and 20 test signals
        io.imsave(tmp_path / f"noise{k}.png", rng.integers(0, 256, (56, 56), dtype=np.uint8), check_contrast=False)
    report = shift_report(cs_run, "data", overrides=["data.source=folder", f"data.root={tmp_path}",
                                                     "data.patch_size=28"], n_samples=4)
    assert report["overrides"][0] == "data.source=folder"
    with pytest.raises(ConfigError, match="give the run's own data family"):  # the same family is no shift
        shift_report(cs_run, "data", overrides=["data.n_test=20"], n_samples=4)
    assert report["shifted"]["network"]["psnr"] != pytest.approx(report["in_distribution"]["network"]["psnr"])


@pytest.mark.parametrize("args, match", [
    (["--shift", "data"], "--shift data needs overrides"),
    (["--shift", "blob", "--shift-samples", "0"], "--shift-samples must be >= 1"),
    (["--shift", "cube"], "invalid choice: 'cube'"),
])
def test_evaluate_shift_refuses_bad_arguments(tmp_path, capsys, args, match):
    with pytest.raises(SystemExit):
        evaluate_main([str(tmp_path), *args])
    assert match in capsys.readouterr().err


def test_shift_measures_with_the_noise_the_overrides_give(cs_run):
    noisy = shift_report(cs_run, "blob", n_samples=4)
    clean = shift_report(cs_run, "blob", overrides=["noise.radius=0.0"], n_samples=4)
    for split in ("in_distribution", "shifted"):   # the same signals, measured without the run's noise
        tv = next(name for name in clean[split] if name.startswith("tv("))
        # equal if the run's noise were used (which way it moves TV depends on the data: Fashion-MNIST or the fallback)
        assert abs(clean[split][tv]["psnr"] - noisy[split][tv]["psnr"]) > 1e-6
