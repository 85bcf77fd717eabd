from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from jacinv.config import ConfigError, load_config
from jacinv.experiment import build_experiment
from jacinv.metrics import psnr
from jacinv.operators import KSpaceSubsample
from jacinv.report import _protocol, evaluate_run, volume_metrics
from jacinv.training import train

ROOT = Path(__file__).resolve().parents[1]


def write_volumes(root: Path, n_volumes: int, slices: int = 2, size: int = 16) -> None:
    """Single-coil fastMRI files whose volumes differ in brightness (volume v scaled by v + 1)."""
    rng = np.random.default_rng(0)
    for v in range(n_volumes):
        k = (rng.standard_normal((slices, size, size)) + 1j * rng.standard_normal((slices, size, size))) * (v + 1)
        with h5py.File(root / f"file{v:02d}.h5", "w") as fh:
            fh["kspace"] = k.astype(np.complex64)


def fastmri_config(root: Path, *extra: str) -> dict:
    return load_config(ROOT / "configs" / "mri_4x.yaml", [
        "data.source=fastmri", f"data.root={root}", "data.patch_size=16", "data.n_train=12", "data.n_test=4",
        "model.kwargs={chans: 4, num_pool_layers: 1}", "train.batch_size=4", "train.probe_size=2",
        "train.probe_iters=3", *extra])


def test_volume_metrics_average_fastmri_definitions_over_volumes():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 6, 6, generator=g) * torch.tensor([1.0, 1.0, 3.0, 3.0, 3.0]).view(-1, 1, 1, 1)
    pred = x + 0.1 * torch.randn(5, 1, 6, 6, generator=g)
    volumes = torch.tensor([0, 0, 1, 1, 1])
    out = volume_metrics(x, pred, volumes)
    x64, p64 = x.double().numpy(), pred.double().numpy()
    nmse = [((x64[s] - p64[s]) ** 2).sum() / (x64[s] ** 2).sum() for s in (slice(0, 2), slice(2, 5))]
    peak = [x64[s].max() for s in (slice(0, 2), slice(2, 5))]
    mse = [((x64[s] - p64[s]) ** 2).mean() for s in (slice(0, 2), slice(2, 5))]
    assert out["volumes"] == 2
    assert out["volume_nmse"] == pytest.approx(np.mean(nmse), rel=1e-9)
    assert out["volume_psnr"] == pytest.approx(np.mean([10 * np.log10(p**2 / m) for p, m in zip(peak, mse)]), rel=1e-9)
    # per-slice PSNR uses the maximum of the slice's volume as data range
    op = KSpaceSubsample((1, 6, 6), acceleration=2, center_fraction=0.3, seed=0)
    per_slice = _protocol(op, x, pred, volumes)["psnr"]
    np.testing.assert_allclose(per_slice, psnr(x, pred, data_range=np.array([peak[0]] * 2 + [peak[1]] * 3)))


def test_fastmri_split_is_by_volume_and_each_volume_is_scaled_to_one(tmp_path):
    write_volumes(tmp_path, n_volumes=10)
    exp = build_experiment(fastmri_config(tmp_path))
    assert "8 train / 2 test volumes" in exp.data_note
    assert exp.test_volumes is not None and set(exp.test_volumes.tolist()) <= {0, 1}
    for v in (0, 1):  # all 4 test slices: the test volumes are the brightest, yet each peaks at 1
        test_x = exp.test_set.targets(torch.arange(len(exp.test_set)))
        assert float(test_x[exp.test_volumes == v].max()) == pytest.approx(1.0)
    assert float(exp.train_set.targets(torch.arange(len(exp.train_set))).max()) <= 1.0


def test_fastmri_needs_two_volumes(tmp_path):
    write_volumes(tmp_path, n_volumes=1, slices=6)
    with pytest.raises(ConfigError, match=r"holds 1 fastMRI volume; a train/test split by volume needs at least 2"):
        build_experiment(fastmri_config(tmp_path, "data.n_train=2", "data.n_test=1"))


def test_evaluate_reports_per_volume_metrics_on_fastmri_data(tmp_path):
    (tmp_path / "data").mkdir()
    write_volumes(tmp_path / "data", n_volumes=10)
    train(fastmri_config(tmp_path / "data", "train.epochs=1"), tmp_path / "run", progress=False)
    summary = evaluate_run(tmp_path / "run")["summary"]
    for method in ("network", "zero_filled_real", "zero_filled_magnitude"):
        assert summary[method]["volumes"] == 2
        assert 0 < summary[method]["volume_nmse"] < 10 and np.isfinite(summary[method]["volume_psnr"])


def test_report_ge_matches_the_training_ge_on_super_resolution(tmp_path):
    """The SR protocol shaves borders for PSNR/SSIM; the GE must still be training's (whole images)."""
    config = load_config(ROOT / "configs" / "sr_x2.yaml", [
        "data.n_train=8", "data.n_test=4", "data.patch_size=16", "model.kwargs={n_blocks: 1, features: 8}",
        "noise.radius=0.1", "train.epochs=2", "train.eval_every=1", "train.probe_size=2", "train.probe_iters=3"])
    history = train(config, tmp_path / "run", progress=False)
    network = evaluate_run(tmp_path / "run")["summary"]["network"]
    assert network["generalisation_gap"] == pytest.approx(history[-1]["ge"], rel=1e-5)
    assert network["test_l2"] == pytest.approx(history[-1]["test_loss"], rel=1e-5)


def test_the_evaluation_device_is_the_runs_unless_asked_and_a_missing_gpu_is_said(monkeypatch):
    from jacinv.config import ConfigError
    from jacinv.distributed import evaluation_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert evaluation_device({"train": {"device": "auto"}}) == torch.device("cpu")
    assert evaluation_device({"train": {"device": "cuda"}}, "cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"'train.device' is 'cuda', but no CUDA GPU is available here.*"
                                          r"\(the run was trained with it\); evaluate it here with --device cpu"):
        evaluation_device({"train": {"device": "cuda"}})
    with pytest.raises(ConfigError, match=r"^--device must be auto, cpu, cuda or cuda:N, got 'gpu'$"):
        evaluation_device({"train": {"device": "cpu"}}, "gpu")
    with pytest.raises(ConfigError, match=r"^--device is 'cuda:0', but no CUDA GPU is available here; use --device auto"):
        evaluation_device({"train": {"device": "cpu"}}, "cuda:0")


def test_a_network_on_another_device_takes_and_gives_cpu_tensors_and_passes_gradients():
    from jacinv.report import OnDevice

    net = torch.nn.Linear(3, 2)
    wrapped = OnDevice(net, torch.device("cpu"))
    y = torch.randn(4, 3, requires_grad=True)
    out = wrapped(y)
    torch.testing.assert_close(out, net(y))
    out.sum().backward()
    torch.testing.assert_close(y.grad, net.weight.sum(0).expand(4, 3))
