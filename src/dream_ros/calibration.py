"""One image + joint angles + intrinsics -> a gated camera pose; saved calibrations (YAML).

``Calibrator.process`` runs detector -> forward kinematics -> undistortion -> PnP -> plausibility
gates. In ``static`` mode accepted frames feed a ``MultiFrameSolver``; once it has converged the
estimate is frozen (``reset()`` starts over) and later frames are only checked against it, so a
bumped camera shows up as ``jump`` rejections instead of silently moving the calibration.

Bad input raises ``InputError``/``ConfigError``; an estimate that fails is a ``PoseEstimate`` with
``status`` != "ok" and a ``reason`` (the node turns both into a log line + diagnostic, never a TF).
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import cv2
import numpy as np
import yaml

from . import frames
from .errors import ConfigError, InputError
from .peak_selection import solve_choosing_peaks
from .resources import load_yaml_file
from .types import Detections, PoseEstimate

MODES = ("continuous", "static")

# Failure codes set by this module (solve_pnp / MultiFrameSolver add their own).
TOO_FEW_KEYPOINTS = "too_few_keypoints"
REPROJECTION_ERROR = "reprojection_error"
BEHIND_CAMERA = "behind_camera"
IMPLAUSIBLE_DISTANCE = "implausible_distance"
JUMP = "jump"
NOT_CAPTURED = "not_captured"
FRAME_OUTLIER = "frame_outlier"

# Stage of the estimate returned by process(), in extras["stage"] (maps onto PoseEstimate.msg).
STAGE_CONTINUOUS = "ok"
STAGE_CONVERGING = "converging"
STAGE_CONVERGED = "converged"

# Guided zoom (Calibrator guided_zoom): of this many frames in a row, one runs the full detector,
# so a camera that moved, or a robot the crops lost, is found again within a third of a second
# at 30 frames/s even when every guided frame still passes the gates
GUIDED_FULL_PASS_EVERY = 10


@dataclass
class Gates:
    """Checks an estimate must pass before anything is published from it."""

    min_keypoints: int = 4                  # PnP needs >= 4 correspondences
    max_reprojection_error_px: float = 8.0  # RMS over inliers, in raw-image pixels
    min_depth_m: float = 0.05               # every inlier keypoint in front of the camera by this
    min_distance_m: float = 0.2             # camera to base-frame origin
    max_distance_m: float = 6.0
    # Static mode, after convergence: a frame is a "jump" (camera moved?) when its own pose is
    # this far from the converged one AND the converged pose reprojects its keypoints worse than
    # max_jump_px. Both: a single frame's pose is weak in depth (cm of noise at 1-2 m), while a
    # moved camera also shows up in the image.
    max_jump_m: float = 0.05
    max_jump_deg: float = 5.0
    max_jump_px: float = 10.0

    def __post_init__(self):
        if int(self.min_keypoints) < 4:
            raise ConfigError("min_keypoints must be >= 4 (PnP needs four points), got %r"
                              % (self.min_keypoints,))
        for name in ("max_reprojection_error_px", "max_distance_m", "max_jump_m", "max_jump_deg",
                     "max_jump_px"):
            v = float(getattr(self, name))
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError("%s must be a positive number, got %r" % (name, v))
        if not 0 <= float(self.min_distance_m) < float(self.max_distance_m):
            raise ConfigError("need 0 <= min_distance_m < max_distance_m, got %r, %r"
                              % (self.min_distance_m, self.max_distance_m))


def validate_intrinsics(K, dist=None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(K 3x3 float, dist 1-D float or None when all zero); InputError when unusable."""
    try:
        K = np.asarray(K, dtype=float).reshape(3, 3)
    except (TypeError, ValueError):
        raise InputError("camera matrix K must be 3x3 numbers, got %r" % (K,))
    if not np.all(np.isfinite(K)):
        raise InputError("camera matrix K contains NaN/inf: %s" % K.tolist())
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError("camera matrix K has non-positive focal length (fx=%g, fy=%g): is the "
                         "camera calibrated?" % (K[0, 0], K[1, 1]))
    if dist is not None:
        try:
            dist = np.asarray(dist, dtype=float).reshape(-1)
        except (TypeError, ValueError):
            raise InputError("distortion coefficients must be numbers, got %r" % (dist,))
        if not np.all(np.isfinite(dist)):
            raise InputError("distortion coefficients contain NaN/inf: %s" % dist.tolist())
        if dist.size not in (0, 4, 5, 8, 12, 14):
            raise InputError("distortion needs 4, 5, 8, 12 or 14 coefficients (OpenCV), got %d"
                             % dist.size)
        if dist.size == 0 or not np.any(dist):
            dist = None
    return K, dist


