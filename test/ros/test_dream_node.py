"""dream_node end to end through a real roscore: a player publishes images, camera_info and
joint_states of a camera whose pose the test knows; the TF, ~pose, ~overlay, services and the
calibration publisher are checked against that truth.

The node runs inside this process (``DreamNode(detector=...)``) with a stand-in detector that
returns the true projections of the FK keypoints (+0.5 px noise) for the frame it is given: the
player writes a frame number into the first pixels and the stand-in looks the joints up. This
exercises the node's whole path (subscribers, stamp pairing, FK, PnP, gates, multi-frame solver,
TF, messages, services) without a trained model; test/ros/dream_node.test runs the real node
with the real network on rendered frames.

Tolerances: continuous mode at 0.1 px detection noise (a 320x240 view, robot ~2 m away, where
a single frame is weakly constrained in depth): any TF within 3 cm / 1.5 deg, the median of the
~pose estimates within 1 cm / 0.5 deg; static mode at 0.5 px noise, converged: 1 cm / 0.5 deg;
the saved file republished by publish_calibration: equal to the node's TF within 1e-6.
"""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
import yaml

rospy = pytest.importorskip("rospy")

from dream_ros import frames  # noqa: E402
from dream_ros.robot import RobotModel  # noqa: E402
from dream_ros.ros.conversions import intrinsics_to_camera_info  # noqa: E402
from dream_ros.types import Detections  # noqa: E402

W, H = 320, 240
K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])


def look_at(eye, target=(0.0, 0.0, 0.45)):
    return frames.invert(frames.look_at(eye, target))


TRUE_T = look_at((1.7, 0.6, 1.0))     # camera_T_base


@pytest.fixture(scope="module")
def robot():
    return RobotModel.load("panda")


class Player:
    """Publishes frames of a moving robot seen by a fixed camera; remembers each frame's joints."""

    def __init__(self, robot, prefix, rate=15.0, compressed=False):
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
        self.robot, self.prefix, self.rate, self.compressed = robot, prefix, rate, compressed
        self.optical = prefix.strip("/") + "_optical"
        self.joints = {}
        if compressed:   # PNG: lossless, so the frame number in the pixels survives
            self.pub_img = rospy.Publisher(prefix + "/image/compressed", CompressedImage,
                                           queue_size=2)
        else:
            self.pub_img = rospy.Publisher(prefix + "/image", Image, queue_size=2)
        self.CompressedImage = CompressedImage
        self.pub_info = rospy.Publisher(prefix + "/camera_info", CameraInfo, queue_size=2)
        self.pub_js = rospy.Publisher(prefix + "/joint_states", JointState, queue_size=10)
        self.Image, self.JointState = Image, JointState
        self.info = intrinsics_to_camera_info(K, (W, H), self.optical)
        self.rng = np.random.default_rng(0)
        self.lo, self.hi = robot.joint_limits()
        self._stop = False
        self.n = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._stop = True
        if self.thread.is_alive():
            self.thread.join(5)
        for p in (self.pub_img, self.pub_info, self.pub_js):
            p.unregister()

    def make_image(self, index):
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[0, 0] = [index & 255, (index >> 8) & 255, (index >> 16) & 255]
        return rgb

    def _run(self):
        while not self._stop and not rospy.is_shutdown():
            self.n += 1
            mid, half = (self.lo + self.hi) / 2, (self.hi - self.lo) / 2
            q = mid + 0.45 * half * self.rng.uniform(-1, 1, len(mid))
            self.joints[self.n] = dict(zip(self.robot.joint_names, q))
            stamp = rospy.Time.now()
            js = self.JointState(name=list(self.robot.joint_names), position=list(q))
            js.header.stamp = stamp
            self.pub_js.publish(js)
            self.info.header.stamp = stamp
            self.pub_info.publish(self.info)
            rgb = self.make_image(self.n)
            if self.compressed:
                img = self.CompressedImage(format="rgb8; png compressed bgr8", data=cv2.imencode(
                    ".png", rgb[:, :, ::-1])[1].tobytes())
            else:
                img = self.Image(height=H, width=W, encoding="rgb8", step=W * 3,
                                 data=rgb.tobytes())
            img.header.stamp = stamp
            img.header.frame_id = self.optical
            self.pub_img.publish(img)
            time.sleep(1.0 / self.rate)


