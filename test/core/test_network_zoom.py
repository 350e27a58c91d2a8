"""Robot-centred crops (network/zoom.py) and the detector's zoom pass."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

import pytest

from dream_ros.errors import ConfigError, InputError
from dream_ros.network.detector import KeypointDetector
from dream_ros.network.model_file import ModelConfig
from dream_ros.network.zoom import ZoomView, crop_box, crop_image, random_training_crop
from dream_ros.types import Detections

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
            if 0 <= x < out.shape[1] and 0 <= y < out.shape[0]:   # half crops leave some out
                assert out[y, x, 0] == 255


def test_some_training_crops_frame_one_half_of_the_chain():
    rng = np.random.default_rng(1)
    img = np.zeros((480, 640, 3), np.uint8)
    xy = np.array([[100.0 + 60 * k, 240.0] for k in range(7)], np.float32)   # a 7-keypoint chain
    outside = []
    for _ in range(60):
        out, xy2 = random_training_crop(img, xy, 4 / 3, rng)
        w = out.shape[1]
        outside.append(int(np.count_nonzero((xy2[:, 0] < 0) | (xy2[:, 0] >= w))))
    assert 0 in outside                      # whole-robot crops keep every keypoint
    assert max(outside) >= 2                 # half-chain crops leave the other half out


# panda_extended lists DREAM's seven keypoints first, then four along the arm: base to tip
EXTENDED_CHAIN = [0, 7, 1, 8, 2, 3, 9, 4, 5, 6, 10]


def _outside_counts(chain_order, crops=120):
    """Keypoints left outside each training crop of an 11-keypoint arm laid out left to right
    in chain order."""
    rng = np.random.default_rng(2)
    img = np.zeros((480, 1280, 3), np.uint8)
    xy = np.zeros((11, 2), np.float32)
    xy[EXTENDED_CHAIN] = [[100.0 + 100 * pos, 240.0] for pos in range(11)]
    counts = []
    for _ in range(crops):
        out, xy2 = random_training_crop(img, xy, 4 / 3, rng, chain_order)
        counts.append(int(np.count_nonzero((xy2[:, 0] < 0) | (xy2[:, 0] >= out.shape[1]))))
    return counts


def test_half_training_crops_follow_the_chain_not_the_channel_order():
    # half crops framed by chain order leave the other half (4+ keypoints) out; by channel order
    # "half" of panda_extended's channels spans nearly the whole arm
    assert max(_outside_counts(EXTENDED_CHAIN)) >= 4
    assert max(_outside_counts(None)) < 4


def test_random_training_crop_needs_two_points_on_the_image():
    img = np.zeros((240, 320, 3), np.uint8)
    xy = np.array([[150.0, 100.0], [-50.0, 10.0], [np.nan, np.nan]], np.float32)
    out, xy2 = random_training_crop(img, xy, 4 / 3, np.random.default_rng(0))
    assert out is img and xy2 is xy


# the blob net's smoothed peaks stay below our models' threshold when the robot is small
WEAK_PEAKS = 0.01


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
        det = KeypointDetector((ColourPeaks(), cfg), device="cpu", backend="torch", zoom=zoom,
                               threshold=WEAK_PEAKS)
        out = det.detect(img)
        assert out.detected.all() and out.image_size == (1280, 960)
        errs[zoom] = np.linalg.norm(out.uv - truth, axis=1).max()
    assert errs[True] < 0.1
    assert errs[True] < errs[False]


def test_zoom_is_off_for_dream_models_and_on_for_ours():
    cfg = ModelConfig.for_ours("panda", NAMES, NAMES, arch="dream_tiny_s4", preprocessing="letterbox")
    assert KeypointDetector((ColourPeaks(), cfg), device="cpu", backend="torch").zoom


def test_half_views_frame_each_half_of_the_chain_sharing_the_middle():
    assert ZoomView(part="base").keypoints(7).tolist() == [0, 1, 2, 3]
    assert ZoomView(part="tip").keypoints(7).tolist() == [3, 4, 5, 6]
    assert ZoomView(part="tip").keypoints(3).tolist() == [1, 2]
    assert ZoomView().keypoints(3).tolist() == [0, 1, 2]
    # keypoints listed out of chain order: each half is taken along the chain
    assert ZoomView(part="base").keypoints(EXTENDED_CHAIN).tolist() == [0, 1, 2, 3, 7, 8]
    assert ZoomView(part="tip").keypoints(EXTENDED_CHAIN).tolist() == [3, 4, 5, 6, 9, 10]


def test_detector_takes_the_chain_order_from_the_model_or_its_robot():
    from dream_ros.robot_config import load_robot_config
    names = load_robot_config("panda_extended").keypoint_names
    cfg = ModelConfig.for_ours("panda_extended", names, names, arch="dream_tiny_s4")
    det = KeypointDetector((ColourPeaks(), cfg), device="cpu", backend="torch")
    assert det.chain_order == EXTENDED_CHAIN                    # from the robot config
    order = list(range(10, -1, -1))
    cfg = ModelConfig.for_ours("panda_extended", names, names, arch="dream_tiny_s4",
                               keypoint_chain_order=order)
    assert KeypointDetector((ColourPeaks(), cfg), device="cpu", backend="torch").chain_order == order
    cfg = ModelConfig.for_ours("panda", NAMES, NAMES, arch="dream_tiny_s4")   # not the robot's
    assert KeypointDetector((ColourPeaks(), cfg), device="cpu", backend="torch").chain_order \
        == [0, 1, 2]
    with pytest.raises(ConfigError, match="keypoint_chain_order"):
        ModelConfig.for_ours("panda", NAMES, NAMES, arch="dream_tiny_s4",
                             keypoint_chain_order=[0, 1, 1])


class CountingColourPeaks(ColourPeaks):
    def __init__(self):
        super().__init__()
        self.images = 0

    def forward(self, x):
        self.images += x.shape[0]
        return super().forward(x)


def test_guided_detection_skips_the_first_pass_and_finds_the_same_keypoints():
    cfg = ModelConfig.for_ours("panda", NAMES, NAMES, arch="dream_tiny_s4", preprocessing="letterbox")
    truth = np.array([[601.3, 340.7], [660.6, 371.2], [630.2, 402.9]])
    img = _blobs((1280, 960), truth, sigma=8.0)
    net = CountingColourPeaks()
    det = KeypointDetector((net, cfg), device="cpu", backend="torch", threshold=WEAK_PEAKS)
    full = det.detect(img)
    full_images, net.images = net.images, 0
    # expected keypoints a few pixels off (the robot moved a little since the last pose)
    guided = det.detect(img, expected_uv=truth + [6.0, -4.0])
    assert net.images == full_images - 1                 # the zoom crops only
    assert guided.detected.all()
    np.testing.assert_allclose(guided.uv, full.uv, atol=0.05)
    assert np.linalg.norm(guided.uv - truth, axis=1).max() < 0.1
    # expected keypoints off the image, or belief maps wanted: the full detector runs
    net.images = 0
    det.detect(img, expected_uv=truth + 5000.0)
    assert net.images == full_images
    net.images = 0
    assert det.detect(img, return_belief=True, expected_uv=truth).belief_maps is not None
    assert net.images == full_images
    with pytest.raises(InputError, match="expected keypoints"):
        det.detect(img, expected_uv=truth[:2])


@pytest.mark.parametrize("views", [1, 5, 7])
def test_every_view_count_refines_a_small_robot(views):
    cfg = ModelConfig.for_ours("panda", NAMES, NAMES, arch="dream_tiny_s4", preprocessing="letterbox")
    truth = np.array([[601.3, 340.7], [660.6, 371.2], [630.2, 402.9]])
    det = KeypointDetector((ColourPeaks(), cfg), device="cpu", backend="torch", zoom_views=views,
                           threshold=WEAK_PEAKS)
    assert len(det.zoom_views) == views
    out = det.detect(_blobs((1280, 960), truth, sigma=8.0))
    assert out.detected.all()
    assert np.linalg.norm(out.uv - truth, axis=1).max() < 0.1


def test_unknown_view_count_is_refused():
    cfg = ModelConfig.for_ours("panda", NAMES, NAMES, arch="dream_tiny_s4", preprocessing="letterbox")
    with pytest.raises(ConfigError, match="zoom views"):
        KeypointDetector((ColourPeaks(), cfg), device="cpu", backend="torch", zoom_views=4)


def _dets(uv, candidates=None):
    uv = np.array(uv, dtype=float)
    found = np.all(np.isfinite(uv), axis=1)
    return Detections(names=list(NAMES), uv=uv, scores=np.where(found, 0.5, 0.0), detected=found,
                      image_size=(640, 480), candidates=candidates)


def test_views_pool_by_median_and_half_views_count_only_for_their_keypoints():
    cfg = ModelConfig.for_ours("panda", NAMES, NAMES, arch="dream_tiny_s4", preprocessing="letterbox")
    det = KeypointDetector((ColourPeaks(), cfg), device="cpu", backend="torch")
    nan = [np.nan, np.nan]
    first = _dets([[1, 1], [2, 2], nan],
                  candidates=[np.array([[1.0, 1.0, 0.5]]), np.array([[2.0, 2.0, 0.5]]),
                              np.zeros((0, 3))])
    whole, base = np.arange(3), np.arange(2)
    views = [(whole, (10, 20, 100, 75), _dets([[0, 0], [5, 5], [7, 7]],
                                               candidates=[np.array([[0.0, 0.0, 0.9]])] * 3)),
             (whole, (12, 20, 100, 75), _dets([[0, 0], [7, 5], nan])),
             (whole, (14, 20, 100, 75), _dets([[0, 0], [9, 5], nan])),
             (base, (0, 0, 100, 75), _dets([[10, 20], [400, 400], [0, 0]]))]
    out = det._pool_views(first, views)
    # keypoint 0: median of x 10, 12, 14, 10 -> 11; keypoint 1 (in the base half too): median
    # of x 15, 19, 23, 400 -> 21
    np.testing.assert_allclose(out.uv[0], [11.0, 20.0])
    np.testing.assert_allclose(out.uv[1], [21.0, 25.0])
    # keypoint 2: only the first whole view found it (the base view's is outside its half)
    np.testing.assert_allclose(out.uv[2], [17.0, 27.0])
    assert out.detected.all()
    # candidates: the first whole view's, moved to the image, strongest at the pooled position
    np.testing.assert_allclose(out.candidates[0][0, :2], out.uv[0])
    np.testing.assert_allclose(out.candidates[2][0, :2], out.uv[2])


def test_pooled_median_equals_numpys_nanmedian():
    from dream_ros.network.detector import _median_of_found
    rng = np.random.default_rng(0)
    for views in (1, 2, 5, 7):
        values = rng.normal(size=(views, 6, 2))
        missing = rng.random((views, 6)) < 0.4
        missing[0] = False                       # every column has a finite row
        values[missing] = np.nan
        counts = np.isfinite(values[..., 0]).sum(axis=0)
        np.testing.assert_allclose(_median_of_found(values, counts), np.nanmedian(values, axis=0))
