"""Bad input, as a new user makes it: every case gets a clear error that names the argument or file and
the value.  The API raises a typed exception; the command line prints one 'error:' line and exits 2,
with no traceback."""
import gzip
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from jacinv.bounds import covering_number, generalization_bound
from jacinv.cli import evaluate_main, train_main
from jacinv.config import ConfigError, load_config, parse_override
from jacinv.datasets import FastMRISliceDataset, InverseProblemDataset, folder_patches, load_idx
from jacinv.metrics import psnr
from jacinv.models import build_model, register_model
from jacinv.noise import BoundedNoise, GaussianNoise
from jacinv.operators import BlurDecimate, GaussianCS, KSpaceSubsample, MatrixOperator, check_adjoint
from jacinv.regularizers import build_regularizer, jacobian_spectral_norm

CS = GaussianCS((1, 8, 8), 20, seed=0)
KSPACE = KSpaceSubsample((1, 8, 8))


def write_png(path: Path, side: int = 16) -> Path:
    from skimage import io

    path.parent.mkdir(parents=True, exist_ok=True)
    io.imsave(path, (np.random.default_rng(0).random((side, side)) * 255).astype(np.uint8), check_contrast=False)
    return path


def write_idx(path: Path, n: int = 10, truncate: int = 0, magic: bytes = b"\x00\x00\x08\x03") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = magic + b"".join(v.to_bytes(4, "big") for v in (n, 28, 28)) + bytes(n * 28 * 28)
    path.write_bytes(body[: len(body) - truncate])
    return path


