"""Simulated camera node: renders a robot moving through a smooth joint trajectory, seen by a fixed
camera whose pose the calibrator does not know, and publishes what a real setup would.

Publishes (all three with the same stamp, at ``~rate`` Hz):
  ``~image_raw``    sensor_msgs/Image, rgb8, frame_id = ``~camera_frame`` (OpenCV optical frame)
  ``~camera_info``  sensor_msgs/CameraInfo (pinhole, no distortion)
  ``joint_states``  sensor_msgs/JointState (the robot config's joints)
and the ground truth, for demos and tests only:
  ``~true_camera_pose`` geometry_msgs/TransformStamped, latched: base frame -> camera optical frame
  TF (static) ``<base frame> -> ~true_frame`` (default ``sim/true_camera``): a frame name nobody
  else publishes, so it never collides with the calibrator's own TF.

Parameters: ``~robot`` (name or config YAML), ``~urdf`` (optional: render this URDF instead of the
config's, for dry runs with your own robot description), ``~width``, ``~height``, ``~fov_deg``
(vertical), ``~rate``, ``~camera_position`` + ``~look_at`` + ``~roll_deg`` or ``~camera_pose``
([x y z qx qy qz qw] of the optical frame in the base frame), ``~trajectory`` (``sine``, ``static``
or a YAML file of waypoints), ``~amplitude`` (fraction of each joint's half range), ``~period_s``,
``~home`` (joint centre of the motion; default: middle of the limits), ``~seed``, ``~background``
(an image file behind the robot; default plain grey).

The pieces that need no ROS (``JointTrajectory``, ``look_at_camera_T_base``, ``intrinsics_from_fov``,
``SimCamera``) are importable and tested without a master.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import ConfigError
from ..frames import from_translation_quaternion, invert, look_at
from ..resources import load_yaml_file
from .conversions import intrinsics_to_camera_info, rgb_to_image, transform_stamped

DEFAULT_CAMERA_POSITION = (1.3, 0.6, 0.8)       # metres in the base frame: in front, to one side
DEFAULT_LOOK_AT = (0.1, 0.0, 0.45)


# --------------------------------------------------------------------------------------------
# ROS-free pieces
# --------------------------------------------------------------------------------------------
def look_at_camera_T_base(position: Sequence[float], target: Sequence[float],
                          roll_deg: float = 0.0, up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """camera_T_base of an optical-frame camera at ``position`` looking at ``target`` (both in the
    base frame), image "up" towards ``up``, then rolled about the optical axis."""
    eye = np.asarray(position, float).reshape(3)
    forward = np.asarray(target, float).reshape(3) - eye
    if np.linalg.norm(forward) < 1e-6:
        raise ConfigError("camera position and look-at point coincide: %s" % (list(eye),))
    if np.linalg.norm(np.cross(forward / np.linalg.norm(forward), np.asarray(up, float))) < 1e-6:
        raise ConfigError("camera looks straight along the up axis; give a different look_at")
    return invert(look_at(eye, target, np.radians(roll_deg), up))


def intrinsics_from_fov(width: int, height: int, fov_deg: float) -> np.ndarray:
    """Pinhole K with square pixels, vertical field of view ``fov_deg``, principal point at the image
    centre (pixel centres at integers, so the centre is (w-1)/2, (h-1)/2)."""
    if width <= 0 or height <= 0:
        raise ConfigError("image size must be positive, got %dx%d" % (width, height))
    if not 1.0 < fov_deg < 179.0:
        raise ConfigError("fov_deg must be in (1, 179), got %r" % fov_deg)
    f = 0.5 * height / np.tan(np.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


class JointTrajectory:
    """Smooth, periodic joint motion that never leaves the joint limits.

    ``sine``: each joint is the sum of two sines with random phases and incommensurate periods around
    ``home``; the amplitude is shrunk per joint so home ± amplitude stays ``margin`` inside the limits
    (no clipping, so the motion stays smooth). ``static``: always ``home``. ``waypoints``: a periodic
    cubic spline through the given joint vectors, one loop every ``period_s``.
    """

    def __init__(self, joint_names: Sequence[str], lower: Sequence[float], upper: Sequence[float],
                 kind: str = "sine", home: Optional[Sequence[float]] = None, amplitude: float = 0.35,
                 period_s: float = 20.0, seed: int = 0, waypoints: Optional[np.ndarray] = None,
                 margin: float = 0.05):
        self.joint_names = list(joint_names)
        self.lower = np.asarray(lower, float)
        self.upper = np.asarray(upper, float)
        n = len(self.joint_names)
        if self.lower.shape != (n,) or self.upper.shape != (n,) or np.any(self.upper <= self.lower):
            raise ConfigError("joint limits must be (J,) arrays with upper > lower")
        if period_s <= 0:
            raise ConfigError("period_s must be positive, got %r" % period_s)
        self.kind = kind
        self.period_s = float(period_s)
        lo, hi = self.lower + margin, self.upper - margin
        mid = np.where(hi > lo, (lo + hi) / 2.0, (self.lower + self.upper) / 2.0)
        self.home = mid if home is None else np.asarray(home, float).reshape(-1)
        if self.home.shape != (n,):
            raise ConfigError("home needs %d joint values, got %d" % (n, self.home.size))
        if np.any(self.home < self.lower) or np.any(self.home > self.upper):
            raise ConfigError("home %s lies outside the joint limits" % np.round(self.home, 3).tolist())
        rng = np.random.default_rng(seed)
        half = (self.upper - self.lower) / 2.0
        room = np.maximum(np.minimum(self.home - lo, hi - self.home), 0.0)
        self.amplitude = np.minimum(amplitude * half, room)
        self.phases = rng.uniform(0, 2 * np.pi, size=(n, 2))
        # Periods: the base period and a shorter, irrational ratio so the path does not repeat fast.
        self.omegas = 2 * np.pi / self.period_s * np.stack(
            [1.0 + 0.37 * rng.uniform(size=n), 2.414 + 0.5 * rng.uniform(size=n)], axis=1)
        self._spline = None
        if kind == "waypoints":
            self._spline = self._make_spline(waypoints)
        elif kind not in ("sine", "static"):
            raise ConfigError("trajectory must be 'sine', 'static' or a waypoint file, got %r" % kind)

    def _make_spline(self, waypoints):
        from scipy.interpolate import CubicSpline
        w = np.asarray(waypoints, float)
        if w.ndim != 2 or w.shape[1] != len(self.joint_names) or w.shape[0] < 2:
            raise ConfigError("waypoints must be at least 2 rows of %d joint values"
                              % len(self.joint_names))
        if np.any(w < self.lower - 1e-9) or np.any(w > self.upper + 1e-9):
            raise ConfigError("a waypoint lies outside the joint limits")
        closed = np.vstack([w, w[:1]])
        t = np.linspace(0.0, self.period_s, len(closed))
        return CubicSpline(t, closed, axis=0, bc_type="periodic")

    def __call__(self, t: float) -> np.ndarray:
        """Joint vector at time ``t`` seconds (joint_names order)."""
        if self.kind == "static":
            return self.home.copy()
        if self._spline is not None:
            q = self._spline(float(t) % self.period_s)
            return np.clip(q, self.lower, self.upper)   # a spline may overshoot between waypoints
        s = 0.6 * np.sin(self.omegas[:, 0] * t + self.phases[:, 0]) \
            + 0.4 * np.sin(self.omegas[:, 1] * t + self.phases[:, 1])
        return self.home + self.amplitude * s

    def as_dict(self, t: float) -> Dict[str, float]:
        return dict(zip(self.joint_names, (float(v) for v in self(t))))


def load_waypoints(path: str, joint_names: Sequence[str]) -> tuple:
    """Waypoint file: YAML ``{period_s: 20, waypoints: [[q1..qJ], ...] or [{joint: rad}, ...]}``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("trajectory file not found: %s" % p)
    data = load_yaml_file(p, "trajectory file")
    if not isinstance(data, dict) or "waypoints" not in data:
        raise ConfigError("trajectory file %s needs a 'waypoints' list" % p)
    rows = []
    for i, w in enumerate(data["waypoints"]):
        if isinstance(w, dict):
            missing = [j for j in joint_names if j not in w]
            if missing:
                raise ConfigError("trajectory %s waypoint %d lacks %s" % (p, i, ", ".join(missing)))
            rows.append([float(w[j]) for j in joint_names])
        else:
            rows.append([float(v) for v in w])
    return np.asarray(rows, float), data.get("period_s")


