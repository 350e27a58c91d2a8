"""ROS messages <-> the core's numpy values, with validation.

Every converter raises ``InputError`` naming the problem (encoding, truncated data, bad
intrinsics ...) and nothing else, so the node can turn any bad message into one clear log line.
Images are converted with numpy/OpenCV rather than cv_bridge: cv_bridge's errors on truncated or
odd data are C++ exceptions with unhelpful text, and we need to check step/size ourselves anyway.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Optional, Tuple

import cv2
import numpy as np

from ..errors import InputError
from .. import frames

# encoding -> (channels, dtype); what we accept from sensor_msgs/Image.
_COLOUR = {"rgb8": (3, np.uint8), "bgr8": (3, np.uint8), "rgba8": (4, np.uint8),
           "bgra8": (4, np.uint8), "mono8": (1, np.uint8), "8UC1": (1, np.uint8),
           "8UC3": (3, np.uint8), "mono16": (1, np.uint16), "rgb16": (3, np.uint16),
           "bgr16": (3, np.uint16), "rgba16": (4, np.uint16), "bgra16": (4, np.uint16)}
# OpenCV names Bayer patterns by the second row's first two pixels, hence the apparent swap.
_BAYER_CV = {"bayer_rggb8": cv2.COLOR_BayerBG2RGB, "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
             "bayer_gbrg8": cv2.COLOR_BayerGR2RGB, "bayer_grbg8": cv2.COLOR_BayerGB2RGB}
_YUV = {"yuv422": cv2.COLOR_YUV2RGB_UYVY, "uyvy": cv2.COLOR_YUV2RGB_UYVY,
        "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2, "yuyv": cv2.COLOR_YUV2RGB_YUY2}
SUPPORTED_ENCODINGS = sorted(list(_COLOUR) + list(_BAYER_CV) + list(_YUV))
MAX_PIXELS = 8192 * 8192   # refuse absurd sizes before allocating
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial")


# ------------------------------------------------------------------------------------ images
def _payload(data) -> np.ndarray:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    try:   # rospy may hand uint8[] over as a list/tuple of ints
        return np.asarray(data, dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise InputError("image data is not a byte array")


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> HxWx3 uint8 RGB (a new array the caller may keep)."""
    try:
        return _image_to_rgb(msg)
    except cv2.error as exc:   # safety net: OpenCV's refusal of an odd input is still bad input
        raise InputError("cannot convert %s image %dx%d: %s" % (
            getattr(msg, "encoding", "?"), int(msg.width), int(msg.height),
            str(exc).strip().splitlines()[-1]))


