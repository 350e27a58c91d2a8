"""Calibrator (detect -> FK -> undistort -> PnP -> gates, static accumulation) and calibration files.

The detector is a stand-in that returns the true projections of the FK keypoints (plus optional
noise / dropped keypoints), so the tests know the right answer exactly.
"""
from __future__ import annotations

import dataclasses
import os

import cv2
import numpy as np
import pytest
import yaml

from dream_ros import frames
from dream_ros.calibration import (Calibrator, Gates, camera_pose_covariance, load_calibration,
                                   save_calibration, undistort_pixels)
from dream_ros.errors import ConfigError, InputError
from dream_ros.robot import RobotModel
from dream_ros.types import Detections, PoseEstimate

W, H = 640, 480
K = np.array([[520.0, 0, 319.5], [0, 520.0, 239.5], [0, 0, 1]])


def look_at(eye, target=(0.0, 0.0, 0.45)):
    return frames.invert(frames.look_at(eye, target))


TRUE_T = look_at((1.6, 0.7, 0.9))


class FakeDetector:
    """KeypointDetector stand-in: projects the FK keypoints of ``self.joints`` with the true pose."""

    def __init__(self, robot, camera_T_base=TRUE_T, noise_px=0.0, drop=(), dist=None, seed=0,
                 names=None):
        self.robot, self.T, self.noise, self.drop, self.dist = robot, camera_T_base, noise_px, drop, dist
        self.names = list(names or robot.keypoint_names)
        self.joints = None
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def detect(self, rgb, return_belief=False):
        self.calls += 1
        pts = self.robot.keypoints_3d(self.joints)
        rvec, _ = cv2.Rodrigues(self.T[:3, :3])
        uv, _ = cv2.projectPoints(pts, rvec, self.T[:3, 3], K, self.dist)
        uv = uv.reshape(-1, 2) + self.rng.normal(0, self.noise, (len(pts), 2)) * (self.noise > 0)
        det = np.ones(len(pts), bool)
        det[list(self.drop)] = False
        uv[~det] = np.nan
        maps = np.zeros((len(pts), 60, 80), np.float32) if return_belief else None
        return Detections(names=self.names, uv=uv, scores=det.astype(float), detected=det,
                          image_size=(rgb.shape[1], rgb.shape[0]), belief_maps=maps)


@pytest.fixture(scope="module")
def robot():
    return RobotModel.load("panda")


def random_joints(robot, rng):
    lo, hi = robot.joint_limits()
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    return dict(zip(robot.joint_names, mid + 0.4 * half * rng.uniform(-1, 1, len(lo))))


IMG = np.zeros((H, W, 3), np.uint8)


def run(cal, det, joints, **kw):
    det.joints = joints
    return cal.process(IMG, joints, K, **kw)


def test_continuous_recovers_the_true_pose(robot):
    rng = np.random.default_rng(1)
    fake = FakeDetector(robot)
    cal = Calibrator(robot, fake)
    for _ in range(3):
        d, est = run(cal, fake, random_joints(robot, rng))
        assert est.ok, est.reason
        assert est.extras["stage"] == "ok"
        t_err, r_err = frames.pose_error(est.camera_T_base, TRUE_T)
        assert t_err < 1e-6 and r_err < 1e-4
        assert d.num_detected == 7


def test_distortion_is_undone_before_pnp(robot):
    dist = np.array([-0.25, 0.08, 0.001, -0.002, 0.0])
    fake = FakeDetector(robot, dist=dist)
    cal = Calibrator(robot, fake)
    j = random_joints(robot, np.random.default_rng(2))
    _, est = run(cal, fake, j, dist=dist)
    assert est.ok and frames.pose_error(est.camera_T_base, TRUE_T)[0] < 1e-5
    # Ignoring the distortion gives a visibly worse pose: the test can fail.
    _, wrong = run(cal, fake, j)
    assert not wrong.ok or frames.pose_error(wrong.camera_T_base, TRUE_T)[0] > 1e-3


def test_undistort_keeps_missing_rows():
    uv = np.array([[10.0, 20.0], [np.nan, np.nan]])
    out = undistort_pixels(uv, K, np.array([0.1, 0, 0, 0, 0]))
    assert np.isnan(out[1]).all() and np.isfinite(out[0]).all()