def undistort_pixels(uv: np.ndarray, K: np.ndarray, dist: Optional[np.ndarray]) -> np.ndarray:
    """Raw pixels -> pixels of the ideal pinhole camera with the same K (NaN rows kept)."""
    uv = np.asarray(uv, dtype=float)
    if dist is None:
        return uv.copy()
    out = np.full_like(uv, np.nan)
    ok = np.all(np.isfinite(uv), axis=1)
    if np.any(ok):
        out[ok] = cv2.undistortPoints(uv[ok].reshape(-1, 1, 2), K, dist, P=K).reshape(-1, 2)
    return out


def _validate_rgb(rgb) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise InputError("image must be an HxWx3 uint8 RGB array, got %s"
                         % (getattr(rgb, "shape", type(rgb).__name__),))
    if rgb.dtype != np.uint8:
        raise InputError("image must be uint8, got %s" % rgb.dtype)
    return rgb


def estimate_figures(est: PoseEstimate) -> Tuple[int, int, Optional[float]]:
    """(correspondences used, inliers, RMS reprojection error px over the inliers) of an
    estimate: a single frame's, or for a multi-frame estimate the joint solve's over all its
    frames (its ``inliers`` mask and per-point errors describe only the latest frame)."""
    ex = est.extras
    if "joint_points" in ex and "joint_inliers" in ex:
        rms = ex.get("rms_reprojection_px")
        return (int(ex["joint_points"]), int(ex["joint_inliers"]),
                None if rms is None else float(rms))
    return int(est.num_points), int(est.num_inliers), est.reprojection_error_px


def _frame_rms(est: PoseEstimate) -> float:
    """RMS of the newest frame's per-point errors under a multi-frame estimate (all its rows)."""
    e = est.reprojection_errors_px
    if e is None:
        return float("nan")
    e = np.asarray(e, float)
    e = e[np.isfinite(e)]
    return float(np.sqrt(np.mean(e ** 2))) if e.size else float("nan")


def _rms_reprojection(points_3d, uv, camera_T_base, K) -> float:
    if len(points_3d) == 0:
        return float("inf")
    cam = points_3d @ camera_T_base[:3, :3].T + camera_T_base[:3, 3]
    if np.any(cam[:, 2] <= 1e-6):
        return float("inf")
    proj = cam @ K.T
    proj = proj[:, :2] / proj[:, 2:3]
    return float(np.sqrt(np.mean(np.sum((proj - uv) ** 2, axis=1))))


