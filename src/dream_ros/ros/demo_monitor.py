"""The judge of ``make demo``: compares dream_node's live estimates with the simulated truth.

It listens to dream_node's ``~pose`` (dream_ros/PoseEstimate) and the sim camera's latched
``~true_camera_pose`` (geometry_msgs/TransformStamped), prints one line per estimate with its error,
and when the static calibration has converged (or the time is up) saves the calibration through
dream_node's ``~save`` service, writes a few ``~overlay`` images as PNGs, prints the result and
exits 0 when the error is within the bound, 1 when it is not, 2 when nothing converged in time.

The error is measured the way a TF user sees it (``frames.pose_error``): the distance between the
estimated and the true camera positions in the base frame, and the angle between the orientations.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter, OrderedDict, deque
from pathlib import Path
from typing import Optional

import numpy as np

from ..frames import from_translation_quaternion, invert, pose_error

# The bound the demo enforces: as good as what people accept from marker-based hand-eye calibration
# (easy_handeye users report 2-3 cm between runs; MoveIt Calibration 1-2 cm on a UR5): 30 mm for
# the camera position. 2 degrees is the matching rotation: it shifts a point 1 m in front of the
# camera by 35 mm.
DEFAULT_MAX_TRANSLATION_MM = 30.0
DEFAULT_MAX_ROTATION_DEG = 2.0

OK_STATUSES = ("ok", "converging", "converged")


def transform_to_matrix(tf) -> np.ndarray:
    t, q = tf.translation, tf.rotation
    return from_translation_quaternion([t.x, t.y, t.z], [q.x, q.y, q.z, q.w])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for_master(timeout_s: float, watch_pid: int = 0) -> bool:
    import rosgraph
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if rosgraph.is_master_online():
            return True
        if watch_pid and not pid_alive(watch_pid):
            return False
        time.sleep(0.2)
    return False


class DemoMonitor:
    def __init__(self, pose_topic: str, truth_topic: str, overlay_topic: str, save_service: str,
                 out: Path, max_mm: float, max_deg: float, timeout_s: float, settle_frames: int,
                 n_overlays: int):
        import rospy
        from geometry_msgs.msg import TransformStamped
        from sensor_msgs.msg import Image
        from dream_ros.msg import PoseEstimate

        self.rospy = rospy
        self.out = out
        self.max_mm, self.max_deg = max_mm, max_deg
        self.timeout_s = timeout_s
        self.settle_frames = settle_frames
        self.n_overlays = n_overlays
        self.save_service = save_service
        self.truth: Optional[np.ndarray] = None       # base_T_optical
        self.truth_frame = ""
        self.last = None                               # (msg, err_mm, err_deg)
        self.converged_at = None
        self.after_converged = 0
        self.first_msg_time = None
        self.start = time.time()
        self.overlays = deque(maxlen=64)               # the newest ~overlay images
        self.status_by_stamp = OrderedDict()           # pose stamp -> status, to pick overlays
        self.history = []
        self.done = False                              # judged: stop printing
        self.rejections = Counter()
        self.last_rejection, self.last_rejection_print = "", time.time() - self.start
        rospy.Subscriber(truth_topic, TransformStamped, self._on_truth, queue_size=1)
        rospy.Subscriber(pose_topic, PoseEstimate, self._on_pose, queue_size=20)
        rospy.Subscriber(overlay_topic, Image, self._on_overlay, queue_size=2, buff_size=2 ** 24)
        self.pose_topic, self.truth_topic = pose_topic, truth_topic

    # -- callbacks ---------------------------------------------------------------------------------
    def _on_truth(self, msg) -> None:
        self.truth = transform_to_matrix(msg.transform)
        self.truth_frame = msg.child_frame_id

    def _on_overlay(self, msg) -> None:
        if self.done:
            return
        self.overlays.append(msg)

    def _on_pose(self, msg) -> None:
        if self.done:
            return
        t = time.time() - self.start
        self.status_by_stamp[msg.header.stamp] = msg.status
        while len(self.status_by_stamp) > 500:
            self.status_by_stamp.popitem(last=False)
        if self.first_msg_time is None:
            self.first_msg_time = t
        if msg.status not in OK_STATUSES:
            # Rejections are summarised: one line every few seconds with the counts per reason.
            self.rejections[msg.reason.split(":", 1)[0]] += 1
            self.last_rejection = msg.reason
            if t - self.last_rejection_print > 5.0:
                self._flush_rejections(t)
            return
        self._flush_rejections(t)
        if self.truth is None:
            print("[%6.1fs] %-10s (no ground truth yet on %s)" % (t, msg.status, self.truth_topic),
                  flush=True)
            return
        if msg.camera_frame != self.truth_frame:
            # The sim publishes no camera TF tree, so dream_node reports the optical frame itself.
            print("[%6.1fs] estimate is for frame %r, the truth for %r: cannot compare"
                  % (t, msg.camera_frame, self.truth_frame), flush=True)
            return
        est = transform_to_matrix(msg.base_to_camera)
        dt, dr = pose_error(invert(est), invert(self.truth))
        self.last = (msg, 1000.0 * dt, dr)
        self.history.append((t, msg.status, msg.frames_used, 1000.0 * dt, dr))
        print("[%6.1fs] %-10s frames %3d  points %3d (inliers %3d)  newest frame %d kp  "
              "rms %5.2f px  std.err. %5.1f mm %4.2f deg  | error %6.1f mm %5.2f deg"
              % (t, msg.status, msg.frames_used, msg.keypoints_used, msg.inliers,
                 msg.keypoints_detected, msg.reprojection_error_px,
                 1000.0 * msg.standard_error_translation_m, msg.standard_error_rotation_deg,
                 1000.0 * dt, dr),
              flush=True)
        if msg.status == "converged":
            if self.converged_at is None:
                self.converged_at = t
            self.after_converged += 1

    def _flush_rejections(self, t: float) -> None:
        if self.rejections:
            n = sum(self.rejections.values())
            print("[%6.1fs] rejected   %d frame%s: %s; last: %s" % (
                t, n, "s" if n > 1 else "",
                ", ".join("%s %d" % kv for kv in self.rejections.most_common()),
                self.last_rejection), flush=True)
            self.rejections.clear()
        self.last_rejection_print = t

    # -- the run -----------------------------------------------------------------------------------
    def wait(self, watch_pid: int = 0) -> bool:
        """True when converged (and a few frames seen after), False on timeout, shutdown or when
        the launched ROS processes are gone."""
        rospy = self.rospy
        while not rospy.is_shutdown():
            if self.converged_at is not None and self.after_converged >= self.settle_frames:
                return True
            if time.time() - self.start > self.timeout_s:
                return False
            if watch_pid and not pid_alive(watch_pid):
                print("demo: the ROS processes (pid %d) exited" % watch_pid, flush=True)
                return False
            time.sleep(0.1)
        return False

    def save_calibration(self) -> str:
        from dream_ros.srv import SaveCalibration
        rospy = self.rospy
        path = str((self.out / "calibration.yaml").resolve())
        try:
            rospy.wait_for_service(self.save_service, timeout=10.0)
            resp = rospy.ServiceProxy(self.save_service, SaveCalibration)(path)
        except (rospy.ROSException, rospy.ServiceException) as exc:
            return "not saved (%s: %s)" % (self.save_service, exc)
        return resp.message if resp.success else "not saved (%s)" % resp.message

    def write_overlays(self):
        """A few of the newest overlays, preferring frames the node accepted."""
        import cv2
        from cv_bridge import CvBridge
        items = list(self.overlays)
        accepted = [m for m in items if self.status_by_stamp.get(m.header.stamp) in OK_STATUSES]
        items = accepted or items
        if not items:
            return []
        idx = sorted(set(int(round(x)) for x in np.linspace(0, len(items) - 1, self.n_overlays)))
        bridge = CvBridge()
        paths = []
        for k, i in enumerate(idx):
            msg = items[i]
            bgr = bridge.imgmsg_to_cv2(msg, desired_encoding="bgr8")
            path = self.out / ("overlay_%02d.png" % k)
            ok, buf = cv2.imencode(".png", bgr)
            if ok:
                fd, tmp = tempfile.mkstemp(dir=str(self.out), suffix=".tmp")
                with os.fdopen(fd, "wb") as f:
                    f.write(buf.tobytes())
                os.chmod(tmp, 0o644)
                os.replace(tmp, str(path))
                paths.append(path)
        return paths


def parse_args(argv):
    p = argparse.ArgumentParser(description="judge the dream_ros simulated demo")
    p.add_argument("--pose-topic", default="/dream_node/pose")
    p.add_argument("--truth-topic", default="/sim_camera/true_camera_pose")
    p.add_argument("--overlay-topic", default="/dream_node/overlay")
    p.add_argument("--save-service", default="/dream_node/save")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--max-translation-mm", type=float, default=DEFAULT_MAX_TRANSLATION_MM)
    p.add_argument("--max-rotation-deg", type=float, default=DEFAULT_MAX_ROTATION_DEG)
    p.add_argument("--timeout", type=float, default=110.0,
                   help="seconds to wait for convergence (from the monitor's start)")
    p.add_argument("--settle-frames", type=int, default=3,
                   help="converged estimates to see before judging")
    p.add_argument("--overlays", type=int, default=4)
    p.add_argument("--watch-pid", type=int, default=0,
                   help="stop waiting when this process (roslaunch) exits")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import rospy
    args = parse_args(rospy.myargv(sys.argv if argv is None else argv)[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not wait_for_master(30.0, args.watch_pid):
        print("demo: FAILED: no ROS master at %s" % os.environ.get("ROS_MASTER_URI"), flush=True)
        return 2
    rospy.init_node("demo_monitor", disable_signals=True)
    mon = DemoMonitor(args.pose_topic, args.truth_topic, args.overlay_topic, args.save_service,
                      out, args.max_translation_mm, args.max_rotation_deg, args.timeout,
                      args.settle_frames, args.overlays)
    print("demo: waiting for estimates on %s (truth: %s); bound %.0f mm / %.1f deg, timeout %.0f s"
          % (args.pose_topic, args.truth_topic, args.max_translation_mm, args.max_rotation_deg,
             args.timeout), flush=True)
    try:
        converged = mon.wait(args.watch_pid)
    except KeyboardInterrupt:
        print("demo: interrupted", flush=True)
        return 130
    mon.done = True
    if mon.last is None:
        print("\ndemo: FAILED: no accepted estimate within %.0f s" % args.timeout, flush=True)
        paths = mon.write_overlays()
        if paths:
            print("overlays: %s" % ", ".join(str(p) for p in paths))
        return 2
    msg, err_mm, err_deg = mon.last
    T = transform_to_matrix(msg.base_to_camera)
    from scipy.spatial.transform import Rotation
    rpy = Rotation.from_matrix(T[:3, :3]).as_euler("xyz", degrees=True)
    true_rpy = Rotation.from_matrix(mon.truth[:3, :3]).as_euler("xyz", degrees=True)
    saved = mon.save_calibration()
    paths = mon.write_overlays()
    print("", flush=True)
    print("%s calibration after %d frames (%.0f s):" % ("converged" if converged else
                                                       "NOT converged; latest", msg.frames_used,
                                                       time.time() - mon.start))
    print("  estimated camera (%s) in %s: xyz %s m, rpy %s deg"
          % (msg.camera_frame, msg.header.frame_id, " ".join("%+.4f" % v for v in T[:3, 3]),
             " ".join("%+.2f" % v for v in rpy)))
    print("  true camera (%s)%s: xyz %s m, rpy %s deg"
          % (mon.truth_frame, " " * max(0, len(msg.camera_frame) - len(mon.truth_frame)),
             " ".join("%+.4f" % v for v in mon.truth[:3, 3]), " ".join("%+.2f" % v for v in true_rpy)))
    print("  error: %.1f mm, %.2f deg (bound %.0f mm, %.1f deg); reprojection %.2f px RMS"
          % (err_mm, err_deg, args.max_translation_mm, args.max_rotation_deg,
             msg.reprojection_error_px))
    print("  calibration YAML: %s" % saved)
    if paths:
        print("  overlays: %s" % ", ".join(str(p) for p in paths))
    if not converged:
        print("demo: FAILED: the calibration did not converge within %.0f s" % args.timeout)
        return 2
    if err_mm > args.max_translation_mm or err_deg > args.max_rotation_deg:
        print("demo: FAILED: error above the bound")
        return 1
    print("demo: PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