def test_the_pose_weighs_keypoints_by_the_models_pixel_error(robot):
    class Uneven(FakeDetector):
        """Keypoints 2, 4, 5 off by 3 px (in a random direction); the others exact."""
        sigma = None

        def detect(self, rgb, return_belief=False):
            d = super().detect(rgb, return_belief)
            step = self.rng.normal(0.0, 1.0, d.uv.shape)
            step *= 3.0 / np.linalg.norm(step, axis=1, keepdims=True)
            uv = d.uv + step * np.isin(np.arange(7), [2, 4, 5])[:, None]
            return dataclasses.replace(d, uv=uv, sigma_px=self.sigma)

    errors = {}
    for weighted in (False, True):
        fake = Uneven(robot, seed=3)
        fake.sigma = np.array([0.3, 0.3, 3.0, 0.3, 3.0, 3.0, 0.3]) if weighted else None
        cal = Calibrator(robot, fake)
        rng = np.random.default_rng(4)
        errs = []
        for _ in range(20):
            _, est = run(cal, fake, random_joints(robot, rng))
            assert est.ok, est.reason
            errs.append(frames.pose_error(est.camera_T_base, TRUE_T)[0])
        errors[weighted] = np.median(errs)
    assert errors[True] < 0.5 * errors[False]


def test_too_few_keypoints_is_a_rejection_without_transform(robot):
    fake = FakeDetector(robot, drop=(0, 1, 2, 3))
    _, est = run(Calibrator(robot, fake), fake, random_joints(robot, np.random.default_rng(3)))
    assert est.status == "too_few_keypoints" and "3 of 7" in est.reason
    assert est.camera_T_base is None


def test_reprojection_gate(robot):
    fake = FakeDetector(robot, noise_px=2.0)
    cal = Calibrator(robot, fake, max_reprojection_error_px=0.1)
    _, est = run(cal, fake, random_joints(robot, np.random.default_rng(4)))
    assert est.status == "reprojection_error" and est.camera_T_base is None
    assert "rejected_camera_T_base" in est.extras


def test_distance_gate(robot):
    fake = FakeDetector(robot)
    cal = Calibrator(robot, fake, max_distance_m=1.0)
    _, est = run(cal, fake, random_joints(robot, np.random.default_rng(5)))
    assert est.status == "implausible_distance"


def test_behind_camera_gate(robot):
    cal = Calibrator(robot, FakeDetector(robot))
    pts = robot.keypoints_3d(random_joints(robot, np.random.default_rng(6)))
    flipped = TRUE_T.copy()
    flipped[:3, :] *= -1            # mirrored solution: points at negative depth
    flipped[3] = [0, 0, 0, 1]
    est = PoseEstimate(status="ok", camera_T_base=flipped, reprojection_errors_px=np.zeros(7),
                       inliers=np.ones(7, bool), num_points=7)
    assert cal.check(est, pts).status == "behind_camera"


def test_bad_inputs_raise_documented_errors(robot):
    fake = FakeDetector(robot)
    cal = Calibrator(robot, fake)
    j = random_joints(robot, np.random.default_rng(7))
    fake.joints = j
    with pytest.raises(InputError):
        cal.process(np.zeros((H, W), np.uint8), j, K)
    with pytest.raises(InputError):
        cal.process(IMG, j, np.diag([0.0, 520.0, 1.0]))
    with pytest.raises(InputError):
        cal.process(IMG, j, K * np.nan)
    with pytest.raises(InputError):
        cal.process(IMG, {k: v for k, v in list(j.items())[:-1]}, K)
    with pytest.raises(InputError):
        cal.process(IMG, dict(j, panda_joint3=float("nan")), K)
    with pytest.raises(ConfigError):
        Calibrator(robot, fake, mode="sometimes")
    with pytest.raises(ConfigError):
        Calibrator(robot, fake, min_keypoints=3)
    with pytest.raises(ConfigError, match="unknown PnP option"):
        Calibrator(robot, fake, pnp_options={"ransac_px": 3})
    with pytest.raises(ConfigError, match="unknown PnP option"):   # the detector sets it
        Calibrator(robot, fake, pnp_options={"point_sigma_px": [1.0] * 7})
    Calibrator(robot, fake, pnp_options={"cauchy_scale": None})    # the earlier fit
    pytest.importorskip("dream_ros.multiframe")
    with pytest.raises(ConfigError, match="unknown multi-frame solver option"):
        Calibrator(robot, fake, mode="static", solver_options={"min_frame": 3})
    with pytest.raises(ConfigError, match="multi-frame solver options"):
        Calibrator(robot, fake, mode="static", solver_options={"min_frames": 0})


