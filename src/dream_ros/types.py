"""Value types passed between the pipeline stages.

Conventions (see ``dream_ros.frames`` for the code):
- Pixel coordinates are in the raw image, OpenCV convention: the centre of the top-left pixel is
  (0, 0); u is the column, v the row.
- ``camera_T_base`` is a 4x4 homogeneous transform mapping a point in the robot base frame into
  the camera's OpenCV optical frame (x right, y down, z forward): p_cam = T @ p_base.
- Distances are metres, angles radians.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np


@dataclass
class Detections:
    """Stage 1 output: the robot keypoints found in one image."""

    names: List[str]
    uv: np.ndarray                 # (K, 2) float64 raw-image pixels; NaN where not detected
    scores: np.ndarray             # (K,) peak heights
    detected: np.ndarray           # (K,) bool
    image_size: Tuple[int, int]    # (width, height) of the raw image
    belief_maps: Optional[np.ndarray] = None   # (K, h, w) network output, only when asked
    # per keypoint, the strongest peaks of its map (ambiguous ones too) as (M, 3) arrays of
    # (u, v) raw pixels and peak height, strongest first: for a choice by the robot's pose
    # (peak_selection.py); None when the detector does not report them
    candidates: Optional[List[np.ndarray]] = None
    # (K,) the expected pixel error of each detection (the model's validation median for its
    # keypoint, scaled by the peak's height: network/detector.py), for the pose to weigh them
    # by; None when the model file has none (DREAM's, older ones)
    sigma_px: Optional[np.ndarray] = None

    @property
    def num_detected(self) -> int:
        return int(np.count_nonzero(self.detected))

    def as_dict(self) -> dict:
        """{name: [u, v] or None}, the per-frame results-file layout."""
        return {n: ([float(u), float(v)] if d else None)
                for n, (u, v), d in zip(self.names, self.uv, self.detected)}


@dataclass
class PoseEstimate:
    """Stage 2 output. Failure is a value: ``status`` != "ok" and ``reason`` says why."""

    status: str                                  # "ok" or a short failure code
    reason: str = ""                             # human-readable explanation when not ok
    camera_T_base: Optional[np.ndarray] = None   # (4, 4)
    covariance: Optional[np.ndarray] = None      # (6, 6) of (tx, ty, tz, rx, ry, rz) of camera_T_base
    reprojection_errors_px: Optional[np.ndarray] = None   # (N,) per correspondence used
    inliers: Optional[np.ndarray] = None         # (N,) bool over the correspondences given
    num_points: int = 0                          # correspondences given to the solver
    frames_used: int = 1
    extras: dict = field(default_factory=dict)   # solver-specific figures (spread, iterations ...)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def num_inliers(self) -> int:
        return int(np.count_nonzero(self.inliers)) if self.inliers is not None else 0

    @property
    def reprojection_error_px(self) -> Optional[float]:
        """RMS reprojection error over the inliers, pixels."""
        if self.reprojection_errors_px is None:
            return None
        e = self.reprojection_errors_px
        if self.inliers is not None and np.any(self.inliers):
            e = e[self.inliers]
        return float(np.sqrt(np.mean(np.square(e)))) if e.size else None

    @classmethod
    def failure(cls, status: str, reason: str, num_points: int = 0) -> "PoseEstimate":
        return cls(status=status, reason=reason, num_points=num_points)
