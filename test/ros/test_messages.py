"""This package's messages travel through a real roscore and read back field by field."""
import time

import pytest

rospy = pytest.importorskip("rospy")


def test_pose_estimate_roundtrip(roscore):
    from dream_ros.msg import Keypoint2D, Keypoints, PoseEstimate

    received = []
    sub = rospy.Subscriber("/test_messages/pose", PoseEstimate, received.append)
    pub = rospy.Publisher("/test_messages/pose", PoseEstimate, queue_size=1, latch=True)
    msg = PoseEstimate(status=PoseEstimate.STATUS_REJECTED, reason="too few keypoints (3 < 4)",
                       camera_frame="camera_color_optical_frame", keypoints_used=3)
    msg.header.frame_id = "panda_link0"
    msg.base_to_camera.rotation.w = 1.0
    pub.publish(msg)
    deadline = time.time() + 10
    while not received and time.time() < deadline:
        time.sleep(0.05)
    sub.unregister()
    assert received, "no PoseEstimate arrived through roscore"
    got = received[0]
    assert got.status == "rejected" and got.reason.startswith("too few")
    assert got.header.frame_id == "panda_link0" and got.keypoints_used == 3
    assert len(got.covariance) == 36
    kps = Keypoints(keypoints=[Keypoint2D(name="panda_link0", detected=True, u=1.5, v=2.5, score=0.9)])
    assert kps.keypoints[0].name == "panda_link0"