class SimCamera:
    """Robot + fixed camera + trajectory -> (joints, rgb) at any time; no ROS."""

    def __init__(self, robot: str = "panda", urdf: Optional[str] = None, width: int = 640,
                 height: int = 480, fov_deg: float = 50.0,
                 camera_position: Sequence[float] = DEFAULT_CAMERA_POSITION,
                 look_at: Sequence[float] = DEFAULT_LOOK_AT, roll_deg: float = 0.0,
                 camera_pose: Optional[Sequence[float]] = None, trajectory: str = "sine",
                 amplitude: float = 0.35, period_s: float = 20.0, home: Optional[Sequence[float]] = None,
                 seed: int = 0, background: Optional[str] = None, renderer=None):
        from ..robot import RobotModel
        from ..robot_config import load_robot_config
        config = load_robot_config(robot)
        if urdf:
            # A user's own URDF with the keypoints/joints of the named config: dry runs.
            if not Path(os.path.expanduser(urdf)).is_file():
                raise ConfigError("URDF not found: %s" % urdf)
            config.urdf_uri = str(Path(os.path.expanduser(urdf)).resolve())
        self.config = config
        self.robot = RobotModel(config)
        self.width, self.height = int(width), int(height)
        self.K = intrinsics_from_fov(self.width, self.height, float(fov_deg))
        if camera_pose is not None and len(camera_pose) > 0:
            if len(camera_pose) != 7:
                raise ConfigError("camera_pose must be [x y z qx qy qz qw], got %d numbers"
                                  % len(camera_pose))
            base_T_cam = from_translation_quaternion(camera_pose[:3], camera_pose[3:])
            self.camera_T_base = invert(base_T_cam)
        else:
            self.camera_T_base = look_at_camera_T_base(camera_position, look_at, roll_deg)
        names = list(self.robot.joint_names)
        lower, upper = self.robot.joint_limits()
        waypoints, kind = None, trajectory
        if trajectory not in ("sine", "static"):
            waypoints, file_period = load_waypoints(trajectory, names)
            kind = "waypoints"
            period_s = float(file_period or period_s)
        self.trajectory = JointTrajectory(names, lower, upper, kind=kind, home=home,
                                          amplitude=amplitude, period_s=period_s, seed=seed,
                                          waypoints=waypoints)
        self.other_joints = [j.name for j in self.robot.urdf.joints
                             if j.type in ("revolute", "continuous", "prismatic")
                             and j.mimic is None and j.name not in names]
        self._renderer = renderer
        self.background = self._load_background(background) if background else None

    def _load_background(self, path: str) -> np.ndarray:
        import cv2
        bgr = cv2.imread(os.path.expanduser(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ConfigError("cannot read background image %s" % path)
        bgr = cv2.resize(bgr, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    @property
    def renderer(self):
        if self._renderer is None:
            from ..synth.render import RobotRenderer
            self._renderer = RobotRenderer(self.config, self.width, self.height)
        return self._renderer

    @property
    def base_T_camera(self) -> np.ndarray:
        return invert(self.camera_T_base)

    def joints(self, t: float) -> Dict[str, float]:
        """The config's joints on the trajectory, plus the URDF's other movable joints (fingers)
        at 0, so robot_state_publisher and rviz see a complete robot."""
        q = self.trajectory.as_dict(t)
        q.update((name, 0.0) for name in self.other_joints)
        return q

    def render(self, joints: Dict[str, float]) -> np.ndarray:
        rgb = self.renderer.render(joints, self.camera_T_base, self.K, background=self.background)
        rgb = np.asarray(rgb)
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise RuntimeError("renderer returned %s %s, expected (%d, %d, 3) uint8"
                               % (rgb.shape, rgb.dtype, self.height, self.width))
        return rgb


# --------------------------------------------------------------------------------------------
# The node
# --------------------------------------------------------------------------------------------
def _float_list(value, name: str) -> Optional[List[float]]:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError("parameter %s must be a list of numbers, got %r" % (name, value))


class SimCameraNode:
    def __init__(self):
        import rospy
        import tf2_ros
        from geometry_msgs.msg import TransformStamped
        from sensor_msgs.msg import CameraInfo, Image, JointState

        p = lambda name, default: rospy.get_param("~" + name, default)   # noqa: E731
        self.sim = SimCamera(
            robot=p("robot", "panda"), urdf=p("urdf", "") or None,
            width=int(p("width", 640)), height=int(p("height", 480)),
            fov_deg=float(p("fov_deg", 50.0)),
            camera_position=_float_list(p("camera_position", list(DEFAULT_CAMERA_POSITION)),
                                        "camera_position"),
            look_at=_float_list(p("look_at", list(DEFAULT_LOOK_AT)), "look_at"),
            roll_deg=float(p("roll_deg", 0.0)),
            camera_pose=_float_list(p("camera_pose", None), "camera_pose"),
            trajectory=str(p("trajectory", "sine")), amplitude=float(p("amplitude", 0.35)),
            period_s=float(p("period_s", 20.0)), home=_float_list(p("home", None), "home"),
            seed=int(p("seed", 0)), background=p("background", "") or None)
        self.rate_hz = float(p("rate", 5.0))
        if self.rate_hz <= 0:
            raise ConfigError("rate must be positive, got %r" % self.rate_hz)
        self.camera_frame = str(p("camera_frame", "sim_camera_optical_frame"))
        self.true_frame = str(p("true_frame", "sim/true_camera"))
        self.base_frame = self.sim.robot.base_frame
        self._rospy = rospy
        self._JointState = JointState

        self.pub_image = rospy.Publisher("~image_raw", Image, queue_size=2)
        self.pub_info = rospy.Publisher("~camera_info", CameraInfo, queue_size=2)
        self.pub_joints = rospy.Publisher("joint_states", JointState, queue_size=10)
        self.pub_truth = rospy.Publisher("~true_camera_pose", TransformStamped, queue_size=1,
                                         latch=True)
        truth = transform_stamped(self.sim.base_T_camera, self.base_frame, self.true_frame,
                                  rospy.Time.now())
        self.static_tf = tf2_ros.StaticTransformBroadcaster()
        self.static_tf.sendTransform(truth)
        truth_topic = transform_stamped(self.sim.base_T_camera, self.base_frame,
                                        self.camera_frame, rospy.Time.now())
        self.pub_truth.publish(truth_topic)
        self.info = intrinsics_to_camera_info(self.sim.K, (self.sim.width, self.sim.height),
                                              self.camera_frame)
        self.t0 = rospy.Time.now()
        rospy.loginfo("sim_camera: %s, %dx%d @ %.1f Hz, camera at %s (base frame %s), truth on %s"
                      % (self.sim.config.name, self.sim.width, self.sim.height, self.rate_hz,
                         np.round(self.sim.base_T_camera[:3, 3], 3).tolist(), self.base_frame,
                         self.pub_truth.resolved_name))

    def publish_once(self, stamp) -> None:
        JointState = self._JointState
        t = (stamp - self.t0).to_sec()
        joints = self.sim.joints(t)
        rgb = self.sim.render(joints)
        js = JointState()
        js.header.stamp = stamp
        js.name = list(joints)
        js.position = [joints[n] for n in js.name]
        img = rgb_to_image(rgb)
        img.header.stamp = stamp
        img.header.frame_id = self.camera_frame
        self.info.header.stamp = stamp
        # Joint states first: a subscriber pairing by stamp then has them when the image arrives.
        self.pub_joints.publish(js)
        self.pub_info.publish(self.info)
        self.pub_image.publish(img)

    def spin(self) -> None:
        rospy = self._rospy
        rate = rospy.Rate(self.rate_hz)
        while not rospy.is_shutdown():
            try:
                self.publish_once(rospy.Time.now())
            except rospy.ROSException:   # publishing during shutdown
                break
            try:
                rate.sleep()
            except rospy.ROSInterruptException:
                break


def main(argv=None) -> None:
    import rospy
    os.environ.setdefault("LP_NUM_THREADS", "1")   # llvmpipe: one render thread, leave CPU to the net
    rospy.init_node("sim_camera")
    try:
        node = SimCameraNode()
    except ConfigError as exc:
        rospy.logfatal("sim_camera: %s" % exc)
        raise SystemExit(2)
    node.spin()
