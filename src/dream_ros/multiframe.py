"""Static-camera calibration over many frames: one pose for all correspondences.

The camera does not move while the robot does, so every frame's keypoints (base frame, from FK)
and detections constrain the same camera_T_base. ``MultiFrameSolver.add_frame`` solves each frame
alone (``solve_pnp``, robust), then the joint problem over the frames kept (a bounded history):

1. start from the better (lower robust cost) of the previous joint estimate, robustly re-fitted
   to all frames' correspondences (scipy, soft-L1 loss), and the frame consensus: the single-frame
   pose that the most frames agree with, robustly fitted to those frames (frames with wrong joint
   readings rarely agree with one another, so a consistent minority wins); an estimate that
   the new frame agrees with, or that many frames settled on, is the start without re-solving;
2. gating: a frame is an outlier when its median reprojection error under the joint pose exceeds
   max(frame_gate_px, frame_gate_factor x the median over frames) (wrong joint readings, a frame
   out of sync, a badly wrong detection set); a point is an outlier above point_gate_px;
3. a plain Levenberg-Marquardt solve (OpenCV) over the inliers: the maximum-likelihood pose under
   Gaussian pixel noise, with its covariance.

Frames whose own PnP failed (fewer than 4 keypoints seen, ...) still contribute their points once
an estimate exists. Convergence: at least ``min_frames`` inlier frames, the joint estimate moved
less than converge_translation_m / converge_rotation_deg over the last ``converge_window`` added
frames, and the single-frame poses of the n inlier frames agree well enough:
- their standard error, spread / sqrt(n), is under max_standard_error_translation_m /
  max_standard_error_rotation_deg (spread: the median distance / angle of the single-frame poses
  from the joint one). This is the uncertainty of the joint estimate measured from the data,
  whatever the detector's error distribution: noisy single frames converge, only later;
- and the spread itself is under max_spread_translation_m / max_spread_rotation_deg, a loose
  guard: single frames that disagree by more are a sign of systematically wrong detections
  (the wrong arm link found, for example), which averaging over more frames does not cure.
"""
from __future__ import annotations

import inspect
from collections import deque
from typing import Deque, List, Optional

import cv2
import numpy as np
from scipy.optimize import least_squares

from .errors import InputError
from .pnp import (LM_CRITERIA, MAX_SIGMA_FLOOR_PX, check_camera, check_correspondences,
                  number_option, pose_covariance, solve_pnp)
from .types import PoseEstimate


class _Frame(object):
    __slots__ = ("id", "p3", "p2", "rows", "all_p3", "all_p2", "all_rows", "n_given", "single",
                 "position", "rotation")

    def __init__(self, frame_id, p3, p2, rows, n_given, single):
        # p3/p2: the correspondences this frame brings to the joint solve (its present rows,
        # minus the ones its own robust PnP rejected); rows: their indices in the frame's input.
        self.id, self.p3, self.p2, self.rows, self.n_given = frame_id, p3, p2, rows, n_given
        self.all_p3, self.all_p2, self.all_rows = p3, p2, rows     # every present row
        self.single = single
        self.position = self.rotation = None
        if single.ok:
            T = single.camera_T_base
            self.rotation = T[:3, :3]
            self.position = -T[:3, :3].T @ T[:3, 3]      # camera centre in the base frame


def _pose_to_x(T: np.ndarray) -> np.ndarray:
    return np.concatenate([cv2.Rodrigues(T[:3, :3])[0].ravel(), T[:3, 3]])


def _x_to_pose(x: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.asarray(x[:3], np.float64))[0]
    T[:3, 3] = x[3:]
    return T


