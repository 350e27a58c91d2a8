"""Keypoints a rendered frame lacks, derived from its joint state and base pose: equal to the
labels synth writes, refused when the frame's pose or joints do not fit its own labels."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dream_ros.data.ndds import NddsDataset
from dream_ros.errors import InputError
from dream_ros.robot import RobotModel
from dream_ros.train.dataset import FrameIndex

TINY = Path(__file__).resolve().parents[1] / "data" / "panda_tiny"
pytestmark = pytest.mark.skipif(not TINY.is_dir(), reason="tiny rendered dataset missing")


@pytest.fixture(scope="module")
def panda():
    return RobotModel.load("panda")


def _copy(tmp_path, edit):
    """panda_tiny with ``edit(json dict)`` applied to every frame."""
    out = tmp_path / "tiny"
    shutil.copytree(TINY, out)
    for p in sorted(out.glob("0*.json")):
        data = json.loads(p.read_text())
        edit(data)
        p.write_text(json.dumps(data))
    return out


def _drop(names):
    def edit(data):
        obj = data["objects"][0]
        obj["keypoints"] = [k for k in obj["keypoints"] if k["name"] not in names]
    return edit


def test_derived_keypoints_equal_the_labels_synth_wrote(tmp_path, panda):
    names = list(panda.keypoint_names)
    full = NddsDataset(TINY, robot_name="panda", keypoint_names=names)
    gone = ["panda_link3", "panda_hand"]
    thinned = _copy(tmp_path, _drop(gone))
    with pytest.raises(InputError, match="lacks keypoints"):
        NddsDataset(thinned, robot_name="panda", keypoint_names=names)[0]
    derived = NddsDataset(thinned, robot_name="panda", keypoint_names=names, derive_with=panda)
    index = FrameIndex([str(thinned)], names, min_age_s=0.0, derive_with=panda)
    index.refresh()
    records = {Path(r.image).name: r for r in index.split(0.0)[0]}
    assert len(derived) == len(full) == len(records) > 0
    for a, b in zip(full, derived):
        np.testing.assert_allclose(b.projected, a.projected, atol=1e-6)
        np.testing.assert_allclose(b.location, a.location, atol=1e-9)
        assert b.in_frame.tolist() == a.in_frame.tolist()
        assert b.occluded is None          # not known for derived keypoints
        np.testing.assert_allclose(records[b.image_path.name].xy, a.projected, atol=1e-3)


def test_a_config_with_more_keypoints_reads_data_rendered_for_fewer(panda):
    extended = RobotModel.load("panda_extended")
    names = list(extended.keypoint_names)
    ds = NddsDataset(TINY, robot_name="panda", keypoint_names=names, derive_with=extended)
    base = NddsDataset(TINY, robot_name="panda", keypoint_names=list(panda.keypoint_names))
    for f, g in zip(ds, base):
        assert f.projected.shape == (11, 2)
        np.testing.assert_array_equal(f.projected[:7], g.projected)      # recorded, not derived
        expect = f.camera_T_base[:3, :3] @ extended.keypoints_3d(f.joints)[7:].T \
            + f.camera_T_base[:3, 3:]
        np.testing.assert_allclose(f.location[7:], expect.T, atol=1e-12)
        uv = expect[:2] / expect[2] * [[f.K[0, 0]], [f.K[1, 1]]] + [[f.K[0, 2]], [f.K[1, 2]]]
        np.testing.assert_allclose(f.projected[7:], uv.T, atol=1e-9)


def test_frames_that_cannot_be_derived_are_refused_with_the_reason(tmp_path, panda):
    names = list(panda.keypoint_names)

    def centimetres(data):          # DREAM's synthetic files: base location in cm
        _drop(["panda_hand"])(data)
        data["objects"][0]["location"] = [100 * v for v in data["objects"][0]["location"]]

    def no_joints(data):
        _drop(["panda_hand"])(data)
        del data["sim_state"]

    for edit, reason in ((centimetres, "units other than metres"),
                         (no_joints, r"records no joint state")):
        d = _copy(tmp_path / edit.__name__, edit)
        with pytest.raises(InputError, match=reason):
            NddsDataset(d, robot_name="panda", keypoint_names=names, derive_with=panda)[0]
        with pytest.raises(InputError, match=reason):
            FrameIndex([str(d)], names, min_age_s=0.0, derive_with=panda).refresh()