def test_model_for_another_robot_is_a_config_error(robot):
    fake = FakeDetector(robot, names=["a", "b", "c", "d", "e", "f", "g"])
    with pytest.raises(ConfigError, match="another robot"):
        run(Calibrator(robot, fake), fake, random_joints(robot, np.random.default_rng(8)))


def test_keypoint_order_follows_names(robot):
    """A model listing the keypoints in another order still gives the right pose."""
    fake = FakeDetector(robot)
    j = random_joints(robot, np.random.default_rng(9))

    class Reordered(FakeDetector):
        def detect(self, rgb, return_belief=False):
            d = super().detect(rgb, return_belief)
            p = np.arange(len(d.names))[::-1]
            return Detections([d.names[i] for i in p], d.uv[p], d.scores[p], d.detected[p],
                              d.image_size)

    rf = Reordered(robot)
    _, est = run(Calibrator(robot, rf), rf, j)
    assert est.ok and frames.pose_error(est.camera_T_base, TRUE_T)[0] < 1e-6


# ------------------------------------------------------------------------------- static mode
def _static(robot, **kw):
    pytest.importorskip("dream_ros.multiframe")
    fake = FakeDetector(robot, noise_px=0.5, seed=3)
    return fake, Calibrator(robot, fake, mode="static", **kw)


def test_static_mode_converges_then_freezes(robot):
    fake, cal = _static(robot)
    rng = np.random.default_rng(10)
    stages = []
    for _ in range(60):
        _, est = run(cal, fake, random_joints(robot, rng))
        assert est.ok, est.reason
        stages.append(est.extras["stage"])
        if cal.converged:
            break
    assert cal.converged, "no convergence in 60 frames: %s" % stages[-3:]
    assert stages[0] == "converging" and stages[-1] == "converged"
    frozen = cal.estimate.camera_T_base.copy()
    t_err, r_err = frames.pose_error(frozen, TRUE_T)
    assert t_err < 0.01 and r_err < 0.5
    used = cal.estimate.frames_used
    for _ in range(3):      # later frames do not move it
        _, est = run(cal, fake, random_joints(robot, rng))
        assert est.extras["stage"] == "converged"
        assert np.array_equal(est.camera_T_base, frozen) and est.frames_used == used


def test_static_mode_rejects_a_jump_and_reset_starts_over(robot):
    fake, cal = _static(robot)
    rng = np.random.default_rng(11)
    for _ in range(60):
        run(cal, fake, random_joints(robot, rng))
        if cal.converged:
            break
    assert cal.converged
    moved = TRUE_T.copy()
    moved[:3, 3] += [0.08, 0.0, 0.0]          # camera bumped 8 cm sideways
    fake.T = moved
    _, est = run(cal, fake, random_joints(robot, rng))
    assert est.status == "jump" and "reset" in est.reason and est.camera_T_base is None
    assert est.extras["jump_px"] > 10
    cal.reset()
    assert not cal.converged and cal.estimate is None
    _, est = run(cal, fake, random_joints(robot, rng))
    assert est.ok and est.extras["stage"] == "converging"


def test_static_manual_capture_does_not_accumulate(robot):
    fake, cal = _static(robot)
    _, est = run(cal, fake, random_joints(robot, np.random.default_rng(12)), accumulate=False)
    assert est.status == "not_captured" and est.extras["single_frame"].ok
    assert cal.estimate is None


# ------------------------------------------------------------------------------- files
def _accepted(frames_used=12):
    est = PoseEstimate(status="ok", camera_T_base=TRUE_T.copy(), covariance=np.eye(6) * 1e-6,
                       reprojection_errors_px=np.full(7, 0.4), inliers=np.ones(7, bool),
                       num_points=7, frames_used=frames_used,
                       extras={"stage": "converged", "spread_translation_m": 0.002,
                               "spread_rotation_deg": 0.1})
    return est