def _group_medians(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Median of each consecutive group (sizes ``counts``, all > 0) in one sort; a loop of
    np.median calls costs ~20 us per frame."""
    group = np.repeat(np.arange(len(counts)), counts)
    v = values[np.lexsort((values, group))]
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return 0.5 * (v[start + (counts - 1) // 2] + v[start + counts // 2])


def _angles_deg(Rs: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Angles of the relative rotations Rs[i]^T R, degrees (vectorised rotation_angle_deg)."""
    c = (np.einsum("nij,ij->n", Rs, R) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


class MultiFrameSolver(object):
    """Incremental joint camera_T_base over the frames of a static camera (module docstring).

    K, dist: camera intrinsics (dist: OpenCV coefficients or None). max_frames: history bound.
    robust, ransac_reprojection_px and **pnp_options: passed to the single-frame ``solve_pnp``.
    loss, loss_scale_px: scipy least_squares robust loss for the re-solve from scratch.
    point_gate_px (default ransac_reprojection_px), frame_gate_px, frame_gate_factor: gating.
    min_frames, converge_window, converge_*, max_standard_error_*, max_spread_*: the convergence
    test (module docstring).
    sigma_floor_px: as in solve_pnp, for the joint covariance.
    """

    # Frame-consensus hypotheses tried per re-solve (the latest solved frames): each projects
    # every kept point once, ~50 us per 1,000 points.
    MAX_CONSENSUS_HYPOTHESES = 60

    def __init__(self, K, dist=None, max_frames: int = 300, robust: bool = True,
                 ransac_reprojection_px: float = 10.0, loss: str = "soft_l1",
                 loss_scale_px: float = 3.0, point_gate_px: Optional[float] = None,
                 frame_gate_px: float = 4.0, frame_gate_factor: float = 3.0,
                 min_frames: int = 5, converge_window: int = 10,
                 converge_translation_m: float = 0.005, converge_rotation_deg: float = 0.5,
                 max_standard_error_translation_m: float = 0.02,
                 max_standard_error_rotation_deg: float = 1.0,
                 max_spread_translation_m: float = 0.25, max_spread_rotation_deg: float = 10.0,
                 sigma_floor_px: float = 0.0, **pnp_options):
        self.K, self.dist = check_camera(K, dist)
        num = number_option    # options come from user parameter files: InputError naming them
        max_frames, min_frames = num("max_frames", max_frames, int), num("min_frames", min_frames,
                                                                         int)
        converge_window = num("converge_window", converge_window, int)
        ransac_reprojection_px = num("ransac_reprojection_px", ransac_reprojection_px, float, 0.0)
        loss_scale_px = num("loss_scale_px", loss_scale_px, float, 1e-9)
        point_gate_px = num("point_gate_px", point_gate_px, float, 0.0, allow_none=True)
        frame_gate_px = num("frame_gate_px", frame_gate_px, float, 0.0)
        frame_gate_factor = num("frame_gate_factor", frame_gate_factor, float, 0.0)
        converge_translation_m = num("converge_translation_m", converge_translation_m, float, 0.0)
        converge_rotation_deg = num("converge_rotation_deg", converge_rotation_deg, float, 0.0)
        max_standard_error_translation_m = num("max_standard_error_translation_m",
                                               max_standard_error_translation_m, float, 0.0)
        max_standard_error_rotation_deg = num("max_standard_error_rotation_deg",
                                              max_standard_error_rotation_deg, float, 0.0)
        max_spread_translation_m = num("max_spread_translation_m", max_spread_translation_m,
                                       float, 0.0)
        max_spread_rotation_deg = num("max_spread_rotation_deg", max_spread_rotation_deg, float,
                                      0.0)
        sigma_floor_px = num("sigma_floor_px", sigma_floor_px, float, 0.0,
                             maximum=MAX_SIGMA_FLOOR_PX)
        if int(max_frames) < 1 or int(min_frames) < 1 or int(converge_window) < 1:
            raise InputError("max_frames, min_frames and converge_window must be positive")
        if loss not in ("linear", "huber", "soft_l1", "cauchy", "arctan"):
            raise InputError("loss must be one of linear, huber, soft_l1, cauchy, arctan; got %r"
                             % (loss,))
        self.max_frames = int(max_frames)
        self.robust = bool(robust)
        self.ransac_reprojection_px = float(ransac_reprojection_px)
        self.loss, self.loss_scale_px = loss, float(loss_scale_px)
        self.point_gate_px = float(ransac_reprojection_px if point_gate_px is None
                                   else point_gate_px)
        self.frame_gate_px, self.frame_gate_factor = float(frame_gate_px), float(frame_gate_factor)
        self.min_frames, self.converge_window = int(min_frames), int(converge_window)
        self.converge_translation_m = float(converge_translation_m)
        self.converge_rotation_deg = float(converge_rotation_deg)
        self.max_standard_error_translation_m = float(max_standard_error_translation_m)
        self.max_standard_error_rotation_deg = float(max_standard_error_rotation_deg)
        self.max_spread_translation_m = float(max_spread_translation_m)
        self.max_spread_rotation_deg = float(max_spread_rotation_deg)
        self.sigma_floor_px = float(sigma_floor_px)
        unknown = sorted(set(pnp_options) - set(inspect.signature(solve_pnp).parameters))
        if unknown:
            raise InputError("unknown MultiFrameSolver/solve_pnp options: %s" % ", ".join(unknown))
        self.pnp_options = dict(pnp_options)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every frame and the estimate."""
        self._frames: Deque[_Frame] = deque(maxlen=self.max_frames)
        self._history: Deque[np.ndarray] = deque(maxlen=self.converge_window + 1)
        self._x: Optional[np.ndarray] = None          # joint (rvec, tvec)
        self._last_gate = self.frame_gate_px
        self._settled = False
        self._next_id = 0
        self.estimate: Optional[PoseEstimate] = None

    @property
    def converged(self) -> bool:
        return bool(self.estimate is not None and self.estimate.extras.get("converged", False))

    @property
    def num_frames(self) -> int:
        return len(self._frames)

    # ------------------------------------------------------------------ adding frames
    def add_frame(self, points_3d, points_2d) -> PoseEstimate:
        """Adds one frame (points_3d (N,3) base frame, points_2d (N,2) raw px, NaN rows missing)
        and returns the joint estimate over the frames kept so far."""
        p3_all, p2_all, valid = check_correspondences(points_3d, points_2d)
        single = solve_pnp(p3_all, p2_all, self.K, self.dist, robust=self.robust,
                           ransac_reprojection_px=self.ransac_reprojection_px,
                           **self.pnp_options)
        rows = np.flatnonzero(valid)
        frame = _Frame(self._next_id, p3_all[rows], p2_all[rows], rows, len(valid), single)
        self._next_id += 1
        if len(rows):
            if single.ok and single.inliers is not None:
                keep = single.inliers[rows]   # the frame's own outliers never enter the joint solve
                if np.any(~keep):
                    frame.p3, frame.p2, frame.rows = frame.p3[keep], frame.p2[keep], rows[keep]
            self._frames.append(frame)
        est = self._solve(frame, single)
        self.estimate = est
        return est

    def _consensus_start(self, frames: List[_Frame]) -> Optional[np.ndarray]:
        """The pose the largest group of frames agrees with, robustly fitted to that group.

        Frame-level RANSAC with every solved frame's own pose as a hypothesis: a frame agrees
        when its median reprojection error under the hypothesis is within point_gate_px; the
        most agreeing frames win, the lower MSAC cost breaks ties. Frames with wrong joint
        readings each fit a pose of their own and rarely agree with one another, so the frames
        that do agree are the right ones even when they are a minority (a median over single
        poses, the earlier start, follows the majority wherever it lies)."""
        solved = [f for f in frames if f.position is not None and len(f.p3)]
        if not solved:
            return None
        # Hypotheses: the latest solved frames (bounded: each costs one projection of all points)
        hypotheses = solved[-self.MAX_CONSENSUS_HYPOTHESES:]
        p3 = np.concatenate([f.p3 for f in solved])
        p2 = np.concatenate([f.p2 for f in solved])
        counts = np.array([len(f.p3) for f in solved])
        best_key, best = None, None
        for f in hypotheses:
            x = _pose_to_x(f.single.camera_T_base)
            err = np.linalg.norm(self._project(x, p3) - p2, axis=1)
            agree = _group_medians(err, counts) <= self.point_gate_px
            key = (int(agree.sum()), -self._msac(err))
            if best_key is None or key > best_key:
                best_key, best = key, (x, agree)
        x, agree = best
        if not agree.any():     # noisy frames, not even the hypothesis' own within the gate
            agree[:] = True
        keep = np.repeat(agree, counts)
        return self._robust_solve(x, p3[keep], p2[keep])

    def _project(self, x, p3, jacobian=False):
        img, J = cv2.projectPoints(p3.reshape(-1, 1, 3), x[:3].reshape(3, 1),
                                   x[3:].reshape(3, 1), self.K, self.dist)
        return (img.reshape(-1, 2), J[:, :6]) if jacobian else img.reshape(-1, 2)

    def _robust_solve(self, x0, p3, p2) -> np.ndarray:
        cache = {}

        def project(x):
            key = x.tobytes()
            if key not in cache:
                cache.clear()
                cache[key] = self._project(x, p3, jacobian=True)
            return cache[key]

        res = least_squares(lambda x: (project(x)[0] - p2).ravel(), x0,
                            jac=lambda x: project(x)[1], loss=self.loss,
                            f_scale=self.loss_scale_px, method="trf", x_scale="jac",
                            max_nfev=50, xtol=1e-10, ftol=1e-10)
        return res.x if np.all(np.isfinite(res.x)) else x0

    def _fits(self, x, frame: _Frame) -> bool:
        """Whether a frame's points agree with pose x (median error within the last gate)."""
        if not len(frame.p3):
            return False
        err = np.linalg.norm(self._project(x, frame.p3) - frame.p2, axis=1)
        return bool(np.median(err) <= self._last_gate)

    def _gate(self, x, p3, p2, counts):
        """(errors, frame_ok, point_ok, gate) under pose x."""
        err = np.linalg.norm(self._project(x, p3) - p2, axis=1)
        frame_med = _group_medians(err, counts)
        gate = min(max(self.frame_gate_px, self.frame_gate_factor * float(np.median(frame_med))),
                   self.point_gate_px)
        frame_ok = frame_med <= gate
        point_ok = (err <= self.point_gate_px) & np.repeat(frame_ok, counts)
        return err, frame_ok, point_ok, gate

    def _refine(self, x, p3, p2, counts):
        """Gating on residuals under the joint pose, then a plain LM over the inliers, until the
        inlier set stops changing (the refined pose can re-admit points or expose outliers).
        Returns (x, err, frame_ok, point_ok, gate)."""
        previous = None
        for _ in range(4):
            err, frame_ok, point_ok, gate = self._gate(x, p3, p2, counts)
            if point_ok.sum() < 4 or (previous is not None and np.array_equal(point_ok, previous)):
                break
            previous = point_ok
            rvec, tvec = cv2.solvePnPRefineLM(p3[point_ok], p2[point_ok], self.K, self.dist,
                                              x[:3].reshape(3, 1).copy(),
                                              x[3:].reshape(3, 1).copy(), LM_CRITERIA)
            x_new = np.concatenate([rvec.ravel(), tvec.ravel()])
            if not np.all(np.isfinite(x_new)):
                break
            x = x_new
        return x, err, frame_ok, point_ok, gate

    def _msac(self, err) -> float:
        return float(np.sum(np.minimum(err, self.point_gate_px) ** 2))

    def _solve(self, latest: _Frame, single: PoseEstimate) -> PoseEstimate:
        # Frames whose own PnP failed join only once the estimate is settled: before that a few
        # garbage frames could outvote the good ones.
        frames: List[_Frame] = [f for f in self._frames
                                if f.position is not None or self._settled]
        if not frames:
            return self._no_estimate(latest, single, "no frame solved yet (latest frame: %s)"
                                     % (single.reason or "no keypoints"),
                                     single.status if not single.ok else "too_few_points")
        p3 = np.concatenate([f.p3 for f in frames])
        p2 = np.concatenate([f.p2 for f in frames])
        counts = np.array([len(f.p3) for f in frames])
        if self._x is not None and (self._settled or self._fits(self._x, latest)):
            # An estimate that many frames agree on (or that the new frame agrees with) is a
            # good start: the gating decides about the new frame; no robust re-solve.
            starts = [self._x]
        else:
            # Robust re-solve from the previous estimate, and the frame consensus; the one more
            # points agree with (MSAC cost) wins.
            starts = [] if self._x is None else [self._robust_solve(self._x, p3, p2)]
            consensus = self._consensus_start(frames)
            if consensus is not None:
                starts.append(consensus)
            if not starts:
                return self._no_estimate(latest, single, "no frame solved yet (latest frame: "
                                         "%s)" % (single.reason or "no keypoints"),
                                         single.status if not single.ok else "too_few_points")
        best = None
        for x0 in starts:
            cand = self._refine(x0, p3, p2, counts)
            cost = self._msac(cand[1])
            if best is None or cost < best[0]:
                best = (cost, cand)
        x, err, frame_ok, point_ok, gate = best[1]
        if point_ok.sum() < 4:
            if self.estimate is not None and self.estimate.ok:
                return self.estimate
            return self._no_estimate(latest, single, "fewer than 4 correspondences agree on a "
                                     "joint pose", "too_few_inliers")
        self._x, self._last_gate = x, gate
        frames_used = int(np.count_nonzero(frame_ok))
        # Settled: enough frames, most of them inliers; from then on a frame that disagrees is
        # more likely an outlier than a sign of a wrong estimate.
        self._settled = (frames_used >= 2 * self.min_frames
                         and frames_used >= 0.75 * len(frames))
        T = _x_to_pose(x)
        cov = pose_covariance(p3[point_ok], p2[point_ok], self.K, self.dist, x[:3], x[3:],
                              self.sigma_floor_px)

        # Spread of the single-frame poses of the inlier frames around the joint pose (median:
        # a frame whose keypoint layout is nearly degenerate has a poor single pose, yet its
        # points are good in the joint solve).
        cam = -T[:3, :3].T @ T[:3, 3]
        solved = [f for f, ok in zip(frames, frame_ok) if ok and f.position is not None]
        if solved:
            spread_t = float(np.median(np.linalg.norm(
                np.array([f.position for f in solved]) - cam, axis=1)))
            spread_r = float(np.median(_angles_deg(np.array([f.rotation for f in solved]),
                                                   T[:3, :3])))
        else:
            spread_t = spread_r = float("nan")
        # ~ the standard error of the mean of len(solved) independent single-frame poses
        root_n = np.sqrt(max(len(solved), 1))
        stderr_t, stderr_r = spread_t / root_n, spread_r / root_n
        self._history.append(x.copy())
        converged = self._converged(x, frames_used, spread_t, spread_r, stderr_t, stderr_r)

        # Latest frame, per given row: its error under the joint pose; inlier when it took part.
        errors = np.full(latest.n_given, np.nan)
        inliers = np.zeros(latest.n_given, bool)
        latest_in = bool(frames and frames[-1] is latest)
        if latest_in:
            start = int(np.sum(counts[:-1]))
            inliers[latest.rows] = point_ok[start:]
        if len(latest.all_rows):
            errors[latest.all_rows] = np.linalg.norm(
                self._project(x, latest.all_p3) - latest.all_p2, axis=1)
        e_in = err[point_ok]
        return PoseEstimate(
            status="ok", camera_T_base=T, covariance=cov, reprojection_errors_px=errors,
            inliers=inliers, num_points=int(point_ok.sum()), frames_used=frames_used,
            extras={"spread_translation_m": spread_t, "spread_rotation_deg": spread_r,
                    "standard_error_translation_m": stderr_t,
                    "standard_error_rotation_deg": stderr_r,
                    "frames_used": frames_used,
                    "rejected_frames": int(len(frames) - frames_used),
                    "rejected_frame_ids": [f.id for f, ok in zip(frames, frame_ok) if not ok],
                    "used_frame_ids": [f.id for f, ok in zip(frames, frame_ok) if ok],
                    "latest_frame_rejected": bool(latest_in and not frame_ok[-1]),
                    "frames_in_history": len(self._frames),
                    # The joint solve's own figures (inliers/reprojection_errors_px describe the
                    # latest frame's rows): correspondences of the frames it considered, and
                    # how many of them it kept (= num_points).
                    "joint_points": int(len(p3)), "joint_inliers": int(point_ok.sum()),
                    "frames_waiting": len(self._frames) - len(frames), "converged": converged,
                    "rms_reprojection_px": float(np.sqrt(np.mean(e_in ** 2))),
                    "frame_gate_px": float(gate), "frame_estimate": single})

    def _no_estimate(self, latest, single, reason, status) -> PoseEstimate:
        est = PoseEstimate.failure(status, reason)
        est.frames_used = 0
        est.inliers = np.zeros(latest.n_given, bool)
        est.extras = {"frames_used": 0, "rejected_frames": 0, "converged": False,
                      "frames_in_history": len(self._frames), "frame_estimate": single}
        return est

    def _converged(self, x, frames_used, spread_t, spread_r, stderr_t, stderr_r) -> bool:
        """Enough inlier frames, the estimate still over the last converge_window frames, and
        single-frame poses that agree (standard error and spread; no single-frame pose at all,
        e.g. every frame too short for its own PnP: moved alone decides)."""
        if frames_used < self.min_frames or len(self._history) <= self.converge_window:
            return False
        T = _x_to_pose(x)
        cam = -T[:3, :3].T @ T[:3, 3]
        Ts = [_x_to_pose(h) for h in self._history]
        moved_t = max(float(np.linalg.norm(-Th[:3, :3].T @ Th[:3, 3] - cam)) for Th in Ts)
        moved_r = float(np.max(_angles_deg(np.array([Th[:3, :3] for Th in Ts]), T[:3, :3])))
        spread_ok = (not np.isfinite(spread_t)
                     or (stderr_t <= self.max_standard_error_translation_m
                         and stderr_r <= self.max_standard_error_rotation_deg
                         and spread_t <= self.max_spread_translation_m
                         and spread_r <= self.max_spread_rotation_deg))
        return bool(moved_t <= self.converge_translation_m
                    and moved_r <= self.converge_rotation_deg and spread_ok)
