"""dream_node: live camera-to-robot calibration on ROS 1 (thin adapter over dream_ros.calibration).

Threads: the subscriber callbacks only store the newest message (images: one slot, so a slow
network never builds a queue); one worker thread processes the newest image, pairs it with the
joint angles of its stamp, runs the Calibrator and publishes. Timers publish diagnostics and, in
static mode, the calibration TF. Every input problem becomes a rejection: a throttled log line,
a counted diagnostic and a ~pose message with status "rejected" -- never a TF.

Topics (relative names: remap them): ``image`` (or ``image/compressed`` with
~image_transport:=compressed), ``camera_info``, ``joint_states``.
Publishes: TF, ``~keypoints``, ``~pose``, ``~overlay`` / ``~belief_overlay`` (computed only with a
subscriber), ``/diagnostics``. Services: ``~capture``, ``~reset``, ``~save``.
"""
from __future__ import annotations

import collections
import os
import re
import sys
import threading
import time
import traceback
from typing import Dict, Optional, Tuple

import numpy as np
import yaml

from .. import frames
from ..calibration import (Calibrator, Gates, camera_pose_covariance, save_calibration,
                           NOT_CAPTURED, STAGE_CONVERGED, STAGE_CONVERGING)
from ..errors import ConfigError, DreamError, InputError
from .conversions import (camera_info_to_intrinsics, compressed_to_rgb, detections_to_msg,
                          estimate_to_msg, image_to_rgb, joint_state_to_dict, rgb_to_image,
                          transform_stamped)
from .sync import JointBuffer

# name -> (default, meaning). The single list of valid private parameters (config/dream_node.yaml
# documents the same names); anything else in ~ is reported as unknown.
PARAMETERS = collections.OrderedDict([
    ("robot", ("panda", "robot config name or YAML path")),
    ("model", ("", "model file, robot name or DREAM .pth; empty: the robot's default model")),
    ("device", ("auto", "auto (CUDA when present), cpu or cuda[:N]")),
    ("backend", ("auto", "auto (the model's int8 network with ONNX Runtime on the CPU when it "
                         "has one, else fp32 ONNX Runtime; torch on CUDA and for DREAM's nets), "
                         "torch, onnx or onnx-int8")),
    ("threads", (2, "torch CPU threads (0: library default)")),
    ("zoom_views", (0, "crops the detector's zoom pass pools: 7 (most accurate), 5, 3, 2 or 1 "
                       "(fastest); 0: 7 in static mode, 3 in continuous mode")),
    ("guided_zoom", (True, "after an accepted frame, place the zoom crops where that pose puts "
                           "the robot and skip the detector's first pass (one frame in 10 runs "
                           "it); false: every frame runs the full detector")),
    ("mode", ("continuous", "continuous: a TF per accepted frame; static: accumulate, converge")),
    ("image_transport", ("raw", "raw (sensor_msgs/Image) or compressed (<image>/compressed)")),
    ("image_is_rectified", (False, "image is rectified: use camera_info P, no distortion")),
    ("base_frame", ("", "robot base frame (TF parent); empty: the robot config's")),
    ("camera_frame", ("", "camera optical frame; empty: camera_info's frame_id")),
    ("tf_child_frame", ("", "frame the TF is published to; empty: the optical frame, or the root "
                            "of the camera's TF tree when the driver publishes e.g. camera_link")),
    ("publish_tf", (True, "publish the calibration on TF")),
    ("publish_unconverged", (False, "static mode: publish TF before convergence")),
    ("static_tf_rate", (10.0, "static mode: TF publishing rate, Hz")),
    ("auto_capture", (True, "static mode: use every frame (false: only on ~capture)")),
    ("capture_timeout_s", (5.0, "~capture waits this long for the next frame")),
    ("joint_tolerance_s", (0.05, "max time between an image and the joint state used for it")),
    ("joint_max_gap_s", (0.5, "interpolate between joint states at most this far apart")),
    ("joint_wait_s", (0.1, "wait this long for a joint state newer than the image")),
    ("joint_history_s", (5.0, "joint-state history kept")),
    ("min_keypoints", (4, "gate: keypoints needed")),
    ("max_reprojection_error_px", (8.0, "gate: RMS reprojection error, pixels")),
    ("min_depth_m", (0.05, "gate: keypoints must be this far in front of the camera")),
    ("min_distance_m", (0.2, "gate: min camera distance to the base")),
    ("max_distance_m", (6.0, "gate: max camera distance to the base")),
    ("max_jump_m", (0.05, "static mode gate: max distance from the converged estimate")),
    ("max_jump_deg", (5.0, "static mode gate: max rotation from the converged estimate")),
    ("max_jump_px", (10.0, "static mode gate: max RMS px of a frame under the converged pose")),
    ("multiframe", ({}, "options for dream_ros.multiframe.MultiFrameSolver")),
    ("pnp", ({}, "options for dream_ros.pnp.solve_pnp")),
    ("save_dir", ("", "default folder for ~save; empty: $ROS_HOME/dream_ros (~/.ros/dream_ros)")),
    ("diagnostics_rate", (1.0, "diagnostics publishing rate, Hz")),
    ("log_throttle_s", (5.0, "repeat the same warning at most this often")),
    ("overlay_axis_length_m", (0.08, "keypoint frame axis length in ~overlay")),
])

