"""The simulated camera, as a real node against a real roscore: image, camera info and joint states
arrive with one shared stamp per frame, the image shows something, the truth is latched."""
import threading
import time

import numpy as np
import pytest

rospy = pytest.importorskip("rospy")


def _collect(topics, until, proc, timeout=60.0):
    """Subscribe to {topic: type}; return {topic: [msgs]} once until(received) or timeout."""
    got = {t: [] for t in topics}
    lock = threading.Lock()

    def cb(topic):
        def f(msg):
            with lock:
                got[topic].append(msg)
        return f

    subs = [rospy.Subscriber(t, typ, cb(t), queue_size=50, buff_size=2 ** 24) for t, typ in topics.items()]
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            with lock:
                if until(got):
                    break
            time.sleep(0.05)
    finally:
        for s in subs:
            s.unregister()
    return got


def test_sim_camera_publishes_consistent_frames(roscore, launch):
    from geometry_msgs.msg import TransformStamped
    from sensor_msgs.msg import CameraInfo, Image, JointState

    proc = launch("roslaunch", "dream_ros", "sim_camera.launch", "name:=sim_cam_test", "rate:=5",
                  "width:=320", "height:=240", "fov_deg:=60", log_name="sim_camera")
    topics = {"/sim_cam_test/image_raw": Image, "/sim_cam_test/camera_info": CameraInfo,
              "/joint_states": JointState, "/sim_cam_test/true_camera_pose": TransformStamped}

    def enough(got):
        return len(got["/sim_cam_test/image_raw"]) >= 4 and got["/sim_cam_test/true_camera_pose"]

    got = _collect(topics, enough, proc, timeout=90.0)
    assert proc.poll() is None, "sim_camera died; log: %s" % open(proc.log_path).read()[-2000:]
    images = got["/sim_cam_test/image_raw"]
    assert len(images) >= 4, "only %d images in 90 s; log: %s" % (len(images), open(proc.log_path).read()[-2000:])

    img = images[-1]
    assert (img.width, img.height, img.encoding) == (320, 240, "rgb8")
    assert img.header.frame_id == "sim_camera_optical_frame"
    rgb = np.frombuffer(bytes(img.data), np.uint8).reshape(240, 320, 3)
    assert rgb.std() > 5, "the image is blank: no robot rendered"

    # Every image has a camera_info and a joint_states message with exactly its stamp.
    info_stamps = {m.header.stamp for m in got["/sim_cam_test/camera_info"]}
    joint_stamps = {m.header.stamp: m for m in got["/joint_states"]}
    paired = [m for m in images if m.header.stamp in info_stamps and m.header.stamp in joint_stamps]
    assert len(paired) >= len(images) - 1     # the first image may race the subscriptions
    stamps = [m.header.stamp.to_sec() for m in images]
    assert np.all(np.diff(stamps) > 0)

    # Joint states: the config's 7 Panda joints, inside the URDF limits, and actually moving.
    js = [joint_stamps[m.header.stamp] for m in paired]
    assert js[0].name[:7] == ["panda_joint%d" % i for i in range(1, 8)]
    q = np.array([m.position[:7] for m in js])
    from dream_ros.robot import RobotModel
    lower, upper = RobotModel.load("panda").joint_limits()
    assert np.all(q >= lower) and np.all(q <= upper)
    assert np.ptp(q, axis=0).max() > 1e-3

    info = got["/sim_cam_test/camera_info"][-1]
    K = np.array(info.K).reshape(3, 3)
    assert K[0, 0] == pytest.approx(120.0 / np.tan(np.radians(30.0)))
    assert (info.width, info.height) == (320, 240)

    truth = got["/sim_cam_test/true_camera_pose"][-1]
    assert truth.header.frame_id == "panda_link0"
    assert truth.child_frame_id == "sim_camera_optical_frame"
    q = truth.transform.rotation
    assert abs(np.linalg.norm([q.x, q.y, q.z, q.w]) - 1.0) < 1e-6


# -- the ROS-free parts of the node ------------------------------------------------------------
def test_trajectory_is_smooth_and_inside_limits():
    from dream_ros.ros.sim_camera import JointTrajectory
    lower = np.array([-2.9, -1.76, -2.9, -3.07, -2.9, -0.02, -2.9])
    upper = np.array([2.9, 1.76, 2.9, -0.07, 2.9, 3.75, 2.9])
    traj = JointTrajectory(["j%d" % i for i in range(7)], lower, upper, amplitude=0.9, period_s=10)
    t = np.linspace(0, 300, 30001)
    q = np.array([traj(x) for x in t])
    assert np.all(q >= lower) and np.all(q <= upper)
    # Smooth: joint speed bounded (no jumps from clipping), and the arm covers a real range.
    speed = np.abs(np.diff(q, axis=0)) / np.diff(t)[:, None]
    bound = traj.amplitude * (0.6 * traj.omegas[:, 0] + 0.4 * traj.omegas[:, 1])
    assert np.all(speed.max(axis=0) <= 1.01 * bound)
    assert np.all(np.ptp(q, axis=0) > 0.5 * 0.9 * (upper - lower) * 0.5)


def test_trajectory_waypoints_and_bad_input(tmp_path):
    from dream_ros.errors import ConfigError
    from dream_ros.ros.sim_camera import JointTrajectory, load_waypoints
    f = tmp_path / "traj.yaml"
    f.write_text("period_s: 4\nwaypoints:\n  - {a: 0.0, b: 0.0}\n  - {a: 0.5, b: -0.5}\n")
    w, period = load_waypoints(str(f), ["a", "b"])
    traj = JointTrajectory(["a", "b"], [-1, -1], [1, 1], kind="waypoints", waypoints=w, period_s=period)
    assert traj(0.0) == pytest.approx([0.0, 0.0])
    assert traj(2.0) == pytest.approx([0.5, -0.5])
    assert traj(4.0) == pytest.approx([0.0, 0.0])
    with pytest.raises(ConfigError):
        JointTrajectory(["a", "b"], [-1, -1], [1, 1], kind="waypoints", waypoints=[[0, 0], [2, 0]])
    with pytest.raises(ConfigError):
        JointTrajectory(["a"], [-1], [1], home=[3.0])
    with pytest.raises(ConfigError):
        load_waypoints(str(tmp_path / "missing.yaml"), ["a"])


def test_look_at_camera_sees_target_at_image_centre():
    from dream_ros.ros.sim_camera import intrinsics_from_fov, look_at_camera_T_base
    T = look_at_camera_T_base([1.2, 0.5, 0.8], [0.1, 0.0, 0.4], roll_deg=10)
    K = intrinsics_from_fov(640, 480, 50)
    p = T[:3, :3] @ np.array([0.1, 0.0, 0.4]) + T[:3, 3]
    uv = (K @ p)[:2] / p[2]
    assert p[2] > 0 and uv == pytest.approx([319.5, 239.5])
    assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3)) and np.linalg.det(T[:3, :3]) > 0
    # Image "down" points to the world's -z for an unrolled camera.
    T0 = look_at_camera_T_base([1.2, 0.5, 0.8], [0.1, 0.0, 0.4])
    assert (T0[:3, :3].T @ [0, 1, 0])[2] < 0
