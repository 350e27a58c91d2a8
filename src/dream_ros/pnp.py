"""Single-frame camera pose from 2D-3D keypoint correspondences (OpenCV).

``solve_pnp`` returns camera_T_base (base-frame points into the OpenCV optical frame) as a
``PoseEstimate``. Pipeline: drop missing rows (NaN in points_2d) -> degeneracy checks -> EPnP
(and SQPnP, the better one kept) on all points, then, if some points disagree and ``robust``, on
leave-one-out subsets and in OpenCV's RANSAC, hypotheses ranked by MSAC cost -> Levenberg-Marquardt
refinement on the inliers -> inliers re-decided on the refined pose -> (with per-point sigmas)
a weighted refinement (robust: of every point, under Cauchy's loss) -> per-point reprojection
errors and a 6x6 covariance.

Failure is a value; ``status`` is one of:
  ok, too_few_points, collinear, tiny_image_extent, too_few_inliers, behind_camera, non_finite,
  solver_failed.
Bad arguments (wrong shapes, non-finite 3D points, bad K) raise InputError.
"""
from __future__ import annotations

import itertools
from math import comb
from typing import Optional, Tuple

import cv2
import numpy as np

from .errors import InputError
from .types import PoseEstimate

LM_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 20, 1e-10)
# The final weighted refinement's Cauchy scale, in units of each point's sigma. Chosen on 450
# synthetic validation frames (640x480) with session 7's model's detections and sigmas
# (docs/evaluation.md, session 8), ADD AUC: least squares on the inliers 0.551; Cauchy on every
# point with scale 1.5 / 2 / 3: 0.575 / 0.572 / 0.569 (with the model-wide sigmas, not scaled by
# peak height: least squares 0.527, Cauchy 0.535).
CAUCHY_SCALE = 2.0