class Calibrator:
    """Detector + robot model -> gated camera_T_base, per frame or accumulated (static mode)."""

    def __init__(self, robot, detector, mode: str = "continuous", gates: Optional[Gates] = None,
                 solver_options: Optional[dict] = None, pnp_options: Optional[dict] = None,
                 guided_zoom: bool = False, **gate_values):
        """guided_zoom: after a frame with an accepted pose, the next frames' detector places its
        zoom crops where that pose projects the robot at their joint angles and skips its first
        pass (KeypointDetector.detect expected_uv); a stream's speed-up, off for unrelated
        images, and for detectors without a zoom pass (DREAM's models)."""
        if mode not in MODES:
            raise ConfigError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
        self.robot = robot
        self.detector = detector
        self.mode = mode
        self.gates = gates if gates is not None else Gates(**gate_values)
        self.solver_options = dict(solver_options or {})
        self.pnp_options = dict(pnp_options or {})
        self._check_options()
        self._solver = None
        self._solver_K = None
        self._frozen: Optional[PoseEstimate] = None   # the converged estimate (static mode)
        self._accepted: Optional[PoseEstimate] = None # latest accumulated estimate that passed
        self._index = None                            # detection order -> robot keypoint order
        self.guided_zoom = bool(guided_zoom) and bool(getattr(detector, "zoom", False))
        self._guide: Optional[np.ndarray] = None      # camera_T_base of the last accepted frame
        self._guided_frames = 0                       # guided frames since the last full pass

    def _check_options(self) -> None:
        """Unknown/invalid solver options fail here, at start-up, not on every frame."""
        import inspect
        from .pnp import solve_pnp
        params = inspect.signature(solve_pnp).parameters
        fixed = {"points_3d", "points_2d", "K", "dist", "point_sigma_px"}   # set per frame
        unknown = sorted(set(self.pnp_options) - (set(params) - fixed))
        if unknown:
            raise ConfigError("unknown PnP option(s) %s; valid: %s"
                              % (", ".join(unknown), ", ".join(sorted(set(params) - fixed))))
        # Option values: a dry run on a synthetic view, so a bad value (a string, a negative
        # threshold) fails here, not as a rejection of every frame.
        K0 = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
        p3 = np.array([[x, y, z] for x in (-0.3, 0.3) for y in (-0.3, 0.3)
                       for z in (1.2, 1.8)]) + [0.05, -0.02, 0.0]
        p2 = p3[:, :2] / p3[:, 2:] * 500.0 + [320, 240]
        try:
            solve_pnp(p3, p2, K0, **self.pnp_options)
        except (InputError, TypeError, ValueError) as exc:
            raise ConfigError("PnP options %s: %s" % (self.pnp_options, exc))
        if self.mode == "static":
            from .multiframe import MultiFrameSolver
            own = set(inspect.signature(MultiFrameSolver.__init__).parameters) - {"self", "K"}
            valid = (own | set(params)) - fixed - {"pnp_options"}
            unknown = sorted(set(self.solver_options) - valid)
            if unknown:
                raise ConfigError("unknown multi-frame solver option(s) %s; valid: %s"
                                  % (", ".join(unknown), ", ".join(sorted(valid))))
            try:
                MultiFrameSolver(K0, **self.solver_options).add_frame(p3, p2)
            except (TypeError, ValueError, InputError) as exc:
                raise ConfigError("multi-frame solver options %s: %s"
                                  % (self.solver_options, exc))

    # -- state ---------------------------------------------------------------------------------
    @property
    def estimate(self) -> Optional[PoseEstimate]:
        """The current calibration in static mode (None until a frame was accepted)."""
        if self._frozen is not None:
            return self._frozen
        return self._accepted

    @property
    def converged(self) -> bool:
        return self._frozen is not None

    def reset(self) -> None:
        """Forget the static-mode accumulation (and the frozen estimate)."""
        self._frozen = None
        self._accepted = None
        self._guide = None
        if self._solver is not None:
            self._solver.reset()

    # -- one frame -----------------------------------------------------------------------------
    def process(self, rgb, joints, K, dist=None, stamp=None, accumulate: bool = True,
                return_belief: bool = False) -> Tuple[Detections, PoseEstimate]:
        """Detect, solve and gate one frame.

        continuous mode: the single-frame estimate (status "ok" or a failure code).
        static mode: the accumulated estimate after this frame (extras["stage"] "converging" or
        "converged"), or the failure of this frame; ``accumulate=False`` only checks the frame
        (manual-capture mode between captures). ``extras["single_frame"]`` always holds the
        frame's own estimate.
        """
        rgb = _validate_rgb(rgb)
        K, dist = validate_intrinsics(K, dist)
        points_3d_all = self._keypoints_3d(joints)
        expected = None if return_belief else self._expected_keypoints(points_3d_all, K, dist)
        if expected is None:
            det = self.detector.detect(rgb, return_belief=return_belief)
        else:
            det = self.detector.detect(rgb, expected_uv=expected)
        points_3d = points_3d_all[self.order(det.names)]
        det, result = self._solve_single(points_3d, K, dist, det)
        self._guide = result.camera_T_base if result.ok else None
        result.extras["guided"] = expected is not None
        uv = undistort_pixels(det.uv, K, dist)
        uv[~np.asarray(det.detected, bool)] = np.nan
        result.extras.setdefault("stamp", stamp)
        if self.mode == "continuous":
            if result.ok:
                result.extras["stage"] = STAGE_CONTINUOUS
            return det, result
        if not np.any(np.all(np.isfinite(uv), axis=1)):
            return det, result
        # Static mode: a frame whose own PnP failed (e.g. 3 keypoints) still constrains the
        # shared pose; the multi-frame solver gates frames against the joint estimate itself.
        return det, self._static_step(points_3d, uv, K, result, accumulate)

    def _expected_keypoints(self, points_3d_all, K, dist) -> Optional[np.ndarray]:
        """Where the last accepted pose puts the detector's keypoints in this frame, or None
        for a full detector pass (no guidance, no accepted pose, or the periodic full pass)."""
        if (not self.guided_zoom or self._guide is None
                or self._guided_frames >= GUIDED_FULL_PASS_EVERY - 1):
            self._guided_frames = 0
            return None
        self._guided_frames += 1
        from .visualize import project
        names = self.detector.keypoint_names
        return project(points_3d_all[self.order(names)], self._guide, K, dist)

    def _keypoints_3d(self, joints) -> np.ndarray:
        if isinstance(joints, dict):
            bad = [n for n, v in joints.items() if not np.all(np.isfinite(np.asarray(v, float)))]
            if bad:
                raise InputError("joint angles are NaN/inf for %s" % ", ".join(sorted(bad)))
            missing = [n for n in self.robot.joint_names if n not in joints]
            if missing:
                raise InputError("joint angles missing for %s" % ", ".join(missing))
        pts = np.asarray(self.robot.keypoints_3d(joints), dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 3 or not np.all(np.isfinite(pts)):
            raise InputError("forward kinematics gave no finite (K, 3) keypoints for these joints")
        return pts

    def keypoints_3d(self, joints, names) -> np.ndarray:
        """Forward-kinematics keypoints (base frame) in the order of ``names`` (a detection's)."""
        return self._keypoints_3d(joints)[self.order(names)]

    def order(self, names) -> np.ndarray:
        """Indices of ``names`` among the robot's keypoints (ConfigError for unknown names)."""
        names = list(names)
        if self._index is None or len(self._index) != len(names):
            robot_names = list(self.robot.keypoint_names)
            unknown = [n for n in names if n not in robot_names]
            if unknown:
                raise ConfigError("the model's keypoints %s are not keypoints of robot %r (%s): "
                                  "the model was trained for another robot or config"
                                  % (unknown, getattr(getattr(self.robot, "config", None),
                                                      "name", "?"),
                                     ", ".join(robot_names)))
            self._index = np.array([robot_names.index(n) for n in names], dtype=int)
        return self._index

    def _solve_single(self, points_3d, K, dist, det: Detections
                      ) -> Tuple[Detections, PoseEstimate]:
        """The frame's own pose; when the detector reports candidate peaks, the keypoints the
        pose chose among them (peak_selection.py) replace the detections."""
        from .pnp import solve_pnp  # lazy: keeps `import dream_ros.calibration` light
        from .visualize import project

        def solve(uv_raw):
            uv = undistort_pixels(uv_raw, K, dist)
            n = int(np.count_nonzero(np.all(np.isfinite(uv), axis=1)))
            if n < self.gates.min_keypoints:
                return PoseEstimate.failure(TOO_FEW_KEYPOINTS, "%d of %d keypoints detected, "
                                            "need %d" % (n, len(uv), self.gates.min_keypoints),
                                            num_points=n)
            return solve_pnp(points_3d, uv, K, dist=None, point_sigma_px=det.sigma_px,
                             **self.pnp_options)

        uv_raw = np.where(np.asarray(det.detected, bool)[:, None], det.uv, np.nan)
        chosen, est = solve_choosing_peaks(points_3d, uv_raw, det.candidates, solve,
                                           lambda p, T: project(p, T, K, dist))
        if chosen is not uv_raw:
            found = np.all(np.isfinite(chosen), axis=1)
            det = dataclasses.replace(det, uv=chosen, detected=found)
        if est.ok:
            est = self.check(est, points_3d)
        est.extras["keypoints_detected"] = det.num_detected
        return det, est

    def check(self, est: PoseEstimate, points_3d: np.ndarray) -> PoseEstimate:
        """Plausibility gates on an "ok" estimate; a failure estimate (same figures) otherwise."""
        g = self.gates
        T = est.camera_T_base
        if T is None or T.shape != (4, 4) or not np.all(np.isfinite(T)):
            return self._fail(est, "degenerate", "solver returned no finite transform")
        _, inliers, err = estimate_figures(est)   # a joint estimate: over all its frames
        if err is None or not math.isfinite(err) or err > g.max_reprojection_error_px:
            return self._fail(est, REPROJECTION_ERROR, "RMS reprojection error %s px exceeds "
                              "%.1f px"
                              % ("n/a" if err is None else "%.1f" % err,
                                 g.max_reprojection_error_px))
        if inliers and inliers < g.min_keypoints:
            return self._fail(est, TOO_FEW_KEYPOINTS, "only %d inlier keypoints, need %d"
                              % (inliers, g.min_keypoints))
        valid = np.all(np.isfinite(points_3d), axis=1)
        depth = (points_3d[valid] @ T[:3, :3].T + T[:3, 3])[:, 2]
        if depth.size == 0 or np.min(depth) < g.min_depth_m:
            return self._fail(est, BEHIND_CAMERA, "robot keypoints behind the camera (min depth "
                              "%.2f m): mirrored PnP solution" % (np.min(depth) if depth.size else
                                                                 float("nan")))
        dist_m = float(np.linalg.norm(T[:3, 3]))
        if not g.min_distance_m <= dist_m <= g.max_distance_m:
            return self._fail(est, IMPLAUSIBLE_DISTANCE, "camera %.2f m from the robot base, "
                              "outside [%.2f, %.2f] m" % (dist_m, g.min_distance_m,
                                                         g.max_distance_m))
        return est

    @staticmethod
    def _fail(est: PoseEstimate, status: str, reason: str) -> PoseEstimate:
        # The transform moves to extras so nothing can publish a rejected estimate by accident.
        est.extras["rejected_camera_T_base"] = est.camera_T_base
        est.camera_T_base = None
        est.status, est.reason = status, reason
        return est

    # -- static mode ---------------------------------------------------------------------------
    def _static_step(self, points_3d, uv, K, single: PoseEstimate,
                     accumulate: bool) -> PoseEstimate:
        if self._frozen is not None and not single.ok:
            out = self._copy(self._frozen)      # no pose of its own: nothing to check
            out.extras["single_frame"] = single
            return out
        if self._frozen is not None:
            g = self.gates
            jump_m, jump_deg = frames.pose_error(single.camera_T_base, self._frozen.camera_T_base)
            valid = np.all(np.isfinite(uv), axis=1)
            rms_px = _rms_reprojection(points_3d[valid], uv[valid], self._frozen.camera_T_base, K)
            single.extras.update(jump_m=jump_m, jump_deg=jump_deg, jump_px=rms_px)
            if (jump_m > g.max_jump_m or jump_deg > g.max_jump_deg) and rms_px > g.max_jump_px:
                return self._fail(single, JUMP, "frame disagrees with the converged calibration: "
                                  "%.1f px RMS under it, its own pose %.3f m / %.1f deg away (max "
                                  "%.1f px, %.3f m / %.1f deg): did the camera move? call reset "
                                  "to recalibrate" % (rms_px, jump_m, jump_deg, g.max_jump_px,
                                                      g.max_jump_m, g.max_jump_deg))
            out = self._copy(self._frozen)
            out.extras["single_frame"] = single
            return out
        if not accumulate:
            current = self.estimate
            out = self._copy(current) if current is not None else PoseEstimate.failure(
                NOT_CAPTURED, "frame checked but not captured (manual capture: call ~capture)")
            out.extras["single_frame"] = single
            return out
        solver = self._solver_for(K)
        valid = np.all(np.isfinite(uv), axis=1)
        agg = solver.add_frame(points_3d[valid], uv[valid])
        if not agg.ok:
            out = agg if single.ok else single  # the frame's own failure says more
            out.extras["single_frame"] = single
            return out
        agg = self.check(self._copy(agg), points_3d)   # a copy: the solver keeps its own
        if not agg.ok:
            agg.extras["single_frame"] = single
            return agg
        frame_px = _frame_rms(agg)
        if agg.extras.get("latest_frame_rejected") or (
                not (agg.inliers is not None and np.any(agg.inliers))
                and frame_px > self.gates.max_reprojection_error_px):
            # The joint solve gated this frame out, or could not use it and it disagrees
            # (wrong joint reading, out of sync, bad detections): the frame is rejected; the
            # calibration so far is unchanged.
            out = self._fail(self._copy(agg), FRAME_OUTLIER, "frame disagrees with the estimate "
                             "from %d frames (%.1f px RMS under it): joint_states out of sync "
                             "with the image, or bad detections" % (agg.frames_used, frame_px))
            out.extras["single_frame"] = single
            return out
        out = self._staged(agg)
        self._accepted = self._copy(out)
        if out.extras["stage"] == STAGE_CONVERGED:
            self._frozen = self._copy(out)
        out.extras["single_frame"] = single
        return out

    def _solver_for(self, K):
        from .multiframe import MultiFrameSolver  # lazy, as solve_pnp

        if self._solver is None or not np.allclose(self._solver_K, K):
            # New intrinsics invalidate the accumulated frames.
            self._solver = MultiFrameSolver(K, **self.solver_options)
            self._solver_K = K.copy()
            self._frozen = self._accepted = None
        return self._solver

    def _staged(self, est: PoseEstimate) -> PoseEstimate:
        out = self._copy(est)
        conv = bool(est.extras.get("converged", False))
        out.extras["stage"] = STAGE_CONVERGED if conv else STAGE_CONVERGING
        return out

    @staticmethod
    def _copy(est: PoseEstimate) -> PoseEstimate:
        return PoseEstimate(status=est.status, reason=est.reason,
                            camera_T_base=None if est.camera_T_base is None
                            else est.camera_T_base.copy(),
                            covariance=est.covariance,
                            reprojection_errors_px=est.reprojection_errors_px,
                            inliers=est.inliers, num_points=est.num_points,
                            frames_used=est.frames_used,
                            extras={k: v for k, v in est.extras.items() if k != "single_frame"})


# ---------------------------------------------------------------------------------------------
# Saved calibrations
# ---------------------------------------------------------------------------------------------
FORMAT = "dream_ros/calibration-1"


@dataclass
class Calibration:
    """A saved calibration. ``tf_*``: the transform a TF publisher broadcasts (parent -> child),
    which is the optical frame's pose unless the node published to a camera_link-like frame."""

    base_frame: str
    camera_frame: str                 # the camera's optical frame
    camera_T_base: np.ndarray         # optical frame <- base
    tf_parent: str
    tf_child: str
    tf_parent_T_child: np.ndarray
    frames_used: int = 1
    quality: Dict = field(default_factory=dict)
    robot: str = ""
    model: str = ""
    date: str = ""
    path: Optional[Path] = None

    @property
    def base_T_camera(self) -> np.ndarray:
        return frames.invert(self.camera_T_base)


def _transform_dict(T: np.ndarray) -> dict:
    return {"translation": [float(x) for x in T[:3, 3]],
            "quaternion_xyzw": [float(x) for x in frames.quaternion_xyzw(T)],
            "matrix": [[float(x) for x in row] for row in T]}


def _finite_list(x) -> Optional[list]:
    if x is None:
        return None
    a = np.asarray(x, dtype=float)
    return [None if not math.isfinite(v) else float(v) for v in a.reshape(-1)]


def save_calibration(path: Union[str, Path], estimate: PoseEstimate, base_frame: str,
                     camera_frame: str, tf_child: Optional[str] = None,
                     child_T_camera: Optional[np.ndarray] = None, robot: str = "",
                     model: str = "", mode: str = "", camera: Optional[dict] = None) -> Path:
    """Write ``estimate`` as YAML, atomically (temp file in the same folder, then rename).

    ``tf_child``/``child_T_camera``: publish to a frame other than the optical one (e.g.
    camera_link, with child_T_camera = its transform to the optical frame). Raises ConfigError if
    there is nothing to save or the file cannot be written (an earlier file is left intact).
    """
    if estimate is None or estimate.camera_T_base is None or not estimate.ok:
        raise ConfigError("no accepted calibration to save yet%s"
                          % ("" if estimate is None else " (last: %s)" % estimate.reason))
    T = np.asarray(estimate.camera_T_base, dtype=float)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ConfigError("calibration transform is not a finite 4x4 matrix")
    if not base_frame or not camera_frame:
        raise ConfigError("base_frame and camera_frame must be non-empty frame names")
    base_T_camera = frames.invert(T)
    if tf_child is None or tf_child == camera_frame:
        tf_child, parent_T_child = camera_frame, base_T_camera
    else:
        if child_T_camera is None:
            raise ConfigError("tf_child %r needs child_T_camera (its transform to %s)"
                              % (tf_child, camera_frame))
        parent_T_child = base_T_camera @ frames.invert(np.asarray(child_T_camera, float))
    ex = estimate.extras
    figures = estimate_figures(estimate)     # a static estimate: over all its frames
    quality = {
        "status": str(ex.get("stage", estimate.status)),
        "reprojection_error_px": figures[2],
        "keypoints_used": figures[0],
        "inliers": figures[1],
        "spread_translation_m": ex.get("spread_translation_m"),
        "spread_rotation_deg": ex.get("spread_rotation_deg"),
        "standard_error_translation_m": ex.get("standard_error_translation_m"),
        "standard_error_rotation_deg": ex.get("standard_error_rotation_deg"),
        # the solver's covariance is of camera_T_base; the file names the camera pose's
        "covariance_base_T_camera": _finite_list(camera_pose_covariance(T, estimate.covariance)),
    }
    quality = {k: (float(v) if isinstance(v, (np.floating, float)) else v)
               for k, v in quality.items()}
    doc = {
        "format": FORMAT,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "robot": str(robot), "model": str(model), "mode": str(mode),
        "base_frame": str(base_frame), "camera_frame": str(camera_frame),
        "frames_used": int(estimate.frames_used),
        "camera_T_base": _transform_dict(T),
        "base_T_camera": _transform_dict(base_T_camera),
        "tf": dict(parent=str(base_frame), child=str(tf_child), **_transform_dict(parent_T_child)),
        "quality": quality,
    }
    if camera:
        doc["camera"] = camera
    text = ("# dream_ros camera calibration. camera_T_base maps base-frame points into the\n"
            "# optical frame (x right, y down, z forward); base_T_camera is its inverse (the\n"
            "# camera pose).\n"
            "# `tf` is what publish_calibration.launch broadcasts. Quaternions are x y z w.\n"
            + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None))
    path = Path(os.path.expanduser(str(path)))
    _atomic_write(path, text)
    return path