def write_h5(path: Path, with_kspace: bool = True, truncate: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        name = "kspace" if with_kspace else "image"
        fh.create_dataset(name, data=np.ones((2, 16, 16), dtype=np.complex64))
    if truncate:
        path.write_bytes(path.read_bytes()[:800])
    return path


# ----------------------------------------------------------------------------------------- the API

API_CASES = [
    # operators
    ("int image into GaussianCS", lambda: CS(torch.randint(0, 255, (2, 1, 8, 8))), TypeError,
     r"GaussianCS.forward: x must be a floating-point tensor, got torch.int64"),
    ("bool image into GaussianCS", lambda: CS(torch.ones(2, 1, 8, 8, dtype=torch.bool)), TypeError,
     r"x must be a floating-point tensor, got torch.bool"),
    ("int image into KSpaceSubsample", lambda: KSPACE(torch.randint(0, 9, (2, 1, 8, 8))), TypeError,
     r"KSpaceSubsample.forward: x must be a floating-point tensor, got torch.int64"),
    ("int measurement into an adjoint", lambda: CS.adjoint(torch.zeros(2, 20, dtype=torch.int32)), TypeError,
     r"GaussianCS.adjoint: y must be a floating-point tensor, got torch.int32"),
    ("complex image", lambda: CS(torch.zeros(2, 1, 8, 8, dtype=torch.complex64)), TypeError,
     r"x must be real \(complex data uses a trailing dimension of size 2\), got torch.complex64"),
    ("wrong image shape", lambda: CS(torch.zeros(2, 1, 8, 9)), ValueError,
     r"x must have shape \(B, 1, 8, 8\), got \(2, 1, 8, 9\)"),
    ("image without batch dimension", lambda: CS(torch.zeros(1, 8, 8)), ValueError,
     r"x must have shape \(B, 1, 8, 8\), got \(1, 8, 8\)"),
    ("zero measurements", lambda: GaussianCS((1, 8, 8), 0), ValueError, r"n_measurements must be an int >= 1, got 0"),
    ("zero in in_shape", lambda: GaussianCS((1, 0, 8), 10), ValueError,
     r"in_shape must contain positive ints only, got \(1, 0, 8\)"),
    ("factor not dividing the image", lambda: BlurDecimate((1, 10, 10), factor=3), ValueError,
     r"factor 3 must divide the image size \(H, W\) = \(10, 10\)"),
    ("unknown kernel", lambda: BlurDecimate((1, 8, 8), factor=2, kernel="box"), ValueError,
     r"kernel must be one of \['gaussian', 'uniform', 'bicubic'\], got 'box'"),
    ("zero blur width", lambda: BlurDecimate((1, 8, 8), factor=2, sigma=0.0), ValueError,
     r"sigma must be a finite number in \(0.0, inf\], got 0.0"),
    ("mask of the wrong width", lambda: KSpaceSubsample((1, 8, 8), mask=torch.ones(7, dtype=torch.bool)), ValueError,
     r"mask must have shape \(W,\) = \(8,\), got \(7,\)"),
    ("mask sampling nothing", lambda: KSpaceSubsample((1, 8, 8), mask=torch.zeros(8, dtype=torch.bool)), ValueError,
     r"mask samples no column"),
    ("non-binary mask", lambda: KSpaceSubsample((1, 8, 8), mask=torch.full((8,), 0.5)), ValueError,
     r"mask must be boolean or contain only 0 and 1"),
    ("matrix with a NaN", lambda: MatrixOperator(torch.tensor([[1.0, float("nan")]]), in_shape=(2,)), ValueError,
     r"non-finite values .* the first at index \(0, 1\)"),
    ("check_adjoint of a function", lambda: check_adjoint(lambda x: x), TypeError,
     r"operator must be a LinearOperator, got function"),
    # noise
    ("negative noise radius", lambda: BoundedNoise(-1.0), ValueError, r"radius must be a finite number in \[0.0, inf\], got -1.0"),
    ("unknown noise mode", lambda: BoundedNoise(0.1, mode="cube"), ValueError,
     r"mode must be one of \['sphere', 'ball'\], got 'cube'"),
    ("negative Gaussian sigma", lambda: GaussianNoise(-1), ValueError, r"sigma must be a finite number in \[0.0, inf\], got -1.0"),
    ("infinite noise radius", lambda: BoundedNoise(float("inf")), ValueError, r"radius must be a finite number .* got inf"),
    # data sets
    ("NaN in the signals", lambda: InverseProblemDataset(torch.full((3, 1, 8, 8), float("nan")), CS), ValueError,
     r"signals contains 192 non-finite values \(NaN or inf\), the first at index \(0, 0, 0, 0\)"),
    ("signals outside [0, 1]", lambda: InverseProblemDataset(torch.full((3, 1, 8, 8), 2.0), CS), ValueError,
     r"signals must lie in \[0, 1\] \(scale them first\), got values in \[2, 2\]"),
    ("integer signals", lambda: InverseProblemDataset(torch.zeros((3, 1, 8, 8), dtype=torch.uint8), CS), TypeError,
     r"signals must be a floating-point tensor, got torch.uint8"),
    ("signals of the wrong shape", lambda: InverseProblemDataset(torch.zeros(3, 1, 9, 9), CS), ValueError,
     r"signals must have shape \(B, 1, 8, 8\), got \(3, 1, 9, 9\)"),
    ("unknown noise_mode", lambda: InverseProblemDataset(torch.zeros(3, 1, 8, 8), CS, noise_mode="once"), ValueError,
     r"noise_mode must be one of .* got 'once'"),
    # models
    ("unknown model", lambda: build_model("resnet", CS), ValueError, r"model name must be one of \[.*\], got 'resnet'"),
    ("varnet on a CS operator", lambda: build_model("varnet", CS), ValueError,
     r"model 'varnet' needs a k-space operator .* got GaussianCS \(1, 8, 8\) -> \(20,\)"),
    ("no unrolled iterations", lambda: build_model("unrolled", CS, iterations=0), ValueError,
     r"iterations must be an int >= 1, got 0"),
    ("non-positive MoDL weight", lambda: build_model("modl", CS, mu=-0.1), ValueError,
     r"mu must be a finite number in \(0.0, inf\], got -0.1"),
    ("no CG steps", lambda: build_model("modl", CS, cg_iters=0), ValueError, r"cg_iters must be an int >= 1, got 0"),
    ("unet on a CS operator", lambda: build_model("unet", CS), ValueError, r"model 'unet' needs a k-space operator"),
    ("edsr on a CS operator", lambda: build_model("edsr", CS), ValueError, r"model 'edsr' needs a decimating operator"),
    ("a model name registered twice", lambda: register_model("fc", lambda operator: None), ValueError,
     r"model name 'fc' is already registered"),
    ("an unknown model argument", lambda: build_model("dncnn", CS, width=3), TypeError, r"unexpected keyword argument 'width'"),
    # regularisers
    ("unknown regulariser", lambda: build_regularizer("sjx"), ValueError, r"unknown regularizer name 'sjx'"),
    ("model-aware without an operator", lambda: build_regularizer("sja"), ValueError,
     r"'sja' is model-aware and needs operator= \(a LinearOperator\), got NoneType"),
    ("negative penalty weight", lambda: build_regularizer("sj", lambda_j=-1.0), ValueError,
     r"lambda for 'sj' must be a finite number in \[0.0, inf\], got -1.0"),
    ("non-positive kappa", lambda: build_regularizer("sj", kappa=0.0), ValueError,
     r"kappa must be a finite number in \(0.0, inf\], got 0.0"),
    ("negative power iterations", lambda: jacobian_spectral_norm(torch.nn.Identity(), torch.zeros(1, 3), iters=-1),
     ValueError, r"iters must be an int >= 0, got -1"),
    # bounds and metrics
    ("delta outside (0, 1)", lambda: generalization_bound(1.0, 1.0, 0.1, 1.0, 10, delta=1.5), ValueError,
     r"delta must be a finite number in \(0.0, 1.0\), got 1.5"),
    ("zero training set", lambda: generalization_bound(1.0, 1.0, 0.1, 1.0, 0), ValueError, r"n_train must be an int >= 1, got 0"),
    ("zero covering radius", lambda: covering_number(0.0, 1.0, 2), ValueError, r"gamma must be a finite number in \(0.0"),
    ("metric on shapes that differ", lambda: psnr(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5)), ValueError,
     r"gt and pred must have the same shape"),
    # configuration
    ("unknown config key", lambda: load_config(None, ["train.epoch=3"]), ConfigError,
     r"unknown config key 'train.epoch'; expected one of"),
    ("wrong type for a key", lambda: load_config(None, ["train.epochs=many"]), ConfigError,
     r"config key 'train.epochs' must be an int >= 1, got 'many'"),
    ("override without '='", lambda: parse_override("train.epochs"), ConfigError,
     r"override 'train.epochs' must look like key=value"),
    ("override with broken YAML", lambda: parse_override("model.kwargs={depth: 5"), ConfigError,
     r"override 'model.kwargs=\{depth: 5': the value is not valid YAML .* at line 1"),
]