STATUS_OK, STATUS_REJECTED = "ok", "rejected"
TF_CACHE_S = 5.0     # history kept by the node's tf buffer, s


def check_parameter_names(names, valid=PARAMETERS) -> Optional[str]:
    """Error text for private parameter names that are not ours (typos), else None."""
    unknown = sorted({n.split("/", 1)[0] for n in names} - set(valid))
    if not unknown:
        return None
    return ("unknown parameter(s) %s; valid names: %s" % (", ".join(unknown), ", ".join(valid)))


class Stats:
    """Counters and short windows for the diagnostics."""

    def __init__(self, window: int = 100):
        self.lock = threading.Lock()
        self.received = 0
        self.dropped = 0
        self.processed = 0
        self.accepted = 0
        self.rejections = collections.Counter()
        self.last_rejection = ""
        self.last_accept_wall = None
        self.last_image_wall = None
        self.times = collections.deque(maxlen=window)        # wall time of each processed frame
        self.proc_ms = collections.deque(maxlen=window)
        self.age_ms = collections.deque(maxlen=window)
        self.detected = collections.deque(maxlen=window)

    def rate(self) -> float:
        with self.lock:
            t = list(self.times)
        if len(t) < 2 or t[-1] <= t[0]:
            return 0.0
        return (len(t) - 1) / (t[-1] - t[0])


