"""Synthetic 2D-3D correspondences for the geometry tests: the Panda seen from 1-2 m by a 640x480
camera with fx = fy = 600 (shared by test_pnp.py and test_multiframe.py)."""
from __future__ import annotations

import numpy as np

from dream_ros import frames
from dream_ros.robot import RobotModel

K = np.array([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]])
WIDTH, HEIGHT = 640, 480

_PANDA = []


def panda() -> RobotModel:
    if not _PANDA:
        _PANDA.append(RobotModel.load("panda"))
    return _PANDA[0]


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """camera_T_base of an OpenCV camera (z forward, y down) at ``eye`` looking at ``target``."""
    return frames.invert(frames.look_at(eye, target, up=up))


def random_camera(rng) -> np.ndarray:
    """A camera 1-2 m from the robot's middle, above the floor, looking at it."""
    d = rng.uniform(1.0, 2.0)
    az = rng.uniform(-np.pi, np.pi)
    el = rng.uniform(0.0, 0.8)
    target = np.array([0.0, 0.0, 0.4])
    eye = target + d * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return look_at(eye, target)


def joints_near_middle(robot, rng, n: int, spread: float) -> np.ndarray:
    """(n, J) joint angles within ``spread`` of each joint's half-range around its middle."""
    lower, upper = robot.joint_limits()
    mid, half = (lower + upper) / 2, (upper - lower) / 2
    return mid + spread * half * rng.uniform(-1, 1, size=(n, len(mid)))


def random_joints(rng) -> np.ndarray:
    lo, hi = panda().joint_limits()
    return rng.uniform(lo, hi)


def project(camera_T_base, points_3d, K_=K) -> np.ndarray:
    pc = points_3d @ camera_T_base[:3, :3].T + camera_T_base[:3, 3]
    return (pc[:, :2] / pc[:, 2:3]) * [K_[0, 0], K_[1, 1]] + [K_[0, 2], K_[1, 2]]


def random_view(rng, noise_px=0.0, camera_T_base=None):
    """(points_3d (7,3), points_2d (7,2), camera_T_base) for random joints."""
    T = random_camera(rng) if camera_T_base is None else camera_T_base
    p3 = panda().keypoints_3d(random_joints(rng))
    p2 = project(T, p3) + rng.normal(0.0, noise_px, (len(p3), 2)) if noise_px else project(T, p3)
    return p3, p2, T
