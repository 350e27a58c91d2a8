"""Frame conventions, in one place.

- OpenCV optical frame: x right, y down, z forward (what PnP returns; what DREAM publishes).
- ROS camera_link (REP 103 body frame): x forward, y left, z up.
  p_link = LINK_R_OPTICAL @ p_optical.
- ``a_T_b`` maps points expressed in frame b into frame a: p_a = a_T_b @ p_b.
  camera_T_base (PnP result) therefore maps base points into the camera; its inverse,
  base_T_camera, is the pose of the camera in the base frame: what TF broadcasts as
  parent = base, child = camera.
- Quaternions are ROS order (x, y, z, w); scipy uses the same order.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

# Rotation taking optical-frame coordinates to camera_link coordinates (REP 103 convention).
LINK_R_OPTICAL = np.array([[0.0, 0.0, 1.0],
                           [-1.0, 0.0, 0.0],
                           [0.0, -1.0, 0.0]])
LINK_T_OPTICAL = np.eye(4)
LINK_T_OPTICAL[:3, :3] = LINK_R_OPTICAL


def make_transform(rotation: np.ndarray, translation) -> np.ndarray:
    """4x4 from a 3x3 rotation matrix and a translation vector."""
    T = np.eye(4)
    T[:3, :3] = rotation
    T[:3, 3] = np.asarray(translation, dtype=float).reshape(3)
    return T


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (exact, no general matrix inverse)."""
    R, t = T[:3, :3], T[:3, 3]
    return make_transform(R.T, -R.T @ t)


def from_rvec_tvec(rvec, tvec) -> np.ndarray:
    """4x4 from OpenCV's Rodrigues vector and translation."""
    return make_transform(Rotation.from_rotvec(np.asarray(rvec, float).reshape(3)).as_matrix(), tvec)


def to_rvec_tvec(T: np.ndarray):
    return Rotation.from_matrix(T[:3, :3]).as_rotvec(), T[:3, 3].copy()


def quaternion_xyzw(T: np.ndarray) -> np.ndarray:
    """ROS-order quaternion (x, y, z, w) of the rotation of T, with w >= 0."""
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    return q if q[3] >= 0 else -q


def from_translation_quaternion(translation, quaternion_xyzw) -> np.ndarray:
    q = np.asarray(quaternion_xyzw, dtype=float)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-9:
        raise ValueError("quaternion has zero or non-finite norm: %r" % (list(q),))
    return make_transform(Rotation.from_quat(q / n).as_matrix(), translation)


def rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    """Angle of the relative rotation Ra^T Rb, degrees."""
    c = (np.trace(Ra.T @ Rb) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def pose_error(T_est: np.ndarray, T_true: np.ndarray):
    """(translation error m, rotation error deg) between two camera_T_base transforms, measured on
    the camera's position in the base frame (what a user of the TF cares about)."""
    c_est = invert(T_est)[:3, 3]
    c_true = invert(T_true)[:3, 3]
    return float(np.linalg.norm(c_est - c_true)), rotation_angle_deg(T_est[:3, :3], T_true[:3, :3])


def base_T_camera_link(camera_T_base: np.ndarray) -> np.ndarray:
    """Pose of the ROS camera_link in the base frame, from a PnP result (optical frame)."""
    return invert(camera_T_base) @ invert(LINK_T_OPTICAL)


def look_at(eye, target, roll_rad: float = 0.0, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """base_T_camera of an optical-frame camera at ``eye`` looking at ``target`` (both in the base
    frame): image "down" as close to -``up`` as possible, then rolled about the optical axis.
    Looking straight along ``up`` picks image "down" from the base x axis instead."""
    eye = np.asarray(eye, dtype=float).reshape(3)
    forward = np.asarray(target, dtype=float).reshape(3) - eye
    norm = np.linalg.norm(forward)
    if norm < 1e-9:
        raise ValueError("camera position and look-at point coincide: %s" % (list(eye),))
    forward /= norm
    down = -np.asarray(up, dtype=float)
    down = down - down.dot(forward) * forward
    if np.linalg.norm(down) < 1e-6:
        down = np.array([1.0, 0.0, 0.0]) - forward[0] * forward
    down /= np.linalg.norm(down)
    right = np.cross(down, forward)
    c, s = np.cos(roll_rad), np.sin(roll_rad)
    right, down = c * right + s * down, -s * right + c * down
    return make_transform(np.stack([right, down, forward], axis=1), eye)
