"""Worst-case perturbations (jacinv.stability) and evaluate.py --stability."""
import json

import pytest
import torch

from jacinv.cli import evaluate_main
from jacinv.operators import KSpaceSubsample
from jacinv.mri import MultiCoilKSpace
from jacinv.stability import TV_ATTACK_BYTES, stability_curves, tv_attack_rows, worst_case_perturbation

from test_training import trained_tiny_run


def linear_map(seed=0):
    """y (B, 6) -> M y (B, 5) with singular values 3, 1, 0.5, 0.2, 0.1 (a clear gap)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    m = u @ torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.2, 0.1], dtype=torch.float64)) @ v[:5]
    return lambda y: y @ m.T


def test_worst_case_of_a_linear_map_is_its_spectral_norm_times_the_radius():
    f = linear_map()
    y = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    e, change = worst_case_perturbation(f, y, radius=0.2, steps=20, generator=torch.Generator().manual_seed(2))
    assert bool((e.norm(dim=1) <= 0.2 * (1 + 1e-12)).all())
    torch.testing.assert_close(change, (f(y + e) - f(y)).norm(dim=1))
    assert bool((change <= 3.0 * 0.2 * (1 + 1e-9)).all()) and bool((change >= 0.999 * 3.0 * 0.2).all())


def test_worst_case_perturbations_do_not_depend_on_the_rows_per_pass():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5)).double()
    y = torch.randn(7, 6, dtype=torch.float64)
    whole = worst_case_perturbation(net, y, radius=0.3, steps=5, generator=torch.Generator().manual_seed(2))
    chunked = worst_case_perturbation(net, y, radius=0.3, steps=5, generator=torch.Generator().manual_seed(2), rows=3)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_tv_is_attacked_in_passes_that_fit_the_memory_budget():
    """The attack backpropagates through TV's iterations: single-coil 112 x 96 k-space keeps all 16 samples in one
    pass (as before passes existed), 8-coil k-space (8x the measurement) a few per pass; never 0."""
    single = KSpaceSubsample((1, 112, 96), acceleration=4, center_fraction=0.08)
    multi = MultiCoilKSpace((1, 112, 96), coils=8, acceleration=4, center_fraction=0.08)
    assert tv_attack_rows(single, 16) == 16
    assert 1 <= tv_attack_rows(multi, 16) < 16
    per_sample = TV_ATTACK_BYTES // tv_attack_rows(multi, 16)
    assert tv_attack_rows(multi, 16, budget=per_sample - 1) < tv_attack_rows(multi, 16)
    assert tv_attack_rows(multi, 16, budget=1) == 1


def test_worst_case_beats_a_random_perturbation_and_grows_with_the_radius():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 64),
                              torch.nn.Unflatten(1, (1, 8, 8)))
    y = torch.randn(8, 6)
    x = torch.rand(8, 1, 8, 8)
    curves, worst = stability_curves({"net": net}, y, x, radii=(0.1, 0.4), steps=10)
    small, large = curves["net"]
    for row in (small, large):
        assert row["change_mean"] > row["random_change_mean"]
    assert large["change_mean"] > small["change_mean"] and set(worst) == {"net"}
    chunked, _ = stability_curves({"net": net}, y, x, radii=(0.1, 0.4), steps=10, attack_rows={"net": 3})
    for a, b in zip(chunked["net"], curves["net"]):
        assert a == pytest.approx(b, rel=1e-5)
    with pytest.raises(ValueError, match=r"attack_rows names methods \['network'\] that are not among methods \['net'\]"):
        stability_curves({"net": net}, y, x, radii=(0.1,), steps=2, attack_rows={"network": 3})


def test_evaluate_stability_writes_curves_for_the_network_and_tv(tmp_path, capsys):
    run = trained_tiny_run(tmp_path / "run", "cs", "regularizer.name=none", "data.n_val=0")
    capsys.readouterr()
    assert evaluate_main([str(run), "--stability", "--stability-samples", "4", "--radii", "0.1", "0.5"]) == 0
    out = capsys.readouterr().out
    report = json.loads((run / "stability.json").read_text())
    names = list(report["curves"])
    assert names[0] == "network" and names[1].startswith("tv(mu=") and report["samples"] == 4
    assert [r["radius"] for r in report["curves"]["network"]] == [0.1, 0.5]
    assert (run / "stability.png").stat().st_size > 0 and "network" in out


@pytest.mark.parametrize("args, match", [
    (["--radii", "0", "1"], "--radii must be finite positive numbers, got 0.0 1.0"),
    (["--stability-samples", "0"], "--stability-samples must be >= 1"),
])
def test_evaluate_stability_refuses_bad_arguments(tmp_path, capsys, args, match):
    with pytest.raises(SystemExit):
        evaluate_main([str(tmp_path), "--stability", *args])
    assert match in capsys.readouterr().err
