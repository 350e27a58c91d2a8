"""Where offline calibration frames come from: an image folder, a ROS bag or an NDDS folder.

Every source yields ``CalibrationFrame``s (image + joint angles + intrinsics), lazily, and knows how
many it has (for progress bars). Frames a source cannot complete (no joint state near an image's
stamp, an unreadable image) are still yielded, with ``problem`` set, so they show up in the
per-frame results with the reason instead of vanishing.

- ``ImageFolderSource``: ``color/NNNNNN.png`` (or ``images/``, or the images in the folder itself),
  ``qpos/NNNNNN.txt`` (or ``joints/``) holding the robot config's joints in order first (extra
  numbers such as finger joints are ignored), ``K.txt`` (3x3, or fx fy cx cy) and optionally
  ``mask/NNNNNN.png`` (robot = non-zero), used to score the estimates. This is the layout of
  EasyHeC's offline example.
- ``BagSource``: ROS 1 (or 2) bags through the pure-Python ``rosbags`` package, no ROS needed.
  Each image is paired with the nearest joint state by header stamp (per joint, so several
  JointState publishers are fine) and with the newest camera info. Bags recorded from the
  simulated camera can carry its true pose (``truth_topic``) to score the estimates.
- ``NddsSource``: DREAM/NDDS folders through ``dream_ros.data.ndds.NddsDataset``; these also carry
  the true camera pose, so results can be scored.
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from ..errors import ConfigError, InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class CalibrationFrame:
    name: str
    rgb: Optional[np.ndarray]                 # (H, W, 3) uint8, None when ``problem`` is set
    joints: Optional[Dict[str, float]]        # joint name -> rad (m for prismatic)
    K: Optional[np.ndarray]                   # (3, 3)
    stamp: Optional[float] = None             # seconds (bags)
    camera_T_base_true: Optional[np.ndarray] = None   # ground truth when the source has it
    problem: str = ""                         # non-empty: why this frame cannot be used
    mask: Optional[np.ndarray] = None         # (H, W) bool robot mask, when the source has one


def load_rgb(path: Path) -> np.ndarray:
    import cv2
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError("cannot read image %s" % path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_intrinsics(path: Path) -> np.ndarray:
    """K from a text file: a 3x3 matrix, or the 4 numbers fx fy cx cy."""
    try:
        values = np.loadtxt(str(path), dtype=float).reshape(-1)
    except (OSError, ValueError) as exc:
        raise InputError("cannot read intrinsics %s: %s" % (path, exc))
    if values.size == 9:
        K = values.reshape(3, 3)
    elif values.size == 4:
        fx, fy, cx, cy = values
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    else:
        raise InputError("intrinsics %s must hold a 3x3 matrix or fx fy cx cy, found %d numbers"
                         % (path, values.size))
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError("intrinsics %s: focal lengths must be positive and finite" % path)
    return K


class ImageFolderSource:
    def __init__(self, folder, joint_names: Sequence[str], K_path=None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError("image folder not found: %s" % self.folder)
        self.joint_names = list(joint_names)
        image_dir = next((self.folder / d for d in ("color", "images", "rgb")
                          if (self.folder / d).is_dir()), self.folder)
        self.images = sorted(p for p in image_dir.iterdir()
                             if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not self.images:
            raise InputError("no images (%s) in %s" % ("/".join(IMAGE_EXTENSIONS), image_dir))
        self.joint_dir = next((self.folder / d for d in ("qpos", "joints")
                               if (self.folder / d).is_dir()), None)
        if self.joint_dir is None:
            raise InputError("%s has no qpos/ (or joints/) folder with one joint file per image"
                             % self.folder)
        # Optional hand-drawn robot masks (EasyHeC's mask/NNNNNN.png): used to score estimates.
        self.mask_dir = self.folder / "mask" if (self.folder / "mask").is_dir() else None
        K_path = Path(K_path) if K_path else self.folder / "K.txt"
        if not K_path.is_file():
            raise InputError("intrinsics not found: %s (give --K)" % K_path)
        self.K = read_intrinsics(K_path)

    def __len__(self) -> int:
        return len(self.images)

    def _joints(self, stem: str) -> Dict[str, float]:
        path = self.joint_dir / (stem + ".txt")
        if not path.is_file():
            raise InputError("no joint file %s" % path)
        try:
            values = np.loadtxt(str(path), dtype=float).reshape(-1)
        except ValueError as exc:
            raise InputError("joint file %s is not numbers: %s" % (path, exc))
        if values.size < len(self.joint_names) or not np.all(np.isfinite(values[:len(self.joint_names)])):
            raise InputError("joint file %s needs %d finite values (%s), has %d"
                             % (path, len(self.joint_names), ", ".join(self.joint_names), values.size))
        return dict(zip(self.joint_names, (float(v) for v in values[:len(self.joint_names)])))

    def _mask(self, stem: str, shape) -> Optional[np.ndarray]:
        import cv2
        if self.mask_dir is None:
            return None
        path = next((p for p in (self.mask_dir / (stem + e) for e in IMAGE_EXTENSIONS) if p.is_file()),
                    None)
        m = None if path is None else cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        return None if m is None or m.shape != tuple(shape[:2]) else m > 0

    def __iter__(self) -> Iterator[CalibrationFrame]:
        for path in self.images:
            try:
                rgb = load_rgb(path)
                yield CalibrationFrame(path.stem, rgb, self._joints(path.stem), self.K,
                                       mask=self._mask(path.stem, rgb.shape))
            except InputError as exc:
                yield CalibrationFrame(path.stem, None, None, self.K, problem=str(exc))


# --------------------------------------------------------------------------------------------
# ROS bags
# --------------------------------------------------------------------------------------------
def image_msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16) or CompressedImage -> RGB uint8."""
    import cv2
    if hasattr(msg, "format"):   # CompressedImage
        bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError("cannot decode compressed image (format %r)" % msg.format)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    enc = msg.encoding.lower()
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8uc1": 1, "8uc3": 3,
                "mono16": 1, "16uc1": 1}.get(enc)
    if channels is None:
        raise InputError("unsupported image encoding %r" % msg.encoding)
    dtype = np.dtype(np.uint16) if enc in ("mono16", "16uc1") else np.dtype(np.uint8)
    if msg.is_bigendian:
        dtype = dtype.newbyteorder(">")
    data = np.frombuffer(bytes(msg.data), dtype=dtype)
    row = msg.step // dtype.itemsize
    if data.size < row * msg.height or row < msg.width * channels:
        raise InputError("image data too short for %dx%d %s" % (msg.width, msg.height, msg.encoding))
    img = data[:row * msg.height].reshape(msg.height, row)[:, :msg.width * channels]
    img = img.reshape(msg.height, msg.width, channels)
    if dtype.itemsize == 2:
        img = (img.astype(np.float32) / 256.0).astype(np.uint8)
    if channels == 1:
        return np.repeat(img, 3, axis=2)
    if enc.startswith("bgr"):
        return np.ascontiguousarray(img[:, :, 2::-1])
    return np.ascontiguousarray(img[:, :, :3])


