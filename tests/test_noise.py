import math

import pytest
import torch

from jacinv.noise import BoundedNoise, GaussianNoise


@pytest.mark.parametrize("shape", [(500, 10), (64, 2, 3, 4)])
def test_sphere_noise_has_exact_norm_and_no_mean_direction(shape):
    n = BoundedNoise(0.3, mode="sphere").sample(shape, seed=0, dtype=torch.float64)
    norms = n.reshape(shape[0], -1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 0.3))
    d = math.prod(shape[1:])
    # the mean of B unit vectors uniform on the sphere has norm ~ 1/sqrt(B) on average
    mean_dir = (n.reshape(shape[0], -1) / 0.3).mean(0).norm()
    assert mean_dir < 3 / math.sqrt(shape[0]) * math.sqrt(1 + 1 / d)


def test_ball_noise_radius_distribution():
    d = 3
    n = BoundedNoise(2.0, mode="ball").sample((20000, d), seed=1, dtype=torch.float64)
    r = n.norm(dim=1) / 2.0
    assert float(r.max()) <= 1.0
    # uniform in the ball: P(r <= t) = t^d
    for t in (0.5, 0.8, 0.95):
        assert float((r <= t).double().mean()) == pytest.approx(t**d, abs=0.015)


def test_noise_reproducible_from_seed_and_generator():
    a = BoundedNoise(1.0).sample((4, 5), seed=7)
    b = BoundedNoise(1.0).sample((4, 5), generator=torch.Generator().manual_seed(7))
    c = BoundedNoise(1.0).sample((4, 5), seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(GaussianNoise(0.1).sample((3, 3), seed=1), GaussianNoise(0.1).sample((3, 3), seed=1))


def test_zero_radius_gives_zero_noise():
    assert torch.count_nonzero(BoundedNoise(0.0).sample((3, 4), seed=0)) == 0


def test_gaussian_noise_standard_deviation():
    n = GaussianNoise(0.2).sample((1000, 100), seed=0, dtype=torch.float64)
    assert float(n.std()) == pytest.approx(0.2, rel=0.01)


@pytest.mark.parametrize("make, match", [
    (lambda: BoundedNoise(-0.1), r"radius must be a finite number in \[0.0, inf\], got -0.1"),
    (lambda: BoundedNoise(float("nan")), "radius must be a finite number"),
    (lambda: BoundedNoise(0.1, mode="cube"), r"mode must be one of \['sphere', 'ball'\], got 'cube'"),
    (lambda: GaussianNoise(-1), r"sigma must be a finite number in \[0.0, inf\], got -1.0"),
    (lambda: BoundedNoise(0.1).sample((0, 3)), "shape must contain positive ints only"),
    (lambda: BoundedNoise(0.1).sample((2, 3), seed=1, generator=torch.Generator()), "either generator or seed"),
])
def test_noise_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


# ---------------------------------------------------------------- where the noise lands


def test_noise_on_given_entries_is_zero_elsewhere_with_the_stated_law_on_them():
    entries = torch.zeros(4, 5, dtype=torch.bool)
    entries[:, 1:3] = True                                                     # 8 of 20 entries
    n = BoundedNoise(0.3).sample((50, 4, 5), seed=0, dtype=torch.float64, entries=entries)
    assert float(n[:, ~entries].abs().max()) == 0.0
    norms = n.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 0.3))
    # uniform in the ball of the 8-dimensional subspace: P(r <= t) = t^8, not t^20
    r = BoundedNoise(1.0, mode="ball").sample((20000, 4, 5), seed=1, dtype=torch.float64, entries=entries).flatten(1).norm(dim=1)
    assert float((r <= 0.9).double().mean()) == pytest.approx(0.9 ** 8, abs=0.015)
    g = GaussianNoise(2.0).sample((20000, 4, 5), seed=2, dtype=torch.float64, entries=entries)
    assert float(g[:, ~entries].abs().max()) == 0.0 and float(g[:, entries].std()) == pytest.approx(2.0, rel=0.02)
    # the same draw as without entries, restricted: the law on every entry is unchanged by the option
    full = BoundedNoise(0.3).sample((50, 4, 5), seed=0, dtype=torch.float64)
    torch.testing.assert_close(n[:, entries], full[:, entries] * (n[:, entries].norm(dim=1) / full[:, entries].norm(dim=1))[:, None])