def test_save_and_load_roundtrip(tmp_path):
    path = save_calibration(tmp_path / "sub" / "cam.yaml", _accepted(), "panda_link0",
                            "camera_color_optical_frame", robot="panda", model="m.pt",
                            mode="static")
    cal = load_calibration(path)
    assert cal.base_frame == "panda_link0" and cal.camera_frame == "camera_color_optical_frame"
    assert np.allclose(cal.camera_T_base, TRUE_T) and np.allclose(cal.base_T_camera,
                                                                 frames.invert(TRUE_T))
    assert (cal.tf_parent, cal.tf_child) == ("panda_link0", "camera_color_optical_frame")
    assert np.allclose(cal.tf_parent_T_child, frames.invert(TRUE_T))
    assert cal.frames_used == 12 and cal.model == "m.pt" and cal.robot == "panda" and cal.date
    doc = yaml.safe_load(path.read_text())
    assert np.allclose(np.array(doc["base_T_camera"]["matrix"]), frames.invert(TRUE_T))
    assert len(doc["base_T_camera"]["quaternion_xyzw"]) == 4
    assert doc["quality"]["reprojection_error_px"] == pytest.approx(0.4)
    assert [p.name for p in path.parent.iterdir()] == ["cam.yaml"]    # no temp file left


def test_saved_covariance_is_of_the_camera_pose_in_the_base_frame(tmp_path):
    """The solver's covariance is of camera_T_base; the file's key names base_T_camera."""
    est = _accepted()
    est.covariance = np.diag([1e-6, 2e-6, 3e-6, 1e-4, 2e-4, 3e-4])
    path = save_calibration(tmp_path / "cov.yaml", est, "panda_link0", "cam_optical")
    saved = np.array(yaml.safe_load(path.read_text())["quality"]["covariance_base_T_camera"])
    expected = camera_pose_covariance(TRUE_T, est.covariance)
    assert np.allclose(saved.reshape(6, 6), expected)
    assert not np.allclose(expected, est.covariance)    # the conversion is not a no-op here


def test_save_to_camera_link(tmp_path):
    path = save_calibration(tmp_path / "c.yaml", _accepted(), "panda_link0", "cam_optical",
                            tf_child="cam_link", child_T_camera=frames.LINK_T_OPTICAL)
    cal = load_calibration(path)
    assert cal.tf_child == "cam_link"
    assert np.allclose(cal.tf_parent_T_child, frames.base_T_camera_link(TRUE_T))


def test_save_refuses_rejected_estimates(tmp_path):
    with pytest.raises(ConfigError, match="no accepted calibration"):
        save_calibration(tmp_path / "c.yaml", PoseEstimate.failure("jump", "moved"), "b", "c")
    with pytest.raises(ConfigError):
        save_calibration(tmp_path / "c.yaml", None, "b", "c")


def test_failed_save_leaves_earlier_file_intact(tmp_path, monkeypatch):
    path = save_calibration(tmp_path / "c.yaml", _accepted(3), "b", "c")
    before = path.read_text()

    def full_disk(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ConfigError, match="No space left"):
        save_calibration(path, _accepted(99), "b", "c")
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write"):
        save_calibration(blocker / "c.yaml", _accepted(), "b", "c")   # parent is a file


