"""The mask reference pose (evaluation/mask_reference.py): fitted to robot silhouettes rendered
at a known camera, it finds that camera again and leaves out a frame whose joints do not match
its mask; detections are scored against the keypoints projected at it."""
from __future__ import annotations

import numpy as np
import pytest

from dream_ros.errors import InputError
from dream_ros.evaluation.mask_reference import MaskFrame, fit_reference, keypoint_errors
from dream_ros.frames import pose_error
from dream_ros.robot import RobotModel
from dream_ros.ros.sim_camera import intrinsics_from_fov, look_at_camera_T_base
from dream_ros.visualize import project

from geometry_scenes import joints_near_middle

W, H = 160, 120
# a start 30 mm / 2.5 deg off needs less search than the real default (starts ~0.2 m off)
QUICK = ((0.02, 0.03, 100), (0.005, 0.008, 80))


@pytest.fixture(scope="module")
def robot():
    return RobotModel.load("panda")


@pytest.fixture(scope="module")
def setup(robot):
    from dream_ros.synth.render import RobotRenderer
    qs = joints_near_middle(robot, np.random.default_rng(5), 5, 0.4)
    T = look_at_camera_T_base([1.2, 0.5, 0.7], [0.1, 0.0, 0.45])
    K = intrinsics_from_fov(W, H, 60.0)
    renderer = RobotRenderer(robot.config, W, H)
    frames = []
    for i, q in enumerate(qs[:4]):
        joints = dict(zip(robot.joint_names, q))
        # frame 3: its mask shows the robot at other joint angles than the ones recorded
        shown = dict(zip(robot.joint_names, qs[4])) if i == 3 else joints
        frames.append(MaskFrame("f%d" % i, joints, K, renderer.render_silhouette(shown, T, K)))
    renderer.close()
    return {"T": T, "K": K, "frames": frames}


def _perturbed(T, mm, deg, seed=0):
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    d = np.eye(4)
    d[:3, :3] = Rotation.from_rotvec(np.radians(deg) * axis / np.linalg.norm(axis)).as_matrix()
    t = rng.normal(size=3)
    d[:3, 3] = mm / 1000.0 * t / np.linalg.norm(t)
    return d @ T


def test_fit_finds_the_camera_and_leaves_out_the_mismatched_frame(setup, robot):
    start = _perturbed(setup["T"], 30, 2.5)
    far = _perturbed(setup["T"], 300, 20, seed=1)
    ref = fit_reference(robot.config, setup["frames"], [far, start], min_iou=0.8, scale=1.0,
                        stages=QUICK)
    dt0, dr0 = pose_error(start, setup["T"])
    dt, dr = pose_error(ref.camera_T_base, setup["T"])
    assert dt < 0.4 * dt0 and dr < 0.4 * dr0, (dt, dr, dt0, dr0)
    assert ref.consistent == ["f0", "f1", "f2"]
    assert min(ref.iou[n] for n in ref.consistent) > 0.9 and ref.iou["f3"] < 0.8
    assert ref.mean_iou > 0.9


def test_keypoint_errors_against_the_reference(setup, robot):
    from dream_ros.evaluation.mask_reference import MaskReference
    ref = MaskReference(setup["T"], {f.name: 1.0 for f in setup["frames"]}, ["f0", "f1"], 0.8)
    names = list(robot.keypoint_names)
    dets = {}
    for f in setup["frames"]:
        uv = project(robot.keypoints_3d(f.joints), setup["T"], setup["K"])
        dets[f.name] = {n: list(uv[k]) for k, n in enumerate(names)}
    dets["f1"][names[2]] = list(np.add(dets["f1"][names[2]], [3.0, 4.0]))   # 5 px off
    dets["f1"][names[0]] = None                                             # not detected
    px = keypoint_errors(ref, setup["frames"], robot, dets)
    assert set(px) == {"f0", "f1"}                       # consistent frames only
    assert max(px["f0"].values()) < 1e-6
    assert names[0] not in px["f1"] and px["f1"][names[2]] == pytest.approx(5.0)


def test_bad_inputs(setup, robot):
    with pytest.raises(InputError, match="no frames with masks"):
        fit_reference(robot.config, [], [setup["T"]])
    with pytest.raises(InputError, match="no start pose"):
        fit_reference(robot.config, setup["frames"], [])
    small = MaskFrame("s", setup["frames"][0].joints, setup["K"], np.zeros((60, 80), bool))
    with pytest.raises(InputError, match="differ in size"):
        fit_reference(robot.config, setup["frames"][:1] + [small], [setup["T"]])


def test_contact_sheet_colours_mask_and_render(setup, robot):
    from dream_ros.evaluation.mask_reference import BOTH, MASK_ONLY, MaskReference, contact_sheet
    ref = MaskReference(setup["T"], {f.name: 1.0 for f in setup["frames"]}, ["f0", "f1", "f2"], 0.8)
    sheet = contact_sheet(ref, setup["frames"], robot.config, tile_width=W, columns=2)
    assert sheet.shape == (2 * H, 2 * W, 3)
    grey_both = (np.full(3, 64) + BOTH) // 2          # no thumbnail: a grey frame, halved
    grey_mask = (np.full(3, 64) + MASK_ONLY) // 2
    f0, f3 = sheet[:H, :W], sheet[H:, W:]
    assert np.all(f0 == grey_both, axis=-1).sum() > 100          # rendered = mask at the truth
    assert np.all(f0 == grey_mask, axis=-1).sum() < 5
    assert np.all(f3 == grey_mask, axis=-1).sum() > 100          # its mask shows other joints