def _stamp(msg, fallback_ns: int) -> float:
    h = getattr(msg, "header", None)
    if h is not None and (h.stamp.sec or h.stamp.nanosec):
        return h.stamp.sec + 1e-9 * h.stamp.nanosec
    return fallback_ns * 1e-9


class _JointSeries:
    """Per-joint time series from all JointState messages: nearest sample by stamp."""

    def __init__(self):
        self._t: Dict[str, List[float]] = {}
        self._q: Dict[str, List[float]] = {}

    def add(self, t: float, names, positions) -> None:
        for n, q in zip(names, positions):
            self._t.setdefault(n, []).append(t)
            self._q.setdefault(n, []).append(float(q))

    def finish(self) -> None:
        for n in self._t:
            order = np.argsort(self._t[n], kind="stable")
            self._t[n] = list(np.asarray(self._t[n])[order])
            self._q[n] = list(np.asarray(self._q[n])[order])

    def nearest(self, name: str, t: float):
        """(value, |dt|) of the sample nearest to t, or (None, inf)."""
        ts = self._t.get(name)
        if not ts:
            return None, float("inf")
        i = bisect.bisect_left(ts, t)
        best = min((j for j in (i - 1, i) if 0 <= j < len(ts)), key=lambda j: abs(ts[j] - t))
        return self._q[name][best], abs(ts[best] - t)