def _atomic_write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix="." + path.name, suffix=".tmp")
    except OSError as exc:
        raise ConfigError("cannot write calibration to %s: %s" % (path, exc))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, str(path))
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConfigError("cannot write calibration to %s: %s (any earlier file is unchanged)"
                          % (path, exc))


def _read_transform(doc: dict, key: str, path) -> np.ndarray:
    """4x4 from a saved {translation, quaternion_xyzw, matrix}; ConfigError when inconsistent."""
    sec = doc.get(key)
    if not isinstance(sec, dict):
        raise ConfigError("calibration %s: missing or malformed section %r" % (path, key))
    try:
        t = np.asarray(sec["translation"], dtype=float).reshape(3)
        q = np.asarray(sec["quaternion_xyzw"], dtype=float).reshape(4)
    except (KeyError, TypeError, ValueError):
        raise ConfigError("calibration %s: %r needs translation (3 numbers) and quaternion_xyzw "
                          "(4 numbers)" % (path, key))
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        raise ConfigError("calibration %s: %r contains NaN/inf" % (path, key))
    if abs(np.linalg.norm(q) - 1.0) > 1e-3:
        raise ConfigError("calibration %s: %r quaternion has norm %.4f, not 1 (corrupt file?)"
                          % (path, key, np.linalg.norm(q)))
    T = frames.from_translation_quaternion(t, q)
    if "matrix" in sec:
        try:
            M = np.asarray(sec["matrix"], dtype=float).reshape(4, 4)
        except (TypeError, ValueError):
            raise ConfigError("calibration %s: %r matrix must be 4x4 numbers" % (path, key))
        if not np.allclose(M, T, atol=1e-5):
            raise ConfigError("calibration %s: %r matrix disagrees with its translation/"
                              "quaternion (edited by hand? corrupt?)" % (path, key))
    return T


