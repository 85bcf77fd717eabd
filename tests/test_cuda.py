"""The same computations on a CUDA GPU as on the CPU: networks, Jacobian penalties, training and the
stability attack (skipped on machines without a GPU)."""
import pytest
import torch

from jacinv.cli import evaluate_main
from jacinv.models import build_model
from jacinv.operators import GaussianCS
from jacinv.regularizers import SpectralJacobianPenalty, jacobian_spectral_norm
from jacinv.stability import worst_case_perturbation
from jacinv.training import train

from jacobians import exact_jacobians, grads
from test_models import MODEL_CASES
from test_training import TINY, tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def _no_tf32():
    """Compare float32 with float32: cuDNN's convolutions run in TF32 (10-bit mantissa) by default."""
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.mark.parametrize("name, op, kwargs, n_params", MODEL_CASES)
def test_model_on_cuda_matches_cpu(name, op, kwargs, n_params):
    model = build_model(name, op, **kwargs).eval()
    y = torch.randn(2, *op.out_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(y)
        got = model.cuda()(y.cuda())
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-3, atol=1e-4)


def _cs_net(device):
    op = GaussianCS((1, 4, 4), 8, seed=0).double().to(device)
    torch.manual_seed(0)
    f = torch.nn.Sequential(torch.nn.Linear(8, 20), torch.nn.Tanh(), torch.nn.Linear(20, 16),
                            torch.nn.Unflatten(1, (1, 4, 4))).double().to(device)
    y = torch.randn(5, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
    return f, op, y


def test_spectral_norms_on_cuda_match_exact_jacobians():
    f, op, y = _cs_net("cuda")
    jac = exact_jacobians(f, y)
    exact = torch.linalg.matrix_norm(jac @ op.to_dense(dtype=jac.dtype), ord=2)
    estimate = jacobian_spectral_norm(f, y, op, iters=500)
    assert estimate.device.type == "cuda"
    torch.testing.assert_close(estimate, exact, rtol=1e-6, atol=0)


def test_warm_penalty_and_its_gradient_on_cuda_match_cpu():
    values = {}
    for device in ("cpu", "cuda"):
        f, op, y = _cs_net(device)
        penalty = SpectralJacobianPenalty({"sja": op, "sj": None}, iters=2, candidates=2, refresh=1)
        index = torch.arange(y.shape[0])
        for _ in range(5):
            out, _ = penalty(f, y, index=index)
        total = out["sja"] + out["sj"]
        grad = grads(total, list(f.parameters()))
        values[device] = (total.detach().cpu(), [g.cpu() for g in grad])
    torch.testing.assert_close(values["cuda"][0], values["cpu"][0], rtol=1e-9, atol=0)
    for a, b in zip(values["cuda"][1], values["cpu"][1]):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_config_trains_and_evaluates_on_cuda(name, tmp_path):
    history = train(tiny_config(name, "train.device=cuda"), tmp_path / "run", progress=False)
    assert history[-1]["epoch"] == 1 and torch.isfinite(torch.tensor(history[-1]["test_loss"]))
    state = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True, map_location="cpu")["model"]
    assert all(t.device.type == "cpu" for t in state.values())
    assert evaluate_main([str(tmp_path / "run")]) == 0


def test_cs_training_on_cuda_follows_the_cpu_run(tmp_path):
    """Two epochs of the tiny CS run on each device: the same losses up to float32 rounding."""
    cpu = train(tiny_config("cs", "train.device=cpu"), tmp_path / "cpu", progress=False)
    gpu = train(tiny_config("cs", "train.device=cuda"), tmp_path / "gpu", progress=False)
    for key in ("train_loss", "test_loss", "probe_max_sja"):
        assert gpu[-1][key] == pytest.approx(cpu[-1][key], rel=1e-3), key


def test_worst_case_perturbation_on_cuda_reaches_the_linear_bound():
    matrix = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)).cuda()
    y = torch.randn(3, 4, device="cuda")
    e, moved = worst_case_perturbation(lambda t: t @ matrix.T, y, radius=0.5, steps=50)
    assert e.device.type == "cuda"
    torch.testing.assert_close(moved, torch.full_like(moved, 0.5 * float(torch.linalg.matrix_norm(matrix, ord=2))),
                               rtol=1e-3, atol=0)


def test_evaluation_stability_and_shift_run_on_the_runs_gpu_and_agree_with_the_cpu(tmp_path):
    """A CUDA run is scored on its GPU by default (reports say where), with the CPU's numbers."""
    from jacinv.report import evaluate_run
    from jacinv.stability import stability_report

    train(tiny_config("cs", "train.device=cuda"), tmp_path / "run", progress=False)
    on_gpu, on_cpu = (evaluate_run(tmp_path / "run", device=d) for d in (None, "cpu"))
    assert on_gpu["device"].startswith("cuda") and on_cpu["device"] == "cpu"
    assert on_gpu["summary"]["network"]["psnr"] == pytest.approx(on_cpu["summary"]["network"]["psnr"], abs=1e-3)
    report = stability_report(tmp_path / "run", radii=[0.1], n_samples=4, steps=3, classical=False)
    assert report["device"].startswith("cuda") and report["curves"]["network"][0]["change_mean"] > 0
    assert evaluate_main([str(tmp_path / "run"), "--shift", "blob", "--shift-samples", "4"]) == 0