@pytest.mark.parametrize("corrupt", [
    lambda t: t[: len(t) // 2],                                        # truncated
    lambda t: "::: not yaml [",
    lambda t: "format: something-else\n",
    lambda t: t.replace("quaternion_xyzw: [", "quaternion_xyzw: [7.0, ", 1),
    lambda t: t.replace("base_frame: b", "base_frame: ''"),
    lambda t: "",
])
def test_corrupt_files_are_refused(tmp_path, corrupt):
    path = save_calibration(tmp_path / "c.yaml", _accepted(), "b", "c")
    path.write_text(corrupt(path.read_text()))
    with pytest.raises(ConfigError):
        load_calibration(path)


def test_inconsistent_directions_are_refused(tmp_path):
    path = save_calibration(tmp_path / "c.yaml", _accepted(), "b", "c")
    doc = yaml.safe_load(path.read_text())
    doc["base_T_camera"]["translation"][0] += 0.1
    doc["base_T_camera"]["matrix"][0][3] += 0.1
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="not inverses"):
        load_calibration(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_calibration(tmp_path / "missing.yaml")


def test_camera_pose_covariance_matches_monte_carlo():
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(0)
    C = np.diag([1e-4, 2e-4, 5e-4, 1e-5, 2e-5, 1e-5])
    out = camera_pose_covariance(TRUE_T, C)
    x0 = np.concatenate([TRUE_T[:3, 3], Rotation.from_matrix(TRUE_T[:3, :3]).as_rotvec()])
    samples = []
    for dx in rng.multivariate_normal(np.zeros(6), C, size=4000):
        x = x0 + dx
        T = frames.invert(frames.make_transform(Rotation.from_rotvec(x[3:]).as_matrix(), x[:3]))
        samples.append(T[:3, 3])
    emp = np.cov(np.array(samples).T)
    assert np.allclose(out[:3, :3], emp, rtol=0.15, atol=2e-5)
    assert camera_pose_covariance(TRUE_T, None) is None


def test_static_mode_uses_frames_with_too_few_keypoints_for_pnp(robot):
    fake, cal = _static(robot)
    rng = np.random.default_rng(13)
    for _ in range(3):
        _, est = run(cal, fake, random_joints(robot, rng))
    given = cal._solver.num_frames
    fake.drop = (0, 1, 2, 3)                 # 3 keypoints: no single-frame pose
    _, est = run(cal, fake, random_joints(robot, rng))
    assert est.ok and est.extras["single_frame"].status == "too_few_keypoints"
    assert cal._solver.num_frames == given + 1
    fake.drop = tuple(range(7))              # nothing detected: nothing to add
    _, est = run(cal, fake, random_joints(robot, rng))
    assert est.status == "too_few_keypoints"
    assert cal._solver.num_frames == given + 1


class GuidedFakeDetector(FakeDetector):
    """FakeDetector that records the expected keypoints each call was given (None: full pass)."""

    keypoint_names = property(lambda self: self.names)
    zoom = True

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.expected = []

    def detect(self, rgb, return_belief=False, expected_uv=None):
        self.expected.append(None if expected_uv is None else np.array(expected_uv))
        return super().detect(rgb, return_belief)


def test_guided_zoom_expects_the_keypoints_where_the_last_accepted_pose_puts_them(robot):
    from dream_ros.calibration import GUIDED_FULL_PASS_EVERY
    from dream_ros.visualize import project
    rng = np.random.default_rng(7)
    fake = GuidedFakeDetector(robot, dist=np.array([-0.1, 0.02, 0.0, 0.0, 0.0]))
    cal = Calibrator(robot, fake, guided_zoom=True)
    dist = fake.dist
    joints = [random_joints(robot, rng) for _ in range(GUIDED_FULL_PASS_EVERY + 1)]
    for j in joints:
        _, est = run(cal, fake, j, dist=dist)
        assert est.ok
    assert fake.expected[0] is None                               # nothing accepted yet
    for j, expected in zip(joints[1:], fake.expected[1:GUIDED_FULL_PASS_EVERY]):
        # this frame's joint angles, the last pose (the true one here), the camera's distortion
        np.testing.assert_allclose(expected, project(robot.keypoints_3d(j), TRUE_T, K, dist),
                                   atol=1e-3)
    assert fake.expected[GUIDED_FULL_PASS_EVERY] is None          # the periodic full pass
    # a rejected frame: the next one runs the full detector; belief maps need it too
    fake.drop = range(4)
    assert not run(cal, fake, joints[0])[1].ok
    fake.drop = ()
    run(cal, fake, joints[1])
    assert fake.expected[-1] is None
    run(cal, fake, joints[2], return_belief=True)
    assert fake.expected[-1] is None
    # a detector without a zoom pass (DREAM's models, stand-ins) is never guided
    plain = FakeDetector(robot)
    cal = Calibrator(robot, plain, guided_zoom=True)
    assert not cal.guided_zoom
    for j in joints[:3]:
        assert run(cal, plain, j)[1].ok
    # off (the default, for unrelated images): always the full detector
    plain = GuidedFakeDetector(robot)
    cal = Calibrator(robot, plain)
    for j in joints[:3]:
        run(cal, plain, j)
    assert plain.expected == [None] * 3
