#!/usr/bin/env python3
"""rostest node for dream_node.test: this package's messages arrive from the real dream_node;
static mode converges; the TF it publishes matches sim_camera's truth within ~max_mm / ~max_deg;
the diagnostics name the node; ~save writes a calibration file."""
import os
import sys
import tempfile
import threading
import time
import unittest

import numpy as np
import rospy
import rostest
import tf2_ros
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TransformStamped

from dream_ros import frames
from dream_ros.calibration import load_calibration
from dream_ros.msg import Keypoints, PoseEstimate
from dream_ros.ros.conversions import msg_to_transform
from dream_ros.srv import SaveCalibration


class DreamNodeStatic(unittest.TestCase):
    def setUp(self):
        self.lock = threading.Lock()
        self.poses, self.keypoints, self.diags, self.truth = [], [], [], []
        self.subs = [
            rospy.Subscriber("/dream_node/pose", PoseEstimate, self._add(self.poses)),
            rospy.Subscriber("/dream_node/keypoints", Keypoints, self._add(self.keypoints)),
            rospy.Subscriber("/diagnostics", DiagnosticArray, self._add(self.diags)),
            rospy.Subscriber("/sim_camera/true_camera_pose", TransformStamped,
                             self._add(self.truth)),
        ]
        self.tf = tf2_ros.Buffer()
        self.listener = tf2_ros.TransformListener(self.tf)

    def _add(self, bucket):
        def cb(msg):
            with self.lock:
                bucket.append(msg)
        return cb

    def wait(self, pred, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline and not rospy.is_shutdown():
            with self.lock:
                if pred():
                    return
            time.sleep(0.1)
        with self.lock:
            last = [(m.status, m.reason) for m in self.poses[-3:]]
        self.fail("timed out after %.0f s waiting for %s; last ~pose: %s" % (timeout, what, last))

    def test_a_messages_arrive(self):
        """Wiring, whatever the model's quality: this package's messages and the diagnostics."""
        self.wait(lambda: self.poses and self.keypoints and self.truth, 60,
                  "~pose, ~keypoints and the simulated truth")
        kp = self.keypoints[-1]
        # one entry per keypoint of the launched model, in its order (7 or panda_extended's 11)
        from dream_ros.network.model_file import load_model
        model = rospy.get_param("/dream_node/model", "") or "panda"
        names = load_model(model)[1].keypoint_names
        self.assertEqual([k.name for k in kp.keypoints], list(names))
        self.assertEqual(kp.header.frame_id, "sim_camera_optical_frame")
        self.assertIn(self.poses[-1].status, ("rejected", "converging", "converged"))
        self.wait(lambda: any(any("dream_node" in s.name for s in d.status) for d in self.diags),
                  10, "diagnostics")
        self.assertTrue(all(m.status == "rejected" or m.reprojection_error_px < 8.0
                            for m in self.poses), "an accepted estimate broke the 8 px gate")

    def test_b_converges_to_the_truth(self):
        """Accuracy of the shipped model: static mode converges within ~max_mm / ~max_deg."""
        if not rospy.get_param("~expect_converged", True):
            self.skipTest("expect_converged:=false (the shipped model is not yet accurate enough "
                          "for the accuracy bound; see models/panda_default.md)")
        timeout = float(rospy.get_param("~timeout_s", 100))
        self.wait(lambda: self.truth, 30, "the simulated truth")
        self.wait(lambda: any(m.status == "converged" for m in self.poses), timeout,
                  "status converged")
        truth = msg_to_transform(self.truth[-1].transform)          # base_T_camera
        tf = self.tf.lookup_transform("panda_link0", "sim_camera_optical_frame", rospy.Time(0),
                                      rospy.Duration(10))
        est = msg_to_transform(tf.transform)
        t_err, r_err = frames.pose_error(frames.invert(est), frames.invert(truth))
        conv = next(m for m in self.poses if m.status == "converged")
        print("converged after %d frames: %.1f mm, %.2f deg from the truth; reprojection "
              "%.2f px; spread %.1f mm / %.2f deg, standard error %.1f mm / %.2f deg"
              % (conv.frames_used, 1000 * t_err, r_err, conv.reprojection_error_px,
                 1000 * conv.spread_translation_m, conv.spread_rotation_deg,
                 1000 * conv.standard_error_translation_m, conv.standard_error_rotation_deg))
        self.assertLess(1000 * t_err, float(rospy.get_param("~max_mm", 30)))
        self.assertLess(r_err, float(rospy.get_param("~max_deg", 3)))
        path = os.path.join(tempfile.mkdtemp(), "cal.yaml")
        rospy.wait_for_service("/dream_node/save", 10)
        resp = rospy.ServiceProxy("/dream_node/save", SaveCalibration)(path)
        self.assertTrue(resp.success, resp.message)
        self.assertTrue(np.allclose(load_calibration(path).tf_parent_T_child, est, atol=1e-6))


if __name__ == "__main__":
    rospy.init_node("dream_node_rostest")
    rostest.rosrun("dream_ros", "dream_node_static_calibration", DreamNodeStatic, sys.argv)