# ---------------------------------------------------------------------------------- validation
def check_camera(K, dist=None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """K as float64 (3, 3) and dist as float64 (M,) or None; InputError naming what is wrong."""
    try:
        K = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("camera matrix K must be a numeric 3x3 array")
    if K.shape != (3, 3):
        raise InputError("camera matrix K must have shape (3, 3), got %s" % (K.shape,))
    if not np.all(np.isfinite(K)):
        raise InputError("camera matrix K contains NaN or infinite values")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError("camera matrix K has a non-positive focal length (fx=%g, fy=%g)"
                         % (K[0, 0], K[1, 1]))
    if dist is not None:
        try:
            dist = np.asarray(dist, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise InputError("distortion coefficients must be numeric")
        if dist.size not in (4, 5, 8, 12, 14):
            raise InputError("distortion must have 4, 5, 8, 12 or 14 coefficients (OpenCV), got %d"
                             % dist.size)
        if not np.all(np.isfinite(dist)):
            raise InputError("distortion coefficients contain NaN or infinite values")
        if not np.any(dist):
            dist = None
    return K, dist


def check_correspondences(points_3d, points_2d) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points_3d (N,3), points_2d (N,2), valid (N,)) as float64; a row is missing when its 2D
    point has a NaN. Non-finite 3D points on present rows or infinite 2D values raise InputError."""
    try:
        p3 = np.asarray(points_3d, dtype=np.float64)
        p2 = np.asarray(points_2d, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("points_3d and points_2d must be numeric arrays")
    if p3.ndim != 2 or p3.shape[1] != 3:
        raise InputError("points_3d must have shape (N, 3), got %s" % (p3.shape,))
    if p2.ndim != 2 or p2.shape[1] != 2:
        raise InputError("points_2d must have shape (N, 2), got %s" % (p2.shape,))
    if p3.shape[0] != p2.shape[0]:
        raise InputError("points_3d has %d rows but points_2d has %d" % (p3.shape[0], p2.shape[0]))
    if np.any(np.isinf(p2)):
        raise InputError("points_2d rows %s are infinite (use NaN for missing keypoints)"
                         % np.flatnonzero(np.any(np.isinf(p2), axis=1)).tolist())
    valid = ~np.any(np.isnan(p2), axis=1)
    bad3 = valid & ~np.all(np.isfinite(p3), axis=1)
    if np.any(bad3):
        raise InputError("points_3d rows %s are NaN or infinite" % np.flatnonzero(bad3).tolist())
    return p3, p2, valid


def number_option(name: str, value, kind=float, minimum: Optional[float] = None,
                  allow_none: bool = False, maximum: Optional[float] = None):
    """A numeric solver option as ``kind`` (int or float); InputError naming it when it is not a
    finite number in [minimum, maximum] (options come from user parameter files)."""
    if value is None and allow_none:
        return None
    try:
        if isinstance(value, (str, bytes)) or value is None:
            raise TypeError
        v = kind(value)
        ok = np.isfinite(v)
    except (TypeError, ValueError, OverflowError):
        raise InputError("option %s must be a number, got %r" % (name, value))
    if not ok or (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        bounds = "".join([" >= %g" % minimum if minimum is not None else "",
                          " and" if minimum is not None and maximum is not None else "",
                          " <= %g" % maximum if maximum is not None else ""])
        raise InputError("option %s must be a finite number%s, got %r" % (name, bounds, value))
    return v


# A residual floor beyond any image size is a typo; squaring a huge one overflows.
MAX_SIGMA_FLOOR_PX = 1e4


# ---------------------------------------------------------------------------------- helpers
def undistort_pixels(points_2d: np.ndarray, K: np.ndarray, dist: Optional[np.ndarray]):
    """Ideal (distortion-free) pixel coordinates of raw pixels."""
    if dist is None or len(points_2d) == 0:
        return points_2d
    return cv2.undistortPoints(points_2d.reshape(-1, 1, 2), K, dist, P=K).reshape(-1, 2)


def project(points_3d, rvec, tvec, K, dist=None, jacobian=False):
    """Projected pixels (N, 2) and, if asked, the (2N, 6) Jacobian w.r.t. (tvec, rvec)."""
    img, J = cv2.projectPoints(np.asarray(points_3d, np.float64).reshape(-1, 1, 3),
                               np.asarray(rvec, np.float64).reshape(3, 1),
                               np.asarray(tvec, np.float64).reshape(3, 1), K, dist)
    img = img.reshape(-1, 2)
    if not jacobian:
        return img
    return img, np.hstack([J[:, 3:6], J[:, 0:3]])       # OpenCV's column order: rvec, tvec, ...


def _refine(p3, p2, K, dist, rvec, tvec):
    rvec, tvec = cv2.solvePnPRefineLM(p3, p2, K, dist, rvec.copy(), tvec.copy(), LM_CRITERIA)
    return rvec.reshape(3), tvec.reshape(3)


def _refine_weighted(p3, p2, K, dist, rvec, tvec, sigma, iterations=LM_CRITERIA[1],
                     cauchy_scale=None):
    """Levenberg-Marquardt on reprojection errors divided by each point's ``sigma`` (px), from
    (rvec, tvec); with ``cauchy_scale`` c the cost is Cauchy's, sum log(1 + (r/c)^2) over the
    normalised residuals r, minimised by reweighting (IRLS: each point's weight 1 / (1 + (r/c)^2)
    from the pose before the step). Written out because OpenCV's PnP refinements weigh every
    point alike, and scipy's least_squares costs 0.7 ms per call in set-up alone, which the live
    frame rate feels; this loop (OpenCV's analytic Jacobian, a 6x6 solve per step) takes about
    0.2 ms."""
    w_sigma = np.repeat(1.0 / sigma, 2)
    x = np.r_[rvec, tvec].astype(np.float64)

    def residuals(x, jacobian=False):
        out = project(p3, x[:3], x[3:], K, dist, jacobian=jacobian)
        if not jacobian:
            return (out - p2).ravel() * w_sigma, None
        img, J = out         # project() orders the Jacobian's columns (tvec, rvec)
        return (img - p2).ravel() * w_sigma, np.hstack([J[:, 3:6], J[:, 0:3]]) * w_sigma[:, None]

    def squared_over_scale(r):        # each point's (|r| / c)^2
        return (r[0::2] ** 2 + r[1::2] ** 2) / cauchy_scale ** 2

    def robust_weights(r):
        if cauchy_scale is None:
            return np.ones_like(r)
        return np.repeat(1.0 / (1.0 + squared_over_scale(r)), 2)

    def cost_of(r):
        if cauchy_scale is None:
            return float(r @ r)
        return float(np.sum(np.log1p(squared_over_scale(r))))

    r, J = residuals(x, True)
    cost, lam = cost_of(r), 1e-3
    for _ in range(int(iterations)):
        w = robust_weights(r)
        A, g = J.T @ (J * w[:, None]), J.T @ (w * r)
        # cv2.solve: numpy's LAPACK costs ~0.5 ms per 6x6 solve under OpenBLAS threading
        ok, step = cv2.solve(A + lam * np.diag(np.diag(A) + 1e-12), -g, flags=cv2.DECOMP_LU)
        if not ok:
            break
        step = step.ravel()
        cost_new = cost_of(residuals(x + step)[0])
        if not np.isfinite(cost_new) or cost_new >= cost:
            lam *= 10.0
            if lam > 1e8:
                break
            continue
        x, lam = x + step, lam * 0.1
        done = cost - cost_new <= LM_CRITERIA[2] * max(cost, 1e-12) or \
            np.linalg.norm(step) <= LM_CRITERIA[2]
        cost = cost_new
        if done:
            break
        r, J = residuals(x, True)
    if not np.all(np.isfinite(x)):
        return rvec, tvec
    return x[:3].copy(), x[3:].copy()


def _rms(p3, p2, K, dist, rvec, tvec) -> float:
    return float(np.sqrt(np.mean(np.sum((project(p3, rvec, tvec, K, dist) - p2) ** 2, axis=1))))


def _epnp(p3, p2, K, dist, flags=(cv2.SOLVEPNP_EPNP, cv2.SOLVEPNP_SQPNP), p3p_max=5):
    """(rvec, tvec) from EPnP or SQPnP, whichever reprojects better, or None. EPnP alone lands in
    a wrong minimum for near-degenerate keypoint layouts (several keypoints of a robot are often
    nearly collinear); SQPnP is globally optimal in its object-space error and costs as little.
    With few points (N <= p3p_max, several flags) both still miss the exact pose of nearly planar
    4-5 point sets (about 1 % of 4-point Panda views): every 3-point subset's P3P solutions
    compete too, and the best two candidates are compared after LM."""
    cands = []
    for flag in flags:
        try:
            ok, rvec, tvec = cv2.solvePnP(p3, p2, K, dist, flags=flag)
        except cv2.error:
            continue
        if not ok or not (np.all(np.isfinite(rvec)) and np.all(np.isfinite(tvec))):
            continue
        if len(flags) == 1:
            return rvec.reshape(3), tvec.reshape(3)
        cands.append((rvec.reshape(3), tvec.reshape(3)))
    small = len(flags) > 1 and len(p3) <= p3p_max
    if small:
        for tri in itertools.combinations(range(len(p3)), 3):
            tri = list(tri)
            try:
                _, rvecs, tvecs = cv2.solveP3P(p3[tri], p2[tri], K, dist, flags=cv2.SOLVEPNP_AP3P)
            except cv2.error:
                continue
            cands += [(r.reshape(3), t.reshape(3)) for r, t in zip(rvecs, tvecs)]
    scored = []
    for rvec, tvec in cands:
        sse = float(np.sum((project(p3, rvec, tvec, K, dist) - p2) ** 2))
        if np.isfinite(sse):
            scored.append((sse, rvec, tvec))
    if not scored:
        return None
    scored.sort(key=lambda c: c[0])
    if not small:
        return scored[0][1:]
    best = None
    for _, rvec, tvec in scored[:2]:
        rvec, tvec = _refine(p3, p2, K, dist, rvec, tvec)
        sse = float(np.sum((project(p3, rvec, tvec, K, dist) - p2) ** 2))
        if best is None or sse < best[0]:
            best = (sse, rvec, tvec)
    return best[1:]


def _msac(p3, p2, K, dist, pose, thr):
    """(MSAC cost, errors): squared reprojection errors truncated at thr^2, so among poses with
    equally many inliers the tighter fit wins (OpenCV's RANSAC keeps the first maximal set)."""
    err = np.linalg.norm(project(p3, pose[0], pose[1], K, dist) - p2, axis=1)
    if not np.all(np.isfinite(err)):
        return np.inf, err
    return float(np.sum(np.minimum(err, thr) ** 2)), err


def _robust_pose(p3, p2, K, dist, thr, min_points, iterations, confidence, max_subsets=28):
    """(rvec, tvec, inlier mask) minimising the MSAC cost, or None.

    Hypotheses: all points; if they do not fit tightly (every error under thr / 2; a loose fit of
    all points may be a wrong pose that absorbed an outlier), every subset leaving one point out,
    then, if none of those has N - 1 inliers, every subset leaving two out (while there are at
    most max_subsets of them, i.e. N <= 8; all are tried because a wrong keypoint does not
    always have the largest error under the all-points pose). For more points OpenCV's RANSAC
    (EPnP on random 5-point samples) replaces the leave-two-out step. Subsets keep >= 4 points
    (min_points): a subset's pose still needs min_points inliers to count, so a 4-point subset
    is no weaker evidence than a 4-point fit, and without them 5 keypoints with one wrong could
    never yield the 4-point agreement that min_points = 4 accepts (OpenCV's RANSAC samples 5).
    4-point subsets get P3P candidates too (near-planar layouts, see _epnp).
    The best three by MSAC cost are LM-refined on their inliers before the final choice."""
    n = len(p3)
    hyps = []

    def add(pose, left_out=()):
        """Adds a hypothesis; True when it is tight."""
        if pose is None or not (np.all(np.isfinite(pose[0])) and np.all(np.isfinite(pose[1]))):
            return False
        cost, err = _msac(p3, p2, K, dist, pose, thr)
        hyps.append((cost, pose, err < thr, err))
        return bool(np.all(np.delete(err, list(left_out)) < 0.5 * thr))

    tight = add(_epnp(p3, p2, K, dist))
    enumerated = 0
    for k in (1, 2):
        if tight or n - k < max(min_points, 4) or comb(n, k) > max_subsets:
            break
        if k == 2 and any(h[2].sum() >= n - 1 for h in hyps):
            break
        keep = np.ones(n, bool)
        for out in itertools.combinations(range(n), k):
            keep[list(out)] = False
            # SQPnP only: half the cost, and the better of the two on near-degenerate layouts;
            # 4 points: every solver, P3P included (_epnp's small-set branch).
            flags = (cv2.SOLVEPNP_SQPNP,) if n - k > 4 else (cv2.SOLVEPNP_EPNP, cv2.SOLVEPNP_SQPNP)
            tight = add(_epnp(p3[keep], p2[keep], K, dist, flags=flags), left_out=out) or tight
            keep[list(out)] = True
        enumerated = k
    if not tight and enumerated < 2 and not any(h[2].sum() >= n - 1 for h in hyps):
        ok, rvec, tvec, _ = cv2.solvePnPRansac(
            p3, p2, K, dist, iterationsCount=iterations, reprojectionError=thr,
            confidence=confidence, flags=cv2.SOLVEPNP_EPNP)
        if ok:
            add((rvec.reshape(3), tvec.reshape(3)))
    if not hyps:
        return None
    agreed = [h for h in hyps if h[2].sum() >= min_points]
    if not agreed:    # the caller reports too few inliers with the best count seen
        h = max(hyps, key=lambda h: h[2].sum())
        return h[1][0], h[1][1], h[2]
    hyps = sorted(agreed, key=lambda h: h[0])
    best = None
    for cost, (rvec, tvec), mask, _ in hyps[:3]:
        rvec, tvec = _refine(p3[mask], p2[mask], K, dist, rvec, tvec)
        cost, err = _msac(p3, p2, K, dist, (rvec, tvec), thr)
        if best is None or cost < best[0]:
            best = (cost, rvec, tvec, err < thr)
    return best[1], best[2], best[3]


def pose_covariance(p3, p2, K, dist, rvec, tvec, sigma_floor_px=0.0) -> np.ndarray:
    """6x6 covariance of (tx, ty, tz, rx, ry, rz): s^2 (J^T J)^-1 with s^2 the residual variance
    (sum of squared residuals / (2n - 6)), floored at sigma_floor_px^2."""
    img, J = project(p3, rvec, tvec, K, dist, jacobian=True)
    r = (img - p2).ravel()
    dof = max(r.size - 6, 1)
    s2 = max(float(r @ r) / dof, sigma_floor_px ** 2)
    # cv2.invert: numpy's LAPACK inv of a 6x6 costs ~0.5 ms under OpenBLAS threading, this ~5 us.
    cond, inv = cv2.invert(J.T @ J, flags=cv2.DECOMP_SVD)
    if not cond > 1e-14:        # rcond of J^T J: the pose is not determined by these points
        return np.full((6, 6), np.inf)
    return s2 * inv


# ---------------------------------------------------------------------------------- solver
def solve_pnp(points_3d, points_2d, K, dist=None, robust: bool = True, min_points: int = 4,
              ransac_reprojection_px: float = 10.0, ransac_iterations: int = 100,
              ransac_confidence: float = 0.999, min_image_extent_px: float = 8.0,
              collinear_tolerance: float = 1e-3, sigma_floor_px: float = 0.0,
              inlier_px: Optional[float] = None, min_inliers: Optional[int] = None,
              point_sigma_px=None, cauchy_scale: Optional[float] = CAUCHY_SCALE) -> PoseEstimate:
    """camera_T_base from 2D-3D correspondences (see module docstring).

    points_3d (N, 3) base frame, points_2d (N, 2) raw pixels with NaN rows for missing keypoints,
    K (3, 3), dist OpenCV distortion coefficients or None.
    robust: wrong keypoints are rejected (all-points, leave-one-out and RANSAC hypotheses ranked
    by MSAC cost with threshold ``ransac_reprojection_px``; RANSAC runs ``ransac_iterations`` at
    ``ransac_confidence``); after the LM refinement a point is an inlier when its reprojection
    error is below ``inlier_px`` (default: ransac_reprojection_px). Non-robust: EPnP/SQPnP + LM
    on every present point.
    min_inliers (robust only): fewest inliers a pose needs; default min_points for N <= 5
    present points, else max(min_points, 5): with 6+ keypoints an agreement of 4 is no evidence
    (some pose fits almost any 4 points within a few pixels; with 3 of 7 keypoints wrong it is
    a wrong pose more often than not).
    min_image_extent_px: the present points must span at least this many pixels.
    collinear_tolerance: points whose minor spread is below this fraction of their major spread
    (3D, or 2D for a degenerate view) are collinear.
    sigma_floor_px: lower bound of the residual standard deviation used in the covariance (so that
    exact input does not give a zero covariance unless asked for).
    point_sigma_px: (N,) expected pixel error of each point (``Detections.sigma_px``: the model's
    per-keypoint error scaled by the detection's peak height), or None: the final refinement
    weighs each point by its inverse (the inliers are decided unweighted, then again on the
    final pose). With ``cauchy_scale`` c (robust only) that refinement takes every present
    point under Cauchy's loss on the normalised residuals (scale c), else only the inliers
    under least squares.
    Returns PoseEstimate with inliers / reprojection_errors_px over all N rows (False / NaN for
    missing rows) and extras: num_given, rms/median/max_reprojection_px (inliers).
    """
    min_points = number_option("min_points", min_points, int)
    if min_points < 4:
        raise InputError("min_points must be at least 4 (PnP needs 4 correspondences), got %r"
                         % (min_points,))
    ransac_reprojection_px = number_option("ransac_reprojection_px", ransac_reprojection_px,
                                           float, 0.0)
    ransac_iterations = number_option("ransac_iterations", ransac_iterations, int, 1)
    ransac_confidence = number_option("ransac_confidence", ransac_confidence, float, 0.0)
    min_image_extent_px = number_option("min_image_extent_px", min_image_extent_px, float, 0.0)
    collinear_tolerance = number_option("collinear_tolerance", collinear_tolerance, float, 0.0)
    sigma_floor_px = number_option("sigma_floor_px", sigma_floor_px, float, 0.0,
                                   maximum=MAX_SIGMA_FLOOR_PX)
    inlier_px = number_option("inlier_px", inlier_px, float, 0.0, allow_none=True)
    min_inliers = number_option("min_inliers", min_inliers, int, allow_none=True)
    cauchy_scale = number_option("cauchy_scale", cauchy_scale, float, 0.0, allow_none=True)
    K, dist = check_camera(K, dist)
    p3_all, p2_all, valid = check_correspondences(points_3d, points_2d)
    n_given = len(valid)
    if point_sigma_px is not None:
        point_sigma_px = np.asarray(point_sigma_px, dtype=float).reshape(-1)
        if point_sigma_px.shape != (n_given,) or not np.all(np.isfinite(point_sigma_px)) \
                or not np.all(point_sigma_px > 0):
            raise InputError("point_sigma_px must hold %d positive finite values, got %r"
                             % (n_given, point_sigma_px.tolist()))
    idx = np.flatnonzero(valid)
    n = len(idx)

    def fail(status, reason):
        est = PoseEstimate.failure(status, reason, num_points=n)
        est.inliers = np.zeros(n_given, bool)
        est.extras = {"num_given": n_given}
        return est

    if n < min_points:
        return fail("too_few_points", "%d keypoint correspondences, at least %d needed"
                    % (n, min_points))
    p3 = np.ascontiguousarray(p3_all[idx])
    p2 = np.ascontiguousarray(p2_all[idx])

    # Degenerate geometry: checked up front because OpenCV would return a confident wrong pose.
    s3 = np.linalg.svd(p3 - p3.mean(axis=0), compute_uv=False)
    if s3[0] <= 1e-12 or s3[1] < collinear_tolerance * s3[0]:
        return fail("collinear", "the %d 3D keypoints are (nearly) collinear or coincide: the "
                    "rotation about their line is undetermined" % n)
    ideal = undistort_pixels(p2, K, dist)
    extent = float(np.max(np.ptp(ideal, axis=0)))
    if extent < min_image_extent_px:
        return fail("tiny_image_extent", "the keypoints span only %.1f px (< %.1f px): the robot "
                    "is too small in the image for a pose" % (extent, min_image_extent_px))
    s2 = np.linalg.svd(ideal - ideal.mean(axis=0), compute_uv=False)
    if s2[1] < collinear_tolerance * s2[0]:
        return fail("collinear", "the %d image keypoints lie on a line: the camera sees the "
                    "robot edge-on, the pose is undetermined" % n)

    ransac_px = float(ransac_reprojection_px)
    inlier_px = ransac_px if inlier_px is None else float(inlier_px)
    need = (int(min_inliers) if min_inliers is not None
            else (min_points if n <= 5 else max(min_points, 5)))
    if need < 4:
        raise InputError("min_inliers must be at least 4, got %r" % (min_inliers,))
    try:
        if robust:
            init = _robust_pose(p3, p2, K, dist, ransac_px, need, int(ransac_iterations),
                                float(ransac_confidence))
        else:
            init = _epnp(p3, p2, K, dist)
            init = None if init is None else init + (np.ones(n, bool),)
        if init is None:
            return fail("solver_failed", "OpenCV EPnP/SQPnP found no pose")
        rvec, tvec, mask = init
        if robust and mask.sum() < need:
            return fail("too_few_inliers", "no pose that %d of the %d keypoints agree on "
                        "(within %.1f px; at most %d do)" % (need, n, ransac_px, mask.sum()))
        if not robust:
            rvec, tvec = _refine(p3, p2, K, dist, rvec, tvec)
        if robust:
            # Inliers re-decided on the refined pose, refined once more if they changed.
            err = np.linalg.norm(project(p3, rvec, tvec, K, dist) - p2, axis=1)
            new_mask = err < inlier_px
            if new_mask.sum() >= need and not np.array_equal(new_mask, mask):
                mask = new_mask
                rvec, tvec = _refine(p3[mask], p2[mask], K, dist, rvec, tvec)
    except cv2.error as exc:
        return fail("solver_failed", "OpenCV error: %s" % str(exc).strip().splitlines()[-1])

    if not (np.all(np.isfinite(rvec)) and np.all(np.isfinite(tvec))):
        return fail("non_finite", "the solver returned a non-finite pose")
    err = np.linalg.norm(project(p3, rvec, tvec, K, dist) - p2, axis=1)
    if robust:
        mask = err < inlier_px
        if mask.sum() < need:
            return fail("too_few_inliers", "only %d of %d keypoints reproject within %.1f px "
                        "(%d needed)" % (mask.sum(), n, inlier_px, need))
    if point_sigma_px is not None and mask.sum() >= 4:
        if robust and cauchy_scale:
            # every present point, each one's pull bounded by Cauchy's loss. On the validation
            # frames this beat the inliers alone, and beat it more the more points it took (a
            # replay of the detections, only those within 1 / 2 / 3 x inlier_px: ADD AUC 0.555 /
            # 0.560 / 0.563, all 0.574): the robust stage's inliers are themselves sometimes a
            # wrong agreement. The price: one clean 40 px outlier still moves the pose by a few mm
            # (test/core/test_pnp.py), where leaving it out would not
            rvec, tvec = _refine_weighted(p3, p2, K, dist, rvec, tvec, point_sigma_px[idx],
                                          cauchy_scale=cauchy_scale)
        else:
            rvec, tvec = _refine_weighted(p3[mask], p2[mask], K, dist, rvec, tvec,
                                          point_sigma_px[idx][mask])
        err = np.linalg.norm(project(p3, rvec, tvec, K, dist) - p2, axis=1)
        if robust:
            # inliers re-decided on the final pose; should the weighting have pushed some of the
            # supporting points past the threshold, those that agreed before are kept
            final = err < inlier_px
            mask = final if final.sum() >= need else mask
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rvec)[0]
    T[:3, 3] = tvec
    z = p3[mask] @ T[:3, :3].T[:, 2] + T[2, 3]
    if np.any(z <= 0):
        return fail("behind_camera", "%d of the %d inlier keypoints are behind the camera in the "
                    "solution" % (int(np.sum(z <= 0)), int(mask.sum())))
    cov = pose_covariance(p3[mask], p2[mask], K, dist, rvec, tvec, sigma_floor_px)
    if not np.all(np.isfinite(cov)):
        return fail("non_finite", "the pose covariance is not finite (degenerate geometry)")

    errors = np.full(n_given, np.nan)
    errors[idx] = err
    inliers = np.zeros(n_given, bool)
    inliers[idx] = mask
    e_in = err[mask]
    return PoseEstimate(
        status="ok", camera_T_base=T, covariance=cov, reprojection_errors_px=errors,
        inliers=inliers, num_points=n, frames_used=1,
        extras={"num_given": n_given,
                "rms_reprojection_px": float(np.sqrt(np.mean(e_in ** 2))),
                "median_reprojection_px": float(np.median(e_in)),
                "max_reprojection_px": float(np.max(e_in))})