class BagSource:
    """Images from a bag paired with joint states (nearest stamp, within ``max_dt`` s) and the
    newest camera info at or before the image (else the first one)."""

    def __init__(self, bag, image_topic: str, camera_info_topic: str, joint_states_topic: str,
                 joint_names: Sequence[str], max_dt: float = 0.05, K_override=None,
                 truth_topic: Optional[str] = None):
        from rosbags.highlevel import AnyReader
        self.path = Path(bag)
        if not self.path.exists():
            raise InputError("bag not found: %s" % self.path)
        self.image_topic, self.info_topic = image_topic, camera_info_topic
        self.joints_topic = joint_states_topic
        self.joint_names = list(joint_names)
        self.max_dt = float(max_dt)
        self.K_override = K_override
        self._AnyReader = AnyReader
        with AnyReader([self.path]) as reader:
            topics = {c.topic: c.msgtype for c in reader.connections}
            wanted = [image_topic, joint_states_topic] + ([] if K_override is not None
                                                          else [camera_info_topic])
            wanted += [truth_topic] if truth_topic else []
            missing = [t for t in wanted if t not in topics]
            if missing:
                raise InputError("bag %s has no topic %s; it has: %s" % (
                    self.path, ", ".join(missing),
                    ", ".join("%s (%s)" % (t, m) for t, m in sorted(topics.items()))))
            self.joints = _JointSeries()
            self.infos: List[tuple] = []   # (stamp, K)
            self.camera_frame = ""
            self.truth = None      # camera_T_base from a TransformStamped base -> optical frame
            conns = [c for c in reader.connections
                     if c.topic in (joint_states_topic, camera_info_topic, truth_topic)]
            for conn, t_ns, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                if conn.topic == joint_states_topic:
                    self.joints.add(_stamp(msg, t_ns), msg.name, msg.position)
                elif conn.topic == truth_topic:
                    from ..frames import from_translation_quaternion, invert
                    tr, q = msg.transform.translation, msg.transform.rotation
                    self.truth = invert(from_translation_quaternion([tr.x, tr.y, tr.z],
                                                                    [q.x, q.y, q.z, q.w]))
                else:
                    K = np.asarray(msg.K if hasattr(msg, "K") else msg.k, float).reshape(3, 3)
                    self.infos.append((_stamp(msg, t_ns), K))
                    self.camera_frame = self.camera_frame or msg.header.frame_id
            self.joints.finish()
            self.infos.sort(key=lambda x: x[0])
            self.count = sum(c.msgcount for c in reader.connections if c.topic == image_topic)
        if K_override is None and not self.infos:
            raise InputError("bag %s has no messages on %s" % (self.path, camera_info_topic))

    def __len__(self) -> int:
        return self.count

    def _K_at(self, t: float) -> np.ndarray:
        if self.K_override is not None:
            return self.K_override
        stamps = [s for s, _ in self.infos]
        i = bisect.bisect_right(stamps, t) - 1
        return self.infos[max(i, 0)][1]

    def _joints_at(self, t: float):
        joints = {}
        for n in self.joint_names:
            q, dt = self.joints.nearest(n, t)
            if q is None:
                return None, "no joint state for %s on %s" % (n, self.joints_topic)
            if dt > self.max_dt:
                return None, ("nearest joint state for %s is %.3f s from the image (max %.3f s)"
                              % (n, dt, self.max_dt))
            joints[n] = q
        return joints, ""

    def __iter__(self) -> Iterator[CalibrationFrame]:
        with self._AnyReader([self.path]) as reader:
            conns = [c for c in reader.connections if c.topic == self.image_topic]
            for i, (conn, t_ns, raw) in enumerate(reader.messages(connections=conns)):
                msg = reader.deserialize(raw, conn.msgtype)
                t = _stamp(msg, t_ns)
                name = "%06d" % i
                K = self._K_at(t)
                joints, problem = self._joints_at(t)
                rgb = None
                if not problem:
                    try:
                        rgb = image_msg_to_rgb(msg)
                    except InputError as exc:
                        problem = str(exc)
                yield CalibrationFrame(name, rgb, joints, K, stamp=t, problem=problem,
                                       camera_T_base_true=self.truth)


