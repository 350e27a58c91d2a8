"""Overlays for people checking a calibration: what the network found, where the estimate puts
the keypoints, the keypoint frames' axes, and the belief maps. All functions take an RGB uint8
image and return a new one (the input is never modified); colours are RGB.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Union

import cv2
import numpy as np

from .errors import InputError
from .types import Detections, PoseEstimate

DETECTED_RGB = (0, 255, 0)       # network detections: green circles
REPROJECTED_RGB = (255, 0, 255)  # keypoints projected with the estimate: magenta crosses
ERROR_LINE_RGB = (255, 255, 0)   # detection -> reprojection residual


def _canvas(rgb) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 \
            or rgb.dtype != np.uint8:
        raise InputError("overlay needs an HxWx3 uint8 RGB image, got %s"
                         % (getattr(rgb, "shape", type(rgb).__name__),))
    return np.ascontiguousarray(rgb).copy()


def _scale(img) -> int:
    """Line thickness / marker size that stays readable from 320 px to 4K."""
    return max(1, int(round(max(img.shape[:2]) / 640.0)))


def _pt(uv) -> tuple:
    return int(round(float(uv[0]))), int(round(float(uv[1])))


def _finite(uv) -> bool:
    return bool(np.all(np.isfinite(uv))) and abs(float(uv[0])) < 1e6 and abs(float(uv[1])) < 1e6


def project(points_3d, camera_T_base, K, dist=None) -> np.ndarray:
    """(N,3) base-frame points -> (N,2) raw-image pixels (NaN for points behind the camera)."""
    pts = np.asarray(points_3d, dtype=float).reshape(-1, 3)
    T = np.asarray(camera_T_base, dtype=float)
    cam = pts @ T[:3, :3].T + T[:3, 3]
    rvec, _ = cv2.Rodrigues(T[:3, :3])
    uv, _ = cv2.projectPoints(pts, rvec, T[:3, 3].reshape(3, 1), np.asarray(K, float).reshape(3, 3),
                              None if dist is None else np.asarray(dist, float))
    uv = uv.reshape(-1, 2)
    uv[cam[:, 2] <= 1e-6] = np.nan
    return uv


def draw_detections(rgb, detections: Detections, labels: bool = True,
                    color=DETECTED_RGB) -> np.ndarray:
    img = _canvas(rgb)
    s = _scale(img)
    for name, uv, ok in zip(detections.names, detections.uv, detections.detected):
        if not ok or not _finite(uv):
            continue
        cv2.circle(img, _pt(uv), 5 * s, color, s + 1, cv2.LINE_AA)
        if labels:
            p = _pt(uv)
            cv2.putText(img, str(name), (p[0] + 6 * s, p[1] - 6 * s), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4 * s, color, s, cv2.LINE_AA)
    return img


def draw_reprojections(rgb, points_3d, camera_T_base, K, dist=None,
                       detections: Optional[Detections] = None,
                       color=REPROJECTED_RGB) -> np.ndarray:
    """Crosses where the estimate puts the keypoints; with ``detections`` (same order as
    points_3d) also a line to each detection, so residuals are visible."""
    img = _canvas(rgb)
    s = _scale(img)
    uv = project(points_3d, camera_T_base, K, dist)
    for i, p in enumerate(uv):
        if not _finite(p):
            continue
        cv2.drawMarker(img, _pt(p), color, cv2.MARKER_CROSS, 10 * s, s + 1, cv2.LINE_AA)
        if detections is not None and detections.detected[i] and _finite(detections.uv[i]):
            cv2.line(img, _pt(p), _pt(detections.uv[i]), ERROR_LINE_RGB, s, cv2.LINE_AA)
    return img


def draw_frame_axes(rgb, base_T_frames: Union[Dict[str, np.ndarray], Sequence[np.ndarray]],
                    camera_T_base, K, dist=None, length_m: float = 0.08) -> np.ndarray:
    """x/y/z axes (red/green/blue) of each frame (4x4 poses in the base frame), projected."""
    img = _canvas(rgb)
    s = _scale(img)
    poses: Iterable = base_T_frames.values() if isinstance(base_T_frames, dict) else base_T_frames
    axes = np.array([[0, 0, 0], [length_m, 0, 0], [0, length_m, 0], [0, 0, length_m]], float)
    for P in poses:
        P = np.asarray(P, dtype=float)
        pts = axes @ P[:3, :3].T + P[:3, 3]
        uv = project(pts, camera_T_base, K, dist)
        if not _finite(uv[0]):
            continue
        for j, c in ((1, (255, 0, 0)), (2, (0, 255, 0)), (3, (0, 0, 255))):
            if _finite(uv[j]):
                cv2.line(img, _pt(uv[0]), _pt(uv[j]), c, s + 1, cv2.LINE_AA)
    return img


def draw_text(rgb, lines: List[str], color=(255, 255, 255)) -> np.ndarray:
    """Status lines top-left, on a dark band so they read on any background."""
    img = _canvas(rgb)
    s = _scale(img)
    h = 18 * s
    if lines:
        band = img[: h * len(lines) + 6 * s]
        band[:] = (band * 0.45).astype(np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(img, str(line), (6 * s, h * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * s,
                    color, s, cv2.LINE_AA)
    return img


def calibration_overlay(rgb, detections: Optional[Detections] = None,
                        estimate: Optional[PoseEstimate] = None, points_3d=None,
                        keypoint_frames=None, K=None, dist=None, status: Optional[List[str]] = None,
                        axis_length_m: float = 0.08) -> np.ndarray:
    """The node's ~overlay: detections, reprojections and frame axes (when an estimate with a
    transform is given), status text."""
    img = _canvas(rgb)
    T = None if estimate is None else estimate.camera_T_base
    if T is not None and K is not None:
        if keypoint_frames is not None:
            img = draw_frame_axes(img, keypoint_frames, T, K, dist, axis_length_m)
        if points_3d is not None:
            img = draw_reprojections(img, points_3d, T, K, dist, detections)
    if detections is not None:
        img = draw_detections(img, detections)
    if status:
        img = draw_text(img, status)
    return img


def belief_overlay(rgb, belief_maps, alpha: float = 0.55, map_to_raw=None) -> np.ndarray:
    """The per-pixel max over all keypoints' belief maps, colour-mapped and blended over the
    image. ``map_to_raw``: (N,2) belief-map pixels -> raw-image pixels (the detector's
    preprocessing is affine: resize/crop/letterbox), so the heat lands where the network looked;
    without it the maps are stretched over the whole image."""
    img = _canvas(rgb)
    maps = np.asarray(belief_maps, dtype=np.float32)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3 or maps.size == 0:
        raise InputError("belief maps must be (K, h, w), got shape %s" % (maps.shape,))
    m = np.nan_to_num(maps.max(axis=0), nan=0.0, posinf=0.0, neginf=0.0)
    m = np.clip(m / max(float(m.max()), 1e-6), 0.0, 1.0)
    size = (img.shape[1], img.shape[0])
    A = None
    if map_to_raw is not None:
        h, w = m.shape
        src = np.array([[0.0, 0.0], [w - 1.0, 0.0], [0.0, h - 1.0]])
        dst = np.asarray(map_to_raw(src), dtype=np.float64).reshape(3, 2)
        if np.all(np.isfinite(dst)):
            A = cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32))
    if A is not None:
        m = cv2.warpAffine(m, A, size, flags=cv2.INTER_LINEAR, borderValue=0.0)
    else:
        m = cv2.resize(m, size, interpolation=cv2.INTER_LINEAR)
    heat = cv2.cvtColor(cv2.applyColorMap((m * 255).astype(np.uint8), cv2.COLORMAP_JET),
                        cv2.COLOR_BGR2RGB)
    w = (alpha * m)[..., None]        # weight by belief: the image stays visible where it is low
    return (img * (1.0 - w) + heat * w).astype(np.uint8)
