"""dream_node reliability (issue #10) through a real roscore: every kind of bad input is a
rejection with a reason and no TF, the node keeps working afterwards; start-up errors of the real
node process; failed saves keep the earlier file; the ~pose figures in static mode and for a
camera_link-type child; no publishing to unregistered handles at shutdown.

The node runs in this process with the stand-in detector of test_dream_node.py (true projections
of the FK keypoints for the frame number written into the image); a ``Feeder`` publishes one
frame at a time (joint_states, camera_info, image with one stamp) and waits for the ~pose
message of that stamp, so each test says exactly which input gave which answer.
docs/reliability.md maps the issue's rows to these tests.
"""
from __future__ import annotations

import errno
import os
import sys
import threading
import time

import cv2
import numpy as np
import pytest

rospy = pytest.importorskip("rospy")

from dream_ros import frames  # noqa: E402
from dream_ros.robot import RobotModel  # noqa: E402
from dream_ros.ros.conversions import intrinsics_to_camera_info  # noqa: E402
from dream_ros.types import Detections  # noqa: E402
from test_dream_node import (H, K, TRUE_T, W, Collector, FrameDetector, Player,  # noqa: E402
                             look_at, start_node, wait_for)


@pytest.fixture(scope="module")
def robot():
    return RobotModel.load("panda")


class Feeder:
    """One in-process node + publishers; ``frame(...)`` publishes one frame and returns the ~pose
    message with its stamp."""

    def __init__(self, robot, prefix, params=None, detector=None, info=None):
        from dream_ros.msg import PoseEstimate
        self.robot = robot
        self.player = Player(robot, prefix)
        if info is not None:
            self.player.info = info
            info.header.frame_id = self.player.optical
        self.node, _, self.det = start_node(robot, prefix, dict({"log_throttle_s": 0.0},
                                                                **(params or {})),
                                            player=self.player)
        if detector is not None:
            detector.player = self.player
            self.node.detector = self.det = detector
            self.node.calibrator.detector = detector
        self.poses = Collector(self.node.name + "/pose", PoseEstimate)
        p = self.player
        wait_for(lambda: p.pub_img.get_num_connections() > 0
                 and p.pub_js.get_num_connections() > 0 and p.pub_info.get_num_connections() > 0
                 and self.node.pub_pose.get_num_connections() > 0, what="connections")
        self.rng = np.random.default_rng(5)
        self.t = rospy.Time.now().to_sec()

    def joints(self):
        lo, hi = self.player.lo, self.player.hi
        mid, half = (lo + hi) / 2, (hi - lo) / 2
        return mid + 0.45 * half * self.rng.uniform(-1, 1, len(mid))

    def send_info(self, info=None):
        self.player.pub_info.publish(info or self.player.info)
        time.sleep(0.15)

    def frame(self, stamp=None, q=None, joint_msg=None, image=None, send_joints=True,
              send_info=True, expect_reply=True, timeout=10.0):
        """Publishes joint_states, camera_info and an image stamped ``stamp`` (default: 0.1 s after
        the previous frame); returns the ~pose message for that stamp (None if not expected)."""
        p = self.player
        if stamp is None:
            stamp = self.t + 0.1
        self.t = max(self.t, stamp) if stamp > self.t - 1.0 else stamp   # a jump back: follow
        ros_stamp = rospy.Time.from_sec(stamp)
        p.n += 1
        q = self.joints() if q is None else q
        p.joints[p.n] = dict(zip(self.robot.joint_names, q))
        if send_joints:
            js = joint_msg or p.JointState(name=list(self.robot.joint_names), position=list(q))
            js.header.stamp = ros_stamp
            p.pub_js.publish(js)
        if send_info:
            p.info.header.stamp = ros_stamp
            p.pub_info.publish(p.info)
        time.sleep(0.02)
        if image is None:
            rgb = p.make_image(p.n)
            image = p.Image(height=H, width=W, encoding="rgb8", step=W * 3, data=rgb.tobytes())
        image.header.stamp = ros_stamp
        image.header.frame_id = p.optical
        before = len(self.poses.msgs)
        p.pub_img.publish(image)
        if not expect_reply:
            return None
        return wait_for(lambda: next((m for m in self.poses.msgs[before:]
                                      if m.header.stamp == ros_stamp), None), timeout=timeout,
                        what="~pose for stamp %.3f" % stamp)

    def close(self):
        self.player.stop()
        self.node.shutdown()
        self.poses.close()


