import gzip

import h5py
import numpy as np
import pytest
import torch
from skimage import io

from jacinv.datasets import (FastMRISliceDataset, InverseProblemDataset, embedded_dataset, find_idx,
                             folder_patches, load_idx, load_mnist_images)
from jacinv.noise import BoundedNoise
from jacinv.operators import GaussianCS, fft2c


def write_idx(path, array, gz=False):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_images_and_labels_round_trip(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, gz)
    np.testing.assert_array_equal(load_mnist_images(tmp_path, "test"), images)
    np.testing.assert_array_equal(load_idx(find_idx(tmp_path, "test", "labels")), labels)


def test_idx_truncated_and_bad_magic(tmp_path):
    write_idx(tmp_path / "a-ubyte", np.zeros((3, 4, 4), np.uint8))
    data = (tmp_path / "a-ubyte").read_bytes()
    (tmp_path / "short-ubyte").write_bytes(data[:-5])
    with pytest.raises(ValueError, match=r"short-ubyte is truncated or padded: header says shape \(3, 4, 4\)"):
        load_idx(tmp_path / "short-ubyte")
    (tmp_path / "junk-ubyte").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="junk-ubyte has no valid magic number"):
        load_idx(tmp_path / "junk-ubyte")
    with pytest.raises(FileNotFoundError, match="no train-images-idx3-ubyte"):
        find_idx(tmp_path, "train")


def write_images(root):
    rng = np.random.default_rng(0)
    (root / "sub" / "deeper").mkdir(parents=True)
    for k in range(5):
        folder = root if k < 2 else root / "sub" / "deeper"
        img = rng.integers(0, 256, (40, 48, 3) if k % 2 else (40, 48), dtype=np.uint8)
        io.imsave(folder / f"img{k}.png", img, check_contrast=False)


def test_folder_patches_grid_split_and_channels(tmp_path):
    write_images(tmp_path)
    grey = folder_patches(tmp_path, 16, channels=1)
    assert grey.shape == (5 * 2 * 3, 1, 16, 16) and 0 <= float(grey.min()) and float(grey.max()) <= 1
    rgb = folder_patches(tmp_path, 16, channels=3, mode="random", patches_per_image=4, seed=1)
    assert rgb.shape == (20, 3, 16, 16)
    assert torch.equal(rgb, folder_patches(tmp_path, 16, channels=3, mode="random", patches_per_image=4, seed=1))
    train = folder_patches(tmp_path, 16, split="train", seed=3)
    test = folder_patches(tmp_path, 16, split="test", seed=3)
    assert train.shape[0] + test.shape[0] == grey.shape[0]
    # split by image: no test patch equals a training patch
    assert not any(bool((t == train).flatten(1).all(1).any()) for t in test)


def test_folder_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder_patches(tmp_path / "missing", 8)
    with pytest.raises(ValueError, match="holds no images"):
        folder_patches(tmp_path, 8)
    write_images(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match=r"broken.png cannot be read"):
        folder_patches(tmp_path, 16)
    with pytest.warns(UserWarning, match="skipping .*broken.png"):
        patches = folder_patches(tmp_path, 16, skip_corrupt=True)
    assert patches.shape[0] == 30


def write_fastmri(root):
    rng = np.random.default_rng(0)
    k1 = (rng.standard_normal((3, 16, 12)) + 1j * rng.standard_normal((3, 16, 12))).astype(np.complex64)
    with h5py.File(root / "file_single.h5", "w") as fh:
        fh["kspace"] = k1
        fh["reconstruction_esc"] = rng.random((3, 8, 8)).astype(np.float32)
        fh.attrs["max"] = 2.5
        fh.attrs["acquisition"] = "CORPD_FBK"
    k2 = (rng.standard_normal((2, 4, 16, 12)) + 1j * rng.standard_normal((2, 4, 16, 12))).astype(np.complex64)
    with h5py.File(root / "file_multi.h5", "w") as fh:
        fh["kspace"] = k2
        fh["reconstruction_rss"] = rng.random((2, 8, 8)).astype(np.float32)
        fh.attrs["max"] = 1.5
    with h5py.File(root / "file_test.h5", "w") as fh:
        fh["kspace"] = k1[:1]
        fh["mask"] = np.arange(12) % 3 == 0
    return k1, k2


def test_fastmri_single_and_multi_coil(tmp_path):
    k1, k2 = write_fastmri(tmp_path)
    ds = FastMRISliceDataset(tmp_path, target="kspace", crop=(8, 8))
    assert len(ds) == 3 + 2 + 1
    items = {(it["fname"], it["slice"]): it for it in (ds[i] for i in range(len(ds)))}
    multi = items[("file_multi.h5", 1)]
    assert multi["kspace"].shape == (4, 16, 12, 2)
    # the target from k-space is the RSS of the inverse centred FFT, centre-cropped
    k = torch.view_as_real(torch.from_numpy(k2[1]))
    image = torch.linalg.vector_norm(torch.view_as_complex(fft2c.__globals__["ifft2c"](k).contiguous()), dim=0)
    torch.testing.assert_close(multi["target"][0], image[4:12, 2:10])
    assert items[("file_test.h5", 0)]["mask"].shape == (12,)
    single = items[("file_single.h5", 2)]
    assert single["kspace"].shape == (1, 16, 12, 2) and single["max"] == 2.5