def load_calibration(path: Union[str, Path]) -> Calibration:
    """Read and cross-check a file written by ``save_calibration``; ConfigError if unusable."""
    path = Path(os.path.expanduser(str(path)))
    doc = load_yaml_file(path, "calibration file")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError("%s is not a dream_ros calibration file (expected format: %s)"
                          % (path, FORMAT))
    for key in ("base_frame", "camera_frame"):
        if not isinstance(doc.get(key), str) or not doc[key].strip():
            raise ConfigError("calibration %s: %r must be a non-empty frame name" % (path, key))
    camera_T_base = _read_transform(doc, "camera_T_base", path)
    base_T_camera = _read_transform(doc, "base_T_camera", path)
    if not np.allclose(camera_T_base @ base_T_camera, np.eye(4), atol=1e-5):
        raise ConfigError("calibration %s: camera_T_base and base_T_camera are not inverses "
                          "(corrupt file?)" % path)
    tf = doc.get("tf")
    if not isinstance(tf, dict) or not tf.get("parent") or not tf.get("child"):
        raise ConfigError("calibration %s: missing 'tf' section with parent and child" % path)
    if str(tf["parent"]) == str(tf["child"]):
        raise ConfigError("calibration %s: tf parent and child are both %r" % (path, tf["parent"]))
    tf_T = _read_transform(doc, "tf", path)
    if str(tf["child"]) == doc["camera_frame"] and not np.allclose(tf_T, base_T_camera, atol=1e-5):
        raise ConfigError("calibration %s: tf disagrees with base_T_camera" % path)
    try:
        frames_used = int(doc.get("frames_used", 1))
    except (TypeError, ValueError):
        raise ConfigError("calibration %s: frames_used must be an integer" % path)
    quality = doc.get("quality") or {}
    if not isinstance(quality, dict):
        raise ConfigError("calibration %s: quality must be a mapping" % path)
    return Calibration(base_frame=doc["base_frame"], camera_frame=doc["camera_frame"],
                       camera_T_base=camera_T_base, tf_parent=str(tf["parent"]),
                       tf_child=str(tf["child"]), tf_parent_T_child=tf_T,
                       frames_used=frames_used, quality=quality, robot=str(doc.get("robot", "")),
                       model=str(doc.get("model", "")), date=str(doc.get("date", "")), path=path)


