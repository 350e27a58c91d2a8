"""Every shipped robot config loads into the MuJoCo scene, renders, and its keypoints agree with
the URDF forward kinematics of dream_ros.robot (so the config's link mapping is consistent)."""
from __future__ import annotations

import numpy as np
import pytest

from dream_ros.frames import invert
from dream_ros.robot import RobotModel
from dream_ros.synth.randomize import look_at, merged_ranges
from dream_ros.synth.render import RobotRenderer, intrinsics_from_fov


@pytest.mark.parametrize("robot", ["kuka", "ur5", "baxter"])
def test_robot_loads_renders_and_matches_fk(robot):
    r = RobotRenderer(robot, 128, 96)
    try:
        model = RobotModel.load(robot)
        assert r.scene.config.keypoint_names == model.keypoint_names
        rng = np.random.default_rng(0)
        lo, hi = model.joint_limits()
        joints = dict(zip(model.joint_names, rng.uniform(lo, hi)))
        cam = merged_ranges(r.config.synth)["camera"]
        target = np.asarray(cam["look_at_m"], float)
        world_T_optical = look_at(target + np.array([1.6, 0.5, 0.6]), target)
        camera_T_base = invert(world_T_optical) @ r.scene.world_T_base()
        rgb, labels = r.render(joints, camera_T_base, intrinsics_from_fov(128, 96, 60), return_labels=True)
        assert rgb.shape == (96, 128, 3) and labels.robot_pixels > 100
        fk = model.keypoints_3d(joints)
        expected = fk @ camera_T_base[:3, :3].T + camera_T_base[:3, 3]
        np.testing.assert_allclose(labels.xyz, expected, atol=1e-6)
        assert labels.in_frame.sum() >= len(fk) // 2
    finally:
        r.close()
