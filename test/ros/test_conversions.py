"""Message -> core conversions (no master needed): every encoding we accept gives the right RGB,
everything else is an InputError naming the problem; random/malformed messages never raise
anything else (hypothesis)."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

pytest.importorskip("sensor_msgs")
from hypothesis import given, settings, strategies as st  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState  # noqa: E402

from dream_ros import frames  # noqa: E402
from dream_ros.errors import InputError  # noqa: E402
from dream_ros.ros.conversions import (camera_info_to_intrinsics, compressed_to_rgb,  # noqa: E402
                                       image_to_rgb, joint_state_to_dict, msg_to_transform,
                                       rgb_to_image, transform_to_msg)
from dream_ros.ros.sync import JointBuffer  # noqa: E402

RGB = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)


def img(arr, encoding, step=None, big=0):
    h, w = arr.shape[:2]
    data = np.ascontiguousarray(arr).tobytes()
    return Image(height=h, width=w, encoding=encoding, is_bigendian=big,
                 step=step if step is not None else len(data) // h, data=data)


@pytest.mark.parametrize("enc,arr", [
    ("rgb8", RGB), ("bgr8", RGB[:, :, ::-1]),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])),
    ("bgra8", np.dstack([RGB[:, :, ::-1], np.full(RGB.shape[:2], 7, np.uint8)])),
    ("rgb16", RGB.astype(np.uint16) << 8),
])
def test_colour_encodings(enc, arr):
    assert np.array_equal(image_to_rgb(img(arr, enc)), RGB)


def test_mono_bayer_yuv_are_converted():
    g = RGB[:, :, 1]
    out = image_to_rgb(img(g, "mono8"))
    assert out.shape == (6, 8, 3) and np.array_equal(out[:, :, 0], g)
    assert np.array_equal(image_to_rgb(img(g.astype(np.uint16) << 8, "mono16"))[:, :, 2], g)
    big = (g.astype(np.uint16) << 8).astype(">u2")
    assert np.array_equal(image_to_rgb(img(big, "mono16", big=1))[:, :, 0], g)
    bayer = np.zeros((6, 8), np.uint8)
    bayer[0::2, 0::2] = 200                  # RGGB: red sites
    out = image_to_rgb(img(bayer, "bayer_rggb8"))
    assert out[2:4, 2:4, 0].mean() > 100 and out[2:4, 2:4, 2].mean() < 50   # red, not blue
    yuv = np.full((6, 8, 2), 128, np.uint8)
    assert image_to_rgb(img(yuv, "yuv422")).shape == (6, 8, 3)


def test_padded_rows_are_respected():
    padded = np.zeros((6, 30), np.uint8)
    padded[:, :24] = RGB.reshape(6, 24)
    m = Image(height=6, width=8, encoding="rgb8", step=30, data=padded.tobytes())
    assert np.array_equal(image_to_rgb(m), RGB)


@pytest.mark.parametrize("msg,match", [
    (Image(height=4, width=4, encoding="16UC1", step=8, data=bytes(32)), "not a colour image"),
    (Image(height=4, width=4, encoding="32FC1", step=16, data=bytes(64)), "not a colour image"),
    (Image(height=4, width=4, encoding="bayer_rggb16", step=8, data=bytes(32)), "Bayer"),
    (Image(height=4, width=4, encoding="weird", step=12, data=bytes(48)), "unsupported"),
    (Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(20)), "truncated"),
    (Image(height=4, width=4, encoding="rgb8", step=5, data=bytes(48)), "step"),
    (Image(height=0, width=4, encoding="rgb8", step=12, data=b""), "empty"),
])
def test_bad_images_are_named(msg, match):
    with pytest.raises(InputError, match=match):
        image_to_rgb(msg)


def test_compressed():
    ok, jpg = cv2.imencode(".png", RGB[:, :, ::-1])
    out = compressed_to_rgb(CompressedImage(format="png", data=jpg.tobytes()))
    assert np.array_equal(out, RGB)
    with pytest.raises(InputError, match="cannot decode"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=jpg.tobytes()[:20]))
    with pytest.raises(InputError, match="depth"):
        compressed_to_rgb(CompressedImage(format="16UC1; compressedDepth", data=b"x"))
    with pytest.raises(InputError, match="empty"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b""))


def info(**kw):
    m = CameraInfo(width=640, height=480, distortion_model="plumb_bob", D=[0.0] * 5,
                   K=[500, 0, 320, 0, 500, 240, 0, 0, 1], P=[510, 0, 321, 0, 0, 510, 241, 0, 0, 0, 1, 0])
    for k, v in kw.items():
        setattr(m, k, v)
    return m


def test_camera_info():
    K, dist, size = camera_info_to_intrinsics(info())
    assert K[0, 0] == 500 and dist is None and size == (640, 480)
    K, dist, _ = camera_info_to_intrinsics(info(D=[0.1, 0, 0, 0, 0]))
    assert dist is not None and dist[0] == 0.1
    K, dist, _ = camera_info_to_intrinsics(info(D=[0.1, 0, 0, 0, 0]), rectified=True)
    assert K[0, 0] == 510 and dist is None
    for bad, match in [(dict(K=[0] * 9), "not a calibrated"),
                       (dict(K=[float("nan")] + [0] * 8), "NaN"),
                       (dict(D=[0.1, 0, 0, 0], distortion_model="plumb_bob"), "needs 5"),
                       (dict(D=[0.1, 0, 0, 0], distortion_model="equidistant"), "not supported"),
                       (dict(binning_x=2), "binning")]:
        with pytest.raises(InputError, match=match):
            camera_info_to_intrinsics(info(**bad))


def test_joint_states():
    js = JointState(name=["a", "b", "finger"], position=[0.1, 0.2, 0.0])
    assert joint_state_to_dict(js, ["a", "b"]) == {"a": 0.1, "b": 0.2}
    with pytest.raises(InputError, match="lacks joints c"):
        joint_state_to_dict(js, ["a", "c"])
    with pytest.raises(InputError, match="NaN"):
        joint_state_to_dict(JointState(name=["a"], position=[float("nan")]), ["a"])
    with pytest.raises(InputError, match="2 names but 1"):
        joint_state_to_dict(JointState(name=["a", "b"], position=[0.0]))
    with pytest.raises(InputError, match="twice"):
        joint_state_to_dict(JointState(name=["a", "a"], position=[0.0, 1.0]))


def test_transform_roundtrip():
    T = frames.make_transform(frames.LINK_R_OPTICAL, [0.1, -0.2, 0.3])
    assert np.allclose(msg_to_transform(transform_to_msg(T)), T)
    out = image_to_rgb(rgb_to_image(RGB))
    assert np.array_equal(out, RGB)


def test_joint_buffer_interpolates_and_refuses_with_reasons():
    buf = JointBuffer(["j"], tolerance_s=0.05, max_gap_s=0.5, history_s=5.0)
    assert buf.lookup(1.0)[0] is None and "no joint_states" in buf.lookup(1.0)[1]
    buf.add(1.0, [0.0])
    buf.add(1.2, [2.0])
    assert buf.lookup(1.05)[0][0] == pytest.approx(0.5)
    assert buf.lookup(1.24)[0][0] == 2.0                 # newest, within tolerance
    q, why = buf.lookup(1.5)
    assert q is None and "too old" in why and "joint_tolerance_s" in why
    q, why = buf.lookup(0.5)
    assert q is None and "older than the joint_states history" in why
    buf.add(1.1, [1.5])                                   # out of order: inserted in place
    assert buf.lookup(1.1)[0][0] == 1.5
    note = buf.add(0.1, [9.0])                            # bag loop: clock back 1.1 s
    assert note and "jumped back" in note and len(buf) == 1 and buf.resets == 1
    gap = JointBuffer(["j"], tolerance_s=0.05, max_gap_s=0.5)
    gap.add(0.0, [0.0])
    gap.add(2.0, [1.0])
    assert "gap" in gap.lookup(1.0)[1]


# --------------------------------------------------------------------------------- fuzzing
ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "bayer_rggb8",
             "yuv422", "rgb16", "", "jpeg", "8UC3"]


@settings(max_examples=300, deadline=None)
@given(h=st.integers(-2, 12), w=st.integers(-2, 12), step=st.integers(-5, 60),
       enc=st.sampled_from(ENCODINGS), n=st.integers(0, 800), big=st.integers(0, 1),
       exact=st.booleans())
def test_fuzz_images(h, w, step, enc, n, big, exact):
    if exact:     # half the cases: exactly the bytes the header asks for
        n = max(step, 0) * max(h, 0)
    m = Image(height=max(h, 0), width=max(w, 0), encoding=enc, step=max(step, 0),
              is_bigendian=big, data=bytes(range(256)) * (n // 256) + bytes(n % 256))
    try:
        out = image_to_rgb(m)
    except InputError:
        return
    assert out.dtype == np.uint8 and out.shape == (m.height, m.width, 3)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), fmt=st.sampled_from(["jpeg", "png", "", "rgb8; jpeg"]))
def test_fuzz_compressed(data, fmt):
    try:
        out = compressed_to_rgb(CompressedImage(format=fmt, data=data))
    except InputError:
        return
    assert out.ndim == 3 and out.shape[2] == 3


floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=300, deadline=None)
@given(K=st.lists(floats, min_size=9, max_size=9), D=st.lists(floats, max_size=9),
       model=st.sampled_from(["plumb_bob", "rational_polynomial", "equidistant", ""]),
       rect=st.booleans())
def test_fuzz_camera_info(K, D, model, rect):
    m = info(K=K, D=D, distortion_model=model, P=list(K[:3]) + [0] + list(K[3:6]) + [0] +
             list(K[6:]) + [0])
    try:
        K_out, dist, _ = camera_info_to_intrinsics(m, rectified=rect)
    except InputError:
        return
    assert np.all(np.isfinite(K_out)) and K_out[0, 0] > 0 and K_out[1, 1] > 0
    assert dist is None or np.all(np.isfinite(dist))


@settings(max_examples=300, deadline=None)
@given(names=st.lists(st.sampled_from(["a", "b", "c", ""]), max_size=5),
       pos=st.lists(floats, max_size=5))
def test_fuzz_joint_states(names, pos):
    try:
        out = joint_state_to_dict(JointState(name=names, position=pos), ["a", "b"])
    except InputError:
        return
    assert set(out) == {"a", "b"} and all(math.isfinite(v) for v in out.values())


def test_intrinsics_to_camera_info_round_trips():
    from dream_ros.ros.conversions import intrinsics_to_camera_info
    K = np.array([[500.0, 0, 321], [0, 505, 239], [0, 0, 1]])
    msg = intrinsics_to_camera_info(K, (640, 480), "cam_optical")
    assert (msg.width, msg.height, msg.header.frame_id) == (640, 480, "cam_optical")
    K2, dist, size = camera_info_to_intrinsics(msg)
    assert np.array_equal(K2, K) and dist is None and size == (640, 480)
    K3, _, _ = camera_info_to_intrinsics(msg, rectified=True)
    assert np.array_equal(K3, K)
    D = [0.1, -0.05, 0.001, 0.002, 0.0]
    _, dist, _ = camera_info_to_intrinsics(intrinsics_to_camera_info(K, (640, 480), dist=D))
    assert np.allclose(dist, D)
