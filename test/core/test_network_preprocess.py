"""Preprocessing: crop rule, exact raw<->input round trips, image content where the mapping says."""
from __future__ import annotations

import numpy as np
import pytest

from dream_ros.errors import ConfigError, InputError
from dream_ros.network.preprocess import MODES, PAD_VALUE, Preprocessor, dream_crop_box

RAW_SIZES = [(640, 480), (1280, 720), (400, 400), (333, 517)]


def test_dream_crop_box():
    assert dream_crop_box((640, 480), (400, 400)) == (80, 0, 480, 480)
    assert dream_crop_box((480, 640), (400, 400)) == (0, 80, 480, 480)
    assert dream_crop_box((1280, 720), (320, 240)) == (160, 0, 960, 720)
    assert dream_crop_box((640, 480), (320, 240)) == (0, 0, 640, 480)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("raw", RAW_SIZES)
@pytest.mark.parametrize("half_pixel", [False, True])
def test_round_trip_every_mode(mode, raw, half_pixel):
    pre = Preprocessor(mode, (320, 240), half_pixel=half_pixel)
    rng = np.random.default_rng(0)
    uv = rng.uniform([-50, -50], [raw[0] + 50, raw[1] + 50], size=(20, 2))
    uv_in = pre.to_input(uv, raw)
    np.testing.assert_allclose(pre.to_raw(uv_in, raw), uv, atol=1e-9)
    np.testing.assert_allclose(pre.to_input(pre.to_raw(uv_in, raw), raw), uv_in, atol=1e-9)


def test_mapping_values():
    assert np.allclose(Preprocessor("resize", (400, 400)).to_input([[640, 480]], (640, 480)),
                       [[400, 400]])
    # DREAM: (x - cx) / cw * 400
    assert np.allclose(Preprocessor("shrink-and-crop", (400, 400)).to_input([[80, 0], [320, 240]],
                                                                            (640, 480)),
                       [[0, 0], [200, 200]])
    lb = Preprocessor("letterbox", (320, 240), half_pixel=False).geometry((1280, 720))
    assert lb.content == (0, 30, 320, 180)
    assert np.allclose(lb.to_input([[0, 0], [1280, 720]]), [[0, 30], [320, 210]])
    lb = Preprocessor("letterbox", (320, 240)).geometry((1280, 720))   # half-pixel by default
    assert np.allclose(lb.to_input([[-0.5, -0.5], [1279.5, 719.5]]), [[-0.5, 29.5], [319.5, 209.5]])


@pytest.mark.parametrize("half_pixel", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_image_content_follows_mapping(mode, half_pixel):
    raw = np.zeros((480, 720, 3), np.uint8)
    raw[300:304, 500:504] = 255          # a white blob centred at (501.5, 301.5)
    pre = Preprocessor(mode, (320, 240), half_pixel=half_pixel)
    img, geo = pre.image(raw)
    assert img.shape == ((240, 320, 3) if mode != "none" else raw.shape)
    expect = geo.to_input([[501.5, 301.5]])[0]
    g = np.zeros(img.shape[:2])
    ox, oy, cw, ch = geo.content
    g[oy:oy + ch, ox:ox + cw] = img[oy:oy + ch, ox:ox + cw, 0]      # ignore letterbox padding
    ys, xs = np.mgrid[:g.shape[0], :g.shape[1]]
    centre = np.array([(g * xs).sum() / g.sum(), (g * ys).sum() / g.sum()])
    # PIL's bilinear uses pixel-area centres, x_in = (x + 0.5) * s - 0.5: exact with half_pixel,
    # DREAM's rule (no half-pixel term) is off by 0.5 * (1 - s) input pixels
    assert np.all(np.abs(centre - expect) < (0.02 if half_pixel else 0.6))


def test_letterbox_pads_grey_and_normalises():
    pre = Preprocessor("letterbox", (320, 240))
    img, geo = pre.image(np.zeros((720, 1280, 3), np.uint8))
    assert (img[:30] == PAD_VALUE).all() and (img[210:] == PAD_VALUE).all()
    assert (img[30:210] == 0).all()
    x, _ = pre(np.full((720, 1280, 3), 255, np.uint8))
    assert x.shape == (3, 240, 320) and x.dtype == np.float32
    assert np.allclose(x[:, 100, 100], 1.0)
    assert np.allclose(x[:, 0, 0], PAD_VALUE / 127.5 - 1, atol=1e-6)
    assert geo.inside_raw(geo.to_raw([[160, 120], [160, 10]])).tolist() == [True, False]


def test_batch_and_errors():
    pre = Preprocessor("resize", (64, 32))
    xb, geos = pre.batch([np.zeros((10, 20, 3), np.uint8), np.zeros((30, 40, 3), np.uint8)])
    assert xb.shape == (2, 3, 32, 64) and geos[1].raw_size == (40, 30)
    with pytest.raises(InputError):
        pre(np.zeros((10, 20), np.uint8))
    with pytest.raises(InputError):
        pre(np.zeros((10, 20, 3), np.float32))
    with pytest.raises(ConfigError):
        Preprocessor("stretch", (64, 32))
