"""Ground truth of one dataset frame in the form the metrics need, in metres.

The 3D keypoints given to PnP come from forward kinematics of the frame's joint angles (what the
live node does); the dataset's camera-frame 3D keypoints are the reference for ADD. When a frame
has no joint angles, PnP falls back to those camera-frame points (DREAM's own procedure).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import InputError

CM_TO_M = 0.01


@dataclass
class FrameTruth:
    uv: np.ndarray                           # (K, 2) GT projections, raw pixels
    points_camera: np.ndarray                # (K, 3) GT keypoints, camera optical frame, metres
    points_base: Optional[np.ndarray]        # (K, 3) FK keypoints in the base frame, or None
    camera_T_base: Optional[np.ndarray]      # GT pose fitted from FK to camera points, or None
    fk_residual_m: Optional[float]           # RMS misfit of that fit: FK vs dataset consistency

    @property
    def pnp_points(self) -> np.ndarray:
        """The 3D points PnP is given: FK in the base frame, else the GT camera-frame points."""
        return self.points_base if self.points_base is not None else self.points_camera

    @property
    def pnp_frame(self) -> str:
        return "base" if self.points_base is not None else "camera"


def fit_rigid_transform(src, dst):
    """(4x4 T, RMS residual) minimising ||T src - dst|| (Kabsch, via scipy's align_vectors)."""
    a = np.asarray(src, dtype=float).reshape(-1, 3)
    b = np.asarray(dst, dtype=float).reshape(-1, 3)
    if a.shape != b.shape or len(a) < 3:
        raise InputError("rigid fit needs two matching sets of >= 3 points, got %r and %r"
                         % (a.shape, b.shape))
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    rot, _ = Rotation.align_vectors(b - cb, a - ca)
    T = np.eye(4)
    T[:3, :3] = rot.as_matrix()
    T[:3, 3] = cb - T[:3, :3] @ ca
    residual = float(np.sqrt(np.mean(np.sum((a @ T[:3, :3].T + T[:3, 3] - b) ** 2, axis=1))))
    return T, residual


def _pair_scale(points) -> float:
    p = np.asarray(points, dtype=float).reshape(-1, 3)
    d = np.linalg.norm(p[:, None, :] - p[None, :, :], axis=-1)
    d = d[np.triu_indices(len(p), 1)]
    d = d[d > 0]
    return float(np.median(d)) if d.size else float("nan")


def guess_units(points_camera, points_base=None) -> str:
    """"m" or "cm" for a dataset's 3D keypoints. With FK points the ratio of inter-keypoint
    distances decides (≈1 or ≈100); without, a median depth above 20 units means centimetres
    (a robot 20 m from the camera is implausible, one 20 cm away too)."""
    pc = np.asarray(points_camera, dtype=float).reshape(-1, 3)
    if points_base is not None:
        ratio = _pair_scale(pc) / _pair_scale(points_base)
        if np.isfinite(ratio):
            return "cm" if ratio > 10.0 else "m"
    return "cm" if float(np.median(np.abs(pc[:, 2]))) > 20.0 else "m"


def frame_truth(uv, points_camera, units: str, points_base=None) -> FrameTruth:
    """Build the truth of one frame; ``points_camera`` in dataset ``units`` ("m" or "cm")."""
    if units not in ("m", "cm"):
        raise InputError("units must be 'm' or 'cm', got %r" % (units,))
    pc = np.asarray(points_camera, dtype=float).reshape(-1, 3) * (CM_TO_M if units == "cm" else 1.0)
    uv = np.asarray(uv, dtype=float).reshape(-1, 2)
    T = res = None
    pb = None
    if points_base is not None:
        pb = np.asarray(points_base, dtype=float).reshape(-1, 3)
        if pb.shape != pc.shape:
            raise InputError("FK gives %d keypoints, the dataset %d" % (len(pb), len(pc)))
        T, res = fit_rigid_transform(pb, pc)
    return FrameTruth(uv, pc, pb, T, res)
