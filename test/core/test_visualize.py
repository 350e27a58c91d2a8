"""Overlays draw where they should, never modify the input, and refuse non-images clearly."""
from __future__ import annotations

import numpy as np
import pytest

from dream_ros import frames, visualize
from dream_ros.errors import InputError
from dream_ros.types import Detections, PoseEstimate

K = np.array([[400.0, 0, 159.5], [0, 400.0, 119.5], [0, 0, 1]])
T = frames.make_transform(np.eye(3), [0.0, 0.0, 2.0])      # base 2 m in front of the camera
IMG = np.full((240, 320, 3), 30, np.uint8)


def det(uv, detected):
    uv = np.asarray(uv, float)
    return Detections(names=["a", "b"], uv=uv, scores=np.ones(2), detected=np.asarray(detected),
                      image_size=(320, 240))


def changed(a, b):
    return np.any(a != b, axis=2)


def test_detections_drawn_only_where_detected():
    d = det([[50, 60], [250, 200]], [True, False])
    out = visualize.draw_detections(IMG, d, labels=False)
    diff = changed(out, IMG)
    assert diff[50:71, 40:61].any()           # around (50, 60)
    assert not diff[180:220, 230:270].any()   # the undetected one is not drawn
    assert np.all(IMG == 30)                  # input untouched


def test_reprojections_land_on_the_projection():
    pts = np.array([[0.0, 0.0, 0.0], [0.25, 0.0, 0.0]])   # -> (159.5, 119.5), (209.5, 119.5)
    uv = visualize.project(pts, T, K)
    assert np.allclose(uv, [[159.5, 119.5], [209.5, 119.5]])
    out = visualize.draw_reprojections(IMG, pts, T, K)
    assert tuple(out[119, 209]) == visualize.REPROJECTED_RGB or tuple(out[120, 210]) == \
        visualize.REPROJECTED_RGB
    behind = visualize.project([[0, 0, -3.0]], T, K)
    assert np.isnan(behind).all()


def test_frame_axes_colours():
    out = visualize.draw_frame_axes(IMG, {"f": np.eye(4)}, T, K, length_m=0.2)
    # x axis goes right from the centre (red), y axis down (green) in this view.
    assert out[119, 190, 0] > 200 and out[119, 190, 1] < 100
    assert out[150, 159, 1] > 200 and out[150, 159, 0] < 100


def test_calibration_overlay_and_status_text():
    est = PoseEstimate(status="ok", camera_T_base=T)
    d = det([[159.5, 119.5], [209.5, 119.5]], [True, True])
    out = visualize.calibration_overlay(IMG, d, est, np.array([[0, 0, 0], [0.25, 0, 0.0]]),
                                        [np.eye(4)], K, None, ["converged"])
    assert out.shape == IMG.shape and changed(out, IMG).sum() > 200
    # no estimate: only detections (+ text) are drawn
    out2 = visualize.calibration_overlay(IMG, d, None, None, None, K)
    assert changed(out2, IMG).any()


def test_belief_overlay_highlights_peaks():
    maps = np.zeros((2, 60, 80), np.float32)
    maps[0, 30, 40] = 1.0
    out = visualize.belief_overlay(IMG, maps)
    assert out.shape == IMG.shape and out.dtype == np.uint8
    assert changed(out, IMG)[115:125, 155:165].any()
    assert not changed(out, IMG)[:40, :40].any()
    assert visualize.belief_overlay(IMG, np.full((1, 4, 4), np.nan)).shape == IMG.shape


def test_non_images_are_refused():
    with pytest.raises(InputError):
        visualize.draw_detections(np.zeros((10, 10), np.uint8), det([[1, 1], [2, 2]], [1, 1]))
    with pytest.raises(InputError):
        visualize.belief_overlay(IMG, np.zeros((0,)))


def test_belief_overlay_follows_the_preprocessing_mapping():
    maps = np.zeros((1, 60, 80), np.float32)
    maps[0, 30, 40] = 1.0
    # A letterbox-like mapping: the maps cover only the left half of the raw image.
    out = visualize.belief_overlay(IMG, maps, map_to_raw=lambda xy: xy * 2.0)
    diff = changed(out, IMG)
    assert diff[55:65, 75:85].any() and not diff[115:125, 155:165].any()