def test_fastmri_reads_file_targets_and_reuses_its_index(tmp_path):
    write_fastmri(tmp_path)
    (tmp_path / "file_test.h5").unlink()
    (tmp_path / "file_multi.h5").unlink()
    ds = FastMRISliceDataset(tmp_path, target="reconstruction_esc", crop=(6, 6))
    assert ds[0]["target"].shape == (1, 6, 6)
    index = tmp_path / ".jacinv_fastmri_index.json"
    assert index.exists()
    stamp = index.stat().st_mtime_ns
    FastMRISliceDataset(tmp_path, target="reconstruction_esc", crop=(6, 6))
    assert index.stat().st_mtime_ns == stamp  # nothing re-indexed


def test_fastmri_errors(tmp_path):
    with pytest.raises(ValueError, match="holds no .h5 files"):
        FastMRISliceDataset(tmp_path)
    write_fastmri(tmp_path)
    with pytest.raises(ValueError, match=r"file_multi.h5 has no 'reconstruction_esc' dataset"):
        FastMRISliceDataset(tmp_path, target="reconstruction_esc")
    with h5py.File(tmp_path / "nok.h5", "w") as fh:
        fh["image"] = np.zeros((1, 4, 4))
    with pytest.raises(ValueError, match=r"nok.h5 has no 'kspace' dataset"):
        FastMRISliceDataset(tmp_path, target="kspace")
    with pytest.warns(UserWarning, match="skipping .*nok.h5"):
        assert len(FastMRISliceDataset(tmp_path, target="kspace", skip_corrupt=True)) == 6


@pytest.mark.parametrize("name, shape", [("patches", (1, 28, 28)), ("digits", (1, 8, 8)), ("brain", (1, 224, 192))])
def test_embedded_data_load_offline(name, shape):
    train, test = embedded_dataset(name, "train"), embedded_dataset(name, "test")
    assert train.shape[1:] == shape and test.shape[1:] == shape
    assert train.dtype == torch.float32 and 0 <= float(train.min()) and float(train.max()) <= 1
    assert train.shape[0] > test.shape[0] > 0
    assert not any(bool((t == train).flatten(1).all(1).any()) for t in test[:50])


def test_inverse_problem_dataset_noise_modes():
    x = torch.rand(6, 1, 4, 4)
    op = GaussianCS((1, 4, 4), 8, seed=0)
    fixed = InverseProblemDataset(x, op, BoundedNoise(0.3), seed=1)
    y0 = torch.stack([fixed[i][0] for i in range(6)])
    fixed.set_epoch(1)
    assert torch.equal(y0, torch.stack([fixed[i][0] for i in range(6)]))
    torch.testing.assert_close((y0 - op(x)).norm(dim=1), torch.full((6,), 0.3))
    fresh = InverseProblemDataset(x, op, BoundedNoise(0.3), seed=1, noise_mode="fresh")
    a = fresh[2][0]
    fresh.set_epoch(1)
    assert not torch.equal(a, fresh[2][0])
    loader = torch.utils.data.DataLoader(fixed, batch_size=4, shuffle=False)
    y, xb, idx = next(iter(loader))
    assert y.shape == (4, 8) and torch.equal(idx, torch.arange(4))
    torch.testing.assert_close(y, y0[:4])  # batched and per-item operator calls round alike


def test_fixed_measurements_do_not_depend_on_query_order():
    x = torch.rand(7, 1, 4, 4)
    op = GaussianCS((1, 4, 4), 8, seed=0)
    by_batch = InverseProblemDataset(x, op, BoundedNoise(0.3), seed=1).measure(torch.tensor([5, 2, 5, 0]))
    one_by_one = InverseProblemDataset(x, op, BoundedNoise(0.3), seed=1)
    singles = torch.cat([one_by_one.measure(torch.tensor([i])) for i in (0, 5, 2)])
    torch.testing.assert_close(by_batch, singles[[1, 2, 1, 0]])
    torch.testing.assert_close((by_batch - op(x[[5, 2, 5, 0]])).norm(dim=1), torch.full((4,), 0.3))


def test_inverse_problem_dataset_cache(tmp_path):
    x = torch.rand(5, 1, 4, 4)
    op = GaussianCS((1, 4, 4), 8, seed=0)
    direct = InverseProblemDataset(x, op, BoundedNoise(0.1), seed=2)
    cached = InverseProblemDataset(x, op, BoundedNoise(0.1), seed=2, cache=tmp_path / "y.h5")
    assert torch.equal(direct.measure(torch.arange(5)), cached.measure(torch.arange(5)))
    with h5py.File(tmp_path / "y.h5", "r") as fh:
        fingerprint = fh.attrs["fingerprint"]
    other = InverseProblemDataset(x, op, BoundedNoise(0.1), seed=3, cache=tmp_path / "y.h5")
    with h5py.File(tmp_path / "y.h5", "r") as fh:
        assert fh.attrs["fingerprint"] != fingerprint  # a different seed rebuilt the cache
    assert not torch.equal(other.measure(torch.arange(5)), cached.measure(torch.arange(5)))


@pytest.mark.parametrize("signals, match", [
    (torch.rand(3, 1, 4, 4) * 2, r"signals must lie in \[0, 1\]"),
    (torch.full((3, 1, 4, 4), float("nan")), "signals contains 48 non-finite"),
    (torch.rand(3, 16), r"signals must have shape \(B, 1, 4, 4\), got \(3, 16\)"),
])
def test_inverse_problem_dataset_bad_signals(signals, match):
    with pytest.raises(ValueError, match=match):
        InverseProblemDataset(signals, GaussianCS((1, 4, 4), 8), BoundedNoise(0.1))
