"""End-to-end: every shipped config trains (tiny), checkpoints, resumes identically and evaluates."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jacinv.cli import evaluate_main, train_main
from jacinv.config import ConfigError, load_config
from jacinv.training import train

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "cs": ["data.n_train=40", "data.n_test=20", "train.batch_size=20", "model.kwargs={width: 64}"],
    "sr_x2": ["data.n_train=16", "data.n_test=8", "data.patch_size=32", "model.kwargs={n_blocks: 1, features: 8}"],
    "sr_x4": ["data.n_train=16", "data.n_test=8", "data.patch_size=32", "model.kwargs={n_blocks: 1, features: 8}"],
    "mri_4x": ["data.n_train=8", "data.n_test=4", "data.downsample=4", "model.kwargs={chans: 4, num_pool_layers: 2}",
               "train.batch_size=4"],
    "mri_8x": ["data.n_train=8", "data.n_test=4", "data.downsample=4", "model.kwargs={chans: 4, num_pool_layers: 2}",
               "train.batch_size=4"],
    "denoise": ["data.n_train=20", "data.n_test=10", "data.patch_size=20", "model.kwargs={depth: 3, features: 8}"],
    "cs_unrolled": ["data.n_train=40", "data.n_val=0", "data.n_test=20", "train.batch_size=20",
                    "model.kwargs={iterations: 2, depth: 3, features: 8}"],
    "sr_x2_unrolled": ["data.n_train=16", "data.n_val=0", "data.n_test=8", "data.patch_size=32",
                       "model.kwargs={iterations: 2, depth: 3, features: 8}"],
    "mri_4x_varnet": ["data.n_train=8", "data.n_val=0", "data.n_test=4", "data.downsample=4", "train.batch_size=4",
                      "model.kwargs={cascades: 2, chans: 4, num_pool_layers: 2}"],
}
TINY["mri_4x_varnet_robust"] = TINY["mri_4x_varnet"]
TINY["mri_4x_multicoil"] = ["data.n_train=8", "data.n_val=0", "data.n_test=4", "data.downsample=4", "train.batch_size=4",
                             "model.kwargs={iterations: 2, cg_iters: 3, depth: 3, features: 8}",
                             "operator.kwargs={coils: 3, acceleration: 4, center_fraction: 0.08}"]
COMMON = ["train.epochs=2", "train.eval_every=1", "train.probe_size=2", "train.probe_iters=3",
          "data.fallback=embedded"]


def tiny_config(name, *extra):
    return load_config(ROOT / "configs" / f"{name}.yaml", [*TINY[name], *COMMON, *extra])


def trained_tiny_run(run_dir: Path, name: str, *extra) -> Path:
    """``run_dir`` holding a tiny run of configs/<name>.yaml, trained (for tests that evaluate a trained net)."""
    train(tiny_config(name, *extra), run_dir, progress=False)
    return run_dir


def test_every_shipped_config_is_covered():
    assert {p.stem for p in (ROOT / "configs").glob("*.yaml")} == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_config_trains_resumes_and_evaluates(name, tmp_path):
    config = tiny_config(name)
    full = train(config, tmp_path / "full", progress=False)
    part = train(config, tmp_path / "part", progress=False, stop_after=1)
    assert len(part) == 1 and not (tmp_path / "part" / "curves.png").exists()
    resumed = train(load_config(tmp_path / "part" / "config.yaml"), tmp_path / "part", resume=True, progress=False)
    for key in ("train_loss", "test_loss", "ge", "test_psnr", "probe_max_sja"):
        assert resumed[-1][key] == full[-1][key], key
    a = torch.load(tmp_path / "full" / "checkpoint_last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "checkpoint_last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    for f in ("config.yaml", "metrics.csv", "metrics.json", "curves.png", "reconstructions.png"):
        assert (tmp_path / "full" / f).exists(), f
    assert evaluate_main([str(tmp_path / "full")]) == 0
    report = json.loads((tmp_path / "full" / "report.json").read_text())
    expected = ({"zero_filled_rss", "adjoint", "sense"} if "multicoil" in name     # SENSE: the least-squares CG
                else {"zero_filled_real", "pseudo_inverse"} if "mri" in name else {"adjoint", "pseudo_inverse"})
    assert {"network", *expected} <= set(report["summary"])
    assert (tmp_path / "full" / "report.png").exists()


def test_lazy_penalty_resumes_to_the_same_numbers(tmp_path):
    config = tiny_config("cs", "regularizer.every=3", "train.epochs=3")
    full = train(config, tmp_path / "full", progress=False)
    train(config, tmp_path / "part", progress=False, stop_after=2)
    resumed = train(load_config(tmp_path / "part" / "config.yaml"), tmp_path / "part", resume=True, progress=False)
    assert resumed[-1]["test_loss"] == full[-1]["test_loss"]


def test_epochs_without_evaluation_are_recorded(tmp_path):
    history = train(tiny_config("cs", "train.epochs=3", "train.eval_every=2"), tmp_path / "run", progress=False)
    assert ["test_psnr" in r for r in history] == [False, True, True]  # every 2nd epoch and the last
    header, *rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert "test_psnr" in header and len(rows) == 3


def test_sparse_checkpoints_resume_to_the_same_numbers(tmp_path):
    config = tiny_config("cs", "train.epochs=5", "train.checkpoint_every=2")
    full = train(config, tmp_path / "full", progress=False)
    assert len(json.loads((tmp_path / "full" / "metrics.json").read_text())) == 5  # the last epoch is always saved
    train(config, tmp_path / "part", progress=False, stop_after=3)  # a session's last epoch is saved too
    assert torch.load(tmp_path / "part" / "checkpoint_last.pt", weights_only=True)["epoch"] == 2
    resumed = train(config, tmp_path / "part", resume=True, progress=False)
    assert [r["train_loss_running"] for r in resumed] == [r["train_loss_running"] for r in full]


def test_bound_report_on_a_trained_run(tmp_path):
    train(tiny_config("cs"), tmp_path / "run", progress=False)
    assert evaluate_main([str(tmp_path / "run"), "--bound"]) == 0
    bound = json.loads((tmp_path / "run" / "report.json").read_text())["bound"]
    assert bound["total"] > 0 and set(bound["terms"]) == {"robustness", "noise", "sample"}
    assert "lower bounds" in bound["lipschitz_kind"]
    assert (tmp_path / "run" / "bound.png").exists()


@pytest.mark.parametrize("override, match", [
    ("train.epoch=3", r"unknown config key 'train.epoch'"),
    ("train.epochs=three", r"config key 'train.epochs' must be an int >= 1, got 'three' \(str\)"),
    ("model.name=edsr", r"config key 'model' \('edsr'\) does not fit the operator GaussianCS"),
    ("operator.kwargs={n_measurements: 0}", r"config key 'operator'.*n_measurements must be an int >= 1"),
    ("regularizer.name=sjx", r"config key 'regularizer.name' must be one of \['none', .*\], got 'sjx'"),
    ("data.n_train=100000", r"config key data.n_train \(100000\) \+ data.n_val \(0\) asks for 100000 signals"),
    ("train.checkpoint_every=0", r"config key 'train.checkpoint_every' must be an int >= 1, got 0"),
])
def test_bad_configs_fail_before_training(override, match, tmp_path, capsys):
    code = train_main(["--config", str(ROOT / "configs" / "cs.yaml"), *TINY["cs"], *COMMON, override,
                       "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert not (tmp_path / "run").exists()


def test_config_error_names_the_key():
    with pytest.raises(ConfigError, match=r"config key 'noise.radius' must be a finite number >= 0, got 'big' \(str\)"):
        load_config(None, ["noise.radius=big"])


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, monkeypatch):
    import jacinv.training as training

    monkeypatch.setattr(training, "fidelity", lambda pred, x, kind: (pred - x).sum() * float("nan"))
    with pytest.raises(training.NonFiniteLoss, match="non-finite loss .* at epoch 1 step 0"):
        train(tiny_config("cs"), tmp_path / "run", progress=False)


def test_sweep_writes_one_table(tmp_path):
    code = train_main(["--config", str(ROOT / "configs" / "cs.yaml"), *TINY["cs"], *COMMON, "--no-progress",
                       "--sweep", "regularizer.name=none,sja", "--run-dir", str(tmp_path / "sweep")])
    assert code == 0
    lines = (tmp_path / "sweep" / "sweep.csv").read_text().strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("regularizer.name,test_psnr")
    assert (tmp_path / "sweep" / "sweep.png").exists()


def test_distributed_training_with_two_gloo_processes(tmp_path):
    """Two ranks: one run directory (chosen by rank 0, no --run-dir), one copy of the output."""
    overrides = [*TINY["cs"], *COMMON, f"out_dir={tmp_path}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "cs.yaml"), *overrides, "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["cs"]
    history = json.loads((tmp_path / "cs" / "metrics.json").read_text())
    assert len(history) == 2 and "test_psnr" in history[-1]
    assert (tmp_path / "cs" / "regularizer_rank0.pt").exists() and (tmp_path / "cs" / "regularizer_rank1.pt").exists()
    assert proc.stdout.count("run directory") == 2  # the start-up block and the closing line, once each
    assert proc.stdout.count("epoch 2/2") == 1


def _average_on_rank(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from jacinv import distributed

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(rank)  # different initial weights: broadcast_parameters must make them rank 0's
    model = torch.nn.Linear(3, 2)
    distributed.broadcast_parameters(model)
    model.weight.grad = torch.full_like(model.weight, float(rank + 1))  # bias.grad left None: counts as 0
    distributed.average_gradients(model)
    torch.save({"weight": model.weight.detach(), "grad": model.weight.grad, "bias_grad": model.bias.grad},
               f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_gradients_are_averaged_over_ranks_and_parameters_start_equal(tmp_path):
    torch.multiprocessing.spawn(_average_on_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.manual_seed(0)
    rank0_weight = torch.nn.Linear(3, 2).weight.detach()
    assert all(torch.equal(r["weight"], rank0_weight) for r in ranks)
    for r in ranks:
        assert torch.equal(r["grad"], torch.full((2, 3), 1.5)) and torch.equal(r["bias_grad"], torch.zeros(2))


def test_console_shows_the_data_used_and_one_line_per_evaluated_epoch(tmp_path, capsys):
    config = tiny_config("cs", "data.root=null", "data.fallback=embedded", "train.epochs=3", "train.eval_every=2")
    train(config, tmp_path / "run", progress=False)
    out = capsys.readouterr().out
    assert re.search(r"data +(MNIST-format IDX files in \S+|embedded natural-image patches \(no MNIST files found\)): "
                     r"40 train / 0 val / 20 test signals of shape \(1, 28, 28\)", out), out
    assert re.search(r"operator +GaussianCS \(1, 28, 28\) -> \(160,\), \|\|A\|\| = [\d.]+ \(exact\)", out)
    assert re.search(r"model +fc, [\d,]+ parameters", out) and "run directory" in out
    assert re.search(r"regulariser +sja\+sj, lambda_sja auto, lambda_sj auto \(seed Algorithm 4, kappa 20\)", out)
    assert [line.split("  ")[0] for line in out.splitlines() if line.startswith("epoch ")] == ["epoch 2/3", "epoch 3/3"]


def test_evaluate_prints_a_method_by_metric_table(tmp_path, capsys):
    train(tiny_config("cs"), tmp_path / "run", progress=False)
    capsys.readouterr()
    assert evaluate_main([str(tmp_path / "run")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.match(r"scored: 20 test signals of .*; checkpoint .*checkpoint_last.pt \(after epoch \d+\)$", lines[0])
    lines = lines[2:]
    assert re.match(r"method +PSNR \(dB\) +SSIM +NMSE$", lines[0]), lines[0]
    names = [line.split()[0] for line in lines[1:6]]
    assert names[:3] == ["network", "adjoint", "pseudo_inverse"] and names[3].startswith("tikhonov(mu=")
    assert any(line.startswith("generalisation gap") for line in lines)


def test_a_plugin_operator_trains_from_the_config(tmp_path):
    config = load_config(None, [f"plugins=[{ROOT / 'examples' / 'operators.py'}]", "operator.name=horizontal_gradient",
                                "operator.kwargs={}", "model.name=dncnn", "model.kwargs={depth: 3, features: 8}",
                                "data.n_train=20", "data.n_test=10", "train.batch_size=10", *COMMON])
    history = train(config, tmp_path / "run", progress=False)
    assert len(history) == 2 and history[-1]["probe_max_sja"] > 0


def test_a_plugin_network_trains_from_the_config_twice_in_one_process(tmp_path):
    overrides = [f"plugins=[{ROOT / 'examples' / 'networks.py'}]", "model.name=landweber",
                 "model.kwargs={iterations: 3}", "data.n_train=20", "data.n_test=10", "train.batch_size=10", *COMMON]
    first = train(load_config(None, overrides), tmp_path / "a", progress=False)
    second = train(load_config(None, overrides), tmp_path / "b", progress=False)  # the file is imported once
    assert first[-1]["test_psnr"] == second[-1]["test_psnr"] and first[-1]["test_psnr"] > 0


def test_missing_plugin_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"config key 'plugins': cannot import 'nowhere.py'"):
        train(load_config(None, ["plugins=[nowhere.py]", *COMMON]), tmp_path / "run", progress=False)


def test_free_form_arguments_merge_entry_by_entry_and_reset_with_a_new_component():
    assert load_config(None, ["operator.kwargs.n_measurements=80"])["operator"]["kwargs"] == \
        {"n_measurements": 80, "seed": 0}
    assert load_config(None, ["operator.name=identity"])["operator"]["kwargs"] == {}
    sr = load_config(ROOT / "configs" / "sr_x2.yaml", ["operator.kwargs.factor=4", "model.kwargs={n_blocks: 1}"])
    assert sr["operator"]["kwargs"]["factor"] == 4 and sr["operator"]["kwargs"]["kernel_size"] == 5
    assert sr["model"]["kwargs"] == {"n_blocks": 1}


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_shipped_config_builds_at_full_size(name):
    from jacinv.experiment import build_experiment

    config = load_config(ROOT / "configs" / f"{name}.yaml", ["data.fallback=embedded"])
    exp = build_experiment(config)
    assert len(exp.train_set) == config["data"]["n_train"] and len(exp.test_set) == config["data"]["n_test"]


def test_per_rank_operator_draws_differ_only_when_asked(monkeypatch):
    from jacinv import distributed
    from jacinv.experiment import build_experiment

    base = ["data.n_train=8", "data.n_test=4", "data.downsample=4", "model.kwargs={chans: 4, num_pool_layers: 2}"]
    masks = {}
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "world", lambda rank=rank: (rank, 2))
        for per_rank in (False, True):
            config = load_config(ROOT / "configs" / "mri_4x.yaml", [*base, f"operator.per_rank={str(per_rank).lower()}"])
            masks[rank, per_rank] = build_experiment(config).operator.mask
    assert torch.equal(masks[0, False], masks[1, False])
    assert not torch.equal(masks[0, True], masks[1, True])


def test_validation_split_is_disjoint_and_evaluated(tmp_path):
    from jacinv.experiment import build_experiment

    config = tiny_config("cs", "data.n_val=10")
    exp = build_experiment(config)
    train_x, val_x = exp.train_set.signals, exp.val_set.signals
    assert len(val_x) == 10 and not any(bool((v == train_x).flatten(1).all(1).any()) for v in val_x)
    history = train(config, tmp_path / "run", progress=False)
    assert "val_psnr" in history[-1] and "val_loss" in history[-1]


def test_result_files_written_side_by_side_do_not_collide(tmp_path, monkeypatch):
    """Two processes writing the same figure or JSON use their own temporary files (the parallel shift
    evaluations of one run once renamed each other's half-written shift.png away)."""
    import os

    from jacinv.checkpoint import temporary_twin

    path = tmp_path / "shift.png"
    names = []
    for pid in (101, 202):  # two processes
        monkeypatch.setattr(os, "getpid", lambda pid=pid: pid)
        names.append(temporary_twin(path))
    assert names[0] != names[1] and path not in names
    assert all(n.parent == tmp_path and n.suffix == ".png" for n in names)  # beside it, same format
