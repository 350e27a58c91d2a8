"""Robot-centred crops (network/zoom.py) and the detector's zoom pass."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dream_ros.network.detector import KeypointDetector
from dream_ros.network.model_file import ModelConfig
from dream_ros.network.zoom import crop_box, crop_image, random_training_crop

NAMES = ["a", "b", "c"]


def test_crop_box_contains_points_with_the_aspect():
    uv = np.array([[100.0, 50.0], [180.0, 90.0], [np.nan, np.nan]])
    x0, y0, w, h = crop_box(uv, aspect=4 / 3, margin=1.5, pad_px=10)
    assert abs(w / h - 4 / 3) < 0.02
    assert w == round(80 * 1.5 + 10)                     # x extent is the longer side here
    assert x0 < 100 and x0 + w > 180 and y0 < 50 and y0 + h > 90
    assert abs((x0 + w / 2) - 140) <= 1 and abs((y0 + h / 2) - 70) <= 1
    assert crop_box(uv[:1], 4 / 3) is None               # one point: no box


def test_crop_image_pads_outside_with_grey():
    img = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    out = crop_image(img, (-2, 3, 4, 4), fill=7)
    assert out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out[:2, 2:], img[3:5, 0:2])
    assert (out[:, :2] == 7).all() and (out[2:] == 7).all()


def test_random_training_crop_moves_keypoints_with_the_pixels():
    rng = np.random.default_rng(0)
    img = np.zeros((240, 320, 3), np.uint8)
    xy = np.array([[150.0, 100.0], [170.0, 130.0], [160.0, 115.0]], np.float32)
    for x, y in xy.astype(int):
        img[y, x] = 255
    for _ in range(20):
        out, xy2 = random_training_crop(img, xy, 4 / 3, rng)
        assert out.shape[1] < 320                        # zoomed in
        for x, y in np.round(xy2).astype(int):
            assert out[y, x, 0] == 255


def test_random_training_crop_needs_two_points_on_the_image():
    img = np.zeros((240, 320, 3), np.uint8)
    xy = np.array([[150.0, 100.0], [-50.0, 10.0], [np.nan, np.nan]], np.float32)
    out, xy2 = random_training_crop(img, xy, 4 / 3, np.random.default_rng(0))
    assert out is img and xy2 is xy


class ColourPeaks(nn.Module):
    """Belief map k = channel k of the image at every 4th pixel: a coloured blob is keypoint k.

    Map cell i is input pixel 4i, the codec's convention (x_in = 4 x_out)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return (x[:, :, ::4, ::4] + 1.0) / 2.0 + 0 * self.dummy


def _blobs(size, centres, sigma):
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for k, (cx, cy) in enumerate(centres):
        img[..., k] = np.maximum(img[..., k], np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2)))
    return (img * 255).round().astype(np.uint8)


def test_zoom_pass_refines_a_small_robot_far_away():
    cfg = ModelConfig.for_ours("panda", NAMES, NAMES, arch="dream_tiny_s4", preprocessing="letterbox")
    truth = np.array([[601.3, 340.7], [660.6, 371.2], [630.2, 402.9]])
    img = _blobs((1280, 960), truth, sigma=8.0)     # 4:3: no letterbox padding
    errs = {}
    for zoom in (False, True):
        det = KeypointDetector((ColourPeaks(), cfg), device="cpu", backend="torch", zoom=zoom)
        out = det.detect(img)
        assert out.detected.all() and out.image_size == (1280, 960)
        errs[zoom] = np.linalg.norm(out.uv - truth, axis=1).max()
    assert errs[True] < 0.1
    assert errs[True] < errs[False]


def test_zoom_is_off_for_dream_models_and_on_for_ours():
    cfg = ModelConfig.for_ours("panda", NAMES, NAMES, arch="dream_tiny_s4", preprocessing="letterbox")
    assert KeypointDetector((ColourPeaks(), cfg), device="cpu", backend="torch").zoom