@pytest.fixture
def feeder(roscore, robot, request):
    made = []

    def make(prefix, **kw):
        f = Feeder(robot, prefix, **kw)
        made.append(f)
        return f
    yield make
    for f in made:
        f.close()


def ok(msg):
    return msg.status in ("ok", "converging", "converged")


# ------------------------------------------------------------------------------ images
class LatestDetector(FrameDetector):
    """The stand-in for frames whose pixels cannot carry the frame number (mono, Bayer, YUV):
    the Feeder sends one frame at a time, so the newest frame's joints are the right ones."""

    def __init__(self, robot):
        super().__init__(robot, None, noise_px=0.0)

    def detect(self, rgb, return_belief=False):
        assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
        rgb = np.zeros_like(rgb)
        n = max(self.player.joints)
        rgb[0, 0] = [n & 255, (n >> 8) & 255, (n >> 16) & 255]
        return super().detect(rgb, return_belief)


@pytest.mark.parametrize("enc", ["bgr8", "bgra8", "mono8", "mono16", "bayer_rggb8", "yuv422"])
def test_other_colour_encodings_are_converted(feeder, robot, enc):
    """Encodings other than rgb8 that carry a usable image are converted and calibrated from."""
    f = feeder("/r_enc_" + enc, detector=None if enc in ("bgr8", "bgra8")
               else LatestDetector(robot))
    rgb = f.player.make_image(f.player.n + 1)
    if enc in ("bgr8", "bgra8"):      # the frame number in pixel (0, 0) survives the conversion
        data = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR if enc == "bgr8" else cv2.COLOR_RGB2BGRA)
    else:
        data = {"mono8": np.full((H, W), 128, np.uint8),
                "mono16": np.full((H, W), 30000, np.uint16),
                "bayer_rggb8": np.full((H, W), 90, np.uint8),
                "yuv422": np.full((H, W, 2), 128, np.uint8)}[enc]
    step = W * (data.shape[2] if data.ndim == 3 else 1) * data.itemsize
    img = f.player.Image(height=H, width=W, encoding=enc, step=step, data=data.tobytes())
    msg = f.frame(image=img)
    assert msg.status == "ok", msg.reason


@pytest.mark.parametrize("enc,data,expect", [
    ("bayer_rggb16", bytes(W * H * 2), "not a colour image"),
    ("32FC1", bytes(W * H * 4), "not a colour image"),
    ("rgb8", b"", "truncated"),
    ("weird9", bytes(W * H * 3), "unsupported image encoding"),
])
def test_unusable_images_are_rejected_by_name_and_the_node_goes_on(feeder, enc, data, expect):
    f = feeder("/r_badimg_" + enc.lower())
    img = f.player.Image(height=H, width=W, encoding=enc, step=len(data) // H if data else W * 3,
                         data=data)
    msg = f.frame(image=img)
    assert msg.status == "rejected" and expect in msg.reason and "bad_image" in msg.reason
    assert f.node.stats.rejections["bad_image"] == 1 and f.node.stats.accepted == 0
    assert ok(f.frame()), "a good frame after the bad one is accepted"


def test_empty_image_is_rejected(feeder):
    f = feeder("/r_empty")
    msg = f.frame(image=f.player.Image(height=0, width=0, encoding="rgb8", step=0, data=b""))
    assert msg.status == "rejected" and "empty image" in msg.reason
    assert ok(f.frame())


