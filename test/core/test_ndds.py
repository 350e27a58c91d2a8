"""NDDS reader/writer: round trip, DREAM-style files, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dream_ros.data.ndds import (NddsDataset, frame_record, read_camera_settings, write_camera_settings,
                                 write_frame)
from dream_ros.errors import InputError
from dream_ros.frames import invert, make_transform
from scipy.spatial.transform import Rotation

K = np.array([[300.0, 0, 159.5], [0, 310.0, 119.5], [0, 0, 1]])
NAMES = ["panda_link0", "panda_link2", "panda_hand"]


def _write(tmp_path, n=3, ext="jpg", class_name="panda"):
    write_camera_settings(tmp_path, K, 320, 240)
    rng = np.random.default_rng(0)
    truth = []
    for i in range(n):
        cTb = make_transform(Rotation.random(random_state=i).as_matrix(), [0.1 * i, 0.0, 1.5])
        xyz = rng.uniform(-0.3, 0.3, (3, 3)) + [0, 0, 1.5]
        uv = xyz[:, :2] / xyz[:, 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
        joints = {"panda_joint1": 0.1 * i, "panda_joint2": -0.2}
        rec = frame_record(class_name, NAMES, xyz, uv, cTb, joints, K=K,
                           in_frame=np.array([True, False, True]), occluded=np.array([False, False, True]),
                           visibility=0.5)
        write_frame(tmp_path, "%06d" % i, np.full((240, 320, 3), 40 * i, np.uint8), rec, ext=ext)
        truth.append((xyz, uv, cTb, joints))
    return truth


def test_round_trip(tmp_path):
    truth = _write(tmp_path)
    ds = NddsDataset(tmp_path, robot_name="panda")
    assert len(ds) == 3 and ds.frame_names == ["000000", "000001", "000002"]
    assert ds.image_size == (320, 240)
    np.testing.assert_allclose(ds.K, K)
    for i, (xyz, uv, cTb, joints) in enumerate(truth):
        f = ds[i]
        assert f.keypoint_names == NAMES
        np.testing.assert_allclose(f.location, xyz)
        np.testing.assert_allclose(f.projected, uv)
        np.testing.assert_allclose(f.camera_T_base, cTb, atol=1e-12)
        assert f.joints == joints
        assert f.in_frame.tolist() == [True, False, True]
        assert f.occluded.tolist() == [False, False, True]
        assert f.image_path.name == "%06d.rgb.jpg" % i and f.image_path.exists()
        assert ds.load_image(i).shape == (240, 320, 3)
    # base->camera pose and camera pose in the base frame are stored consistently
    raw = ds[1].raw["camera_data"]
    np.testing.assert_allclose(raw["location_worldframe"], invert(truth[1][2])[:3, 3], atol=1e-12)


def test_units_scale_and_keypoint_order(tmp_path):
    truth = _write(tmp_path, n=1)
    ds = NddsDataset(tmp_path, units_scale=0.01, keypoint_names=["panda_hand", "panda_link0"])
    f = ds[0]
    np.testing.assert_allclose(f.location, truth[0][0][[2, 0]] * 0.01)
    np.testing.assert_allclose(f.projected, truth[0][1][[2, 0]])
    with pytest.raises(InputError):
        NddsDataset(tmp_path, keypoint_names=["nope"])[0]


def test_dream_style_minimal_file(tmp_path):
    # DREAM's own files: no sim_state, no flags, image png; extra non-robot object first
    (tmp_path / "_camera_settings.json").write_text(json.dumps({"camera_settings": [{
        "intrinsic_settings": {"fx": 320, "fy": 320, "cx": 320, "cy": 240},
        "captured_image_size": {"width": 640, "height": 480}}]}))
    (tmp_path / "00001.json").write_text(json.dumps({"objects": [
        {"class": "table", "keypoints": []},
        {"class": "panda", "keypoints": [{"name": "a", "location": [1, 2, 300],
                                          "projected_location": [10, 20]}]}]}))
    (tmp_path / "00001.rgb.png").write_bytes(b"")
    (tmp_path / "notes.json").write_text("{}")           # not a frame: name doesn't start with a digit
    ds = NddsDataset(tmp_path, robot_name="panda", units_scale=0.01)
    assert len(ds) == 1
    f = ds[0]
    np.testing.assert_allclose(f.location, [[0.01, 0.02, 3.0]])
    assert f.joints == {} and f.in_frame is None and f.camera_T_base is None
    assert f.image_path.suffix == ".png"
    np.testing.assert_allclose(f.K, [[320, 0, 320], [0, 320, 240], [0, 0, 1]])


def test_errors(tmp_path):
    with pytest.raises(InputError):
        NddsDataset(tmp_path / "missing")
    with pytest.raises(InputError):
        NddsDataset(tmp_path)                      # no _camera_settings.json
    _write(tmp_path, n=1, class_name="kuka")
    with pytest.raises(InputError, match="class"):
        NddsDataset(tmp_path, robot_name="panda")[0]
    assert NddsDataset(tmp_path)[0].keypoint_names == NAMES   # single robot object: no name needed


def test_png_majority_and_camera_settings(tmp_path):
    _write(tmp_path, n=2, ext="png")
    K2, size = read_camera_settings(tmp_path)
    assert size == (320, 240)
    np.testing.assert_allclose(K2, K)
    ds = NddsDataset(tmp_path)
    assert ds.image_ext == "png" and ds[0].image_path.suffix == ".png"
    # no leftover temp files from atomic writes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp_")]