def camera_pose_covariance(camera_T_base: np.ndarray, covariance: Optional[np.ndarray],
                           child_T_camera: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """Covariance of (x y z rx ry rz) of base_T_camera (the published camera pose) from the
    solver's covariance of (tx ty tz rx ry rz) of camera_T_base, by a numerical Jacobian of the
    inversion (first-order propagation; rotation parts as rotation vectors).

    ``child_T_camera``: the pose published is of another frame rigidly attached to the camera
    (e.g. camera_link, base_T_child = base_T_camera @ inv(child_T_camera)): its covariance."""
    if covariance is None or camera_T_base is None:
        return None
    camera_T_child = np.eye(4) if child_T_camera is None else frames.invert(
        np.asarray(child_T_camera, dtype=float))
    if camera_T_child.shape != (4, 4) or not np.all(np.isfinite(camera_T_child)):
        return None
    C = np.asarray(covariance, dtype=float)
    if C.shape != (6, 6) or not np.all(np.isfinite(C)):
        return None
    from scipy.spatial.transform import Rotation

    def params(T):
        return np.concatenate([T[:3, 3], Rotation.from_matrix(T[:3, :3]).as_rotvec()])

    def inv_params(x):
        T = frames.make_transform(Rotation.from_rotvec(x[3:]).as_matrix(), x[:3])
        return params(frames.invert(T) @ camera_T_child)

    x0 = params(camera_T_base)
    f0 = inv_params(x0)
    J = np.zeros((6, 6))
    h = 1e-6
    for i in range(6):
        dx = np.zeros(6)
        dx[i] = h
        J[:, i] = (inv_params(x0 + dx) - f0) / h
    return J @ C @ J.T
