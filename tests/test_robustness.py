"""Robustness knobs: stability targets of the Jacobian penalty, train-time augmentation, the new-subject shift."""
import json

import pytest
import torch

from jacinv.cli import evaluate_main, train_main
from jacinv.config import load_config
from jacinv.datasets import InverseProblemDataset
from jacinv.operators import build_operator
from jacinv.regularizers import build_regularizer
from jacinv.regularizers.regularizer import TARGET_MARGIN
from jacinv.schema import ConfigError, check_config, defaults
from jacinv.shift import imitate_new_subject
from jacinv.training import train
from jacinv.transforms import AUGMENTATIONS, Augmentation

from test_training import ROOT, tiny_config, trained_tiny_run


# ---------------------------------------------------------------- stability targets


def _fit_with_target(term: str, bound: float, steps: int = 600, batch: int = 16, seed: int = 0):
    """A tanh MLP (float64) fitted to a linear map of norm 3 with the penalty ``term`` aiming at ``bound``;
    returns (net, measurements y (64, 8), operator A or None)."""
    gen = torch.Generator().manual_seed(seed)
    n, d = 64, 8
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    truth = basis @ torch.diag(torch.linspace(3.0, 0.5, d, dtype=torch.float64)) @ basis.T
    y = torch.randn(n, d, generator=gen, dtype=torch.float64)
    x = y @ truth.T
    torch.manual_seed(seed)
    f = torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.Tanh(), torch.nn.Linear(32, d)).double()
    op = None
    if term == "sja":
        op = build_operator("matrix", in_shape=(d,), matrix=torch.randn(d, d, generator=gen, dtype=torch.float64) / 3)
    reg = build_regularizer(term, operator=op, lambda_ja=1.0, lambda_j=1.0, store_dtype=torch.float64,
                            **{f"target_{term[1:]}": bound})
    opt = torch.optim.Adam(f.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        index = torch.randperm(n, generator=gen)[:batch]
        opt.zero_grad()
        loss = (f(y[index]) - x[index]).norm(dim=1).mean()
        loss.backward()
        penalty = reg(f, y[index], index=index, loss=loss.detach())
        if penalty.requires_grad:
            penalty.backward()
        opt.step()
        schedule.step()
    return f, y, op


def _exact_max_norm(f, y, op=None) -> float:
    """max_i ||J(y_i) A||_2 (A = I when ``op`` is None) from the exact Jacobians."""
    jacobians = torch.stack([torch.autograd.functional.jacobian(f, row) for row in y])
    if op is not None:
        jacobians = jacobians @ op.to_dense().to(jacobians)
    return float(torch.linalg.matrix_norm(jacobians, 2).max())


@pytest.mark.parametrize("term, bound", [("sj", 1.5), ("sj", 1.0), ("sja", 0.5)])
def test_a_target_is_met_on_every_training_sample(term, bound):
    free, y, op = _fit_with_target(term, 1e6)                  # a bound that never binds: the unconstrained fit
    assert _exact_max_norm(free, y, op) > 1.5 * bound          # so the target has work to do
    net, y, op = _fit_with_target(term, bound)
    reached = _exact_max_norm(net, y, op)
    assert reached <= bound, f"max norm {reached:.4f} over the target {bound}"
    assert reached >= (1 - 3 * TARGET_MARGIN) * bound          # and it is not met by flattening the net


def test_the_hinge_has_no_gradient_below_the_aim_and_the_multiplier_moves_and_is_saved():
    f = torch.nn.Linear(4, 4).double()
    with torch.no_grad():
        f.weight.copy_(2.0 * torch.eye(4))
    y = torch.randn(3, 4, dtype=torch.float64)
    reg = build_regularizer("sj", lambda_j=1.0, target_j=3.0, store_dtype=torch.float64)
    assert float(reg(f, y, index=torch.arange(3)).detach()) == 0.0 and float(reg.multiplier_sj) == 1.0  # ||J|| = 2 < 3
    reg.targets["sj"] = 1.0                                     # now 2 > 0.95: the hinge pushes, and m rises
    value = reg(f, y, index=torch.arange(3))
    assert float(value) == pytest.approx(2.0 - (1 - TARGET_MARGIN), rel=1e-6)
    assert float(reg.multiplier_sj) == pytest.approx(1.1)
    twin = build_regularizer("sj", lambda_j=1.0, target_j=1.0, store_dtype=torch.float64)
    twin.load_state_dict(reg.state_dict())
    assert float(twin.multiplier_sj) == pytest.approx(1.1)     # a resumed run keeps its multiplier


@pytest.mark.parametrize("name, kwargs, match", [
    ("sj", {"target_j": 0.0}, r"target for 'sj' must be a finite number in \(0.0, inf\], got 0.0"),
    ("sj", {"target_j": float("inf")}, r"target for 'sj' must be a finite number"),
    ("sj", {"target_j": float("nan")}, r"target for 'sj' must be a finite number"),
    ("sj", {"target_ja": 2.0}, r"target_ja=2.0: regularizer 'sj' has no such spectral norm"),
    ("sja", {"target_j": 2.0}, r"target_j=2.0: regularizer 'sja' has no such spectral norm"),
    ("fja+fj", {"target_j": 2.0}, r"target_j=2.0: regularizer 'fja\+fj' has no such spectral norm"),
    ("wd", {"target_ja": 1.0}, r"regularizer 'wd' has no such spectral norm"),
])
def test_build_regularizer_refuses_bad_targets(name, kwargs, match):
    op = build_operator("identity", in_shape=(4,))
    with pytest.raises(ValueError, match=match):
        build_regularizer(name, operator=op, **kwargs)


@pytest.mark.parametrize("key, value, name", [
    ("regularizer.target_j", -1.0, "sj"), ("regularizer.target_j", float("nan"), "sj"),
    ("regularizer.target_ja", 0, "sja"), ("regularizer.target_j", "1.5", "sj"),
])
def test_the_schema_refuses_non_positive_or_non_finite_targets(key, value, name):
    config = defaults()
    config["regularizer"]["name"] = name
    config["regularizer"][key.split(".")[1]] = value
    with pytest.raises(ConfigError, match=rf"config key '{key}' must be a finite number > 0 or null"):
        check_config(config)


@pytest.mark.parametrize("key, value, context", [
    ("regularizer.target_j", 2.0, {"regularizer.name": "sja"}),
    ("regularizer.target_ja", 2.0, {"regularizer.name": "fja+fj"}),
    ("data.augment", ["flip"], {"data.source": "fastmri", "data.root": "x"}),
])
def test_an_ignored_target_or_augmentation_is_an_error_even_from_a_config_file(key, value, context):
    config = defaults()
    for k, v in {**context, key: value}.items():
        section, leaf = k.split(".")
        config[section][leaf] = v
    with pytest.raises(ConfigError, match=rf"config key '{key}' = .* has no effect"):
        check_config(config, explicit=(), inherited=[key])


def test_train_reports_whether_the_probe_meets_the_target(tmp_path, capsys):
    overrides = [*tiny_overrides("cs_unrolled"), "regularizer.name=sj", "regularizer.target_j=0.01"]
    assert train_main(["--config", str(ROOT / "configs" / "cs_unrolled.yaml"), *overrides, "--run-dir",
                       str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "aiming at max ||J|| <= 0.01" in out
    assert "target max ||J||" in out and "NOT met on the probe set" in out   # 2 epochs cannot reach 0.01


def tiny_overrides(name):
    from test_training import COMMON, TINY
    return [*TINY[name], *COMMON]


# ---------------------------------------------------------------- augmentation


def _images(n=4, h=24, w=20):
    x = torch.zeros(n, 1, h, w)
    x[:, :, 6:18, 5:12] = torch.linspace(0.2, 1.0, n)[:, None, None, None]   # an off-centre bright block
    return x


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_augmentation_changes_images_within_the_value_range(name):
    x = _images()
    out = Augmentation([name], seed=0)(x, torch.arange(4), epoch=0)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.equal(out, x)


def test_augmentation_is_a_function_of_seed_epoch_and_index():
    x, aug = _images(), Augmentation(list(AUGMENTATIONS), seed=3)
    a = aug(x, torch.tensor([0, 1, 2, 3]), epoch=5)
    assert torch.equal(a, aug(x, torch.tensor([0, 1, 2, 3]), epoch=5))                 # reproducible
    assert torch.equal(a[2:], aug(x[2:], torch.tensor([2, 3]), epoch=5))               # independent of the batch
    assert not torch.equal(a, aug(x, torch.tensor([0, 1, 2, 3]), epoch=6))             # new every epoch
    assert not torch.equal(a, Augmentation(list(AUGMENTATIONS), seed=4)(x, torch.arange(4), epoch=5))


def test_augmentation_refuses_what_it_cannot_apply_to():
    with pytest.raises(ValueError, match=r"augmentations must be a non-empty list of distinct names from"):
        Augmentation(["flip", "mirror"])
    with pytest.raises(ValueError, match=r"augmentations must be a non-empty list"):
        Augmentation([])
    aug = Augmentation(["flip"])
    with pytest.raises(ValueError, match=r"signals must be real images \(N, C, H, W\), got \(4, 16\)"):
        aug(torch.rand(4, 16), torch.arange(4), 0)
    with pytest.raises(ValueError, match=r"signals must be real images \(N, C, H, W\), got .*complex64"):
        aug(torch.rand(2, 1, 4, 4, dtype=torch.complex64), torch.arange(2), 0)
    vectors = build_operator("gaussian_cs", in_shape=(16,), n_measurements=8)
    with pytest.raises(ValueError, match=r"augment needs image signals \(C, H, W\).*got signals of shape \(16,\)"):
        InverseProblemDataset(torch.rand(4, 16), vectors, augment=aug)


def test_an_augmented_data_set_measures_the_augmented_signal_and_evaluation_stays_clean():
    op = build_operator("identity", in_shape=(1, 24, 20))
    clean = InverseProblemDataset(_images(), op)
    data = clean.with_augmentation(Augmentation(["rotate", "gamma"], seed=1))
    data.set_epoch(2)
    y, x = data.pairs(torch.arange(4))
    assert torch.equal(y, x) and not torch.equal(x, clean.signals)     # y = A x of the augmented x
    items = data.__getitems__([1, 3])
    assert torch.equal(items[0][1], x[1]) and torch.equal(items[1][0], y[3])
    assert clean.augment is None and torch.equal(clean.pairs(torch.arange(4))[1], clean.signals)


def test_augmented_training_resumes_to_the_same_numbers(tmp_path):
    config = tiny_config("mri_4x_varnet", "data.augment=[flip, rotate, elastic, bias, gamma]", "train.epochs=3")
    full = train(config, tmp_path / "full", progress=False)
    train(config, tmp_path / "part", progress=False, stop_after=1)
    resumed = train(load_config(tmp_path / "part" / "config.yaml"), tmp_path / "part", resume=True, progress=False)
    assert [r["train_loss_running"] for r in resumed] == [r["train_loss_running"] for r in full]
    plain = train(tiny_config("mri_4x_varnet", "train.epochs=3"), tmp_path / "plain", progress=False)
    assert plain[0]["train_loss_running"] != full[0]["train_loss_running"]   # the augmentation did something


# ---------------------------------------------------------------- the new-subject shift


def test_the_subject_shift_is_deterministic_and_keeps_the_value_range():
    x = torch.rand(3, 1, 30, 26, generator=torch.Generator().manual_seed(0))
    a = imitate_new_subject(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, imitate_new_subject(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, imitate_new_subject(x, torch.Generator().manual_seed(2)))
    assert a.shape == x.shape and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert float((a - x).abs().mean()) > 0.02                   # a different image, not a copy
    assert float(imitate_new_subject(torch.zeros(1, 1, 8, 8)).abs().max()) == 0.0   # background stays background
    with pytest.raises(ValueError, match=r"signals must be real images"):
        imitate_new_subject(torch.rand(3, 30))


@pytest.fixture(scope="module")
def mri_run(tmp_path_factory):
    return trained_tiny_run(tmp_path_factory.mktemp("subject") / "run", "mri_4x_varnet")


def test_evaluate_shift_subject_reports_network_tv_zero_filled_and_pseudo_inverse(mri_run, capsys):
    assert evaluate_main([str(mri_run), "--shift", "subject"]) == 0
    report = json.loads((mri_run / "shift_subject.json").read_text())
    assert {"network", "zero_filled_real", "pseudo_inverse"} <= set(report["shifted"])
    assert any(m.startswith("tv(mu=") for m in report["shifted"])
    assert report["shifted"]["network"]["psnr"] != report["in_distribution"]["network"]["psnr"]
    again = json.loads(json.dumps(report))
    evaluate_main([str(mri_run), "--shift", "subject"])
    assert json.loads((mri_run / "shift_subject.json").read_text()) == again   # deterministic
    assert "| network |" in capsys.readouterr().out


def test_evaluate_refuses_an_unknown_shift(mri_run, capsys):
    with pytest.raises(SystemExit):
        evaluate_main([str(mri_run), "--shift", "patient"])
    assert "invalid choice: 'patient'" in capsys.readouterr().err


def test_evaluate_stability_compares_the_worst_case_change_with_the_target(tmp_path, capsys):
    run = trained_tiny_run(tmp_path / "run", "cs_unrolled", "regularizer.name=sj", "regularizer.target_j=0.01")
    assert evaluate_main([str(run), "--stability", "--stability-samples", "2", "--radii", "0.1", "0.3"]) == 0
    out = capsys.readouterr().out
    report = json.loads((run / "stability.json").read_text())
    smallest = min(report["curves"]["network"], key=lambda r: r["radius"])
    ratio = smallest["change_max"] / smallest["radius"]
    assert report["target_j"] == 0.01 and ratio > 0.01       # two epochs cannot reach so small a target
    assert "target max ||J|| <= 0.01" in out and f"measured: {ratio:.3f} at the smallest radius (ABOVE it)" in out


def test_the_robust_config_is_the_study_arm_it_reports():
    import sys
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from robustness import ARMS, ROBUST_ARM

    shipped = load_config(ROOT / "configs" / "mri_4x_varnet_robust.yaml")
    arm = load_config(ROOT / "configs" / "mri_4x_varnet.yaml", list(dict(ARMS)[ROBUST_ARM]))
    for config in (shipped, arm):
        del config["name"], config["train"]["eval_every"]     # neither changes the trained weights
    assert shipped == arm


# ---------------------------------------------------------------- perturbations a measurement can carry


def test_kspace_perturbations_stay_on_the_sampled_positions():
    op = build_operator("kspace", in_shape=(1, 16, 12), acceleration=4, center_fraction=0.2, seed=0)
    e = torch.randn(3, *op.out_shape)
    kept = op.measured_part(e)
    unsampled = ~op.mask
    assert float(kept[..., unsampled, :].abs().max()) == 0.0 and torch.equal(kept[..., op.mask, :], e[..., op.mask, :])
    dense = build_operator("gaussian_cs", in_shape=(1, 4, 4), n_measurements=8)
    assert torch.equal(dense.measured_part(e[:, 0, :2, :4, 0].reshape(3, 8)), e[:, 0, :2, :4, 0].reshape(3, 8))


def test_the_worst_case_attack_of_a_masked_net_never_touches_unsampled_positions():
    """A map that amplifies the unsampled positions 10x and passes the sampled ones: an attack free to use every
    entry finds 10 r, one confined to what a scanner records finds r."""
    from jacinv.stability import worst_case_perturbation

    op = build_operator("kspace", in_shape=(1, 16, 12), acceleration=4, center_fraction=0.2, seed=0)
    f = lambda y: op.measured_part(y) + 10.0 * (y - op.measured_part(y))  # noqa: E731
    y = op(torch.rand(2, 1, 16, 12))
    _, free = worst_case_perturbation(f, y, 0.5, steps=5, generator=torch.Generator().manual_seed(0))
    e, confined = worst_case_perturbation(f, y, 0.5, steps=5, generator=torch.Generator().manual_seed(0),
                                          measured=lambda e, y: op.at(y).measured_part(e))
    assert torch.allclose(free, torch.full((2,), 5.0), rtol=1e-3)
    assert torch.allclose(confined, torch.full((2,), 0.5), rtol=1e-3)
    assert float(e[..., ~op.mask, :].abs().max()) == 0.0


def test_the_study_table_names_each_radius_as_a_share_of_y_and_escapes_nothing():
    import sys
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from robustness import arm_row, markdown

    curves = [{"radius": r, "psnr_drop": d, "change_mean": c} for r, d, c in
              ((0.45, 1.9, 1.5), (0.9, 4.8, 2.9), (2.25, 10.8, 6.7), (4.5, 14.8, 10.9))]
    extra = {"report": {"network": {"volume_psnr": 33.1, "volume_ssim": 0.95}},
             "shift": {"shifted": {"network": {"psnr": 27.1}}, "in_distribution": {"network": {"psnr": 34.2}}},
             "stability": {"curves": {"network": curves}}}
    run = {"seconds": 600.0, "ge": 1.3, "probe_max_sj": 6.4, "probe_max_sja": 2.6, "overrides": ["seed=0"]}
    row = arm_row("sj, ‖J‖ ≤ 2", run, extra)
    text = markdown([row], {}, ["0.45", "0.9", "2.25", "4.5"])
    header, _, line, *_ = text.splitlines()
    assert "drop at 1 % (r = 0.45)" in header and "drop at 10 % (r = 4.50)" in header
    assert line.count("|") == header.count("|")          # a label with norms does not split the row
    assert "| 33.10 / 0.950 | 1.90 | 4.80 | 10.80 | 14.80 | 27.10 | 6.40 | 2.60 |" in line
    assert "²" not in text
    # an arm on ||J P|| marks its norm column and the table says what the mark means
    measured = arm_row("sj, ‖J P‖ ≤ 3", {**run, "overrides": ["regularizer.j_domain=measured"]}, extra)
    text = markdown([row, measured], {}, ["0.45", "0.9", "2.25", "4.5"])
    assert "| 6.40² | 2.60 |" in text.splitlines()[3] and "| 6.40 | 2.60 |" in text.splitlines()[2]
    assert "² max ‖J P‖: the probe's norm of J on the sampled k-space positions" in text


def test_every_arm_of_every_study_is_a_valid_run_configuration():
    """A typo in an arm would surface hours into a study: each arm, with the study's scoring overrides, passes the
    schema, its overrides counted as set on the command line (load_config: one without effect is refused too)."""
    import sys
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from robustness import STUDIES

    for name, study in STUDIES.items():
        for label, arm in study.arms:
            for quick in (False, True):
                overrides = study.overrides(arm, 0, quick)
                scored = load_config(ROOT / "configs" / f"{study.config}.yaml", [*overrides, *study.scoring])
                assert scored["noise"]["radius"] == study.eps, (name, label)   # every arm scored on the same data
    labels = [label for label, _ in STUDIES["cs"].arms]
    assert len(set(labels)) == len(labels) and labels[0] == "as shipped (sja+sj)"


def test_the_cs_study_table_names_radii_as_multiples_of_eps_and_reads_per_image_psnr():
    import sys
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from robustness import STUDIES, arm_row, markdown

    curves = [{"radius": r, "psnr_drop": d, "change_mean": c} for r, d, c in ((0.15, 0.3, 0.2), (0.3, 0.7, 0.4))]
    extra = {"report": {"network": {"psnr": 23.9, "ssim": 0.85}},
             "shift": {"shifted": {"network": {"psnr": 17.6}}, "in_distribution": {"network": {"psnr": 23.9}}},
             "stability": {"curves": {"network": curves}}}
    run = {"seconds": 600.0, "ge": 0.46, "probe_max_sj": 2.4, "probe_max_sja": 5.3, "overrides": ["seed=0"]}
    text = markdown([arm_row("none", run, extra)], {}, ["0.15", "0.3"], STUDIES["cs"])
    header, _, line, *_ = text.splitlines()
    assert "drop at r = 0.15 (0.5 ε)" in header and "drop at r = 0.3 (1 ε)" in header and "%" not in header
    assert "natural patches PSNR" in header and "(volume)" not in header
    assert "| 23.90 / 0.850 | 0.30 | 0.70 | 17.60 |" in line