def test_image_size_different_from_camera_info_is_rejected(feeder):
    f = feeder("/r_size")
    small = np.zeros((H // 2, W // 2, 3), np.uint8)
    msg = f.frame(image=f.player.Image(height=H // 2, width=W // 2, encoding="rgb8",
                                       step=W // 2 * 3, data=small.tobytes()))
    assert msg.status == "rejected" and "image_size_mismatch" in msg.reason
    assert "%dx%d" % (W // 2, H // 2) in msg.reason and "%dx%d" % (W, H) in msg.reason
    assert ok(f.frame())


# --------------------------------------------------------------------------- camera_info
def _info(K_=K, D=(0.0,) * 5, model="plumb_bob"):
    return intrinsics_to_camera_info(K_, (W, H), dist=D, distortion_model=model)


def test_camera_info_missing_waits_and_warns_then_works(feeder, monkeypatch):
    warnings = []
    real = rospy.logwarn
    monkeypatch.setattr(rospy, "logwarn", lambda m, *a, **k: (warnings.append(m), real(m)))
    f = feeder("/r_noinfo")
    msg = f.frame(send_info=False)
    assert msg.status == "rejected" and "no_camera_info" in msg.reason
    assert "waiting for camera_info on /r_noinfo/camera_info" in msg.reason
    assert any("waiting for camera_info" in w for w in warnings)
    assert not f.node.calibrator.converged and f.node.stats.accepted == 0
    f.send_info()
    assert ok(f.frame())


@pytest.mark.parametrize("bad,expect", [
    (np.zeros((3, 3)), "not a calibrated pinhole matrix"),
    (np.full((3, 3), np.nan), "NaN"),
])
def test_camera_info_with_zero_or_nan_intrinsics_is_rejected(feeder, bad, expect):
    f = feeder("/r_badinfo_%d" % int(np.isnan(bad).any()), info=_info(bad))
    msg = f.frame()
    assert msg.status == "rejected" and "bad_camera_info" in msg.reason and expect in msg.reason
    f.player.info = _info()
    f.player.info.header.frame_id = f.player.optical
    assert ok(f.frame()), "good camera_info again: the node works again"


class DistortedDetector(FrameDetector):
    """The stand-in, seeing through a lens with distortion ``dist``."""

    def __init__(self, robot, dist):
        super().__init__(robot, None, noise_px=0.0)
        self.dist = np.asarray(dist, float)

    def detect(self, rgb, return_belief=False):
        index = int(rgb[0, 0, 0]) | int(rgb[0, 0, 1]) << 8 | int(rgb[0, 0, 2]) << 16
        pts = self.robot.keypoints_3d(self.player.joints[index])
        rvec, _ = cv2.Rodrigues(self.T[:3, :3])
        uv, _ = cv2.projectPoints(pts, rvec, self.T[:3, 3], K, self.dist)
        n = len(pts)
        return Detections(list(self.robot.keypoint_names), uv.reshape(-1, 2), np.ones(n),
                          np.ones(n, bool), (W, H), None)


@pytest.mark.parametrize("model,D", [
    ("plumb_bob", [-0.25, 0.08, 0.001, -0.002, 0.0]),
    ("rational_polynomial", [-0.2, 0.05, 0.001, -0.001, 0.0, 0.02, 0.0, 0.0]),
])
def test_distortion_models_are_undone(feeder, robot, model, D):
    """Detections through a distorting lens + camera_info with that model: the pose is exact."""
    f = feeder("/r_dist_" + model[:4], info=_info(D=D, model=model),
               detector=DistortedDetector(robot, D))
    msg = f.frame()
    assert msg.status == "ok", msg.reason
    from dream_ros.ros.conversions import msg_to_transform
    t_err, r_err = frames.pose_error(frames.invert(msg_to_transform(msg.base_to_camera)), TRUE_T)
    assert t_err < 1e-3 and r_err < 0.05, (t_err, r_err)


def test_unsupported_distortion_model_is_refused_by_name(feeder):
    f = feeder("/r_dist_equi", info=_info(D=[0.1, 0.01, 0.0, 0.0], model="equidistant"))
    msg = f.frame()
    assert msg.status == "rejected" and "'equidistant' is not supported" in msg.reason
    assert "image_is_rectified" in msg.reason


# -------------------------------------------------------------------------- joint_states
def test_joint_states_missing_a_joint_extra_joints_and_nan(feeder, robot):
    f = feeder("/r_js")
    JS = f.player.JointState
    names = list(robot.joint_names)
    q = f.joints()
    msg = f.frame(q=q, joint_msg=JS(name=names[:-1], position=list(q[:-1])))
    assert msg.status == "rejected" and "joint" in msg.reason
    assert f.node.stats.rejections["joint_states_incomplete"] == 1
    q = f.joints()
    bad = list(q)
    bad[2] = float("nan")
    msg = f.frame(q=q, joint_msg=JS(name=names, position=bad))
    assert msg.status == "rejected" and f.node.stats.rejections["joint_states_nan"] == 1
    q = f.joints()     # extra joints (fingers, another arm) are ignored
    msg = f.frame(q=q, joint_msg=JS(name=names + ["panda_finger_joint1", "other_arm_j1"],
                                    position=list(q) + [0.02, 1.0]))
    assert msg.status == "ok", msg.reason


def test_joint_states_too_old_for_the_image(feeder):
    f = feeder("/r_jsold")
    q = f.joints()
    t = max(f.t + 0.1, rospy.Time.now().to_sec())
    js = f.player.JointState(name=list(f.robot.joint_names), position=list(q))
    js.header.stamp = rospy.Time.from_sec(t - 1.0)          # 1 s older than the image
    f.player.pub_js.publish(js)
    time.sleep(0.1)
    msg = f.frame(stamp=t, q=q, send_joints=False)
    assert msg.status == "rejected" and "too old" in msg.reason
    assert "joint_tolerance_s" in msg.reason
    f.t = t
    assert ok(f.frame())


# ------------------------------------------------------------------------------ stamps
def test_stamps_out_of_order_are_dropped(feeder):
    f = feeder("/r_order")
    assert ok(f.frame())
    t = f.t
    msg = f.frame(stamp=t - 0.3)
    assert msg.status == "rejected" and "out_of_order" in msg.reason
    assert ok(f.frame(stamp=t + 0.1))


def test_time_jumping_back_bag_loop_starts_over(feeder):
    """A bag loop / /clock reset: stamps jump back 30 s; the node says so and keeps working on
    the new time line (joint history and TF buffer start over)."""
    f = feeder("/r_loop")
    for _ in range(3):
        assert ok(f.frame())
    replies = [f.frame(stamp=f.t - 30.0)] + [f.frame() for _ in range(2)]
    assert all(ok(m) for m in replies), [m.reason for m in replies]
    assert f.node.joints.resets >= 1
    assert not any("out_of_order" in m.reason for m in f.poses.msgs)


# ----------------------------------------------------------------------- solver outcomes
class ScriptedDetector(FrameDetector):
    """The stand-in, with detections changed by ``self.mode``: 'drop4' (3 keypoints left),
    'same_pixel' (degenerate), 'far' (a pose 10 m away: implausible)."""

    mode = "true"

    def __init__(self, robot):
        super().__init__(robot, None, noise_px=0.0)

    def detect(self, rgb, return_belief=False):
        det = super().detect(rgb, return_belief)
        if self.mode == "drop4":
            det.detected[:4] = False
            det.uv[:4] = np.nan
        elif self.mode == "same_pixel":
            det.uv[:] = [150.0, 100.0]
            det.uv += np.random.default_rng(0).normal(0, 1e-3, det.uv.shape)
        return det


def test_fewer_than_4_keypoints_degenerate_and_implausible_solutions(feeder, robot):
    det = ScriptedDetector(robot)
    f = feeder("/r_solve", detector=det)
    det.mode = "drop4"
    msg = f.frame()
    assert msg.status == "rejected" and "too_few_keypoints" in msg.reason
    assert "3 of 7 keypoints" in msg.reason
    det.mode = "same_pixel"
    msg = f.frame()
    assert msg.status == "rejected", msg.reason
    det.mode = "true"
    det.T = look_at((9.0, 4.0, 3.0))         # the keypoints as seen from 10 m away
    msg = f.frame()
    assert msg.status == "rejected" and "implausible_distance" in msg.reason
    assert f.node.stats.accepted == 0
    det.T = TRUE_T
    assert ok(f.frame())


def test_no_tf_from_rejected_frames(feeder, robot):
    """Only bad frames: nothing on TF for the camera, though ~pose says why for each."""
    import tf2_ros
    det = ScriptedDetector(robot)
    det.mode = "drop4"
    f = feeder("/r_notf", detector=det)
    buf = tf2_ros.Buffer()
    listener = tf2_ros.TransformListener(buf)
    try:
        for _ in range(3):
            assert f.frame().status == "rejected"
        time.sleep(0.5)
        assert not buf.can_transform("panda_link0", f.player.optical, rospy.Time(0))
    finally:
        listener.unregister()


# ------------------------------------------------------------------- static-mode figures
def test_static_pose_figures_describe_the_joint_solve(feeder):
    """Known bug: in static mode ~pose reported the newest frame's inliers (<= 7) next to the
    joint solve's inlier count as keypoints_used, and the newest frame's RMS."""
    f = feeder("/r_figs", params={"mode": "static"})
    msgs = [f.frame() for _ in range(8)]
    good = [m for m in msgs if m.status in ("converging", "converged")]
    assert len(good) >= 6, [m.reason for m in msgs]
    for m in good:
        assert m.keypoints_used == 7 * m.frames_used, (m.keypoints_used, m.frames_used)
        assert m.inliers == m.keypoints_used          # 0.5 px noise: every point agrees
        assert 0.3 < m.reprojection_error_px < 1.2    # RMS of 0.5 px/axis noise: ~0.7 px
    assert [m.frames_used for m in good] == sorted(m.frames_used for m in good)
    assert good[-1].frames_used >= 6


def test_static_frames_with_3_keypoints_do_not_reject_the_joint_estimate(robot):
    """Known bug (same cause): once the joint solve used a 3-keypoint frame, its 3 inliers were
    checked against min_keypoints and the whole joint estimate was rejected."""
    from dream_ros.calibration import Calibrator
    det = ScriptedDetector(robot)
    det.player = Player.__new__(Player)
    det.player.joints = {}
    # converge_window 40: no convergence (freeze) within these 30 frames, but the solve settles
    # after 10 frames, from when 3-keypoint frames join it
    cal = Calibrator(robot, det, mode="static", solver_options={"converge_window": 40})
    rng = np.random.default_rng(3)
    lo, hi = robot.joint_limits()
    statuses = []
    for i in range(1, 31):
        q = dict(zip(robot.joint_names, (lo + hi) / 2 + 0.4 * (hi - lo) / 2 *
                     rng.uniform(-1, 1, len(lo))))
        det.player.joints[i] = q
        det.mode = "drop4" if i > 12 and i % 2 else "true"
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[0, 0] = [i, 0, 0]
        _, est = cal.process(rgb, q, K)
        statuses.append((det.mode, est.status, est.reason))
    bad = [s for s in statuses if s[1] != "ok"]
    assert not bad, bad


def test_frame_out_of_sync_is_a_frame_outlier_not_a_new_estimate(robot):
    from dream_ros.calibration import Calibrator
    det = ScriptedDetector(robot)
    det.player = Player.__new__(Player)
    det.player.joints = {}
    cal = Calibrator(robot, det, mode="static", solver_options={"min_frames": 30})
    rng = np.random.default_rng(4)
    lo, hi = robot.joint_limits()

    def q():
        return dict(zip(robot.joint_names, (lo + hi) / 2 + 0.4 * (hi - lo) / 2 *
                        rng.uniform(-1, 1, len(lo))))
    for i in range(1, 16):
        det.player.joints[i] = q()
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[0, 0] = [i, 0, 0]
        _, est = cal.process(rgb, det.player.joints[i], K)
        assert est.ok, est.reason
    before = cal.estimate.camera_T_base.copy()
    det.player.joints[16] = q()
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[0, 0] = [16, 0, 0]
    _, est = cal.process(rgb, q(), K)       # joint angles of another moment
    assert est.status == "frame_outlier" and "out of sync" in est.reason
    assert est.camera_T_base is None
    assert np.allclose(cal.estimate.camera_T_base, before)


# ------------------------------------------------------------------ camera_link covariance
def test_pose_covariance_for_a_camera_link_child_is_finite_and_right(roscore, robot):
    """Known bug: when the node publishes base -> camera_link (driver frames above the optical
    frame), ~pose carried a NaN covariance. It must be the covariance of camera_link's pose."""
    import tf2_ros
    from dream_ros.calibration import camera_pose_covariance
    from dream_ros.msg import PoseEstimate
    from dream_ros.ros.conversions import msg_to_transform, transform_stamped
    link_T_opt = frames.LINK_T_OPTICAL.copy()
    link_T_opt[:3, 3] = [0.02, -0.03, 0.01]
    static = tf2_ros.StaticTransformBroadcaster()
    static.sendTransform(transform_stamped(link_T_opt, "r_cov_link", "r_cov_optical",
                                           rospy.Time.now()))
    time.sleep(0.5)
    # 0.1 px: the check below is on one frame's pose, whichever frame the node takes first; at
    # 0.3 px one of the random arm poses gave a single-frame error of 104 mm (1 run in 4).
    node, player, _ = start_node(robot, "/r_cov", noise_px=0.1)
    poses = Collector("/r_cov_node/pose", PoseEstimate)
    try:
        player.start()
        m = wait_for(lambda: next((m for m in poses.msgs if m.status == "ok"
                                   and m.camera_frame == "r_cov_link"), None), timeout=30,
                     what="an accepted ~pose for r_cov_link")
        cov = np.array(m.covariance).reshape(6, 6)
        assert np.all(np.isfinite(cov)), cov
        assert np.allclose(cov, cov.T) and np.all(np.linalg.eigvalsh(cov) > -1e-12)
        assert np.all(np.diag(cov) > 0)
        base_T_link = msg_to_transform(m.base_to_camera)
        t_err, r_err = frames.pose_error(frames.invert(base_T_link @ link_T_opt), TRUE_T)
        assert t_err < 0.05 and r_err < 2.0
    finally:
        player.stop()
        node.shutdown()
        poses.close()
    # The propagation itself, against Monte Carlo: sample camera_T_base from the solver's
    # covariance, push each sample through base_T_link = inv(camera_T_base) @ inv(link_T_opt).
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(0)
    C = np.diag([2e-4, 1e-4, 4e-4, 3e-5, 2e-5, 1e-5]) ** 1.0
    x0 = np.concatenate([TRUE_T[:3, 3], Rotation.from_matrix(TRUE_T[:3, :3]).as_rotvec()])
    samples = rng.multivariate_normal(x0, C, 5000)
    out = []
    for x in samples:
        T = frames.make_transform(Rotation.from_rotvec(x[3:]).as_matrix(), x[:3])
        L = frames.invert(T) @ frames.invert(link_T_opt)
        out.append(np.concatenate([L[:3, 3], Rotation.from_matrix(L[:3, :3]).as_rotvec()]))
    mc = np.cov(np.array(out).T)
    got = camera_pose_covariance(TRUE_T, C, link_T_opt)
    assert np.allclose(got, mc, rtol=0.1, atol=0.05 * np.max(np.abs(mc)))
    optical = camera_pose_covariance(TRUE_T, C)
    assert not np.allclose(got, optical, rtol=0.01, atol=1e-9)   # the offset matters


# -------------------------------------------------------------------------------- saving
@pytest.mark.parametrize("fault", ["read_only", "disk_full"])
def test_failed_save_keeps_the_earlier_file(feeder, tmp_path, monkeypatch, fault):
    from dream_ros import calibration
    from dream_ros.srv import SaveCalibration
    f = feeder("/r_save_" + fault)
    assert ok(f.frame())
    path = tmp_path / "cal.yaml"
    save = rospy.ServiceProxy(f.node.name + "/save", SaveCalibration)
    rospy.wait_for_service(f.node.name + "/save", 5)
    assert save(str(path)).success
    earlier = path.read_bytes()
    assert ok(f.frame())
    if fault == "read_only":
        def refuse(*a, **k):
            raise OSError(errno.EROFS, "Read-only file system")
        monkeypatch.setattr(calibration.tempfile, "mkstemp", refuse)
    else:
        def full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(calibration.os, "fsync", full)
    resp = save(str(path))
    assert not resp.success
    assert str(path) in resp.message
    assert ("Read-only" in resp.message) if fault == "read_only" else \
        ("No space left" in resp.message and "earlier file is unchanged" in resp.message)
    assert path.read_bytes() == earlier
    assert [p.name for p in tmp_path.iterdir()] == ["cal.yaml"]     # no temp file left
    assert ok(f.frame()), "the node keeps working after a failed save"


@pytest.mark.parametrize("text,expect", [
    ("format: dream_ros/calibration-1\nbase_frame: [unclosed\n", "calibration file"),
    ("\x00\x01garbage", "calibration"),
    ("format: something-else\n", "not a dream_ros calibration file"),
])
def test_publish_calibration_refuses_corrupt_files(roscore, launch, tmp_path, text, expect):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = launch(sys.executable, "-c", "from dream_ros.ros.publish_calibration import main; "
                  "main()", "_file:=%s" % bad, "__name:=bad_cal_%d" % abs(hash(text)),
                  log_name="bad_cal")
    assert proc.wait(timeout=30) == 2
    log = open(proc.log_path).read()
    assert expect in log and str(bad) in log, log[-1500:]


# -------------------------------------------------------------------------------- start-up
def _tiny_model(tmp_path, robot_name, names):
    pytest.importorskip("torch")
    from dream_ros.network.model_file import ModelConfig, save_model
    from dream_ros.network.ours import available_archs
    arch = "dream_lite_s4" if "dream_lite_s4" in available_archs() else available_archs()[0]
    cfg = ModelConfig.for_ours(robot_name, names, names, arch=arch)
    path = tmp_path / ("%s_%d.pt" % (robot_name, len(names)))
    save_model(path, cfg.build_network(), cfg)
    return path


def _fatal(launch, *args):
    proc = launch(sys.executable, "-c", "from dream_ros.ros.node import main; main()",
                  "__name:=dn_fatal_%d" % (abs(hash(args)) % 10 ** 6), "_device:=cpu", *args,
                  log_name="dn_fatal")
    assert proc.wait(timeout=90) == 2
    return open(proc.log_path).read()


def test_node_refuses_a_model_for_another_robot(roscore, launch, tmp_path, robot):
    path = _tiny_model(tmp_path, "kuka", ["k%d" % i for i in range(7)])
    log = _fatal(launch, "_model:=%s" % path)
    assert "fatal" in log and ("another robot" in log or "trained for robot" in log), log[-1500:]
    assert "set ~model or ~robot" in log


def test_node_refuses_a_model_with_the_wrong_number_of_keypoints(roscore, launch, tmp_path,
                                                                 robot):
    names = list(robot.keypoint_names)[:5]
    path = _tiny_model(tmp_path, "panda", names)
    log = _fatal(launch, "_model:=%s" % path)
    assert "fatal" in log and "detects 5 keypoints" in log and "has 7" in log, log[-1500:]
    assert "panda_link7" in log and "panda_hand" in log       # the ones it lacks


def test_node_refuses_a_corrupt_model_file(roscore, launch, tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x80\x02garbage" * 10)
    log = _fatal(launch, "_model:=%s" % bad)
    assert "fatal" in log and "cannot read model file" in log and str(bad) in log, log[-1500:]


def test_node_refuses_a_urdf_without_the_configured_links(roscore, launch, tmp_path):
    urdf = tmp_path / "two_links.urdf"
    urdf.write_text("""<?xml version="1.0"?>
<robot name="two_links">
  <link name="panda_link0"/><link name="panda_link1"/>
  <joint name="panda_joint1" type="revolute"><parent link="panda_link0"/><child link="panda_link1"/>
    <axis xyz="0 0 1"/><limit lower="-2.9" upper="2.9" effort="87" velocity="2.1"/></joint>
</robot>
""")
    from dream_ros.resources import ROBOTS_DIR
    text = (ROBOTS_DIR / "panda.yaml").read_text()
    import re
    text = re.sub(r"(?m)^urdf:.*$", "urdf: %s" % urdf, text)
    cfg = tmp_path / "panda_mine.yaml"
    cfg.write_text(text)
    log = _fatal(launch, "_robot:=%s" % cfg)
    assert "fatal" in log and "panda_hand" in log and str(urdf) in log, log[-1500:]


# -------------------------------------------------------------------------------- shutdown
class SlowDetector(FrameDetector):
    def __init__(self, robot, seconds):
        super().__init__(robot, None, noise_px=0.0)
        self.seconds = seconds
        self.started = threading.Event()

    def detect(self, rgb, return_belief=False):
        self.started.set()
        time.sleep(self.seconds)
        return super().detect(rgb, return_belief)


@pytest.mark.parametrize("mode", ["continuous", "static"])
def test_shutdown_never_publishes_to_an_unregistered_handle(feeder, robot, mode):
    """Known bug: at shutdown the worker (a frame in flight) and the timers published to
    publishers that shutdown() had already unregistered ("publish() to an unregistered()
    handle"). Shutdown must stop them first."""
    det = SlowDetector(robot, 0.6)
    f = feeder("/r_shut_" + mode, detector=det,
               params={"mode": mode, "publish_unconverged": True, "diagnostics_rate": 50.0,
                       "static_tf_rate": 50.0})
    late = []
    for pub in (f.node.pub_keypoints, f.node.pub_pose, f.node.pub_overlay, f.node.pub_belief,
                f.node.pub_diag, f.node.tf_pub.pub_tf):
        real = pub.publish

        def spy(*a, _pub=pub, _real=real, **k):
            if _pub.impl is None or getattr(f.node, "_unregistered", False):
                late.append(_pub.name)
            return _real(*a, **k)
        pub.publish = spy
    for pub in (f.node.pub_keypoints, f.node.pub_pose, f.node.pub_overlay, f.node.pub_belief):
        def mark(_pub=pub, _real=pub.unregister):
            f.node._unregistered = True
            _real()
        pub.unregister = mark
    assert ok(f.frame())
    det.started.clear()
    f.frame(expect_reply=False)
    assert det.started.wait(5), "the worker took the frame"
    f.node.shutdown()                      # while the frame is in flight
    assert not f.node._worker.is_alive()
    time.sleep(0.3)
    assert late == [], "published after unregistering: %s" % late
    f.node.shutdown()                      # idempotent (the fixture calls it again)


# ------------------------------------------------------------------- throttled log lines
def test_repeated_bad_input_is_logged_once_per_throttle_window_and_counted(feeder, monkeypatch):
    from diagnostic_msgs.msg import DiagnosticArray
    warnings = []
    monkeypatch.setattr(rospy, "logwarn", lambda m, *a, **k: warnings.append(m))
    f = feeder("/r_throttle", params={"log_throttle_s": 60.0})
    for _ in range(3):
        img = f.player.Image(height=H, width=W, encoding="16UC1", step=W * 2,
                             data=bytes(W * H * 2))
        assert f.frame(image=img).status == "rejected"
    assert len([w for w in warnings if "[bad_image]" in w]) == 1, warnings
    assert "not a colour image" in [w for w in warnings if "[bad_image]" in w][0]
    assert f.node.stats.rejections["bad_image"] == 3
    diags = Collector("/diagnostics", DiagnosticArray)
    try:
        wait_for(lambda: f.node.pub_diag.get_num_connections() > 0, what="diagnostics subscriber")
        f.node._diagnostics_once()
        mine = wait_for(lambda: [st for d in diags.msgs for st in d.status
                                 if "r_throttle_node" in st.name], what="our diagnostics")
    finally:
        diags.close()
    values = {kv.key: kv.value for kv in mine[-1].values}
    assert values["rejected: bad_image"] == "3" and "not a colour image" in values["last_rejection"]
