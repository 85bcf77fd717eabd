"""Whole-image super-resolution evaluation (the field's protocol) on a folder, without a split."""
import numpy as np
import pytest
import torch
from skimage import data, io

from jacinv.cli import evaluate_main
from jacinv.config import load_config
from jacinv.datasets.folder import read_image
from jacinv.metrics import psnr, rgb_to_y
from jacinv.operators import build_operator
from jacinv.sr_images import bicubic, evaluate_images, modcrop, studio_y
from test_training import trained_tiny_run


def test_grey_images_are_bt601_luma_and_score_like_rgb(tmp_path):
    rgb = data.astronaut()[:40, :30]
    io.imsave(tmp_path / "a.png", rgb)
    grey = read_image(tmp_path / "a.png", channels=1)
    expected = (rgb / 255.0) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(grey[0], expected, atol=1e-6)
    # the Y channel of the RGB image is the studio-range version of that luma
    colour = torch.from_numpy(read_image(tmp_path / "a.png", channels=3))[None]
    torch.testing.assert_close(studio_y(torch.from_numpy(grey)[None]), rgb_to_y(colour), atol=1e-5, rtol=0)


def test_modcrop_keeps_the_top_left_multiple_of_the_scale():
    x = torch.arange(7 * 9.0).view(1, 7, 9)
    assert modcrop(x, 4).shape == (1, 4, 8) and torch.equal(modcrop(x, 4), x[:, :4, :8])


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory):
    return trained_tiny_run(tmp_path_factory.mktemp("sr") / "run", "sr_x2", "noise.radius=0.05")


def test_whole_images_of_a_one_image_folder_are_scored_beside_bicubic_and_tv(sr_run, tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    io.imsave(folder / "odd.png", data.camera()[:67, :45])  # odd size: cropped to 66 x 44 for x2
    report = evaluate_images(sr_run, folder)
    assert report["images"] == 1 and report["per_image"][0]["size"] == [66, 44]
    assert [m.split("(")[0] for m in report["summary"]] == ["network", "bicubic", "tv"]
    for method, scores in report["summary"].items():
        assert 10 < scores["psnr"] < 60 and 0 < scores["ssim"] <= 1, method
    assert (sr_run / "images_report.json").exists() and (sr_run / "images_report.png").exists()
    # without noise, bicubic's score is reproduced from the protocol's definition
    clean = evaluate_images(sr_run, folder, overrides=["noise.kind=none"])
    x = modcrop(torch.from_numpy(read_image(folder / "odd.png", 1)), 2)[None]
    config = load_config(sr_run / "config.yaml")
    y = build_operator("blur_decimate", in_shape=(1, 66, 44), **config["operator"]["kwargs"])(x)
    expected = psnr(studio_y(x)[..., 2:-2, 2:-2], studio_y(bicubic(y, 2).clamp(0, 1))[..., 2:-2, 2:-2], 1.0)[0]
    assert clean["summary"]["bicubic"]["psnr"] == pytest.approx(float(expected), rel=1e-9)
    assert clean["summary"]["bicubic"]["psnr"] > report["summary"]["bicubic"]["psnr"]  # the noise costs


def test_the_cli_prints_the_table_and_refuses_other_operators(sr_run, tmp_path, capsys):
    folder = tmp_path / "set"
    folder.mkdir()
    io.imsave(folder / "a.png", data.astronaut()[:48, :64])
    assert evaluate_main([str(sr_run), "--images", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "1 image(s)" in out and "bicubic" in out and "Y channel, 2-pixel border shaved" in out
    cs_run = trained_tiny_run(tmp_path / "cs", "cs", "train.epochs=1")
    assert evaluate_main([str(cs_run), "--images", str(folder)]) == 2
    assert "--images is the super-resolution protocol" in capsys.readouterr().err
