"""dream_node's memory stays flat under a stream (issue #10, "Load": memory flat).

The node runs in-process against the session roscore with a fast stand-in detector (true
projections, bounded state) and a stream of a few cycled frames. tracemalloc counts the Python
and numpy memory still held after each window of frames: once the bounded buffers are full
(joint history 5 s, tf buffer, stats windows), a second window of frames must add next to
nothing. A per-frame leak (a list, deque, dict or cache growing per frame anywhere on the
node's path: callbacks, worker, Calibrator, publishers, TF, diagnostics) shows up as growth
proportional to the frames; the second test proves the measurement sees one of 130 B/frame.

RSS is not asserted here (allocator arenas and library caches make it step up during warm-up);
scripts/load_test.py reports the node process's RSS at 1/3 and at the end of a long run and the
MB/min over the last 2/3 (docs/dream_node.md, "Load").
"""
from __future__ import annotations

import gc
import threading
import time
import tracemalloc

import cv2
import numpy as np
import pytest
import yaml

rospy = pytest.importorskip("rospy")

from dream_ros.robot import RobotModel  # noqa: E402
from dream_ros.ros.conversions import intrinsics_to_camera_info  # noqa: E402
from dream_ros.types import Detections  # noqa: E402
from test_dream_node import TRUE_T, wait_for  # noqa: E402

W, H = 160, 120
K = np.array([[150.0, 0, 79.5], [0, 150.0, 59.5], [0, 0, 1]])
NF = 6               # distinct frames, cycled (the frame index is in pixel (0, 0))
RATE = 60.0          # Hz; the node drops what it cannot process
WINDOW = 300         # frames per measured window
# Allocations of messages in flight (rospy's receive buffer, the image being deserialised or
# waiting in the node's one-image slot, the publisher's serialised buffer) are there or not
# depending on the moment of the snapshot: not retained per frame.
# The tf buffer holds the last TF_CACHE_S of transforms, as many as the node published in that
# time: its size follows the processing rate (which varies with the machine's load), so it is
# checked by its time span instead (test below).
IN_FLIGHT = ("*/rospy/impl/tcpros_base.py", "*/sensor_msgs/msg/_Image.py", "*/rospy/topics.py",
             "*/tracemalloc.py", "*/linecache.py", "*/tf2_ros/transform_listener.py")


class CycleDetector:
    """True keypoint projections of the cycled frame, with noise; keeps no per-frame state."""

    def __init__(self, robot, joints):
        self.robot, self.joints = robot, joints
        self.rng = np.random.default_rng(1)
        self.rvec = cv2.Rodrigues(TRUE_T[:3, :3])[0]

    def detect(self, rgb, return_belief=False):
        pts = self.robot.keypoints_3d(self.joints[int(rgb[0, 0, 0]) % NF])
        uv, _ = cv2.projectPoints(pts, self.rvec, TRUE_T[:3, 3], K, None)
        n = len(pts)
        return Detections(list(self.robot.keypoint_names),
                          uv.reshape(-1, 2) + self.rng.normal(0, 0.3, (n, 2)), np.ones(n),
                          np.ones(n, bool), (W, H), None)


class CycleStream:
    """image + camera_info + joint_states of NF pre-built frames at RATE, cycled."""

    def __init__(self, robot, prefix):
        from sensor_msgs.msg import CameraInfo, Image, JointState
        rng = np.random.default_rng(0)
        lo, hi = robot.joint_limits()
        qs = [(lo + hi) / 2 + 0.45 * (hi - lo) / 2 * rng.uniform(-1, 1, len(lo))
              for _ in range(NF)]
        self.joints = [dict(zip(robot.joint_names, q)) for q in qs]
        self.js = [JointState(name=list(robot.joint_names), position=list(q)) for q in qs]
        self.images = []
        for i in range(NF):
            rgb = np.full((H, W, 3), 40, np.uint8)
            rgb[0, 0, 0] = i
            self.images.append(Image(height=H, width=W, encoding="rgb8", step=W * 3,
                                     data=rgb.tobytes()))
        self.info = intrinsics_to_camera_info(K, (W, H), prefix.strip("/") + "_optical")
        self.pub_img = rospy.Publisher(prefix + "/image", Image, queue_size=1)
        self.pub_info = rospy.Publisher(prefix + "/camera_info", CameraInfo, queue_size=1)
        self.pub_js = rospy.Publisher(prefix + "/joint_states", JointState, queue_size=10)
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._stop = True
        self.thread.join(5)
        for p in (self.pub_img, self.pub_info, self.pub_js):
            p.unregister()

    def _run(self):
        n = 0
        while not self._stop and not rospy.is_shutdown():
            i = n % NF
            stamp = rospy.Time.now()
            js, img = self.js[i], self.images[i]
            js.header.stamp = self.info.header.stamp = img.header.stamp = stamp
            img.header.frame_id = self.info.header.frame_id
            self.pub_js.publish(js)
            self.pub_info.publish(self.info)
            self.pub_img.publish(img)
            n += 1
            time.sleep(1.0 / RATE)