class DreamNode:
    """The node. ``detector``/``robot`` may be injected (tests); ``main()`` always builds the real
    KeypointDetector from ~model. ``namespace`` replaces the node's private namespace ``~`` and
    ``topics`` ({image, camera_info, joint_states}) the input topic names, so tests can run
    several instances inside one rospy process."""

    def __init__(self, detector=None, robot=None, namespace: Optional[str] = None,
                 topics: Optional[dict] = None):
        import rospy
        import tf2_ros
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
        from std_srvs.srv import Trigger
        from dream_ros.msg import Keypoints, PoseEstimate as PoseMsg
        from dream_ros.srv import SaveCalibration

        self.rospy = rospy
        self.caller = rospy.get_name()        # what TF records as the broadcaster of our frames
        self.name = "/" + (namespace or self.caller).strip("/")
        priv = lambda n: self.name + "/" + n   # noqa: E731
        topics = dict(topics or {})
        self.p = self._read_params()
        p = self.p
        if p["mode"] not in ("continuous", "static"):
            raise ConfigError("~mode must be continuous or static, got %r" % p["mode"])
        if p["image_transport"] not in ("raw", "compressed"):
            raise ConfigError("~image_transport must be raw or compressed, got %r"
                              % p["image_transport"])

        from ..robot import RobotModel
        self.robot = robot if robot is not None else RobotModel.load(p["robot"])
        self.base_frame = p["base_frame"] or self.robot.base_frame
        self.model_name = p["model"] or "%s (default model)" % self.robot.config.name
        if detector is None:
            from ..network.model_file import robot_for_model
            model = p["model"] or self.robot.config.name
            detector = build_detector(model, self.robot, p["device"], p["backend"],
                                      int(p["threads"]), zoom_views_for(p["mode"],
                                                                        int(p["zoom_views"])))
            # a model of another keypoint set of this robot (panda_extended for robot:=panda)
            # brings its robot config: forward kinematics must give the model's keypoints
            self.robot = robot_for_model(repr(model), detector.config, self.robot, MODEL_FIX)
        self.detector = detector
        gates = Gates(min_keypoints=int(p["min_keypoints"]),
                      max_reprojection_error_px=float(p["max_reprojection_error_px"]),
                      min_depth_m=float(p["min_depth_m"]),
                      min_distance_m=float(p["min_distance_m"]),
                      max_distance_m=float(p["max_distance_m"]), max_jump_m=float(p["max_jump_m"]),
                      max_jump_deg=float(p["max_jump_deg"]),
                      max_jump_px=float(p["max_jump_px"]))
        for key in ("multiframe", "pnp"):
            if not isinstance(p[key], dict):
                raise ConfigError("~%s must be a mapping of options, got %r" % (key, p[key]))
        self.calibrator = Calibrator(self.robot, self.detector, mode=p["mode"], gates=gates,
                                     solver_options=p["multiframe"], pnp_options=p["pnp"],
                                     guided_zoom=bool(p["guided_zoom"]))
        self.joints = JointBuffer(self.robot.joint_names, float(p["joint_tolerance_s"]),
                                  float(p["joint_max_gap_s"]), float(p["joint_history_s"]))
        self.stats = Stats()
        self._throttle: Dict[str, float] = {}
        self._cond = threading.Condition()          # guards _pending (the one image slot)
        self._pending = None
        self._joint_cond = threading.Condition()    # guards self.joints
        self._calib_lock = threading.RLock()        # calibrator + published estimate
        self._info = None
        self._info_cache = (None, None)
        self._last_stamp = None
        self._last_accepted = None                  # (PoseEstimate, optical frame) continuous mode
        self._optical = ""
        self._tf_target = None                      # (child, child_T_optical) as last resolved
        self._tf_resolved_wall = 0.0
        self._tf_problem = ""
        self._ours = set()                          # (child, parent) links this node publishes
        self._capture = None                        # dict(event, result) while ~capture waits
        self._stop = False
        # Timer callbacks publish holding this lock; shutdown() sets _stop under it, so once it
        # unregisters the publishers nothing can publish to them any more.
        self._alive = threading.Lock()
        self._shut = False

        # Only the latest transforms are looked up (the camera's own TF tree, at Time(0)): a short
        # cache keeps memory small and lets it settle early (30 s of a robot_state_publisher's
        # /tf was ~1.3 MB, still growing for the first 30 s after start).
        self.tf_buffer = tf2_ros.Buffer(cache_time=rospy.Duration(TF_CACHE_S))
        self.tf_listener = tf2_ros.TransformListener(self.tf_buffer)
        self.tf_pub = tf2_ros.TransformBroadcaster()

        self.pub_keypoints = rospy.Publisher(priv("keypoints"), Keypoints, queue_size=5)
        self.pub_pose = rospy.Publisher(priv("pose"), PoseMsg, queue_size=5)
        self.pub_overlay = rospy.Publisher(priv("overlay"), Image, queue_size=1)
        self.pub_belief = rospy.Publisher(priv("belief_overlay"), Image, queue_size=1)
        self.pub_diag = rospy.Publisher("/diagnostics", DiagnosticArray, queue_size=5)
        self.PoseMsg = PoseMsg

        self.image_topic = topics.get("image") or rospy.resolve_name("image")
        if p["image_transport"] == "compressed":
            self.image_topic += "/compressed"
            self.sub_image = rospy.Subscriber(self.image_topic, CompressedImage,
                                              self._on_image, callback_args=True, queue_size=1,
                                              buff_size=2 ** 24)
        else:
            self.sub_image = rospy.Subscriber(self.image_topic, Image, self._on_image,
                                              callback_args=False, queue_size=1, buff_size=2 ** 26)
        self.info_topic = topics.get("camera_info") or rospy.resolve_name("camera_info")
        self.sub_info = rospy.Subscriber(self.info_topic, CameraInfo, self._on_info, queue_size=1)
        self.joint_topic = topics.get("joint_states") or rospy.resolve_name("joint_states")
        self.sub_joints = rospy.Subscriber(self.joint_topic, JointState, self._on_joints,
                                           queue_size=50)

        self.srv_capture = rospy.Service(priv("capture"), Trigger, self._srv_capture)
        self.srv_reset = rospy.Service(priv("reset"), Trigger, self._srv_reset)
        self.srv_save = rospy.Service(priv("save"), SaveCalibration, self._srv_save)

        self._worker = threading.Thread(target=self._work, name="dream_worker", daemon=True)
        self._worker.start()
        # reset=True: a bag loop / /clock reset (time going back) must not kill the timers.
        self._timers = [rospy.Timer(rospy.Duration(1.0 / max(float(p["diagnostics_rate"]), 0.01)),
                                    self._publish_diagnostics, reset=True)]
        if p["mode"] == "static" and p["publish_tf"]:
            self._timers.append(rospy.Timer(
                rospy.Duration(1.0 / max(float(p["static_tf_rate"]), 0.1)), self._static_tf_tick,
                reset=True))
        rospy.loginfo("dream_node: robot %s, model %s (backend %s, %s zoom views), mode %s, "
                      "image %s (%s), camera_info %s, joint_states %s, base frame %s"
                      % (self.robot.config.name, self.model_name,
                         getattr(self.detector, "backend", "?"),
                         len(self.detector.zoom_views) if getattr(self.detector, "zoom", False)
                         else "no",
                         p["mode"], self.image_topic, p["image_transport"], self.info_topic,
                         self.joint_topic, self.base_frame))

    # ------------------------------------------------------------------------------ parameters
    def _read_params(self) -> dict:
        rospy = self.rospy
        prefix = self.name.rstrip("/") + "/"
        mine = [n[len(prefix):] for n in rospy.get_param_names() if n.startswith(prefix)]
        problem = check_parameter_names(mine)
        if problem:
            raise ConfigError("%s: %s (see config/dream_node.yaml)" % (self.name, problem))
        out = {}
        for name, (default, _) in PARAMETERS.items():
            value = rospy.get_param(prefix + name, default)
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ConfigError("~%s must be true or false, got %r" % (name, value))
            elif isinstance(default, (int, float)) and not isinstance(default, bool):
                try:
                    value = type(default)(value)
                except (TypeError, ValueError):
                    raise ConfigError("~%s must be a number, got %r" % (name, value))
                if value != value or value < 0:
                    raise ConfigError("~%s must be a non-negative number, got %r" % (name, value))
            elif isinstance(default, str):
                value = str(value)
            out[name] = value
        return out

    # ------------------------------------------------------------------------------ callbacks
    def _on_image(self, msg, compressed: bool) -> None:
        with self._cond:
            if self._pending is not None:
                self.stats.dropped += 1      # a newer image replaces one not yet processed
            self._pending = (msg, compressed, time.time())
            self.stats.received += 1
            self.stats.last_image_wall = time.time()
            self._cond.notify()

    def _on_info(self, msg) -> None:
        self._info = msg

    def _on_joints(self, msg) -> None:
        try:
            values = joint_state_to_dict(msg)
        except InputError as exc:
            self._count("bad_joint_states", "joint_states on %s: %s" % (self.joint_topic, exc))
            return
        names = self.robot.joint_names
        present = [n for n in names if n in values]
        if not present:
            return       # another publisher (e.g. the gripper's) on the same topic
        missing = [n for n in names if n not in values]
        if missing:
            self._count("joint_states_incomplete", "joint_states on %s lacks %s (robot %s needs "
                        "%s)" % (self.joint_topic, ", ".join(missing), self.robot.config.name,
                                 ", ".join(names)))
            return
        bad = [n for n in names if not np.isfinite(values[n])]
        if bad:
            self._count("joint_states_nan", "joint_states has NaN/inf for %s" % ", ".join(bad))
            return
        stamp = msg.header.stamp
        if stamp.is_zero():
            self._log("warn", "joint_zero_stamp", "joint_states have zero stamps: using arrival "
                      "time (pairing with images is then approximate)")
            stamp = self.rospy.Time.now()
        with self._joint_cond:
            note = self.joints.add(stamp.to_sec(), [values[n] for n in names])
            self._joint_cond.notify_all()
        if note:
            self._log("warn", "joint_jump", note)

    # -------------------------------------------------------------------------- worker thread
    def _work(self) -> None:
        while not self._stop:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait(0.5)
                if self._stop:
                    return
                item, self._pending = self._pending, None
            try:
                self._process(*item)
            except ConfigError as exc:   # e.g. the model's keypoints do not match the robot
                self.rospy.logfatal("dream_node: %s" % exc)
                self.rospy.signal_shutdown(str(exc))
                return
            except Exception as exc:     # a bug must not kill the worker: log it, keep going
                if self._stop or self.rospy.is_shutdown():
                    return                   # publishers already gone: not an error
                try:
                    self._count("internal_error", "internal error (please report): %s\n%s"
                                % (exc, traceback.format_exc()), level="error")
                except Exception:
                    traceback.print_exc()

    def _process(self, msg, compressed: bool, arrival: float) -> None:
        rospy = self.rospy
        header = msg.header
        stamp = header.stamp
        if stamp.is_zero():
            self._log("warn", "image_zero_stamp", "images on %s have zero stamps: using arrival "
                      "time" % self.image_topic)
            stamp = rospy.Time.now()
        t = stamp.to_sec()
        if self._last_stamp is not None:
            dt = t - self._last_stamp
            if dt < -1.0:
                self._log("warn", "image_jump", "image time jumped back %.2f s (bag loop or clock "
                          "reset): starting over with the new time line" % -dt)
                self.tf_buffer.clear()
            elif dt <= 0.0:
                return self._reject("out_of_order", "image stamp %.3f is not newer than the "
                                    "previous image's (%.3f): dropped" % (t, self._last_stamp),
                                    header, stamp)
        self._last_stamp = t

        info = self._info
        if info is None:
            return self._reject("no_camera_info", "waiting for camera_info on %s"
                                % self.info_topic, header, stamp)
        try:
            K, dist, size = self._intrinsics(info)
        except InputError as exc:
            return self._reject("bad_camera_info", "camera_info on %s: %s"
                                % (self.info_topic, exc), header, stamp)
        try:
            rgb = compressed_to_rgb(msg) if compressed else image_to_rgb(msg)
        except InputError as exc:
            return self._reject("bad_image", "image on %s: %s" % (self.image_topic, exc),
                                header, stamp)
        if size[0] and size[1] and (rgb.shape[1], rgb.shape[0]) != size:
            return self._reject("image_size_mismatch", "image is %dx%d but camera_info says %dx%d"
                                % (rgb.shape[1], rgb.shape[0], size[0], size[1]), header, stamp)
        optical = self.p["camera_frame"] or info.header.frame_id or header.frame_id
        if not optical:
            return self._reject("no_camera_frame", "camera_info and image have no frame_id: set "
                                "~camera_frame", header, stamp)
        self._optical = optical.lstrip("/")

        q, reason = self._joints_at(t)
        if q is None:
            return self._reject("joints", reason, header, stamp)
        joints = dict(zip(self.robot.joint_names, (float(v) for v in q)))

        static = self.p["mode"] == "static"
        capture, self._capture = self._capture, None    # one ~capture request = one frame
        accumulate = (not static) or bool(self.p["auto_capture"]) or capture is not None
        want_belief = self.pub_belief.get_num_connections() > 0
        t0 = time.time()
        with self._calib_lock:
            try:
                det, est = self.calibrator.process(rgb, joints, K, dist, stamp=t,
                                                   accumulate=accumulate,
                                                   return_belief=want_belief)
            except InputError as exc:
                if capture is not None:
                    capture["result"] = (False, str(exc))
                    capture["event"].set()
                return self._reject("bad_input", str(exc), header, stamp)
        proc_ms = 1000.0 * (time.time() - t0)

        out_header = self._header(stamp, self.base_frame)
        kp_header = self._header(stamp, header.frame_id or optical)
        self.pub_keypoints.publish(detections_to_msg(det, kp_header, self.model_name))
        single = est.extras.get("single_frame", est)
        if est.ok:
            stage = est.extras.get("stage", STATUS_OK)
            status = {STAGE_CONVERGED: self.PoseMsg.STATUS_CONVERGED,
                      STAGE_CONVERGING: self.PoseMsg.STATUS_CONVERGING}.get(stage, STATUS_OK)
            base_T_child = None
            publish = self.p["publish_tf"] and (not static or stage == STAGE_CONVERGED
                                                or self.p["publish_unconverged"])
            if publish:
                # static mode: the timer broadcasts (one stamp sequence on /tf); here we only
                # check the target frame, so a conflict is still reported per frame.
                base_T_child = self._publish_tf(est.camera_T_base, stamp, send=not static)
                if base_T_child is None:     # would give a frame a second parent: say so
                    if capture is not None:
                        capture["result"] = (False, self._tf_problem)
                        capture["event"].set()
                    return self._reject("tf_conflict", self._tf_problem, header, stamp, est=est,
                                        detected=det.num_detected)
            if not static:
                self._last_accepted = est
            target = self._tf_target
            child = target[0] if target else self._optical
            child_T_optical = target[1] if target else np.eye(4)
            if base_T_child is None:
                base_T_child = frames.invert(est.camera_T_base) @ frames.invert(child_T_optical)
            # the covariance of the frame the message (and TF) carries, e.g. camera_link
            cov = camera_pose_covariance(est.camera_T_base, est.covariance, child_T_optical)
            self.pub_pose.publish(estimate_to_msg(est, out_header, child, status, base_T_child,
                                                  det.num_detected, cov))
            with self.stats.lock:
                self.stats.accepted += 1
                self.stats.last_accept_wall = time.time()
        elif est.status == NOT_CAPTURED and single.ok:
            pass     # manual capture, nothing captured yet: a good frame, not a rejection
        else:
            self._reject(est.status, est.reason, header, stamp, est=est,
                         detected=det.num_detected)
        if capture is not None:
            capture["result"] = (est.ok, est.reason if not est.ok else
                                 "frame captured: %d frames used%s" % (est.frames_used,
                                 ", converged" if self.calibrator.converged else ""))
            capture["event"].set()
        with self.stats.lock:
            self.stats.processed += 1
            self.stats.times.append(time.time())
            self.stats.proc_ms.append(proc_ms)
            self.stats.age_ms.append(1000.0 * (rospy.Time.now() - stamp).to_sec())
            self.stats.detected.append(det.num_detected)
        self._publish_overlays(rgb, det, est, single, joints, K, dist, header)

    def _intrinsics(self, info):
        # camera_info rarely changes: convert once per distinct message content.
        key = (tuple(info.K), tuple(info.D), tuple(info.P), info.width, info.height,
               info.distortion_model, info.binning_x, info.binning_y)
        if self._info_cache[0] != key:
            self._info_cache = (key, camera_info_to_intrinsics(
                info, rectified=bool(self.p["image_is_rectified"])))
        return self._info_cache[1]

    def _joints_at(self, t: float):
        deadline = time.time() + float(self.p["joint_wait_s"])
        with self._joint_cond:
            while True:
                q, reason = self.joints.lookup(t)
                if q is not None and not self.joints.waiting_may_help(t):
                    return q, ""
                remaining = deadline - time.time()
                if remaining <= 0 or not (len(self.joints) == 0 or self.joints.waiting_may_help(t)):
                    return q, reason
                self._joint_cond.wait(remaining)

    def _header(self, stamp, frame_id):
        from std_msgs.msg import Header
        return Header(stamp=stamp, frame_id=frame_id)

    # --------------------------------------------------------------------------- rejections
    def _log(self, level: str, key: str, text: str) -> None:
        """Log ``text`` at most every ~log_throttle_s per ``key`` (rospy's throttling is per
        call site, which would merge different reasons)."""
        now = time.time()
        if now - self._throttle.get(key, -1e9) < float(self.p["log_throttle_s"]):
            return
        self._throttle[key] = now
        log = {"error": self.rospy.logerr, "warn": self.rospy.logwarn,
               "info": self.rospy.loginfo}.get(level, self.rospy.logwarn)
        log("dream_node: %s" % text)

    def _count(self, code: str, reason: str, level: str = "warn") -> None:
        with self.stats.lock:
            self.stats.rejections[code] += 1
            self.stats.last_rejection = "%s: %s" % (code, reason.splitlines()[0])
        self._log(level, code, "[%s] %s" % (code, reason))

    def _reject(self, code, reason, header, stamp, est=None, detected=0) -> None:
        self._count(code, reason)
        msg = estimate_to_msg(est, self._header(stamp, self.base_frame),
                              self._optical, STATUS_REJECTED, None, detected)
        msg.reason = "%s: %s" % (code, reason)
        self.pub_pose.publish(msg)

    # --------------------------------------------------------------------------------- TF
    def _publish_tf(self, camera_T_base, stamp, send: bool = True):
        target = self._resolve_tf_target()
        if target is None:
            self._log("error", "tf_conflict_detail", self._tf_problem)
            return None
        child, child_T_optical = target
        base_T_child = frames.invert(camera_T_base) @ frames.invert(child_T_optical)
        if send:
            self._ours.add((child, self.base_frame))
            self.tf_pub.sendTransform(transform_stamped(base_T_child, self.base_frame, child,
                                                        stamp))
        return base_T_child

    def _resolve_tf_target(self):
        """(child frame, child_T_optical) to publish to, or None with self._tf_problem set.
        Re-checked at most once a second (drivers may start after us)."""
        now = time.time()
        if self._tf_target is not None and now - self._tf_resolved_wall < 1.0:
            return self._tf_target
        self._tf_resolved_wall = now
        target, problem = choose_tf_child(self._tf_frames(), self._ours, self.base_frame,
                                          self._optical, self.p["tf_child_frame"])
        self._tf_problem = problem
        if target is None:
            self._tf_target = None
            return None
        child_T_optical = np.eye(4)
        if target != self._optical:
            child_T_optical = self._lookup(target, self._optical)
            if child_T_optical is None:
                self._log("warn", "link_fallback", "no TF between %s and %s: assuming %s is a "
                          "REP-103 camera_link at the optical frame's origin"
                          % (target, self._optical, target))
                child_T_optical = frames.LINK_T_OPTICAL
        self._tf_target = (target, child_T_optical)
        return self._tf_target

    def _tf_frames(self) -> dict:
        try:
            return yaml.safe_load(self.tf_buffer.all_frames_as_yaml()) or {}
        except Exception:   # an empty buffer yields "[]" or "" depending on the version
            return {}

    def _lookup(self, target: str, source: str):
        from .conversions import msg_to_transform
        try:
            tf = self.tf_buffer.lookup_transform(target, source, self.rospy.Time(0))
        except Exception:
            return None
        return msg_to_transform(tf.transform)

    def _timer_job(self, key: str, label: str, job) -> None:
        """Run a timer's work unless shutting down (holding ``_alive``, so shutdown waits for it
        before unregistering publishers); an error is logged and the timer keeps running."""
        with self._alive:
            if self._stop:
                return
            try:
                job()
            except Exception as exc:   # keep the timer alive whatever happens
                self._log("error", key, "%s: %s: %s" % (label, type(exc).__name__, exc))

    def _static_tf_tick(self, _event) -> None:
        self._timer_job("static_tf", "static TF", self._static_tf_once)

    def _static_tf_once(self) -> None:
        with self._calib_lock:
            est = self.calibrator.estimate
            converged = self.calibrator.converged
        if est is None or not est.ok or not self._optical:
            return
        if converged or self.p["publish_unconverged"]:
            self._publish_tf(est.camera_T_base, self.rospy.Time.now())

    # ----------------------------------------------------------------------------- overlays
    def _publish_overlays(self, rgb, det, est, single, joints, K, dist, header) -> None:
        from .. import visualize
        if self.pub_overlay.get_num_connections() > 0:
            shown = est if est.ok else None
            if shown is None and self.p["mode"] == "static":
                with self._calib_lock:     # a rejected frame: show the calibration so far
                    shown = self.calibrator.estimate
            pts = frames_ = None
            if shown is not None:
                kp_frames = self.robot.keypoint_frames(joints)
                pts = kp_frames[self.calibrator.order(det.names), :3, 3]
                frames_ = list(kp_frames)
            err = shown.reprojection_error_px if shown is not None else None
            lines = ["%s  %d/%d keypoints" % (est.extras.get("stage", est.status) if est.ok
                                              else "frame REJECTED", det.num_detected,
                                              len(det.names))]
            if err is not None:
                lines.append("%s: reprojection %.1f px, %d frames"
                             % (shown.extras.get("stage", "estimate"), err, shown.frames_used))
            if not est.ok:
                lines.append(est.reason[:90])
            img = visualize.calibration_overlay(
                rgb, det, shown, pts, frames_, K, dist, lines,
                float(self.p["overlay_axis_length_m"]))
            self.pub_overlay.publish(rgb_to_image(img, header))
        if self.pub_belief.get_num_connections() > 0 and det.belief_maps is not None:
            self.pub_belief.publish(rgb_to_image(visualize.belief_overlay(
                rgb, det.belief_maps, map_to_raw=self._belief_mapper(rgb, det.belief_maps)),
                header))

    def _belief_mapper(self, rgb, maps):
        """Belief-map px -> raw px through the detector's own preprocessing geometry, when it
        exposes one (KeypointDetector does); None otherwise (the overlay then stretches)."""
        pre = getattr(self.detector, "preprocessor", None)
        codec = getattr(self.detector, "codec", None)
        if pre is None or codec is None or not hasattr(pre, "geometry"):
            return None
        geo = pre.geometry((rgb.shape[1], rgb.shape[0]))
        out_size = (maps.shape[-1], maps.shape[-2])
        return lambda xy: geo.to_raw(codec.output_to_input(xy, out_size, geo.input_size))

    # ----------------------------------------------------------------------------- services
    def _srv_capture(self, req):
        from std_srvs.srv import TriggerResponse
        if self.p["mode"] != "static":
            return TriggerResponse(False, "~capture is for static mode (~mode:=static)")
        if self.p["auto_capture"]:
            return TriggerResponse(False, "~auto_capture is true: every frame is used already")
        if self.calibrator.converged:
            return TriggerResponse(False, "already converged; call ~reset to recalibrate")
        request = {"event": threading.Event(), "result": None}
        self._capture = request
        ok = request["event"].wait(float(self.p["capture_timeout_s"]))
        if self._capture is request:      # not consumed by the worker: withdraw it
            self._capture = None
        if not ok:
            return TriggerResponse(False, "no usable frame within %.1f s (images on %s?)"
                                   % (float(self.p["capture_timeout_s"]), self.image_topic))
        success, message = request["result"]
        return TriggerResponse(bool(success), str(message))

    def _srv_reset(self, req):
        from std_srvs.srv import TriggerResponse
        with self._calib_lock:
            est = self.calibrator.estimate
            self.calibrator.reset()
            self._last_accepted = None
        self._tf_target = None
        return TriggerResponse(True, "reset (dropped an estimate from %d frames)"
                               % (est.frames_used if est is not None else 0))

    def default_save_path(self) -> str:
        folder = self.p["save_dir"] or os.path.join(
            os.environ.get("ROS_HOME", os.path.expanduser("~/.ros")), "dream_ros")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", self._optical or "camera").strip("_") or "camera"
        return os.path.join(os.path.expanduser(folder), name + ".yaml")

    def _srv_save(self, req):
        from dream_ros.srv import SaveCalibrationResponse
        with self._calib_lock:
            est = self.calibrator.estimate if self.p["mode"] == "static" else self._last_accepted
        path = req.path or self.default_save_path()
        target = self._tf_target
        try:
            written = save_calibration(
                path, est, self.base_frame, self._optical,
                tf_child=target[0] if target else None,
                child_T_camera=target[1] if target else None, robot=self.robot.config.name,
                model=self.model_name, mode=self.p["mode"])
        except ConfigError as exc:
            self._log("error", "save", "save failed: %s" % exc)
            return SaveCalibrationResponse(False, str(exc))
        note = "" if self.p["mode"] != "static" or self.calibrator.converged else \
            " (not converged yet)"
        self.rospy.loginfo("dream_node: calibration saved to %s%s" % (written, note))
        return SaveCalibrationResponse(True, str(written) + note)

    # -------------------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self, _event=None) -> None:
        self._timer_job("diagnostics", "diagnostics", self._diagnostics_once)

    def _diagnostics_once(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
        s = self.stats
        now = time.time()
        with s.lock:
            proc = sorted(s.proc_ms)
            age = sorted(s.age_ms)
            det = list(s.detected)
            rej = dict(s.rejections)
            last_rej = s.last_rejection
            accepted, processed, received, dropped = s.accepted, s.processed, s.received, s.dropped
            last_acc, last_img = s.last_accept_wall, s.last_image_wall
        med = lambda v: v[len(v) // 2] if v else float("nan")   # noqa: E731
        st = DiagnosticStatus(name="dream_ros: calibration (%s)" % self.name.lstrip("/"),
                              hardware_id=self._optical or "camera")
        if self._tf_problem:
            st.level, st.message = DiagnosticStatus.ERROR, self._tf_problem
        elif last_img is None or now - last_img > 5.0:
            st.level = DiagnosticStatus.WARN
            st.message = "no images on %s%s" % (self.image_topic, "" if last_img is None else
                                                " for %.0f s" % (now - last_img))
        elif last_acc is None or now - last_acc > 5.0:
            st.level = DiagnosticStatus.WARN
            st.message = "no accepted frame recently; last rejection %s" % last_rej
        else:
            st.level, st.message = DiagnosticStatus.OK, (
                "converged" if self.calibrator.converged else
                "converging" if self.p["mode"] == "static" else "calibrating")
        with self._calib_lock:
            est = self.calibrator.estimate if self.p["mode"] == "static" else self._last_accepted
        values = [
            ("mode", self.p["mode"]), ("rate_hz", "%.2f" % s.rate()),
            ("processing_ms_median", "%.1f" % med(proc)),
            ("latency_ms_median", "%.1f" % med(age)),
            ("images_received", received), ("images_dropped_stale", dropped),
            ("frames_processed", processed), ("frames_accepted", accepted),
            ("keypoints_detected_mean", "%.2f" % (np.mean(det) if det else float("nan"))),
            ("rejections_total", sum(rej.values())), ("last_rejection", last_rej),
            ("converged", self.calibrator.converged),
            ("frames_used", est.frames_used if est is not None else 0),
            ("reprojection_error_px", "%.2f" % est.reprojection_error_px
             if est is not None and est.reprojection_error_px is not None else "n/a"),
            ("spread_translation_m", _fmt(est.extras.get("spread_translation_m")
                                          if est is not None else None, 4)),
            ("spread_rotation_deg", _fmt(est.extras.get("spread_rotation_deg")
                                         if est is not None else None, 2)),
            ("standard_error_translation_m",
             _fmt(est.extras.get("standard_error_translation_m") if est is not None else None, 4)),
            ("standard_error_rotation_deg",
             _fmt(est.extras.get("standard_error_rotation_deg") if est is not None else None, 2)),
            ("tf", "%s -> %s" % (self.base_frame, self._tf_target[0] if self._tf_target
                                 else self._optical or "?")),
        ]
        values += [("rejected: %s" % k, v) for k, v in sorted(rej.items())]
        st.values = [KeyValue(str(k), str(v)) for k, v in values]
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.rospy.Time.now()
        try:
            self.pub_diag.publish(arr)
        except self.rospy.ROSException:
            pass

    def shutdown(self, worker_timeout_s: float = 10.0) -> None:
        """Stop everything that publishes (timers, the worker with its frame in flight), then
        unregister. Registered with rospy.on_shutdown, which runs before rospy closes its own
        topics; a frame's publishing must never meet an unregistered handle."""
        if self._shut:
            return
        self._shut = True
        for sub in (self.sub_image, self.sub_info, self.sub_joints):
            sub.unregister()                     # no new input
        with self._alive:                        # waits for a timer callback in flight
            self._stop = True
        with self._cond:
            self._cond.notify_all()
        for t in self._timers:
            t.shutdown()
        if threading.current_thread() is not self._worker:   # the worker may call shutdown
            self._worker.join(timeout=worker_timeout_s)       # (signal_shutdown on ConfigError)
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self.rospy.logwarn("dream_node: the frame in flight did not finish within %.0f s; "
                               "shutting down anyway" % worker_timeout_s)
        for srv in (self.srv_capture, self.srv_reset, self.srv_save):
            srv.shutdown()
        for pub in (self.pub_keypoints, self.pub_pose, self.pub_overlay, self.pub_belief):
            pub.unregister()
        self.tf_listener.unregister()


def _fmt(value, digits: int) -> str:
    try:
        return "%.*f" % (digits, float(value))
    except (TypeError, ValueError):
        return "n/a"


def choose_tf_child(tf_frames: dict, ours, base_frame: str, optical: str,
                    requested: str = "") -> Tuple[Optional[str], str]:
    """Which frame to publish ``base_frame -> child`` to, given TF's frame table
    ({frame: {parent, broadcaster}}) and the (child, parent) links we publish ourselves;
    (None, problem) when that would give a frame a second parent or connect the camera to the
    robot twice."""
    ours = set(ours)

    def parent(f):   # parent set by someone else, or None
        e = tf_frames.get(f)
        if isinstance(e, dict) and e.get("parent") and (f, str(e["parent"])) not in ours:
            return str(e["parent"]), str(e.get("broadcaster", "?"))
        return None

    def root(f):
        seen = set()
        while parent(f) and f not in seen:
            seen.add(f)
            f = parent(f)[0]
        return f

    if requested:
        child = requested.lstrip("/")
        par = parent(child)
        if par:
            return None, ("frame %r already has parent %r (published by %s); a frame can have "
                          "one parent: set ~tf_child_frame to a frame without a parent (the root "
                          "of the camera's TF tree) or stop the other publisher"
                          % (child, par[0], par[1]))
        return child, ""
    child = root(optical)
    if child == root(base_frame) or child == base_frame:
        return None, ("camera frame %r is already connected to %r in TF by another node "
                      "(publish_calibration.launch or a static_transform_publisher running?): "
                      "stop it, or set ~publish_tf:=false" % (optical, base_frame))
    return child, ""


def zoom_views_for(mode: str, zoom_views: int) -> int:
    """~zoom_views, 0 resolved by the mode: a static camera gathers frames for a while and gains
    from the slower, more accurate detection; a moving one needs the frame rate."""
    if zoom_views:
        return zoom_views
    from ..network.zoom import ACCURATE_ZOOM_VIEWS, DEFAULT_ZOOM_VIEWS
    return ACCURATE_ZOOM_VIEWS if mode == "static" else DEFAULT_ZOOM_VIEWS


MODEL_FIX = "set ~model or ~robot"


def build_detector(model: str, robot, device: str = "auto", backend: str = "auto",
                   threads: int = 2, zoom_views: int = 0):
    """The real KeypointDetector for ~model, checked against the robot; ConfigError naming what to
    fix otherwise."""
    if threads > 0:
        try:
            import torch
            torch.set_num_threads(int(threads))
        except ImportError:
            pass
    from ..network.detector import KeypointDetector
    from ..network.model_file import robot_for_model
    try:
        detector = KeypointDetector(model, device=device, backend=backend,
                                    zoom_views=zoom_views_for("continuous", zoom_views))
    except DreamError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigError("cannot load model %r: %s: %s (set ~model to a dream_ros model file, a "
                          "robot name or a DREAM .pth)" % (model, type(exc).__name__, exc))
    robot_for_model(repr(model), detector.config, robot, MODEL_FIX)
    return detector


def main(argv=None) -> None:
    import rospy
    rospy.init_node("dream_node")
    try:
        node = DreamNode()
    except DreamError as exc:
        rospy.logfatal("dream_node: %s" % exc)
        sys.stderr.write("dream_node: fatal: %s\n" % exc)
        sys.exit(2)
    rospy.on_shutdown(node.shutdown)
    rospy.spin()