def _image_to_rgb(msg) -> np.ndarray:
    enc = str(getattr(msg, "encoding", "") or "")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise InputError("image has size %dx%d (empty image)" % (w, h))
    if h * w > MAX_PIXELS:
        raise InputError("image size %dx%d is implausibly large" % (w, h))
    lower = enc.lower()
    if lower in _BAYER_CV:
        ch, dtype = 1, np.uint8
    elif lower in _YUV:
        ch, dtype = 2, np.uint8
        if w % 2:
            raise InputError("%s image needs an even width, got %d" % (enc, w))
    elif enc in _COLOUR:
        ch, dtype = _COLOUR[enc]
    elif lower in ("16uc1", "32fc1", "16sc1") or "bayer" in lower:
        raise InputError("image encoding %r is not a colour image (depth or 16-bit Bayer?): "
                         "subscribe to the camera's colour/RGB topic; supported: %s"
                         % (enc, ", ".join(SUPPORTED_ENCODINGS)))
    else:
        raise InputError("unsupported image encoding %r; supported: %s"
                         % (enc, ", ".join(SUPPORTED_ENCODINGS)))
    itemsize = np.dtype(dtype).itemsize
    row = w * ch * itemsize
    if step < row:
        raise InputError("image step %d is smaller than width*channels*bytes = %d (%s, %dx%d)"
                         % (step, row, enc, w, h))
    buf = _payload(msg.data)
    need = step * (h - 1) + row
    if buf.size < need:
        raise InputError("image data truncated: %d bytes, %s %dx%d with step %d needs %d"
                         % (buf.size, enc, w, h, step, need))
    if buf.size < step * h:   # last row unpadded: pad so the strided view below is valid
        buf = np.concatenate([buf, np.zeros(step * h - buf.size, np.uint8)])
    rows = buf[: step * h].reshape(h, step)[:, :row]
    if itemsize == 2:
        big = bool(getattr(msg, "is_bigendian", 0))
        img = np.ascontiguousarray(rows).view(">u2" if big else "<u2").reshape(h, w, ch)
        img = (img >> 8).astype(np.uint8)   # 16-bit colour/mono: keep the top byte
    else:
        img = rows.reshape(h, w, ch)
    if lower in _BAYER_CV:
        return cv2.cvtColor(np.ascontiguousarray(img[:, :, 0]), _BAYER_CV[lower])
    if lower in _YUV:
        return cv2.cvtColor(np.ascontiguousarray(img), _YUV[lower])
    if ch == 1:
        return cv2.cvtColor(np.ascontiguousarray(img[:, :, 0]), cv2.COLOR_GRAY2RGB)
    if enc.startswith("bgr"):
        return np.ascontiguousarray(img[:, :, 2::-1])
    return np.ascontiguousarray(img[:, :, :3])


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> HxWx3 uint8 RGB."""
    fmt = str(getattr(msg, "format", "") or "")
    low = fmt.lower().replace(" ", "")
    if "compresseddepth" in low or low.startswith(("16uc1", "32fc1")):
        raise InputError("compressed image format %r is a depth image: subscribe to the colour "
                         "image" % fmt)
    buf = _payload(msg.data)
    if buf.size == 0:
        raise InputError("compressed image is empty (format %r)" % fmt)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise InputError("cannot decode compressed image (format %r, %d bytes): corrupt or "
                         "truncated" % (fmt, buf.size))
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def rgb_to_image(rgb: np.ndarray, header=None):
    """HxWx3 uint8 RGB -> sensor_msgs/Image (rgb8)."""
    from sensor_msgs.msg import Image
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg


# ------------------------------------------------------------------------------- camera info
def camera_info_to_intrinsics(msg, rectified: bool = False
                              ) -> Tuple[np.ndarray, Optional[np.ndarray], Tuple[int, int]]:
    """sensor_msgs/CameraInfo -> (K 3x3, dist or None, (width, height)).

    ``rectified``: the image topic is already rectified (image_rect*): use P's left 3x3 and no
    distortion, as image_proc does.
    """
    try:
        K = np.asarray(msg.K, dtype=float).reshape(3, 3)
        P = np.asarray(msg.P, dtype=float).reshape(3, 4)
        D = np.asarray(msg.D, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise InputError("camera_info K/P/D are not numbers of the right size")
    size = (int(msg.width), int(msg.height))
    if rectified:
        K, D = P[:, :3].copy(), np.zeros(0)
    if not np.all(np.isfinite(K)):
        raise InputError("camera_info %s contains NaN/inf" % ("P" if rectified else "K"))
    if K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] != 1.0:
        raise InputError("camera_info %s is not a calibrated pinhole matrix (fx=%g, fy=%g, "
                         "K[2][2]=%g): is the camera calibrated?"
                         % ("P" if rectified else "K", K[0, 0], K[1, 1], K[2, 2]))
    if not np.all(np.isfinite(D)):
        raise InputError("camera_info D (distortion) contains NaN/inf")
    model = str(getattr(msg, "distortion_model", "") or "")
    dist = None
    if D.size and np.any(D):
        if model not in DISTORTION_MODELS:
            raise InputError("camera_info distortion model %r is not supported (supported: %s, "
                             "or use the rectified image with ~image_is_rectified:=true)"
                             % (model, ", ".join(DISTORTION_MODELS)))
        if model == "plumb_bob" and D.size != 5 or model == "rational_polynomial" and D.size != 8:
            raise InputError("camera_info %s needs %d distortion coefficients, got %d"
                             % (model, 5 if model == "plumb_bob" else 8, D.size))
        dist = D
    bx, by = int(getattr(msg, "binning_x", 0) or 0), int(getattr(msg, "binning_y", 0) or 0)
    roi = getattr(msg, "roi", None)
    if bx > 1 or by > 1 or (roi is not None and int(roi.width) and int(roi.height)
                            and (int(roi.width), int(roi.height)) != size):
        raise InputError("camera_info uses binning (%d, %d) or a region of interest: not "
                         "supported; publish full-resolution images" % (bx, by))
    return K, dist, size


def intrinsics_to_camera_info(K: np.ndarray, size: Tuple[int, int], frame_id: str = "",
                              dist: Optional[np.ndarray] = None, distortion_model: str = "plumb_bob"):
    """(K 3x3, (width, height), distortion) -> sensor_msgs/CameraInfo, what a calibrated camera
    driver publishes (R identity, P = [K | 0]); the inverse of camera_info_to_intrinsics."""
    from sensor_msgs.msg import CameraInfo
    K = np.asarray(K, dtype=float).reshape(3, 3)
    D = [0.0] * 5 if dist is None else [float(v) for v in np.ravel(dist)]
    msg = CameraInfo(width=int(size[0]), height=int(size[1]), distortion_model=distortion_model,
                     D=D, K=[float(v) for v in K.ravel()], R=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
                     P=[K[0, 0], 0.0, K[0, 2], 0.0, 0.0, K[1, 1], K[1, 2], 0.0, 0.0, 0.0, 1.0, 0.0])
    msg.header.frame_id = frame_id
    return msg


# ------------------------------------------------------------------------------ joint states
def joint_state_to_dict(msg, required: Optional[Iterable[str]] = None) -> Dict[str, float]:
    """sensor_msgs/JointState -> {name: position}. With ``required``: only those joints, and
    InputError if any is missing or NaN (extra joints are ignored)."""
    names, pos = list(msg.name), list(msg.position)
    if len(names) != len(pos):
        raise InputError("joint_states has %d names but %d positions" % (len(names), len(pos)))
    if len(set(names)) != len(names):
        raise InputError("joint_states names a joint twice: %s" % sorted(
            {n for n in names if names.count(n) > 1}))
    try:
        values = {str(n): float(p) for n, p in zip(names, pos)}
    except (TypeError, ValueError):
        raise InputError("joint_states positions are not numbers")
    if required is None:
        return values
    required = list(required)
    missing = [n for n in required if n not in values]
    if missing:
        raise InputError("joint_states lacks joints %s (has: %s)"
                         % (", ".join(missing), ", ".join(names) or "none"))
    bad = [n for n in required if not math.isfinite(values[n])]
    if bad:
        raise InputError("joint_states has NaN/inf positions for %s" % ", ".join(bad))
    return {n: values[n] for n in required}


# -------------------------------------------------------------------------------- transforms
def transform_to_msg(T: np.ndarray):
    from geometry_msgs.msg import Transform
    T = np.asarray(T, dtype=float)
    m = Transform()
    m.translation.x, m.translation.y, m.translation.z = (float(v) for v in T[:3, 3])
    q = frames.quaternion_xyzw(T)
    m.rotation.x, m.rotation.y, m.rotation.z, m.rotation.w = (float(v) for v in q)
    return m


def msg_to_transform(m) -> np.ndarray:
    """geometry_msgs/Transform (or Pose-like with translation/rotation) -> 4x4."""
    t = m.translation
    r = m.rotation
    try:
        return frames.from_translation_quaternion([t.x, t.y, t.z], [r.x, r.y, r.z, r.w])
    except ValueError as exc:
        raise InputError("transform message is invalid: %s" % exc)


def transform_stamped(T: np.ndarray, parent: str, child: str, stamp):
    from geometry_msgs.msg import TransformStamped
    m = TransformStamped()
    m.header.stamp = stamp
    m.header.frame_id = parent
    m.child_frame_id = child
    m.transform = transform_to_msg(T)
    return m


# ---------------------------------------------------------------------- this package's messages
def detections_to_msg(det, header, model: str = ""):
    from dream_ros.msg import Keypoint2D, Keypoints
    msg = Keypoints(header=header, model=str(model), num_detected=int(det.num_detected))
    for name, (u, v), ok, s in zip(det.names, det.uv, det.detected, det.scores):
        msg.keypoints.append(Keypoint2D(name=str(name), detected=bool(ok),
                                        u=float(u) if ok else float("nan"),
                                        v=float(v) if ok else float("nan"),
                                        score=float(s) if np.isfinite(s) else 0.0))
    return msg


def estimate_to_msg(est, header, camera_frame: str, status: str, base_T_child=None,
                    keypoints_detected: int = 0, covariance=None):
    """PoseEstimate (core) -> dream_ros/PoseEstimate. ``status``: the message's STATUS_* value;
    ``base_T_child``: the transform published on TF (None for a rejection: identity + NaN
    figures); ``covariance``: 6x6 of the published frame's pose (base_T_child) in the base
    frame. Figures as documented in msg/PoseEstimate.msg: for a multi-frame (static) estimate
    keypoints_used/inliers/reprojection_error_px are over all the frames used."""
    from dream_ros.msg import PoseEstimate as PoseMsg
    m = PoseMsg(header=header, camera_frame=str(camera_frame), status=str(status))
    m.reason = "" if est is None else str(est.reason or "")
    if base_T_child is not None:
        m.base_to_camera = transform_to_msg(base_T_child)
    else:
        m.base_to_camera.rotation.w = 1.0
    cov = np.full(36, np.nan) if covariance is None else np.asarray(covariance, float).reshape(36)
    m.covariance = [float(c) for c in cov]
    m.keypoints_detected = int(keypoints_detected)
    if est is not None:
        from ..calibration import estimate_figures
        used, inliers, err = estimate_figures(est)   # static mode: the joint solve's figures
        m.reprojection_error_px = float("nan") if err is None else float(err)
        m.keypoints_used = min(used, 65535)      # uint16: static mode over many frames
        m.inliers = min(inliers, 65535)
        # a rejection publishes no estimate: no frame is used
        m.frames_used = 0 if status == PoseMsg.STATUS_REJECTED else int(est.frames_used)
        for field in ("spread_translation_m", "spread_rotation_deg",
                      "standard_error_translation_m", "standard_error_rotation_deg"):
            v = est.extras.get(field)
            setattr(m, field, float("nan") if v is None else float(v))
    return m