@pytest.mark.parametrize("what, call, error, match", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input(what, call, error, match):
    with pytest.raises(error, match=match):
        call()


FILE_CASES = [
    ("IDX with a bad magic number", lambda d: load_idx(write_idx(d / "x-ubyte", magic=b"\x01\x02\x03\x04")), ValueError,
     r"IDX file .*x-ubyte has no valid magic number \(got 01020304\)"),
    ("truncated IDX", lambda d: load_idx(write_idx(d / "x-ubyte", truncate=100)), ValueError,
     r"IDX file .*x-ubyte is truncated or padded: header says shape \(10, 28, 28\)"),
    ("gzip IDX that is not gzip", lambda d: load_idx(write_idx(d / "x-ubyte.gz")), ValueError,
     r"IDX file .*x-ubyte.gz cannot be read"),
    ("empty image folder", lambda d: folder_patches((d / "empty").mkdir() or d / "empty", 8), ValueError,
     r"image folder .*empty holds no images"),
    ("truncated PNG", lambda d: folder_patches(truncated_png(d), 8), ValueError, r"image file .*a.png cannot be read"),
    ("patch larger than the images", lambda d: folder_patches(write_png(d / "im" / "a.png").parent, 32), ValueError,
     r"image file .*a.png \(16x16\) is smaller than patch_size 32"),
    ("one image and a train/test split", lambda d: folder_patches(write_png(d / "im" / "a.png").parent, 8, split="train"),
     ValueError, r"image folder .* has 1 image\(s\): too few to split off a test set"),
    ("HDF5 without k-space", lambda d: FastMRISliceDataset(write_h5(d / "v.h5", with_kspace=False).parent), ValueError,
     r"fastMRI file .*v.h5 cannot be indexed: .*has no 'kspace' dataset"),
    ("truncated HDF5", lambda d: FastMRISliceDataset(write_h5(d / "v.h5", truncate=True).parent, target="kspace"),
     ValueError, r"fastMRI file .*v.h5 cannot be indexed"),
    ("missing data folder", lambda d: FastMRISliceDataset(d / "nowhere"), FileNotFoundError,
     r"fastMRI directory .*nowhere does not exist"),
]


def truncated_png(d: Path) -> Path:
    path = write_png(d / "im" / "a.png")
    path.write_bytes(path.read_bytes()[:60])
    return path.parent


@pytest.mark.parametrize("what, call, error, match", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_api_bad_files(what, call, error, match, tmp_path):
    with pytest.raises(error, match=match):
        call(tmp_path)


# ----------------------------------------------------------------------------------------- the CLI

TINY = ["data.n_train=20", "data.n_test=10", "train.batch_size=10", "train.epochs=1", "train.probe_size=2",
        "train.probe_iters=2", "model.kwargs={width: 32}"]


def bad_folder(kind):
    def make(d: Path) -> list[str]:
        root = d / "images"
        root.mkdir()
        if kind == "truncated":
            root = truncated_png(d)
            write_png(root / "b.png")
            return ["data.source=folder", f"data.root={root}", "data.patch_size=8"]
        elif kind == "small":
            write_png(root / "a.png")
            write_png(root / "b.png")
        return ["data.source=folder", f"data.root={root}"]
    return make


def bad_idx(**kw):
    def make(d: Path) -> list[str]:
        for split in ("train", "t10k"):
            write_idx(d / "mnist" / f"{split}-images-idx3-ubyte", **kw)
        return ["data.source=mnist", f"data.root={d / 'mnist'}"]
    return make


def bad_fastmri(**kw):
    def make(d: Path) -> list[str]:
        write_h5(d / "fastmri" / "a.h5")
        write_h5(d / "fastmri" / "b.h5", **kw)
        return ["data.source=fastmri", f"data.root={d / 'fastmri'}", "data.patch_size=8",
                "operator.name=kspace", "operator.kwargs={}", "model.name=unet", "model.kwargs={num_pool_layers: 1}"]
    return make


def bad_yaml_file(d: Path) -> list[str]:
    path = d / "bad.yaml"
    path.write_text("train:\n  epochs: 3\n  lr: [0.1\nmodel: {name: fc}\n")
    return ["--config", str(path)]


def no_file(d: Path) -> list[str]:
    return ["--config", str(d / "missing.yaml")]


CLI_CASES = [
    # keys
    ("negative seed", ["seed=-1"], r"config key 'seed' must be an int >= 0, got -1"),
    ("negative validation split", ["data.n_val=-5"], r"config key 'data.n_val' must be an int >= 0, got -5"),
    ("empty training set", ["data.n_train=0"], r"config key 'data.n_train' must be an int >= 1 or null, got 0"),
    ("empty test set", ["data.n_test=0"], r"config key 'data.n_test' must be an int >= 1 or null, got 0"),
    ("zero patch size", ["data.patch_size=0"], r"config key 'data.patch_size' must be an int >= 1, got 0"),
    ("two channels", ["data.channels=2"], r"config key 'data.channels' must be one of \[1, 3\], got 2"),
    ("zero downsampling", ["data.downsample=0"], r"config key 'data.downsample' must be an int >= 1, got 0"),
    ("too many signals", ["data.n_train=100000"], r"data.n_train \(100000\) \+ data.n_val \(0\) asks for 100000 signals"),
    ("unknown data source", ["data.source=web"], r"config key 'data.source' must be one of \['embedded', 'mnist', 'folder', 'fastmri'\], got 'web'"),
    ("negative noise radius", ["noise.radius=-1"], r"config key 'noise.radius' must be a finite number >= 0, got -1"),
    ("negative noise sigma", ["noise.kind=gaussian", "noise.sigma=-1"],
     r"config key 'noise.sigma' must be a finite number >= 0, got -1"),
    ("unknown noise kind", ["noise.kind=laplace"], r"config key 'noise.kind' must be one of \['bounded', 'gaussian', 'none'\], got 'laplace'"),
    ("unknown noise mode", ["noise.mode=cube"], r"config key 'noise.mode' must be one of \['sphere', 'ball'\], got 'cube'"),
    ("negative learning rate", ["train.lr=-1"], r"config key 'train.lr' must be a finite number > 0, got -1"),
    ("zero epochs", ["train.epochs=0"], r"config key 'train.epochs' must be an int >= 1, got 0"),
    ("zero batch size", ["train.batch_size=0"], r"config key 'train.batch_size' must be an int >= 1, got 0"),
    ("zero probe size", ["train.probe_size=0"], r"config key 'train.probe_size' must be an int >= 1, got 0"),
    ("unknown loss", ["train.loss=l1"], r"config key 'train.loss' must be one of \['l2', 'mse'\], got 'l1'"),
    ("unknown scheduler", ["train.scheduler=linear"], r"config key 'train.scheduler' must be one of \['none', 'cosine', 'step'\], got 'linear'"),
    ("allocator switch not a boolean", ["train.keep_freed_memory=maybe"],
     r"config key 'train.keep_freed_memory' must be true or false, got 'maybe'"),
    ("unknown device", ["train.device=tpu"], r"config key 'train.device' must be one of auto, cpu, cuda, cuda:N, got 'tpu'"),
    ("unknown key", ["train.epoch=3"], r"unknown config key 'train.epoch'"),
    ("value of the wrong type", ["train.epochs=3.5"], r"config key 'train.epochs' must be an int >= 1, got 3.5"),
    ("broken YAML override", ["model.kwargs={width: 5"], r"override 'model.kwargs=\{width: 5': the value is not valid YAML"),
    ("override without '='", ["train.epochs"], r"override 'train.epochs' must look like key=value"),
    # components
    ("unknown operator", ["operator.name=radon"], r"unknown operator name 'radon'"),
    ("zero measurements", ["operator.kwargs={n_measurements: 0}"], r"config key 'operator'.*n_measurements must be an int >= 1, got 0"),
    ("unknown model", ["model.name=resnet"], r"model name must be one of .* got 'resnet'"),
    ("varnet on CS", ["model.name=varnet", "model.kwargs={}"], r"config key 'model' \('varnet'\) does not fit the operator GaussianCS"),
    ("unrolled with no iterations", ["model.name=unrolled", "model.kwargs={iterations: 0}"],
     r"config key 'model' \('unrolled'\).*iterations must be an int >= 1, got 0"),
    ("MoDL with a negative weight", ["model.name=modl", "model.kwargs={mu: -1.0}"],
     r"config key 'model' \('modl'\).*mu must be a finite number in \(0.0, inf\], got -1.0"),
    ("model argument that does not exist", ["model.kwargs={depth: 3}"], r"config key 'model' \('fc'\).*unexpected keyword argument 'depth'"),
    ("unknown regulariser", ["regularizer.name=sjx"], r"config key 'regularizer.name' must be one of \['none', .*\], got 'sjx'"),
    ("negative penalty weight", ["regularizer.lambda_ja=-1"], r"config key 'regularizer.lambda_ja' must be a finite number >= 0 or 'auto', got -1"),
    ("lazy penalty every 0 steps", ["regularizer.every=0"], r"config key 'regularizer.every' must be an int >= 1, got 0"),
    ("unknown regulariser option", ["regularizer.options={iter: 3}"], r"unknown option\(s\) \['iter'\] for regularizer 'sja\+sj'"),
    ("missing plug-in", ["plugins=[nowhere.py]"], r"config key 'plugins': cannot import 'nowhere.py'"),
    # files
    ("missing config file", no_file, r"config file .*missing.yaml does not exist"),
    ("config file with broken YAML", bad_yaml_file, r"config file .*bad.yaml is not valid YAML: .* at line 4"),
    ("empty image folder", bad_folder("empty"), r"config key 'data' \(source 'folder', root .*images\): image folder .* holds no images"),
    ("truncated PNG", bad_folder("truncated"), r"config key 'data' \(source 'folder', root .*\): image file .*a.png cannot be read"),
    ("images smaller than the patch", bad_folder("small"), r"image file .*[ab].png \(16x16\) is smaller than patch_size 28"),
    ("missing image folder", lambda d: ["data.source=folder", f"data.root={d / 'nowhere'}"],
     r"image folder .*nowhere does not exist"),
    ("IDX with a bad magic number", bad_idx(magic=b"\x01\x02\x03\x04"), r"config key 'data' \(source 'mnist', root .*mnist\): IDX file .*has no valid magic number"),
    ("truncated IDX", bad_idx(truncate=10), r"config key 'data' \(source 'mnist'.*train-images-idx3-ubyte is truncated"),
    ("missing IDX folder", lambda d: ["data.source=mnist", f"data.root={d / 'nowhere'}"], r"IDX directory .*nowhere does not exist"),
    ("HDF5 without k-space", bad_fastmri(with_kspace=False), r"config key 'data' \(source 'fastmri'.*b.h5 cannot be indexed.*no 'kspace'"),
    ("truncated HDF5", bad_fastmri(truncate=True), r"config key 'data' \(source 'fastmri'.*b.h5 cannot be indexed"),
    ("two good fastMRI volumes", lambda d: [*bad_fastmri()(d), "data.n_train=2", "data.n_test=2",
                                            "train.batch_size=2"], None),  # the control case: it trains
]


def _train_args(spec, tmp_path: Path) -> list[str]:
    extra = spec(tmp_path) if callable(spec) else list(spec)
    return [*TINY, *extra, "--run-dir", str(tmp_path / "run"), "--no-progress"]


@pytest.mark.parametrize("what, spec, match", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(what, spec, match, tmp_path, capsys):
    code = train_main(_train_args(spec, tmp_path))
    err = capsys.readouterr().err
    if match is None:
        assert code == 0, err
        return
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(match, lines[0]), err
    assert not (tmp_path / "run" / "checkpoint_last.pt").exists()


def test_cuda_device_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert train_main(_train_args(["train.device=cuda"], tmp_path)) == 2
    assert "config key 'train.device' is 'cuda', but no CUDA GPU is available here" in capsys.readouterr().err


def test_debug_prints_the_traceback_too(tmp_path, capsys):
    assert train_main([*_train_args(["seed=-1"], tmp_path), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "error: config key 'seed' must be an int >= 0, got -1" in err


@pytest.mark.parametrize("argv, match", [
    (["--stop-after", "0"], r"--stop-after must be a positive number of epochs, got 0"),
    (["--epochs", "3"], r"unrecognized arguments: --epochs"),
])
def test_cli_bad_flags_exit_2(argv, match, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main(argv)
    assert exit_info.value.code == 2
    assert re.search(match, capsys.readouterr().err)


# ------------------------------------------------------------------------------- checkpoints and evaluation

@pytest.fixture
def trained_run(tmp_path):
    run = tmp_path / "run"
    assert train_main([*TINY, "train.epochs=2", "--run-dir", str(run), "--no-progress"]) == 0
    return run


def damage(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def test_resume_without_a_run_is_a_clear_error(tmp_path, capsys):
    assert train_main(["--resume", str(tmp_path / "nowhere")]) == 2
    assert re.search(r"error: .*nowhere holds no config.yaml; expected a run directory written by train.py", capsys.readouterr().err)


def test_damaged_checkpoint_falls_back_one_epoch_and_says_so(trained_run, capsys):
    damage(trained_run / "checkpoint_last.pt")
    with pytest.warns(UserWarning, match=r"checkpoint .*checkpoint_last.pt is damaged .* falling back to the "
                                         r"previous checkpoint .*checkpoint_prev.pt"):
        assert train_main(["--resume", str(trained_run), "train.epochs=3", "--no-progress"]) == 0
    history = __import__("json").loads((trained_run / "metrics.json").read_text())
    assert [row["epoch"] for row in history] == [0, 1, 2]  # epoch 1 trained again from epoch 0's checkpoint


def test_a_save_interrupted_between_its_renames_resumes_from_the_previous_checkpoint(trained_run):
    (trained_run / "checkpoint_last.pt").unlink()  # killed after moving it to checkpoint_prev.pt
    with pytest.warns(UserWarning, match=r"no checkpoint at .*checkpoint_last.pt; falling back to the previous "
                                         r"checkpoint .*checkpoint_prev.pt"):
        assert train_main(["--resume", str(trained_run), "train.epochs=3", "--no-progress"]) == 0
    history = __import__("json").loads((trained_run / "metrics.json").read_text())
    assert [row["epoch"] for row in history] == [0, 1, 2]


@pytest.mark.parametrize("command", ["resume", "evaluate"])
def test_damaged_checkpoints_without_a_fallback_are_named(trained_run, command, capsys):
    damage(trained_run / "checkpoint_last.pt")
    damage(trained_run / "checkpoint_prev.pt")
    code = (train_main(["--resume", str(trained_run), "--no-progress"]) if command == "resume"
            else evaluate_main([str(trained_run)]))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "weights_only=False" not in err
    assert re.search(r"error: checkpoint .*checkpoint_prev.pt is damaged and cannot be read", err), err


@pytest.mark.parametrize("argv, match", [
    (["data.n_test=abc"], r"error: config key 'data.n_test' must be an int >= 1 or null, got 'abc'"),
    (["data.n_test=0"], r"error: config key 'data.n_test' must be an int >= 1 or null, got 0"),
])
def test_evaluate_bad_overrides(trained_run, argv, match, capsys):
    assert evaluate_main([str(trained_run), *argv]) == 2
    assert re.search(match, capsys.readouterr().err)


def test_evaluate_missing_run_and_bad_delta(tmp_path, capsys):
    assert evaluate_main([str(tmp_path / "nowhere")]) == 2
    assert re.search(r"error: .*nowhere holds no config.yaml; expected a run directory written by train.py", capsys.readouterr().err)
    with pytest.raises(SystemExit):
        evaluate_main([str(tmp_path), "--bound", "--delta", "2"])
    assert "--delta must lie in (0, 1), got 2.0" in capsys.readouterr().err


def test_gzip_file_written_by_gzip_reads(tmp_path):
    """The control for the 'not gzip' case: a real gzipped IDX file loads."""
    raw = write_idx(tmp_path / "x-ubyte")
    gz = tmp_path / "y-ubyte.gz"
    gz.write_bytes(gzip.compress(raw.read_bytes()))
    assert load_idx(gz).shape == (10, 28, 28)