@pytest.mark.parametrize("operator", ["kspace", "multicoil_kspace"])
def test_kspace_data_sets_put_their_noise_on_the_sampled_positions_only(operator):
    """The default support "measured": y - A x is zero where the scanner records nothing and has the radius as its
    norm; "all" spreads the same radius over the whole grid, as before."""
    from jacinv.datasets import InverseProblemDataset
    from jacinv.operators import build_operator

    kwargs = {"coils": 3} if operator == "multicoil_kspace" else {}
    op = build_operator(operator, in_shape=(1, 16, 12), acceleration=4, center_fraction=0.2, seed=0, **kwargs)
    x = torch.rand(6, 1, 16, 12)
    for support in ("measured", "all"):
        data = InverseProblemDataset(x, op, BoundedNoise(0.5, support=support), seed=3)
        n = data.measure(torch.arange(6)) - op(x)
        off = n - op.measured_part(n)
        norms = n.flatten(1).norm(dim=1)
        torch.testing.assert_close(norms, torch.full_like(norms, 0.5))
        if support == "measured":
            assert float(off.abs().max()) == 0.0
        else:
            assert float(off.flatten(1).norm(dim=1).min()) > 0.3            # most of the grid is unsampled


def test_operators_that_record_every_entry_get_the_same_noise_whatever_the_support():
    from jacinv.datasets import InverseProblemDataset
    from jacinv.operators import build_operator

    op = build_operator("gaussian_cs", in_shape=(1, 6, 6), n_measurements=20, seed=0)
    x = torch.rand(5, 1, 6, 6)
    measured, everywhere = (InverseProblemDataset(x, op, noise, seed=1).measure(torch.arange(5))
                            for noise in (BoundedNoise(0.3), BoundedNoise(0.3, support="all")))
    assert torch.equal(measured, everywhere)


def test_noise_support_is_checked_and_refused_where_it_changes_nothing():
    from jacinv.config import load_config
    from jacinv.schema import ConfigError

    with pytest.raises(ValueError, match=r"support must be one of \['measured', 'all'\], got 'sampled'"):
        BoundedNoise(0.1, support="sampled")
    root = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"
    with pytest.raises(ConfigError, match=r"'noise.support'.*must be one of \['measured', 'all'\], got 'grid'"):
        load_config(root / "mri_4x_varnet.yaml", ["noise.support=grid"])
    with pytest.raises(ConfigError, match=r"'noise.support' = 'all' has no effect: it is used only when .*operator.name "
                                          r"is one of \['kspace', 'multicoil_kspace'\]"):
        load_config(root / "cs.yaml", ["noise.support=all"])
    assert load_config(root / "mri_4x_varnet.yaml", ["noise.support=all"])["noise"]["support"] == "all"


def test_a_run_saved_before_noise_support_existed_is_read_with_the_noise_it_was_trained_with(tmp_path):
    """Its config.yaml lacks the key: its k-space noise lay on the whole grid, so it resumes and is evaluated so."""
    from jacinv.config import dump_config, load_config, load_run_config

    root = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"
    config = load_config(root / "mri_4x_varnet.yaml", ["noise.radius=0.45"])
    assert config["noise"]["support"] == "measured"                            # what a new run gets
    del config["noise"]["support"]
    dump_config(config, tmp_path / "config.yaml")
    assert load_run_config(tmp_path)["noise"]["support"] == "all"
    dump_config({**config, "noise": {**config["noise"], "support": "measured"}}, tmp_path / "config.yaml")
    assert load_run_config(tmp_path)["noise"]["support"] == "measured"