# --------------------------------------------------------------------------------------------
# NDDS
# --------------------------------------------------------------------------------------------
def rigid_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """4x4 T minimising |T src - dst| (Kabsch; both (N,3), N >= 3 non-collinear)."""
    cs, cd = src.mean(axis=0), dst.mean(axis=0)
    U, _, Vt = np.linalg.svd((src - cs).T @ (dst - cd))
    d = np.sign(np.linalg.det(Vt.T @ U.T))
    R = Vt.T @ np.diag([1.0, 1.0, d]) @ U.T
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, cd - R @ cs
    return T


class NddsSource:
    """DREAM/NDDS folders via NddsDataset. The true camera pose is the rigid fit between the
    keypoints' stored camera-frame locations and their forward kinematics at the stored joints
    (independent of how a dataset writes the object pose); frames without joint angles
    (``sim_state``) cannot be calibrated and are reported as such."""

    def __init__(self, folder, robot, scale: Optional[float] = None, truth_tolerance_m: float = 0.01):
        from .ndds import NddsDataset
        if not Path(folder).is_dir():
            raise InputError("NDDS folder not found: %s" % folder)
        self.robot = robot
        self.dataset = NddsDataset(folder, robot_name=robot.config.dream_name or robot.name,
                                   units_scale=1.0 if scale is None else float(scale))
        self.truth_tolerance_m = float(truth_tolerance_m)

    def __len__(self) -> int:
        return len(self.dataset)

    def _truth(self, frame, joints) -> Optional[np.ndarray]:
        names = list(self.robot.keypoint_names)
        idx = [frame.keypoint_names.index(n) for n in names if n in frame.keypoint_names]
        if len(idx) < 3:
            return None
        base = np.asarray(self.robot.keypoints_3d(joints), float)
        base = base[[names.index(frame.keypoint_names[i]) for i in idx]]
        cam = frame.location[idx]
        T = rigid_transform(base, cam)
        residual = np.linalg.norm(base @ T[:3, :3].T + T[:3, 3] - cam, axis=1).max()
        return T if residual < self.truth_tolerance_m else None

    def __iter__(self) -> Iterator[CalibrationFrame]:
        for i in range(len(self.dataset)):
            name = self.dataset.frame_names[i]
            try:
                f = self.dataset[i]
                missing = [j for j in self.robot.joint_names if j not in f.joints]
                if missing:
                    raise InputError("frame %s has no joint angles for %s (sim_state.joints)"
                                     % (name, ", ".join(missing)))
                joints = {j: f.joints[j] for j in self.robot.joint_names}
                yield CalibrationFrame(name, self.dataset.load_image(i), joints, f.K,
                                       camera_T_base_true=self._truth(f, joints))
            except InputError as exc:
                yield CalibrationFrame(name, None, None, None, problem=str(exc))