class FrameDetector:
    """Stand-in for KeypointDetector (test only): true projections of the frame's keypoints."""

    def __init__(self, robot, player, camera_T_base=TRUE_T, noise_px=0.5):
        self.robot, self.player, self.T, self.noise = robot, player, camera_T_base, noise_px
        self.rng = np.random.default_rng(1)
        self.belief_requests = []

    def detect(self, rgb, return_belief=False):
        self.belief_requests.append(bool(return_belief))
        index = int(rgb[0, 0, 0]) | int(rgb[0, 0, 1]) << 8 | int(rgb[0, 0, 2]) << 16
        pts = self.robot.keypoints_3d(self.player.joints[index])
        rvec, _ = cv2.Rodrigues(self.T[:3, :3])
        uv, _ = cv2.projectPoints(pts, rvec, self.T[:3, 3], K, None)
        uv = uv.reshape(-1, 2) + self.rng.normal(0, self.noise, (len(pts), 2))
        n = len(pts)
        maps = np.zeros((n, H // 4, W // 4), np.float32) if return_belief else None
        return Detections(list(self.robot.keypoint_names), uv, np.ones(n), np.ones(n, bool),
                          (W, H), maps)


def start_node(robot, prefix, params=None, noise_px=0.5, camera_T_base=TRUE_T, player=None,
               compressed=False):
    from dream_ros.ros.node import DreamNode
    ns = prefix + "_node"
    for k, v in (params or {}).items():
        rospy.set_param(ns + "/" + k, v)
    player = player or Player(robot, prefix, compressed=compressed)
    det = FrameDetector(robot, player, camera_T_base, noise_px)
    node = DreamNode(detector=det, robot=robot, namespace=ns,
                     topics=dict(image=prefix + "/image", camera_info=prefix + "/camera_info",
                                 joint_states=prefix + "/joint_states"))
    return node, player, det


def wait_for(pred, timeout=20.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))


class Collector:
    def __init__(self, topic, cls):
        self.msgs = []
        self.sub = rospy.Subscriber(topic, cls, self.msgs.append, queue_size=50)

    def close(self):
        self.sub.unregister()


def tf_lookup(parent, child, timeout=15.0):
    import tf2_ros
    from dream_ros.ros.conversions import msg_to_transform
    buf = tf2_ros.Buffer()
    listener = tf2_ros.TransformListener(buf)
    try:
        tf = buf.lookup_transform(parent, child, rospy.Time(0), rospy.Duration(timeout))
        return msg_to_transform(tf.transform)
    finally:
        listener.unregister()


def test_continuous_mode_tf_matches_truth_and_overlays_only_when_subscribed(roscore, robot,
                                                                            monkeypatch):
    from dream_ros import visualize
    from dream_ros.msg import Keypoints, PoseEstimate
    from sensor_msgs.msg import Image
    calls = {"overlay": 0}
    real = visualize.calibration_overlay

    def counting(*a, **kw):
        calls["overlay"] += 1
        return real(*a, **kw)
    monkeypatch.setattr(visualize, "calibration_overlay", counting)

    node, player, det = start_node(robot, "/t_cont", noise_px=0.1)
    poses = Collector("/t_cont_node/pose", PoseEstimate)
    kps = Collector("/t_cont_node/keypoints", Keypoints)
    try:
        player.start()
        base_T_cam = tf_lookup("panda_link0", player.optical)
        t_err, r_err = frames.pose_error(frames.invert(base_T_cam), TRUE_T)
        assert t_err < 0.03 and r_err < 1.5, (t_err, r_err)
        wait_for(lambda: len(poses.msgs) >= 10, what="10 ~pose messages")
        from dream_ros.ros.conversions import msg_to_transform
        errs = [frames.pose_error(frames.invert(msg_to_transform(m.base_to_camera)), TRUE_T)
                for m in poses.msgs if m.status == "ok"]
        assert np.median([e[0] for e in errs]) < 0.01 and np.median([e[1] for e in errs]) < 0.5
        ok = [m for m in poses.msgs if m.status == "ok"]
        assert len(ok) >= 4, [m.reason for m in poses.msgs]
        m = ok[-1]
        assert m.header.frame_id == "panda_link0" and m.camera_frame == player.optical
        assert m.keypoints_used == 7 and m.frames_used == 1 and m.reprojection_error_px < 2.0
        cov = np.array(m.covariance).reshape(6, 6)
        assert np.all(np.isfinite(cov)) and np.all(np.diag(cov) > 0)
        assert kps.msgs and kps.msgs[-1].num_detected == 7 and len(kps.msgs[-1].keypoints) == 7
        # Nobody subscribes to the overlays: they are never computed.
        assert node.stats.processed >= 5
        assert calls["overlay"] == 0 and not any(det.belief_requests)
        overlay = Collector("/t_cont_node/overlay", Image)
        belief = Collector("/t_cont_node/belief_overlay", Image)
        wait_for(lambda: overlay.msgs and belief.msgs, what="overlay images")
        assert (overlay.msgs[-1].width, overlay.msgs[-1].height) == (W, H)
        assert overlay.msgs[-1].encoding == "rgb8" and calls["overlay"] > 0
        assert any(det.belief_requests)
        overlay.close()
        belief.close()
    finally:
        player.stop()
        node.shutdown()
        poses.close()
        kps.close()


def test_static_mode_converges_saves_and_publish_calibration_republishes(roscore, robot, launch,
                                                                         tmp_path):
    from dream_ros.msg import PoseEstimate
    from dream_ros.srv import SaveCalibration
    from std_srvs.srv import Trigger
    from tf2_msgs.msg import TFMessage
    node, player, _ = start_node(robot, "/t_static", {"mode": "static"})
    poses = Collector("/t_static_node/pose", PoseEstimate)
    try:
        player.start()
        wait_for(lambda: any(m.status == "converged" for m in poses.msgs), timeout=40,
                 what="status converged")
        conv = [m for m in poses.msgs if m.status == "converged"]
        assert any(m.status == "converging" for m in poses.msgs)
        assert conv[0].frames_used >= 2 and np.isfinite(conv[0].spread_translation_m)
        # the message carries the convergence test's figure: spread / sqrt(frames with a pose)
        assert 0.0 <= conv[0].standard_error_translation_m <= 0.02
        assert conv[0].standard_error_translation_m <= conv[0].spread_translation_m
        base_T_cam = tf_lookup("panda_link0", player.optical)
        t_err, r_err = frames.pose_error(frames.invert(base_T_cam), TRUE_T)
        assert t_err < 0.01 and r_err < 0.5, (t_err, r_err)
        # Converged: it no longer changes.
        time.sleep(1.0)
        later = [m for m in poses.msgs if m.status == "converged"]
        assert len(later) > len(conv) - 1
        assert later[-1].base_to_camera == conv[0].base_to_camera
        path = str(tmp_path / "cal.yaml")
        rospy.wait_for_service("/t_static_node/save", 5)
        resp = rospy.ServiceProxy("/t_static_node/save", SaveCalibration)(path)
        assert resp.success, resp.message
        doc = yaml.safe_load(open(path))
        assert doc["base_frame"] == "panda_link0" and doc["camera_frame"] == player.optical
        assert doc["frames_used"] == conv[0].frames_used
        # reset: back to converging, no more TF until converged again
        resp = rospy.ServiceProxy("/t_static_node/reset", Trigger)()
        assert resp.success and node.calibrator.estimate is None or \
            node.calibrator.estimate.extras.get("stage") == "converging"
    finally:
        player.stop()
        node.shutdown()
        poses.close()
    # The saved file, published without the node: the same TF on /tf_static.
    got = []
    sub = rospy.Subscriber("/tf_static", TFMessage, lambda m: got.extend(m.transforms))
    proc = launch("roslaunch", "dream_ros", "publish_calibration.launch", "file:=" + path,
                  log_name="publish_calibration")
    try:
        tf = wait_for(lambda: next((t for t in got if t.child_frame_id == player.optical), None),
                      timeout=30, what="the calibration on /tf_static")
    finally:
        sub.unregister()
    from dream_ros.ros.conversions import msg_to_transform
    assert tf.header.frame_id == "panda_link0"
    assert np.allclose(msg_to_transform(tf.transform), base_T_cam, atol=1e-6)
    assert proc.poll() is None


def test_publish_calibration_refuses_a_corrupt_file(roscore, launch, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: dream_ros/calibration-1\nbase_frame: a\ncamera_frame: b\n"
                   "camera_T_base: {translation: [0, 0, 1], quaternion_xyzw: [0, 0, 0, 3]}\n")
    import sys
    proc = launch(sys.executable, "-c", "from dream_ros.ros.publish_calibration import main; "
                  "main()", "_file:=%s" % bad, "__name:=bad_cal_pub", log_name="bad_cal")
    assert proc.wait(timeout=30) == 2
    log = open(proc.log_path).read()
    assert "quaternion has norm" in log and str(bad) in log


def test_driver_frames_get_no_second_parent(roscore, robot):
    """The driver publishes cam_link -> optical: the node publishes base -> cam_link instead, and
    base -> optical through it still matches the truth. An explicit child that already has a
    parent is refused with a reason naming the parameter."""
    import tf2_ros
    from dream_ros.msg import PoseEstimate
    from dream_ros.ros.conversions import transform_stamped
    static = tf2_ros.StaticTransformBroadcaster()
    link_T_opt = frames.LINK_T_OPTICAL.copy()
    link_T_opt[:3, 3] = [0.01, -0.015, 0.0]
    static.sendTransform(transform_stamped(link_T_opt, "t_link_link", "t_link_optical",
                                           rospy.Time.now()))
    time.sleep(0.5)
    node, player, _ = start_node(robot, "/t_link", noise_px=0.0)
    try:
        player.start()
        base_T_link = tf_lookup("panda_link0", "t_link_link")
        base_T_opt = base_T_link @ link_T_opt       # exact detections: exact composition
        t_err, r_err = frames.pose_error(frames.invert(base_T_opt), TRUE_T)
        assert t_err < 1e-3 and r_err < 0.05, (t_err, r_err)
    finally:
        player.stop()
        node.shutdown()
    node, player, _ = start_node(robot, "/t_conf", {"tf_child_frame": "t_conf_optical"})
    static2 = tf2_ros.StaticTransformBroadcaster()
    static2.sendTransform([transform_stamped(link_T_opt, "t_link_link", "t_link_optical",
                                             rospy.Time.now()),
                           transform_stamped(np.eye(4), "world", "t_conf_optical",
                                             rospy.Time.now())])
    poses = Collector("/t_conf_node/pose", PoseEstimate)
    try:
        time.sleep(0.5)
        player.start()
        msg = wait_for(lambda: next((m for m in poses.msgs if "tf_conflict" in m.reason), None),
                       what="a tf_conflict rejection")
        assert "already has parent 'world'" in msg.reason and "tf_child_frame" in msg.reason
        assert not any(m.status in ("ok", "converged") for m in poses.msgs)
    finally:
        player.stop()
        node.shutdown()
        poses.close()


def test_bad_inputs_are_rejected_with_reasons_and_no_tf(roscore, robot):
    from dream_ros.msg import PoseEstimate
    from sensor_msgs.msg import Image
    node, player, _ = start_node(robot, "/t_bad", {"log_throttle_s": 0.0})
    poses = Collector("/t_bad_node/pose", PoseEstimate)
    try:
        # No camera_info / joints yet: an image alone is rejected with a reason.
        img = Image(height=H, width=W, encoding="rgb8", step=W * 3, data=bytes(W * H * 3))
        img.header.stamp = rospy.Time.now()
        img.header.frame_id = player.optical
        wait_for(lambda: player.pub_img.get_num_connections() > 0
                 and node.pub_pose.get_num_connections() > 0, what="connections")
        player.pub_img.publish(img)
        wait_for(lambda: any("no_camera_info" in m.reason for m in poses.msgs),
                 what="no_camera_info rejection")
        player.pub_info.publish(player.info)
        time.sleep(0.3)
        for enc, data, expect in [("16UC1", bytes(W * H * 2), "not a colour image"),
                                  ("rgb8", bytes(100), "truncated"),
                                  ("rgb8", bytes(W * H * 3), "joint")]:
            img = Image(height=H, width=W, encoding=enc, step=len(data) // H if enc != "rgb8"
                        else W * 3, data=data)
            img.header.stamp = rospy.Time.now()
            player.pub_img.publish(img)
            wait_for(lambda: any(expect in m.reason for m in poses.msgs), what=expect)
        assert all(m.status == "rejected" for m in poses.msgs)
        assert node.stats.accepted == 0 and node.stats.rejections["bad_image"] == 2
        from diagnostic_msgs.msg import DiagnosticArray
        diags = Collector("/diagnostics", DiagnosticArray)
        wait_for(lambda: node.pub_diag.get_num_connections() > 0, what="diagnostics subscriber")
        node._diagnostics_once()
        mine = wait_for(lambda: [st for d in diags.msgs for st in d.status
                                 if "t_bad_node" in st.name], what="our diagnostics")
        values = {kv.key: kv.value for kv in mine[-1].values}
        diags.close()
        assert mine[-1].level >= 1 and values["rejected: bad_image"] == "2"
        assert values["frames_accepted"] == "0" and "joint" in values["last_rejection"]
    finally:
        node.shutdown()
        poses.close()
        player.stop()


def test_unknown_parameters_are_refused(roscore, robot):
    from dream_ros.errors import ConfigError
    from dream_ros.ros.node import DreamNode
    rospy.set_param("/t_typo_node/max_reprojection_px", 3.0)
    with pytest.raises(ConfigError, match="unknown parameter.*max_reprojection_px.*valid names"):
        DreamNode(detector=object(), robot=robot, namespace="/t_typo_node")


def test_robot_panda_with_an_extended_model_uses_the_models_keypoints(roscore, tmp_path):
    """robot:=panda and an 11-keypoint panda_extended model: the node's forward kinematics, and
    so its PnP points and rviz frames, are the model's 11 keypoints."""
    from dream_ros.network.model_file import ModelConfig, save_model
    from dream_ros.network.ours import available_archs
    from dream_ros.robot import RobotModel
    from dream_ros.ros.node import DreamNode
    ext = RobotModel.load("panda_extended")
    names = list(ext.keypoint_names)
    cfg = ModelConfig.for_ours("panda_extended", names, names, arch=available_archs()[0])
    path = tmp_path / "ext.pt"
    save_model(path, cfg.build_network(), cfg)
    ns = "/t_ext_node"
    rospy.set_param(ns + "/robot", "panda")
    rospy.set_param(ns + "/model", str(path))
    rospy.set_param(ns + "/threads", 1)
    node = DreamNode(namespace=ns, topics=dict(image="/t_ext/image",
                                               camera_info="/t_ext/camera_info",
                                               joint_states="/t_ext/joint_states"))
    try:
        assert node.robot.config.name == "panda_extended"
        assert node.robot.keypoint_names == names == node.detector.keypoint_names
        assert node.base_frame == "panda_link0"
    finally:
        node.shutdown()


def test_manual_capture_and_service_refusals(roscore, robot, tmp_path):
    from dream_ros.srv import SaveCalibration
    from std_srvs.srv import Trigger
    node, player, _ = start_node(robot, "/t_cap", {"mode": "static", "auto_capture": False})
    try:
        player.start()
        wait_for(lambda: node.stats.processed >= 3, what="frames processed")
        # Frames are only checked, not accumulated, until ~capture is called.
        assert node.calibrator.estimate is None
        save = rospy.ServiceProxy("/t_cap_node/save", SaveCalibration)
        rospy.wait_for_service("/t_cap_node/save", 5)
        resp = save(str(tmp_path / "none.yaml"))
        assert not resp.success and "no accepted calibration" in resp.message
        assert not (tmp_path / "none.yaml").exists()
        capture = rospy.ServiceProxy("/t_cap_node/capture", Trigger)
        for i in range(3):
            resp = capture()
            assert resp.success and ("%d frames used" % (i + 1)) in resp.message, resp.message
        assert node.calibrator.estimate.frames_used == 3
        # A default path under $ROS_HOME/dream_ros/<camera>.yaml
        resp = save("")
        assert resp.success and resp.message.startswith(node.default_save_path())
        assert "dream_ros/t_cap_optical.yaml" in resp.message
    finally:
        player.stop()
        node.shutdown()
    node, player, _ = start_node(robot, "/t_cap2")
    try:
        resp = rospy.ServiceProxy("/t_cap2_node/capture", Trigger)()
        assert not resp.success and "static mode" in resp.message
    finally:
        node.shutdown()


def test_compressed_images(roscore, robot):
    node, player, _ = start_node(robot, "/t_jpg", {"image_transport": "compressed"},
                                 noise_px=0.0, compressed=True)
    try:
        player.start()
        base_T_cam = tf_lookup("panda_link0", player.optical)
        t_err, r_err = frames.pose_error(frames.invert(base_T_cam), TRUE_T)
        assert t_err < 1e-3 and r_err < 0.05, (t_err, r_err)
        assert node.image_topic == "/t_jpg/image/compressed"
    finally:
        player.stop()
        node.shutdown()


@pytest.mark.parametrize("args,expect", [
    (["_model:=/nonexistent/panda.pt"], "model file not found"),
    (["_model:=panda", "_robot:=/nonexistent/robot.yaml"], "robot config not found"),
    (["_mode:=sometimes"], "mode must be continuous or static"),
    (["_max_reprojection_px:=3"], "unknown parameter"),
])
def test_node_process_fails_fast_with_a_clear_error(roscore, launch, args, expect):
    import sys
    proc = launch(sys.executable, "-c", "from dream_ros.ros.node import main; main()",
                  "__name:=dn_fatal_%d" % abs(hash(expect)), *args, log_name="dn_fatal")
    assert proc.wait(timeout=60) == 2
    log = open(proc.log_path).read()
    assert "fatal" in log and expect in log, log[-1500:]


def test_publish_calibration_refuses_a_second_parent(roscore, launch, tmp_path):
    import sys
    import tf2_ros
    from dream_ros.calibration import save_calibration
    from dream_ros.ros.conversions import transform_stamped
    from dream_ros.types import PoseEstimate
    est = PoseEstimate(status="ok", camera_T_base=TRUE_T, reprojection_errors_px=np.zeros(7),
                       inliers=np.ones(7, bool), num_points=7)
    path = save_calibration(tmp_path / "c.yaml", est, "panda_link0", "t_two_optical")
    static = tf2_ros.StaticTransformBroadcaster()
    static.sendTransform(transform_stamped(np.eye(4), "elsewhere", "t_two_optical",
                                           rospy.Time.now()))
    proc = launch(sys.executable, "-c", "from dream_ros.ros.publish_calibration import main; "
                  "main()", "_file:=%s" % path, "__name:=two_parents", log_name="two_parents")
    assert proc.wait(timeout=30) == 2
    log = open(proc.log_path).read()
    assert "already has parent 'elsewhere'" in log and "second parent" in log
