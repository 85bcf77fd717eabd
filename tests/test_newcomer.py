"""A newcomer's first hour: runs never lost or overwritten, edits that cannot apply named, plug-in
mistakes reported by file and line, divergence stopped, and the CLI saying what it scored."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from jacinv.cli import evaluate_main, train_main
from jacinv.metrics import psnr
from jacinv.models import build_model, register_model
from jacinv.operators import GaussianCS, Identity, LinearOperator, MatrixOperator, build_operator, register_operator
from jacinv.regularizers import build_regularizer

TINY = ["data.n_train=20", "data.n_test=10", "train.batch_size=10", "train.epochs=1", "train.probe_size=2",
        "train.probe_iters=2", "model.kwargs={width: 32}", "--no-progress"]


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("note:")]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("newcomer") / "run"
    assert train_main([*TINY, "train.epochs=2", "--run-dir", str(run)]) == 0
    return run


def test_overrides_may_stand_anywhere_on_the_line(tmp_path):
    argv = ["data.n_train=20", "--no-progress", "train.epochs=1", "--run-dir", str(tmp_path / "r"), *TINY[1:]]
    assert train_main(argv) == 0
    saved = (tmp_path / "r" / "config.yaml").read_text()
    assert "n_train: 20" in saved


def test_a_finished_run_is_never_overwritten(run, capsys):
    before = (run / "checkpoint_last.pt").read_bytes()
    assert train_main([*TINY, "--run-dir", str(run)]) == 2
    line = one_error(capsys)
    assert re.search(r"already holds a run \(2 epochs trained\); continue it with --resume .*, choose a new "
                     r"--run-dir, or add --overwrite", line), line
    assert (run / "checkpoint_last.pt").read_bytes() == before


def test_overwrite_replaces_a_run_and_only_a_run(tmp_path, capsys):
    target = tmp_path / "r"
    assert train_main([*TINY, "--run-dir", str(target)]) == 0
    (target / "mine.txt").write_text("kept?")
    assert train_main([*TINY, "--run-dir", str(target), "--overwrite", "seed=3"]) == 0
    assert not (target / "mine.txt").exists() and "seed: 3" in (target / "config.yaml").read_text()
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.jpg").write_text("x")
    assert train_main([*TINY, "--run-dir", str(foreign), "--overwrite"]) == 2
    assert "is not empty and holds no jacinv run" in one_error(capsys)
    assert (foreign / "a.jpg").exists()


def test_run_dir_on_a_file_is_one_error(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert train_main([*TINY, "--run-dir", str(tmp_path / "f")]) == 2
    assert "is a file; expected a new or empty directory" in one_error(capsys)


@pytest.mark.parametrize("argv, match", [
    (["model.kwargs={width: 16}"], r"--resume .* cannot change model.kwargs: the run's weights were trained"),
    (["regularizer.name=sj"], r"cannot change regularizer.name"),
    (["train.epochs=1"], r"config key 'train.epochs' is 1, but the run in .* has already trained 2 epochs"),
    (["--config", "configs/cs.yaml"], r"--resume continues the run with its saved config.yaml; it cannot be "
                                      r"combined with --config"),
])
def test_resume_refuses_what_cannot_change(run, argv, match, capsys):
    with pytest.raises(SystemExit) if argv[0].startswith("--") else _no_exit():
        assert train_main(["--resume", str(run), *argv, "--no-progress"]) == 2
    assert re.search(match, one_error(capsys))


class _no_exit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_an_edited_config_yaml_is_named_not_a_state_dict_traceback(tmp_path, capsys):
    target = tmp_path / "r"
    assert train_main([*TINY, "--run-dir", str(target)]) == 0
    path = target / "config.yaml"
    path.write_text(path.read_text().replace("width: 32", "width: 16"))
    for command in (lambda: train_main(["--resume", str(target), "train.epochs=2", "--no-progress"]),
                    lambda: evaluate_main([str(target)])):
        assert command() == 2
        line = one_error(capsys)
        assert re.search(r"the configuration differs from the one checkpoint .* was trained with \(model.kwargs: "
                         r"\{'width': 32\} in the checkpoint, \{'width': 16\} now\)", line), line


def test_a_checkpoint_that_does_not_fit_the_model_is_one_error(tmp_path, capsys):
    """Checkpoints written before configurations were stored in them: the state-dict mismatch, named."""
    target = tmp_path / "r"
    assert train_main([*TINY, "--run-dir", str(target)]) == 0
    state = torch.load(target / "checkpoint_last.pt", weights_only=True)
    del state["config"]
    torch.save(state, target / "checkpoint_last.pt")
    path = target / "config.yaml"
    path.write_text(path.read_text().replace("width: 32", "width: 16"))
    assert evaluate_main([str(target)]) == 2
    assert re.search(r"checkpoint .*checkpoint_last.pt does not fit the model the configuration describes",
                     one_error(capsys))


@pytest.mark.parametrize("override", ["train.epochs=999", "model.name=dncnn", "regularizer.lambda_j=3"])
def test_evaluate_takes_only_data_and_noise_overrides(run, override, capsys):
    assert evaluate_main([str(run), override]) == 2
    assert re.search(r"evaluate.py .* cannot change .*; evaluate.py may change only data, noise", one_error(capsys))


def test_evaluate_says_what_it_scored(run, capsys):
    assert evaluate_main([str(run)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"scored: 10 test signals of embedded 'patches'; checkpoint .*checkpoint_last.pt \(after "
                     r"epoch 2\)", out), out


def test_evaluate_flags_that_need_another_flag_are_refused(run, capsys):
    for argv, match in ((["--radii", "0.1"], "--radii is used only with --stability"),
                        (["--shift-samples", "3"], "--shift-samples is used only with --shift"),
                        (["--delta", "0.1"], "--delta is used only with --bound"),
                        (["--stability", "--radii", "inf"], "--radii must be finite positive numbers, got inf")):
        with pytest.raises(SystemExit) as exit_info:
            evaluate_main([str(run), *argv])
        assert exit_info.value.code == 2
        assert match in one_error(capsys)


def test_more_samples_than_the_test_set_holds_is_an_error(run, capsys):
    assert evaluate_main([str(run), "--stability", "--stability-samples", "1000"]) == 2
    assert "--stability-samples must be an int from 1 to the 10 test signals the run has, got 1000" in one_error(capsys)
    assert evaluate_main([str(run), "--shift", "ring", "--shift-samples", "100000"]) == 2
    assert "--shift-samples must be an int from 1 to the 10 test signals" in one_error(capsys)


def test_shift_data_on_the_runs_own_family_is_refused(run, capsys):
    assert evaluate_main([str(run), "--shift", "data", "data.n_test=5"]) == 2
    assert "give the run's own data family" in one_error(capsys)


def test_stability_and_shift_together_run_both(run, capsys):
    assert evaluate_main([str(run), "--stability", "--stability-samples", "2", "--radii", "0.1",
                          "--shift", "ring", "--shift-samples", "3"]) == 0
    assert (run / "stability.json").is_file() and (run / "shift_ring.json").is_file()


def test_a_damaged_baseline_cache_is_said_and_refitted(run, capsys):
    cache = run / "baseline_weights.json"
    assert evaluate_main([str(run)]) == 0
    cache.write_text(cache.read_text()[:20])
    capsys.readouterr()
    assert evaluate_main([str(run)]) == 0
    assert re.search(r"note: the baseline weight cache .* is damaged .*; fitting the weights again",
                     capsys.readouterr().err)
    json.loads(cache.read_text())


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    target = tmp_path / "r"
    code = train_main([*TINY, "train.epochs=5", "train.lr=1000", "data.n_train=40", "--run-dir", str(target)])
    assert code == 2
    line = one_error(capsys)
    assert re.search(r"training diverged: loss .* is over 1000 x its first value .*lower train.lr \(now 1000\)", line)
    assert train_main([*TINY, "train.epochs=2", "train.lr=1000", "train.max_loss_ratio=null", "--run-dir",
                       str(tmp_path / "free")]) == 0  # the check can be switched off


def test_the_summary_says_which_epoch_and_the_automatic_weights(tmp_path, capsys):
    assert train_main([*TINY, "--run-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"automatic weights at the first step: lambda_sja [0-9.e-]+, lambda_sj [0-9.e-]+", out), out
    assert re.search(r"epoch reported +1\n", out), out


# ------------------------------------------------------------------------------------------ plug-ins

@pytest.mark.parametrize("source, match", [
    ("x = (\n", r"file .*bad\.py, line 1: SyntaxError"),
    ("import torch\n\ny = undefined_name + 1\n", r"file .*bad\.py, line 3: NameError: name 'undefined_name'"),
    ("from jacinv.models import register_model\nregister_model('fc', lambda op: None)\n",
     r"file .*bad\.py, line 2: ValueError: model name 'fc' is already registered"),
])
def test_every_error_in_a_plugin_file_is_one_line_naming_file_and_line(source, match, tmp_path, capsys):
    plugin = tmp_path / "bad.py"
    plugin.write_text(source)
    assert train_main([*TINY, f"plugins=[{plugin}]", "--run-dir", str(tmp_path / "r")]) == 2
    line = one_error(capsys)
    assert re.search(r"config key 'plugins': cannot import '.*bad.py': " + match, line), line


class _Float64Net(nn.Module):
    def __init__(self, operator):
        super().__init__()
        self.operator, self.w = operator, nn.Parameter(torch.ones(()))

    def forward(self, y):
        return (self.w * self.operator.adjoint(y)).double()


class _DetachedNet(_Float64Net):
    def forward(self, y):
        return (self.w * self.operator.adjoint(y)).detach()


class _ConstantNet(_Float64Net):
    def forward(self, y):
        return self.w * torch.ones((y.shape[0], *self.operator.in_shape))


@pytest.mark.parametrize("net, match", [
    (_Float64Net, r"returns torch.float64 for torch.float32 measurements"),
    (_DetachedNet, r"output does not depend on the measurement y"),
    (_ConstantNet, r"output does not depend on the measurement y"),
])
def test_build_model_checks_what_a_training_step_relies_on(net, match):
    name = f"newcomer_{net.__name__}"
    register_model(name, net)
    with pytest.raises(ValueError, match=match):
        build_model(name, GaussianCS((1, 4, 4), 8))


@register_operator("newcomer_abs")
class _AbsOperator(LinearOperator):
    def __init__(self, in_shape=(1, 4, 4)):
        super().__init__(in_shape=in_shape, out_shape=in_shape)

    def forward(self, x):
        return x.abs()


@register_operator("newcomer_zero")
class _ZeroOperator(_AbsOperator):
    def forward(self, x):
        return 0 * x


def test_nonlinear_and_zero_operators_are_refused_by_name():
    with pytest.raises(ValueError, match=r"operator 'newcomer_abs' is not linear: A\(a x \+ b z\) differs"):
        build_operator("newcomer_abs")
    with pytest.raises(ValueError, match=r"operator 'newcomer_zero' maps random signals to zero"):
        build_operator("newcomer_zero")
    with pytest.raises(ValueError, match=r"scales by 1/\|\|A\|\|\^2, but the operator .* has \|\|A\|\| = 0"):
        build_model("unrolled", _ZeroOperator())


# ------------------------------------------------------------------------------------------ the API

def test_psnr_refuses_a_data_range_that_is_not_positive():
    x = torch.rand(2, 1, 4, 4)
    for bad in (-1.0, 0.0, float("nan"), [1.0, 2.0, 3.0]):
        with pytest.raises(ValueError, match="data_range must"):
            psnr(x, x * 0.5, data_range=bad)
    assert psnr(x, x * 0.5, data_range=2.0)[0] == pytest.approx(psnr(x, x * 0.5, data_range=1.0)[0] + 20 * 0.30103, 1e-4)


def test_a_complex_matrix_is_refused_not_cut_to_its_real_part():
    with pytest.raises(TypeError, match="matrix must be real, got torch.complex64"):
        MatrixOperator(torch.ones(2, 2, dtype=torch.complex64))


def test_a_regulariser_refuses_an_index_that_does_not_fit_the_batch():
    op = Identity((1, 4, 4))
    f = nn.Conv2d(1, 1, 3, padding=1)
    reg = build_regularizer("sj", lambda_j=1.0)
    y = torch.rand(3, 1, 4, 4)
    with pytest.raises(ValueError, match=r"index must have shape \(3,\), one dataset index per sample of y, got \(2,\)"):
        reg(f, y, y, index=torch.arange(2))
    with pytest.raises(TypeError, match="index must be an integer tensor"):
        reg(f, y, y, index=torch.zeros(3))
    assert torch.isfinite(reg(f, op(y), y, index=torch.arange(3)))


def test_a_run_directory_that_cannot_be_made_is_one_error(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert train_main([*TINY, f"out_dir={tmp_path / 'f' / 'sub'}"]) == 2
    assert re.search(r"run directory .*f/sub/cs cannot be made .*check out_dir / --run-dir", one_error(capsys))


def test_a_source_without_its_folder_is_one_error(tmp_path, capsys):
    assert train_main([*TINY, "data.source=folder", "--run-dir", str(tmp_path / "r")]) == 2
    assert "config key 'data.root' is null, but it is needed when data.source is 'folder'" in one_error(capsys)


def test_reconstructions_saved_into_a_file_is_one_error(run, capsys):
    assert evaluate_main([str(run), "--save-reconstructions", str(run / "config.yaml")]) == 2
    assert re.search(r"--save-reconstructions .*config.yaml: the folder cannot be made \(File exists\); expected a "
                     r"new or existing directory", one_error(capsys))