def _snapshot():
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, f) for f in IN_FLIGHT])


def _quiet_snapshot(tries: int = 4):
    """The smallest of a few snapshots a frame period apart. A snapshot taken while the worker is
    mid-frame also holds that frame's temporaries (FK, the pose, a diagnostics message); they are
    freed when the frame is done, so the smallest snapshot is the one nearest to an idle node. A
    per-frame leak is in every snapshot and still shows."""
    best, best_size = None, None
    for i in range(tries):
        if i:
            time.sleep(1.5 / RATE)
        snap = _snapshot()
        size = sum(st.size for st in snap.statistics("filename"))
        if best is None or size < best_size:
            best, best_size = snap, size
    return best


def retained_growth(node, frames: int):
    """(bytes still held after ``frames`` more processed frames, top growth lines)."""
    before = _quiet_snapshot()
    target = node.stats.processed + frames
    wait_for(lambda: node.stats.processed >= target, timeout=120, what="%d frames" % frames)
    diff = _quiet_snapshot().compare_to(before, "traceback")
    top = ["%+.1f kB %+d blocks at %s" % (d.size_diff / 1024, d.count_diff, " <- ".join(
        "%s:%d" % (f.filename.rsplit("/", 1)[-1], f.lineno) for f in reversed(d.traceback)))
        for d in diff[:5]]
    return sum(d.size_diff for d in diff), top


@pytest.fixture(scope="module")
def streamed_node(roscore):
    from dream_ros.ros.node import DreamNode, TF_CACHE_S
    robot = RobotModel.load("panda")
    prefix = "/mem"
    stream = CycleStream(robot, prefix)
    # A 1 s joint history fills quickly, so the warm-up below covers it (default 5 s: the same
    # code, only more entries, whose number varies with the stream's actual rate).
    rospy.set_param(prefix + "_node/joint_history_s", 1.0)
    node = DreamNode(detector=CycleDetector(robot, stream.joints), robot=robot,
                     namespace=prefix + "_node",
                     topics=dict(image=prefix + "/image", camera_info=prefix + "/camera_info",
                                 joint_states=prefix + "/joint_states"))
    stream.start()
    tracemalloc.start(6)
    try:
        # Warm-up: buffers fill, lazy imports and caches settle (the node's own TF comes back
        # through its listener into a buffer of TF_CACHE_S), diagnostics have been published.
        t_end = time.time() + TF_CACHE_S + 1.0
        wait_for(lambda: node.stats.processed >= 100 and time.time() > t_end, timeout=60,
                 what="warm-up frames")
        assert node.stats.accepted >= 0.9 * node.stats.processed, dict(node.stats.rejections)
        yield node
    finally:
        tracemalloc.stop()
        stream.stop()
        node.shutdown()
        rospy.delete_param(prefix + "_node")


def test_node_retains_no_memory_per_frame(streamed_node):
    node = streamed_node
    first, top1 = retained_growth(node, WINDOW)
    second, top2 = retained_growth(node, WINDOW)
    # Bounded state: what the first window added (if anything) the second does not add again.
    # 16 kB per 300 frames = 55 B/frame: below one numpy array or message per frame.
    assert second < 16 * 1024, "%.1f kB retained over %d frames after warm-up:\n%s" % (
        second / 1024, WINDOW, "\n".join(top2))
    assert first + second < 48 * 1024, "%.1f + %.1f kB retained:\n%s" % (
        first / 1024, second / 1024, "\n".join(top1 + top2))
    # The buffers bounded by time: the tf buffer and the joint history.
    from dream_ros.ros.node import TF_CACHE_S
    tf = yaml.safe_load(node.tf_buffer.all_frames_as_yaml())
    assert tf and all(f["buffer_length"] <= TF_CACHE_S + 0.5 for f in tf.values()), tf
    with node._joint_cond:
        span = node.joints._t[-1] - node.joints._t[0]
    assert span <= node.joints.history_s, span


def test_the_measurement_sees_a_small_per_frame_leak(streamed_node):
    """The same measurement on a node that keeps ~130 B per frame (a small array per frame in
    an unbounded list, the kind of leak this file guards against) reports it. (Runs after the
    test above: both use the one node of this module.)"""
    node = streamed_node
    kept = []
    real = node.calibrator.process

    def leaky(rgb, joints, K, dist=None, stamp=None, **kw):
        kept.append(np.array([stamp, len(kept)]))     # ~130 B per frame, never freed
        return real(rgb, joints, K, dist, stamp=stamp, **kw)

    node.calibrator.process = leaky
    try:
        grown, top = retained_growth(node, WINDOW)
    finally:
        del node.calibrator.process
    assert grown >= 16 * 1024, "a %d-frame leak went unseen: %.1f kB\n%s" % (
        len(kept), grown / 1024, "\n".join(top))
